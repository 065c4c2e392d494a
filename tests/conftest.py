"""Fixtures: the app over real HTTP on SQLite + memory and on PostgreSQL + Redis.

PostgreSQL and Redis are real servers (make test starts them). Under CI=true an unreachable
server fails the run; elsewhere its tests are skipped with the reason.
"""
from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
from redis.asyncio import Redis

from bot.app import init_app
from bot.config import Settings
from models.db import recreate_database, truncate_all
from models.demo import seed_places
from tests.wx import WeChat

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/yunfanglin_test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TOKEN = "spamtest"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx2c2769f8efd9abc2"


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def _require(url: str, port: int, what: str) -> None:
    if not _reachable(url, port):
        message = f"{what} is not reachable at {url}; run `make test` (it starts it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    _require(PG_URL, 5432, "PostgreSQL")
    asyncio.run(recreate_database(PG_URL))  # the schema is always the declared one
    return PG_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    _require(REDIS_URL, 6379, "Redis")
    return REDIS_URL


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request) -> str:
    return request.param


def make_settings(backend: str, tmp_path, request, **overrides) -> Settings:
    base = dict(wechat_token=TOKEN, wechat_aes_key=AES_KEY, wechat_appid=APPID,
                wechat_api_base="http://127.0.0.1:9", reply_budget_seconds=4.0)
    if backend == "sqlite":
        base.update(database_url=f"sqlite://{tmp_path}/test.sqlite3", redis_url=None)
    else:
        base.update(database_url=request.getfixturevalue("postgres_url"),
                    redis_url=request.getfixturevalue("redis_url"),
                    redis_prefix=f"yfltest:{uuid.uuid4().hex[:8]}:")
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def settings(backend, tmp_path, request) -> Settings:
    return make_settings(backend, tmp_path, request)


async def _drop_prefix(url: str, prefix: str) -> None:
    redis = Redis.from_url(url)
    try:
        keys = [k async for k in redis.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@pytest.fixture
async def app_client(aiohttp_client, settings):
    """Start the real app (database, store, jieba) and serve it on a loopback port."""
    clients = []

    async def start(settings_: Settings = settings, seed: bool = True):
        client = await aiohttp_client(init_app(settings_))
        if seed:
            await truncate_all()
            await seed_places()
        clients.append(settings_)
        return client

    yield start
    for s in clients:
        if s.redis_url:
            await _drop_prefix(s.redis_url, s.redis_prefix)


@pytest.fixture
async def client(app_client):
    return await app_client()


@pytest.fixture
def wx(client, settings) -> WeChat:
    return WeChat(client, settings.wechat_token, settings.wechat_aes_key, settings.wechat_appid)


async def run_transcript(wx: WeChat, openid: str, lines: list[tuple[str, str]]) -> list[str]:
    """Say each line and check the reply matches its pattern (re.search, DOTALL)."""
    replies = []
    for said, expected in lines:
        reply = await wx.say(openid, said)
        assert reply is not None, f"no reply to {said!r}"
        assert re.search(expected, reply, re.S), f"{said!r} → {reply!r} does not match {expected!r}"
        replies.append(reply)
    return replies


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgres"])
def cli_database_url(request, tmp_path) -> str:
    """A fresh database of its own for a test that runs main.py as an operator would."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/cli.sqlite3"
    url = request.getfixturevalue("postgres_url") + "_cli"
    asyncio.run(recreate_database(url))
    return url


def run_cli(url: str, *args: str, stdin: str | None = None, ok: bool = True
            ) -> subprocess.CompletedProcess:
    """`python main.py ARGS` against `url` (no Redis); asserts success unless ok=False."""
    env = {**os.environ, "DATABASE_URL": url}
    env.pop("REDIS_URL", None)
    proc = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc
