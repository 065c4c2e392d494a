"""Periodic jobs and the push worker: in the webhook process by default, `main.py worker` in
production (several at once, safely).

Periodic jobs are a small registry of domain functions `fn(now)` found by name: a module
that is not there (yet) is skipped, so a domain plugs in by existing. Each job is idempotent
(its notices carry dedupe keys), so running one twice is harmless, merely wasteful.

With Redis the worker schedules them with saq (cron jobs with a unique key per queue: one run
per tick however many workers there are; failed runs retried by saq). saq works with the
current redis-py, unlike arq 0.28 which pins redis-py below 6. Without Redis (the embedded
default) a small asyncio loop runs them. The outbox itself is the queue of notices: rows are
written in the domain's own transaction and claimed with SKIP LOCKED (bot/dispatcher.py).
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable

from aiohttp import web

from bot.config import Settings
from bot.dispatcher import Dispatcher
from bot.store import Store, make_store
from bot.wechat_api import WeChatAPI
from models.clock import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    fn: Callable[[datetime], Awaitable[Any]]
    cron: str  # saq (Redis)
    every: int  # seconds, the in-process loop without Redis


# name -> (module, function, cron, seconds). Other domains' functions plug in by name.
CATALOG: dict[str, tuple[str, str, str, int]] = {
    "activity_reminders": ("models.activities", "write_reminders", "*/10 * * * *", 600),
    "code_expiry": ("models.rewards", "expire_codes", "*/5 * * * *", 300),
    "code_expiry_reminders": ("models.rewards", "write_expiry_reminders", "7 * * * *", 3600),
    "booking_reminders": ("models.services", "write_booking_reminders", "*/10 * * * *", 600),
    # Also ends idle 转人工 conversations (models.handover), so every 5 minutes.
    "appeal_deadlines": ("models.appeals", "run_appeal_deadlines", "*/5 * * * *", 300),
}


def load_jobs(catalog: dict | None = None) -> dict[str, PeriodicJob]:
    """The jobs whose module and function exist in this checkout."""
    jobs = {}
    for name, (module, function, cron, every) in (catalog or CATALOG).items():
        try:
            fn = getattr(importlib.import_module(module), function)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise  # the module exists but is broken: say so
            log.info("periodic job %s skipped: %s not present", name, module)
            continue
        except AttributeError:
            log.info("periodic job %s skipped: %s.%s not present", name, module, function)
            continue
        jobs[name] = PeriodicJob(name, fn, cron, every)
    return jobs


async def run_job(job: PeriodicJob, now: datetime | None = None) -> Any:
    started = time.perf_counter()
    result = await job.fn(now or utcnow())
    log.info("periodic job %s done in %.2f s: %s", job.name, time.perf_counter() - started, result)
    return result


# ---------------------------------------------------------------------------- without Redis

async def run_local(stop: asyncio.Event, jobs: dict[str, PeriodicJob], store: Store,
                    tick: float = 5.0) -> None:
    """Run each job every `job.every` seconds until `stop`; with a shared store, one process
    per period runs it (SET NX on the period number)."""
    last: dict[str, float] = {}
    while not stop.is_set():
        for job in jobs.values():
            if time.monotonic() - last.get(job.name, -1e18) < job.every:
                continue
            last[job.name] = time.monotonic()
            period = int(time.time() // job.every)
            if not await store.set_nx(f"job:{job.name}:{period}", "1", job.every * 2):
                continue
            try:
                await run_job(job)
            except Exception:  # noqa: BLE001 - the next period tries again
                log.exception("periodic job %s failed", job.name)
        try:
            await asyncio.wait_for(stop.wait(), tick)
        except asyncio.TimeoutError:
            pass


# ---------------------------------------------------------------------------- in the webhook

DISPATCHER = web.AppKey("dispatcher", Dispatcher)
WECHAT_API = web.AppKey("wechat_api", WeChatAPI)


def push_ctx(store_key):
    """A cleanup_ctx: the WeChat client always; the dispatcher loop and the periodic jobs when
    settings.push_in_process (on by default from the environment, off in a bare Settings)."""

    async def _push(app: web.Application):
        from bot import keys  # noqa: PLC0415
        settings: Settings = app[keys.SETTINGS]
        store: Store = app[store_key]
        api = WeChatAPI(settings, store)
        app[WECHAT_API] = api
        dispatcher = Dispatcher(settings, store, api)
        app[DISPATCHER] = dispatcher
        stop = asyncio.Event()
        tasks = []
        if settings.push_in_process:
            tasks = [asyncio.create_task(dispatcher.run(stop)),
                     asyncio.create_task(run_local(stop, load_jobs(), store))]
        yield
        dispatcher.stopping()
        stop.set()
        if tasks:
            await asyncio.wait(tasks, timeout=settings.wechat_timeout_seconds + 5)
        await api.close()

    return _push


# ---------------------------------------------------------------------------- the worker

def _saq_functions(jobs: dict[str, PeriodicJob]):
    from saq import CronJob  # noqa: PLC0415

    cron_jobs = []
    for job in jobs.values():
        async def fn(ctx, *, _job=job, **kwargs):
            return str(await run_job(_job))  # raises: saq retries it
        fn.__qualname__ = fn.__name__ = f"periodic_{job.name}"
        cron_jobs.append(CronJob(fn, cron=job.cron, retries=3, timeout=600))
    return cron_jobs


def saq_queue(settings: Settings):
    from saq import Queue  # noqa: PLC0415
    return Queue.from_url(settings.redis_url, name=f"{settings.redis_prefix}jobs")


async def run_worker(settings: Settings, *, ready: Callable[[], None] | None = None) -> None:
    """`main.py worker`: the dispatcher loop plus the periodic jobs, until SIGTERM/SIGINT.
    The batch in hand finishes; rows not yet sent are given back for the next worker."""
    from models import db  # noqa: PLC0415
    await db.init_db(settings.database_url)
    store = make_store(settings.redis_url, settings.redis_prefix)
    api = WeChatAPI(settings, store)
    dispatcher = Dispatcher(settings, store, api)
    stop = asyncio.Event()
    jobs = load_jobs()
    log.info("worker %s: periodic jobs %s", dispatcher.worker_id, ", ".join(jobs) or "none")
    push = asyncio.create_task(dispatcher.run(stop))
    try:
        if settings.redis_url:
            from saq import Worker  # noqa: PLC0415
            queue = saq_queue(settings)
            worker = Worker(queue, [], cron_jobs=_saq_functions(jobs), concurrency=4,
                            shutdown_grace_period_s=3)  # its upkeep loops sleep up to 60 s
            if ready:
                ready()
            await worker.start()  # returns on SIGTERM/SIGINT (saq installs the handlers)
            await queue.disconnect()
        else:
            loop = asyncio.get_running_loop()
            done = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, done.set)
            local = asyncio.create_task(run_local(done, jobs, store))
            if ready:
                ready()
            await done.wait()
            await local
    finally:
        dispatcher.stopping()
        stop.set()
        await asyncio.wait([push], timeout=settings.wechat_timeout_seconds + 5)
        await api.close()
        await store.close()
        await db.close_db()
        log.info("worker stopped")


# ---------------------------------------------------------------------------- the menu

MENU_FILE = "docs/menu.json"


def check_menu(menu: dict, known_keys: set[str]) -> list[str]:
    """WeChat's menu rules (3 buttons, 5 sub-buttons, key <= 128 bytes) and our keys."""
    problems = []
    buttons = menu.get("button") or []
    if not 1 <= len(buttons) <= 3:
        problems.append(f"一级菜单需1到3个,现在{len(buttons)}个")
    for b in buttons:
        subs = b.get("sub_button") or []
        if len(subs) > 5:
            problems.append(f"“{b.get('name')}”的子菜单超过5个")
        for s in subs or [b]:
            key = s.get("key", "")
            if s.get("type") == "click":
                if len(key.encode()) > 128:
                    problems.append(f"菜单键{key}超过128字节")
                if key not in known_keys:
                    problems.append(f"菜单键{key}没有对应的功能(handlers/general.py CLICK_KEYS)")
    return problems


async def push_menu(settings: Settings, path: str = MENU_FILE) -> dict:
    import json  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from bot.config import ROOT  # noqa: PLC0415
    from handlers.general import CLICK_KEYS  # noqa: PLC0415

    file = Path(path) if Path(path).is_absolute() else ROOT / path
    menu = json.loads(file.read_text(encoding="utf-8"))
    problems = check_menu(menu, set(CLICK_KEYS))
    if problems:
        raise ValueError(";".join(problems))
    store = make_store(settings.redis_url, settings.redis_prefix)
    api = WeChatAPI(settings, store)
    try:
        return await api.create_menu(menu)
    finally:
        await api.close()
        await store.close()
