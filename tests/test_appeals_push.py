"""The appeal story's notices delivered: the outbox drained by the push dispatcher into the
fake WeChat API, each to its recipient, exactly once."""
from __future__ import annotations

from models.outbox import Outbox
from tests.push_fixtures import fake, push  # noqa: F401  (fixtures)
from tests.test_appeals import seed_story


async def test_seed_story_notices_reach_the_fake_wechat(push):  # noqa: F811
    rows = await seed_story(push.wx)
    dispatcher = push.dispatcher()
    try:
        await dispatcher.drain()
        await dispatcher.drain()  # a second pass sends nothing again
    finally:
        await dispatcher.api.close()
    # Both people talked to the bot just now: customer-service messages, inside the window.
    sent = push.fake.sends("custom")
    assert len(sent) == len(rows) == len(push.fake.sends())
    # Sent concurrently, so compared as multisets; each text reached its own recipient.
    assert sorted((s.openid, s.text) for s in sent) == sorted((r.recipient, r.text) for r in rows)
    assert all(r.status == "sent" for r in await Outbox.all())
    li = [s.text for s in sent if s.openid == "o-li"]
    assert sum("已办结" in t and "打分" in t for t in li) == 2
    assert any("居民答复" in s.text and "正门" in s.text for s in sent if s.openid == "o-huang")
    assert any("重办(居民评2分)" in s.text for s in sent if s.openid == "o-huang")
