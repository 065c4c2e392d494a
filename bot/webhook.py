"""`/wechat`: verify, decrypt, parse, dedupe, answer within the deadline.

A message is acted on at most once however often WeChat retries it: the first delivery
claims its key with SET NX; a retry waits for that delivery's reply instead of running the
handler again. Past the reply budget the webhook answers `success` and the reply goes to
the outbox as a customer-service message.
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from bot import keys
from bot.conversation import DUPLICATE, LATE, Delivery
from bot.protocol import Refused, dedupe_key, parse, render_text, split_reply, to_incoming, verify

log = logging.getLogger(__name__)

SUCCESS = "success"


async def verify_get(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    try:
        verify(settings.wechat_token, request.query, settings.replay_window_seconds)
    except Refused as exc:
        log.warning("GET /wechat refused: %s", exc)
        raise web.HTTPForbidden(text="forbidden") from None
    return web.Response(text=request.query.get("echostr", ""))


async def receive(request: web.Request) -> web.Response:
    app = request.app
    settings = app[keys.SETTINGS]
    try:
        verify(settings.wechat_token, request.query, settings.replay_window_seconds)
    except Refused as exc:
        log.warning("POST /wechat refused: %s", exc)
        raise web.HTTPForbidden(text="forbidden") from None
    if request.content_length and request.content_length > settings.max_body_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=settings.max_body_bytes,
                                            actual_size=request.content_length)
    body = await request.read()  # the app's client_max_size refuses larger bodies (413)

    codec = app[keys.CODEC]
    try:
        xml, encrypted = codec.decode(body, request.query)
    except Refused as exc:
        log.warning("POST /wechat refused: %s", exc)
        raise web.HTTPForbidden(text="forbidden") from None
    except Exception as exc:  # noqa: BLE001 - junk ciphertext is answered, not crashed on
        log.warning("undecryptable body (%d bytes): %s", len(body), type(exc).__name__)
        return web.Response(text=SUCCESS)
    try:
        msg = parse(xml)
    except Exception as exc:  # noqa: BLE001 - wechatpy raises several types on junk XML
        log.warning("unparseable body (%d bytes): %s", len(body), type(exc).__name__)
        return web.Response(text=SUCCESS)

    reply = await answer(app, msg)
    if not reply:
        return web.Response(text=SUCCESS)
    xml = render_text(msg, reply)
    return web.Response(text=codec.encode(xml, encrypted, request.query.get("nonce", "")),
                        content_type="application/xml")


async def answer(app: web.Application, msg) -> str | None:
    """The reply text for `msg`, or None for `success`; runs the handler at most once."""
    settings = app[keys.SETTINGS]
    store = app[keys.STORE]
    conversation = app[keys.CONVERSATION]
    key = dedupe_key(msg)
    budget = settings.reply_budget_seconds
    loop = asyncio.get_running_loop()
    started = loop.time()

    # Created before any await: the resident's lock is FIFO, so a burst keeps its arrival
    # order; the dedupe claim is made under that lock (see Conversation.handle).
    incoming = to_incoming(msg)
    delivery = Delivery(key)
    task = asyncio.create_task(conversation.handle(incoming, delivery))
    done, _ = await asyncio.wait({task}, timeout=budget)
    if task in done:
        reply = task.result()
        if reply is DUPLICATE:  # a retry: the first delivery's reply, once it is there
            cached = await store.wait_for("reply:" + key, max(0.0, budget - (loop.time() - started)))
            log.info("retry of %s answered from %s", key, "cache" if cached else "nothing yet")
            return None if cached in (None, "", LATE) else _first_and_rest(
                cached, settings.reply_max_bytes)[0]
        first, rest = _first_and_rest(reply, settings.reply_max_bytes)
        for i, part in enumerate(rest, 1):  # the parts WeChat cannot show in one reply
            await conversation.send_later(incoming.openid, f"{key}:{i}", part, "reply_part")
        return first

    # Past the budget: answer `success` now; the reply follows through the outbox.
    delivery.late = True  # the turn's release caches LATE, not the reply
    background = app[keys.BACKGROUND]
    late = asyncio.create_task(_late(conversation, store, settings, incoming.openid, key, task))
    background.add(late)
    late.add_done_callback(background.discard)
    return None


def _first_and_rest(reply: str | None, max_bytes: int) -> tuple[str | None, list[str]]:
    if not reply:
        return None, []
    parts = split_reply(reply, max_bytes)
    return parts[0], parts[1:]


async def _late(conversation, store, settings, openid: str, key: str, task: asyncio.Task) -> None:
    try:
        reply = await task
        if reply is DUPLICATE:
            return
        # Retries from now on answer `success`: the reply goes out once, through the outbox.
        await store.set("reply:" + key, LATE, settings.dedupe_ttl_seconds)
        await conversation.send_later(openid, key, reply, "late_reply")
    except Exception:  # noqa: BLE001
        log.exception("late reply for %s could not be queued", openid)
