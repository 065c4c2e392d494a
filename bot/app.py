"""The application factory: each resource is one cleanup_ctx."""
from __future__ import annotations

import asyncio
import gc
import logging
import os

from aiohttp import web

from bot import keys
from bot.config import Settings
from bot.conversation import Conversation
from bot.jobs import push_ctx
from bot.protocol import Codec
from bot.store import make_store
from bot.webhook import receive, verify_get
from models import db
from nlp import tokenizer

log = logging.getLogger(__name__)


async def _database(app: web.Application):
    await db.init_db(app[keys.SETTINGS].database_url)
    yield
    await db.close_db()


async def _store(app: web.Application):
    settings = app[keys.SETTINGS]
    store = make_store(settings.redis_url, settings.redis_prefix)
    app[keys.STORE] = store
    app[keys.CONVERSATION] = Conversation(settings, store)
    yield
    await store.close()


async def _nlp(app: web.Application):
    # jieba takes about a second to load: once, here, never inside a request.
    from handlers.vocabulary import catalog_words  # noqa: PLC0415 - needs the database up
    tokenizer.load(await catalog_words())
    # jieba's dictionary and the other start-up objects (about 250,000) live as long as the
    # process: keep them out of the garbage collector's full passes, which otherwise scan
    # them all (about 100 ms, a pause every resident waiting at that moment would feel).
    gc.collect()
    gc.freeze()
    yield


async def _background(app: web.Application):
    app[keys.BACKGROUND] = set()
    yield
    pending = list(app[keys.BACKGROUND])
    if pending:  # late replies still being worked on: let them reach the outbox
        await asyncio.wait(pending, timeout=app[keys.SETTINGS].lock_timeout_seconds)


async def healthz(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    report = {"database": "ok", "redis": "not configured", "store": request.app[keys.STORE].kind,
              "pid": os.getpid()}
    status = 200
    try:
        await db.ping()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        report["database"], status = f"error: {type(exc).__name__}", 503
    if settings.redis_url:
        try:
            await request.app[keys.STORE].ping()
            report["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            report["redis"], status = f"error: {type(exc).__name__}", 503
    report["status"] = "ok" if status == 200 else "degraded"
    return web.json_response(report, status=status)


def init_app(settings: Settings | None = None) -> web.Application:
    settings = settings or Settings.from_env()
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[keys.SETTINGS] = settings
    app[keys.CODEC] = Codec(settings.wechat_token, settings.wechat_aes_key, settings.wechat_appid)
    # Order matters: cleanup runs in reverse, so background work finishes before the
    # store and the database close.
    app.cleanup_ctx.extend([_database, _store, _nlp, _background])
    # The WeChat API client, and (settings.push_in_process) the push dispatcher and the
    # periodic jobs; stopped first on shutdown.
    app.cleanup_ctx.append(push_ctx(keys.STORE))
    app.router.add_get("/wechat", verify_get)
    app.router.add_post("/wechat", receive)
    app.router.add_get("/healthz", healthz)
    return app
