"""Fixtures for the push tests: a fake WeChat API on loopback and the app pointed at it.

Import them into a test module: `from tests.push_fixtures import fake, push  # noqa: F401`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from bot import keys
from bot.config import Settings
from bot.dispatcher import Dispatcher
from bot.jobs import WECHAT_API
from bot.store import Store
from bot.wechat_api import WeChatAPI
from models.clock import utcnow
from models.outbox import Outbox, enqueue, notice
from models.places import Community
from models.residents import Resident, register_resident
from tests.conftest import make_settings
from tests.fake_wechat import FakeWeChat
from tests.wx import WeChat


@pytest.fixture
async def fake():
    server = FakeWeChat()
    await server.start()
    yield server
    await server.stop()


@dataclass
class Push:
    settings: Settings
    client: object
    fake: FakeWeChat
    wx: WeChat
    apis: list = field(default_factory=list)

    @property
    def app(self):
        return self.client.server.app

    @property
    def store(self) -> Store:
        return self.app[keys.STORE]

    @property
    def api(self) -> WeChatAPI:
        return self.app[WECHAT_API]

    def dispatcher(self, **changes) -> Dispatcher:
        settings = self.settings.with_(**changes) if changes else self.settings
        api = WeChatAPI(settings, self.store)
        self.apis.append(api)
        return Dispatcher(settings, self.store, api)

    async def resident(self, openid: str, *, seen_hours_ago: float | None = 1,
                       community: str = "汇侨北社区") -> Resident:
        c = await Community.get(name=community)
        r = await register_resident(openid, c, "测试居民", "13800000000")
        if seen_hours_ago is not None:
            r.last_interaction_at = utcnow() - timedelta(hours=seen_hours_ago)
            await Resident.filter(id=r.id).update(last_interaction_at=r.last_interaction_at)
        return r

    async def notice(self, openid: str, text: str, key: str, kind: str = "reminder") -> None:
        await enqueue(notice(openid, kind, text, key))

    async def rows(self) -> dict[str, Outbox]:
        return {r.dedupe_key: r for r in await Outbox.all()}


def push_settings(backend, tmp_path, request, fake: FakeWeChat, **overrides) -> Settings:
    base = dict(wechat_api_base=fake.url, wechat_timeout_seconds=2.0, push_backoff_seconds=0.0,
                push_poll_seconds=0.05)
    base.update(overrides)
    return make_settings(backend, tmp_path, request, **base)


@pytest.fixture
async def push(backend, tmp_path, request, fake, app_client):
    """The app (push loop off: tests drive the dispatcher) against the fake server."""
    settings = push_settings(backend, tmp_path, request, fake)
    client = await app_client(settings)
    p = Push(settings, client, fake, WeChat(client, settings.wechat_token,
                                            settings.wechat_aes_key, settings.wechat_appid))
    yield p
    for api in p.apis:
        await api.close()
