"""The push dispatcher: outbox rows to WeChat, each at most once as residents see it.

One round: claim a batch of due rows (FOR UPDATE SKIP LOCKED on PostgreSQL, a conditional
update on SQLite) as in flight under a fresh claim token; for each row record `wire_at` just
before its request leaves, send, and record the outcome. Every write is conditional on the
claim token, so a row taken back by the reconciler can be neither sent nor overwritten.

Channel: a customer-service message inside the window after the resident's last message
(48 h, configurable); outside it, or when WeChat says 45015/45047, the template message and
then the subscription notice configured for the notice's kind; with neither, the notice waits
in the resident's inbox and is shown the next time they write (bot/conversation.py).

Errors: a refusal with an error code delivered nothing, so it may be retried or sent through
the next channel. Transient ones (-1, 5xx, unreachable, no token) retry with exponential
backoff up to `push_max_attempts`, then fail. Quota errors (45009 daily, 45011 per minute)
pause that channel for every worker (a key in the shared store) until the quota resets.

Reconciliation rule for a worker that died mid-batch (in-flight rows older than
`push_inflight_stale_seconds`, far above the request timeout, so their worker is surely dead or
its request surely over):
  * `wire_at` is NULL: the request never left. Back to pending; sending it cannot duplicate.
  * `wire_at` is set: WeChat may have shown it. If the API can say whether it received the
    send (the fake server can, WECHAT_DELIVERY_CHECK=1), settle on its answer: sent, or
    pending to resend. Real WeChat cannot say, and its sends are not idempotent, so the row
    becomes `unknown` and is never resent automatically: a missed notice is better than a
    duplicate, and `main.py outbox status` counts them for staff. A request that times out
    is treated the same way. At most `push_concurrency` rows per dead worker end up there.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.config import Settings
from bot.store import Store
from bot.wechat_api import (FieldTooLong, IPNotWhitelisted, NoPermission, NotFollowing,
                            OutcomeUnknown, QuotaExceeded, Refused, Unreachable, WeChatAPI,
                            WeChatError, WindowClosed, Busy, TokenInvalid, describe,
                            subscription_fields, template_fields)
from models import outbox as ob
from models.clock import LOCAL_TZ, utcnow
from models.outbox import Outbox, OutboxStatus
from models.residents import Resident

log = logging.getLogger(__name__)

CUSTOM, TEMPLATE, SUBSCRIBE, INBOX = "custom", "template", "subscribe", "inbox"
ALL = "all"  # a pause of every channel (40164: the server's IP is not whitelisted)
MAX_BACKOFF = 3600.0


def next_minute(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0) + timedelta(minutes=1, seconds=1)


def next_local_midnight(now: datetime) -> datetime:
    local = now.astimezone(LOCAL_TZ)
    return (local.replace(hour=0, minute=0, second=0, microsecond=0)
            + timedelta(days=1, seconds=5)).astimezone(now.tzinfo)


@dataclass
class Stats:
    sent: dict[str, int] = field(default_factory=dict)
    retried: int = 0
    failed: int = 0
    inbox: int = 0
    unknown: int = 0

    def count_sent(self, channel: str) -> None:
        self.sent[channel] = self.sent.get(channel, 0) + 1


class Dispatcher:
    def __init__(self, settings: Settings, store: Store, api: WeChatAPI, *,
                 worker_id: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.api = api
        self.worker_id = (worker_id or f"{os.getpid()}-{uuid.uuid4().hex[:6]}")[:20]
        self._batches = itertools.count(1)
        self._stopping = False
        self._last_reconcile = 0.0
        self.stats = Stats()

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; the batch in hand finishes, unsent rows are given back."""
        log.info("push dispatcher %s started", self.worker_id)
        while not stop.is_set():
            handled = 0
            try:
                if time.monotonic() - self._last_reconcile >= min(
                        30.0, self.settings.push_inflight_stale_seconds / 2):
                    self._last_reconcile = time.monotonic()
                    await self.reconcile()
                handled = await self.run_once()
            except Exception:  # noqa: BLE001 - the loop must outlive a bad round
                log.exception("push round failed")
            if handled < self.settings.push_batch_size:
                try:
                    await asyncio.wait_for(stop.wait(), self.settings.push_poll_seconds)
                except asyncio.TimeoutError:
                    pass
        log.info("push dispatcher %s stopped", self.worker_id)

    def stopping(self) -> None:
        """Stop taking new rows off the wire: rows not yet sent are given back."""
        self._stopping = True

    async def drain(self, now: datetime | None = None, max_rounds: int = 10_000) -> int:
        """Send everything due now (tests and scripts); returns how many rows were handled."""
        total = 0
        for _ in range(max_rounds):
            handled = await self.run_once(now)
            total += handled
            if not handled:
                break
        return total

    async def run_once(self, now: datetime | None = None) -> int:
        now = now or utcnow()
        token = f"{self.worker_id}-{next(self._batches)}"
        rows = await ob.claim_due(token, now, self.settings.push_batch_size)
        if not rows:
            return 0
        openids = list({r.recipient for r in rows})
        last_seen = dict(await Resident.filter(openid__in=openids)
                         .values_list("openid", "last_interaction_at"))
        pauses = await self._pauses()
        sem = asyncio.Semaphore(self.settings.push_concurrency)

        async def one(row: Outbox) -> None:
            async with sem:
                try:
                    await self._deliver(row, token, now, last_seen.get(row.recipient), pauses)
                except Exception:  # noqa: BLE001 - one bad row must not stop the batch
                    log.exception("push of outbox row %s failed unexpectedly", row.id)
                    await ob.release([row.id], token)  # if it never left: back to pending
                    await ob.mark_final(row.id, token, OutboxStatus.UNKNOWN,  # else: unknown
                                        "unexpected error mid-send; not resent automatically")

        await asyncio.gather(*(one(r) for r in rows))
        return len(rows)

    # ------------------------------------------------------------------ one row

    def channels_for(self, row: Outbox, last_seen: datetime | None, now: datetime) -> list[str]:
        chans = []
        window = timedelta(seconds=self.settings.push_window_seconds)
        if last_seen is not None and now - last_seen < window:
            chans.append(CUSTOM)
        if self._template_id(row.kind):
            chans.append(TEMPLATE)
        if self._subscribe_id(row.kind):
            chans.append(SUBSCRIBE)
        return chans

    def _template_id(self, kind: str) -> str | None:
        t = self.settings.push_templates
        return t.get(kind) or t.get("*")

    def _subscribe_id(self, kind: str) -> str | None:
        t = self.settings.push_subscribe_templates
        return t.get(kind) or t.get("*")

    async def _send(self, channel: str, row: Outbox) -> None:
        client_id = str(row.id)
        if channel == CUSTOM:
            await self.api.send_text(row.recipient, row.text, client_id=client_id)
        elif channel == TEMPLATE:
            await self.api.send_template(row.recipient, self._template_id(row.kind),
                                         row.data.get("template_data") or template_fields(row.text),
                                         url=row.data.get("url", ""), client_id=client_id)
        else:
            await self.api.send_subscribe(row.recipient, self._subscribe_id(row.kind),
                                          row.data.get("subscribe_data")
                                          or subscription_fields(row.text),
                                          page=row.data.get("page", ""), client_id=client_id)

    async def _deliver(self, row: Outbox, token: str, now: datetime, last_seen: datetime | None,
                       pauses: dict[str, float]) -> None:
        chans = self.channels_for(row, last_seen, now)
        if not chans:
            await ob.mark_final(row.id, token, OutboxStatus.INBOX, "no channel: waits in inbox",
                                INBOX)
            self.stats.inbox += 1
            return
        paused_until = max(pauses.get(ALL, 0), pauses.get(chans[0], 0))
        if self._stopping or paused_until > time.time():
            await self._later(row, token, paused_until, "paused" if paused_until else "stopping")
            return
        over = await self._over_rate(now)
        if over is not None:
            await self._later(row, token, over.timestamp(), "rate limit")
            return
        if not await ob.mark_wire(row.id, token, utcnow()):
            return  # taken back by the reconciler meanwhile: not ours to send
        attempts = row.attempts + 1
        tried = []
        for channel in chans:
            if pauses.get(channel, 0) > time.time():
                await self._later(row, token, pauses[channel], f"{channel} paused")
                return
            try:
                await self._send(channel, row)
            except (WindowClosed, NoPermission, Refused, FieldTooLong) as exc:
                tried.append(f"{channel}:{exc.code}")
                continue  # refused, nothing shown: the next channel may reach them
            except NotFollowing as exc:
                await ob.mark_final(row.id, token, OutboxStatus.INBOX, describe(exc), INBOX)
                self.stats.inbox += 1
                return
            except QuotaExceeded as exc:
                until = (next_local_midnight(now) if exc.daily else next_minute(utcnow()))
                await self._pause(channel, until, pauses, describe(exc))
                await self._later(row, token, until.timestamp(), describe(exc))
                return
            except IPNotWhitelisted as exc:
                until = utcnow() + timedelta(minutes=5)
                log.error("WeChat refuses this server's IP (40164): add it to the whitelist")
                await self._pause(ALL, until, pauses, describe(exc))
                await self._later(row, token, until.timestamp(), describe(exc))
                return
            except (Busy, Unreachable, TokenInvalid) as exc:
                await self._backoff(row, token, attempts, describe(exc))
                return
            except OutcomeUnknown as exc:
                await self._unknown(row, token, channel, describe(exc))
                return
            except WeChatError as exc:
                await ob.mark_final(row.id, token, OutboxStatus.FAILED, describe(exc), channel)
                self.stats.failed += 1
                log.warning("outbox row %s failed: %s", row.id, exc)
                return
            await ob.mark_sent(row.id, token, channel, utcnow())
            self.stats.count_sent(channel)
            return
        # Every channel refused it: the resident reads it when they next write.
        await ob.mark_final(row.id, token, OutboxStatus.INBOX, "refused: " + ",".join(tried), INBOX)
        self.stats.inbox += 1

    async def _later(self, row: Outbox, token: str, until_ts: float, why: str) -> None:
        due = datetime.fromtimestamp(max(until_ts, time.time()), tz=utcnow().tzinfo)
        await ob.mark_retry(row.id, token, due, "waiting: " + why)

    async def _backoff(self, row: Outbox, token: str, attempts: int, error: str) -> None:
        if attempts >= self.settings.push_max_attempts:
            await ob.mark_final(row.id, token, OutboxStatus.FAILED, f"gave up: {error}")
            self.stats.failed += 1
            log.warning("outbox row %s failed after %d attempts: %s", row.id, attempts, error)
            return
        delay = min(MAX_BACKOFF, self.settings.push_backoff_seconds * 2 ** (attempts - 1))
        await ob.mark_retry(row.id, token, utcnow() + timedelta(seconds=delay), error)
        self.stats.retried += 1

    async def _unknown(self, row: Outbox, token: str, channel: str, error: str) -> None:
        delivered = await self.api.delivered(str(row.id))
        if delivered:
            await ob.mark_sent(row.id, token, channel, utcnow())
            self.stats.count_sent(channel)
        elif delivered is False:
            await ob.mark_retry(row.id, token, utcnow(), error)
            self.stats.retried += 1
        else:
            await ob.mark_final(row.id, token, OutboxStatus.UNKNOWN,
                                f"{error}; may have been shown, not resent", channel)
            self.stats.unknown += 1
            log.warning("outbox row %s: outcome unknown (%s), not resent", row.id, error)

    # ------------------------------------------------------------------ shared limits

    async def _pauses(self) -> dict[str, float]:
        pauses = {}
        for channel in (CUSTOM, TEMPLATE, SUBSCRIBE, ALL):
            raw = await self.store.get("push:pause:" + channel)
            if raw:
                pauses[channel] = float(raw)
        return pauses

    async def _pause(self, channel: str, until: datetime, pauses: dict, why: str) -> None:
        ts = until.timestamp()
        if pauses.get(channel, 0) < ts:
            pauses[channel] = ts
            await self.store.set("push:pause:" + channel, str(ts), max(1.0, ts - time.time()))
            log.warning("push via %s paused until %s: %s", channel, until.isoformat(), why)

    async def _over_rate(self, now: datetime) -> datetime | None:
        """The moment sending may resume if a shared per-minute or per-day limit is reached."""
        per_minute, per_day = self.settings.push_rate_per_minute, self.settings.push_rate_per_day
        if per_minute:
            minute = int(time.time() // 60)
            if await self.store.incr(f"push:rate:m:{minute}", 120) > per_minute:
                return datetime.fromtimestamp((minute + 1) * 60, tz=now.tzinfo)
        if per_day:
            day = now.astimezone(LOCAL_TZ).date().isoformat()
            if await self.store.incr(f"push:rate:d:{day}", 2 * 86400) > per_day:
                return next_local_midnight(now)
        return None

    # ------------------------------------------------------------------ reconciliation

    async def reconcile(self, now: datetime | None = None) -> dict[str, int]:
        """Settle in-flight rows of dead workers (the rule is in the module docstring)."""
        now = now or utcnow()
        done = {"reset": 0, "sent": 0, "resent": 0, "unknown": 0, "flagged": 0}
        stale = now - timedelta(seconds=self.settings.push_inflight_stale_seconds)
        for row in await ob.stale_in_flight(stale):
            if row.wire_at is None:
                done["reset"] += await ob.reset_stale(row.id, row.claim)
                continue
            delivered = await self.api.delivered(str(row.id))
            if delivered:
                done["sent"] += await ob.settle_stale(row.id, row.claim, OutboxStatus.SENT,
                                                      "worker died; server confirms receipt", now)
            elif delivered is False:
                done["resent"] += await ob.settle_stale(row.id, row.claim, OutboxStatus.PENDING,
                                                        "worker died; server never got it")
            else:
                done["unknown"] += await ob.settle_stale(
                    row.id, row.claim, OutboxStatus.UNKNOWN,
                    "worker died mid-send; may have been shown, not resent")
        done["flagged"] = await ob.flag_stuck(now, self.settings.push_stuck_seconds)
        if any(done.values()):
            log.warning("push reconcile: %s", done)
        return done


# ---------------------------------------------------------------------------- the inbox

INBOX_PREVIEW = 150


async def with_inbox(openid: str, reply: str | None, now: datetime) -> str | None:
    """Prefix a reply with the notices that could not be pushed, and mark them read."""
    if not reply:
        return reply
    rows, left = await ob.take_inbox(openid, now, limit=3)
    if not rows:
        return reply
    total = len(rows) + left
    lines = [f"你有{total}条新通知:"]
    for i, row in enumerate(rows, 1):
        text = row.text if len(row.text) <= INBOX_PREVIEW else row.text[:INBOX_PREVIEW] + "…"
        lines.append(f"【{i}】{text}")
    if left:
        lines.append(f"(还有{left}条,下次回复时显示)")
    return "\n".join(lines) + "\n\n" + reply
