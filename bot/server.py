"""Running the webhook: one process, or N processes sharing one port (SO_REUSEPORT)."""
from __future__ import annotations

import logging
import multiprocessing
import signal
import time

import uvloop
from aiohttp import web

from bot.app import init_app
from bot.config import Settings
from bot.logs import setup_logging

log = logging.getLogger(__name__)


def _serve_one(settings: Settings, reuse_port: bool) -> None:
    setup_logging()
    started = time.perf_counter()

    async def announce(app: web.Application) -> None:
        log.info("ready in %.2f s on http://%s:%d/wechat (store=%s, database=%s)",
                 time.perf_counter() - started, settings.host, settings.port,
                 "redis" if settings.redis_url else "memory", settings.database_url.split("://")[0])

    app = init_app(settings)
    app.on_startup.append(announce)
    # uvloop: a faster event loop for the same code (every message pays the loop's overhead).
    web.run_app(app, host=settings.host, port=settings.port, reuse_port=reuse_port or None,
                print=None, access_log=None, loop=uvloop.new_event_loop())


def serve(settings: Settings, workers: int = 1) -> None:
    if workers <= 1:
        _serve_one(settings, reuse_port=False)
        return
    if not settings.redis_url or settings.database_url.startswith("sqlite"):
        raise SystemExit("--workers > 1 needs REDIS_URL and a PostgreSQL DATABASE_URL: "
                         "in-memory state and SQLite cannot be shared between processes.")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_serve_one, args=(settings, True), daemon=False)
             for _ in range(workers)]
    for p in procs:
        p.start()

    def stop(signum, frame):  # forward to the workers, which close cleanly
        for p in procs:
            if p.is_alive():
                p.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in procs:
        p.join()
