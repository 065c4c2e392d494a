"""One resident's turn: take their lock, load state, run the engine, save state.

Also where a reply that missed WeChat's deadline is handed to the outbox.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
import logging
from datetime import timedelta
from zoneinfo import ZoneInfo

from bot.config import Settings
from bot.dispatcher import with_inbox
from bot.store import LockTimeout, Store
from handlers import dispatch
from handlers.engine import Ctx, EngineConfig, Incoming, settle_attention
from models.outbox import enqueue, notice
from models.residents import sender, touch_interaction

log = logging.getLogger(__name__)

# handle() returns this for a message already claimed by an earlier delivery (a WeChat retry).
DUPLICATE = object()
# The reply cache holds this when the webhook already answered `success` (the reply goes out
# through the outbox): a stray retry must not get it in-band as well.
LATE = "\x00late"


@dataclass
class Delivery:
    """One delivery of a message: its dedupe key, and whether the webhook gave up waiting."""

    key: str
    late: bool = False
SORRY = "抱歉,系统开小差了,刚才的话没有办成。请稍后再试,或回复“转人工”。"
BUSY = "您刚才的消息还在处理中,请稍等片刻再发。"


class Conversation:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        # Dialogue state is kept a day past the idle limit, so that its expiry can be told.
        self.state_ttl = settings.state_idle_seconds + 86400
        self.config = EngineConfig(state_idle_seconds=settings.state_idle_seconds,
                                   max_misses=settings.max_misses, tz=ZoneInfo(settings.timezone),
                                   hold_seconds=settings.signup_hold_seconds)
        self.touch_interval = timedelta(seconds=settings.touch_interval_seconds)

    async def handle(self, incoming: Incoming, delivery: Delivery | None = None):
        """The reply (None for none), or DUPLICATE if the delivery's key was already claimed.

        The claim is made under the resident's lock, so that a burst is handled in arrival
        order and a retry never runs the handler again; the reply is cached for retries in
        the same round trip that saves the state and releases the lock. Never raises: a
        resident gets an apology, never a stack trace.
        """
        try:
            # The state is read only once the resident's lock is held, and saved before release.
            async with self.store.guard("openid:" + incoming.openid, "state:" + incoming.openid,
                                        timeout=self.settings.lock_timeout_seconds,
                                        wait=self.settings.lock_timeout_seconds,
                                        claim=("dedupe:" + delivery.key, self.settings.dedupe_ttl_seconds)
                                        if delivery else None) as guarded:
                if not guarded.claimed:
                    return DUPLICATE
                state = json.loads(guarded.value) if guarded.value else {}
                reply = await self._turn(incoming, state)
                guarded.save(json.dumps(state, ensure_ascii=False), self.state_ttl)
                if delivery:
                    guarded.also("reply:" + delivery.key, LATE if delivery.late else reply or "",
                                  self.settings.dedupe_ttl_seconds)
                return reply
        except LockTimeout:
            log.warning("lock timeout for %s", incoming.openid)
            return BUSY
        except Exception:  # noqa: BLE001 - the last line of defence for the resident
            log.exception("handler failed for %s kind=%s", incoming.openid, incoming.kind)
            return SORRY

    async def _turn(self, incoming: Incoming, state: dict) -> str | None:
        resident = await sender(incoming.openid)
        ctx = Ctx(incoming, resident, state, self.config)
        reply = await dispatch(ctx)
        if ctx.attention:  # only then can notices be waiting in the inbox
            # Notices that could not be pushed are shown before the reply.
            reply = await with_inbox(incoming.openid, reply, incoming.now)
            await settle_attention(ctx)
        if incoming.event != "unsubscribe":
            await touch_interaction(ctx.resident or resident, incoming.now, self.touch_interval)
        state["updated"] = incoming.now.timestamp()
        return reply

    async def send_later(self, openid: str, key: str, text: str | None, kind: str) -> None:
        """A reply the webhook could not give in-band (`late_reply`: past the budget;
        `reply_part`: beyond what one reply shows) goes out as a customer-service message."""
        if text:
            await enqueue(notice(openid, kind, text, f"{kind}:{key}"))
            log.info("%s for %s queued", kind, openid)
