"""The async WeChat API client against the fake server: token sharing, typed errors, calls."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid

import pytest

from bot.config import ROOT, Settings
from bot.jobs import check_menu, push_menu
from bot.store import MemoryStore, RedisStore
from bot.wechat_api import (Busy, FieldTooLong, IPNotWhitelisted, NoPermission, NotFollowing,
                            OutcomeUnknown, QuotaExceeded, Refused, TokenInvalid, Unreachable,
                            WeChatAPI, WeChatError, WindowClosed)
from handlers.general import CLICK_KEYS
from tests.push_fixtures import fake  # noqa: F401


@pytest.fixture
async def store(backend, request):
    if backend == "sqlite":
        s = MemoryStore()
    else:
        s = RedisStore(request.getfixturevalue("redis_url"), f"yfltest:{uuid.uuid4().hex[:8]}:")
    yield s
    if isinstance(s, RedisStore):
        keys = [k async for k in s.redis.scan_iter(match=s.prefix + "*")]
        if keys:
            await s.redis.delete(*keys)
    await s.close()


def _settings(fake, **kw) -> Settings:
    return Settings(wechat_api_base=fake.url, wechat_appid="wxtest", wechat_appsecret="s",
                    wechat_timeout_seconds=kw.pop("timeout", 2.0), **kw)


async def test_concurrent_callers_share_one_token_request(fake, store):
    apis = [WeChatAPI(_settings(fake), store) for _ in range(20)]
    tokens = await asyncio.gather(*(a.token() for a in apis))
    assert len(set(tokens)) == 1 and fake.token_requests == 1
    for a in apis:
        await a.close()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_four_processes_with_a_cold_cache_make_one_token_request(fake, store):
    start_at = time.time() + 1.5  # every process waits for the same instant, then asks
    script = f"""
import asyncio, time, sys
sys.path.insert(0, {str(ROOT)!r})
from bot.config import Settings
from bot.store import RedisStore
from bot.wechat_api import WeChatAPI
async def main():
    store = RedisStore(sys.argv[1], sys.argv[2])
    api = WeChatAPI(Settings(wechat_api_base=sys.argv[3], wechat_appid="wxtest"), store)
    await asyncio.sleep(max(0, {start_at} - time.time()))
    print(await api.token())
    await api.close(); await store.close()
asyncio.run(main())
"""
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, url, store.prefix, fake.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE) for _ in range(4)]
    outs = [await p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [e.decode()[-500:] for _, e in outs]
    tokens = {o.decode().strip() for o, _ in outs}
    assert len(tokens) == 1 and fake.token_requests == 1


async def test_rejected_token_refreshes_once_and_retries_once(fake, store):
    api = WeChatAPI(_settings(fake), store)
    await api.send_text("o1", "你好")
    fake.expire_tokens()
    await api.send_text("o1", "再来")  # 42001 → one refresh → one retry
    assert fake.token_requests == 2
    assert [c for _, c in fake.refused] == [42001]
    assert [r.text for r in fake.sends()] == ["你好", "再来"]

    # A token rejected even after the refresh is an error, not an endless loop.
    original = fake._check_token
    fake._check_token = lambda token: 40001
    with pytest.raises(TokenInvalid):
        await api.send_text("o1", "坏")
    fake._check_token = original
    assert fake.token_requests <= 4
    await api.close()


async def test_a_second_process_uses_the_cached_token(fake, store):
    a, b = WeChatAPI(_settings(fake), store), WeChatAPI(_settings(fake), store)
    assert await a.token() == await b.token()
    assert fake.token_requests == 1
    # A stale copy in b's memory is replaced by the refreshed one without a second fetch.
    fake.expire_tokens()
    await a.send_text("o1", "一")
    await b.send_text("o1", "二")
    assert fake.token_requests == 2
    await a.close()
    await b.close()


@pytest.mark.parametrize("code,error", [
    (45009, QuotaExceeded), (45011, QuotaExceeded), (45015, WindowClosed), (45047, WindowClosed),
    (43101, Refused), (43004, NotFollowing), (48001, NoPermission), (40164, IPNotWhitelisted),
    (47003, FieldTooLong), (-1, Busy), (40003, WeChatError)])
@pytest.mark.parametrize("backend", ["sqlite"])
async def test_error_codes_become_typed_errors(fake, store, code, error):
    api = WeChatAPI(_settings(fake), store)
    fake.fail["custom"] = [code]
    with pytest.raises(error) as raised:
        await api.send_text("o1", "x")
    assert raised.value.code == code
    assert fake.sends() == []
    await api.close()


async def test_unreachable_and_timeouts_are_told_apart(fake, store):
    api = WeChatAPI(Settings(wechat_api_base="http://127.0.0.1:9", wechat_timeout_seconds=1), store)
    with pytest.raises(Unreachable):  # the request never left: safe to try again
        await api.send_text("o1", "x")
    await api.close()
    api = WeChatAPI(_settings(fake, timeout=0.3), store)
    await api.token()
    fake.latency = 1.0
    with pytest.raises(OutcomeUnknown):  # it may have been delivered: never retried here
        await api.send_text("o1", "x")
    await asyncio.sleep(0.8)
    assert len(fake.sends()) == 1  # it was, indeed
    await api.close()


async def test_template_subscription_user_info_and_menu(fake, store):
    api = WeChatAPI(_settings(fake), store)
    await api.send_template("o1", "TPL", {"first": {"value": "你好"}}, url="https://example.org")
    await api.send_subscribe("o1", "SUB", {"thing1": {"value": "活动提醒"}})
    await api.send_news("o1", "标题", "描述", "https://example.org")
    info = await api.user_info("o1")
    assert info["subscribe"] == 1 and "nickname" not in info
    kinds = [r.kind for r in fake.received]
    assert kinds == ["template", "subscribe", "custom", "user_info"]
    await api.close()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_menu_file_is_valid_and_pushed(fake, store):
    menu = json.loads((ROOT / "docs" / "menu.json").read_text(encoding="utf-8"))
    assert check_menu(menu, set(CLICK_KEYS)) == []
    assert [b["name"] for b in menu["button"]] == ["社区活动", "积分", "有事找居委"]
    bad = {"button": menu["button"] + [{"name": "多余", "type": "click", "key": "NOPE"}]}
    problems = check_menu(bad, set(CLICK_KEYS))
    assert any("1到3个" in p for p in problems) and any("NOPE" in p for p in problems)
    await push_menu(_settings(fake))
    [got] = [r for r in fake.received if r.kind == "menu"]
    assert got.body == menu


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_menu_push_command(fake, tmp_path, backend):
    env = dict(os.environ, WECHAT_API_BASE=fake.url, DATABASE_URL=f"sqlite://{tmp_path}/x.db")
    env.pop("REDIS_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "main.py", "menu", "push", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-800:]
    assert "自定义菜单已更新" in out.decode()
    assert [r.kind for r in fake.received] == ["menu"]
