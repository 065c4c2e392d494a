"""One resident's turn: take their lock, load state, run the engine, save state.

Also where a reply that missed WeChat's deadline is handed to the outbox.
"""
from __future__ import annotations

import json
import logging
from datetime import timedelta
from zoneinfo import ZoneInfo

from bot.config import Settings
from bot.dispatcher import with_inbox
from bot.store import LockTimeout, Store
from handlers import dispatch
from handlers.engine import Ctx, EngineConfig, Incoming
from models.outbox import enqueue, notice
from models.residents import get_or_create_resident, touch_interaction

log = logging.getLogger(__name__)

SORRY = "抱歉,系统开小差了,刚才的话没有办成。请稍后再试,或回复“转人工”。"
BUSY = "您刚才的消息还在处理中,请稍等片刻再发。"


class StateStore:
    """Dialogue state as JSON with a TTL; kept a day past the idle limit so expiry can be told."""

    def __init__(self, store: Store, idle_seconds: int) -> None:
        self.store = store
        self.ttl = idle_seconds + 86400

    async def load(self, openid: str) -> dict:
        raw = await self.store.get("state:" + openid)
        return json.loads(raw) if raw else {}

    async def save(self, openid: str, state: dict) -> None:
        await self.store.set("state:" + openid, json.dumps(state, ensure_ascii=False), self.ttl)


class Conversation:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.states = StateStore(store, settings.state_idle_seconds)
        self.config = EngineConfig(state_idle_seconds=settings.state_idle_seconds,
                                   max_misses=settings.max_misses, tz=ZoneInfo(settings.timezone),
                                   hold_seconds=settings.signup_hold_seconds)
        self.touch_interval = timedelta(seconds=settings.touch_interval_seconds)

    async def handle(self, incoming: Incoming) -> str | None:
        """Never raises: a resident gets an apology, never a stack trace."""
        try:
            async with self.store.lock("openid:" + incoming.openid,
                                       timeout=self.settings.lock_timeout_seconds,
                                       wait=self.settings.lock_timeout_seconds):
                return await self._turn(incoming)
        except LockTimeout:
            log.warning("lock timeout for %s", incoming.openid)
            return BUSY
        except Exception:  # noqa: BLE001 - the last line of defence for the resident
            log.exception("handler failed for %s kind=%s", incoming.openid, incoming.kind)
            return SORRY

    async def _turn(self, incoming: Incoming) -> str | None:
        state = await self.states.load(incoming.openid)  # loaded only after the lock is held
        resident = await get_or_create_resident(incoming.openid)
        ctx = Ctx(incoming, resident, state, self.config)
        reply = await dispatch(ctx)
        # Notices that could not be pushed wait in the inbox: shown before the reply.
        reply = await with_inbox(incoming.openid, reply, incoming.now)
        if incoming.event != "unsubscribe":
            await touch_interaction(ctx.resident or resident, incoming.now, self.touch_interval)
        state["updated"] = incoming.now.timestamp()
        await self.states.save(incoming.openid, state)
        return reply

    async def deliver_late(self, openid: str, key: str, reply: str | None) -> None:
        """The webhook already answered `success`: the reply becomes a customer-service message."""
        if reply:
            await enqueue(notice(openid, "late_reply", reply, f"late:{key}"))
            log.info("late reply for %s queued (%.0f ms budget missed)", openid,
                     self.settings.reply_budget_seconds * 1000)
