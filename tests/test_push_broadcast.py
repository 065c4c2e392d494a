"""Broadcasts through the webhook: staff announce, residents opt out and in, reach by channel,
and the periodic-job registry."""
from __future__ import annotations

from datetime import timedelta

import pytest

from bot.jobs import CATALOG, load_jobs, run_job
from models.broadcasts import Broadcast, broadcast_activity, broadcast_reach
from models.outbox import Outbox, OutboxStatus
from models.residents import Resident
from tests import helpers as h
from tests.conftest import run_transcript
from tests.push_fixtures import fake, push  # noqa: F401


async def _neighbourhood(push):
    """Four residents of 汇侨北 (one in the window, one not, one opted out, one unfollowed)
    and one of 江夏第一 (another community, another street)."""
    await push.resident("o-a", seen_hours_ago=1)
    await push.resident("o-b", seen_hours_ago=None)
    await push.resident("o-off", seen_hours_ago=1)
    await Resident.filter(openid="o-off").update(notices_enabled=False)
    await push.resident("o-gone", seen_hours_ago=1)
    await Resident.filter(openid="o-gone").update(active=False)
    await push.resident("o-far", seen_hours_ago=1, community="江夏第一社区")
    await h.staff("s-wang")


async def test_staff_announce_an_activity_and_see_its_reach(push):
    await _neighbourhood(push)
    act = await h.activity("亲子阅读会", capacity=20)
    await run_transcript(push.wx, "s-wang", [
        (f"通知 {act.id}", r"亲子阅读会.*通知本社区2位.*是"),
        ("是", r"已安排通知2位居民.*通知编号\d+"),
    ])
    rows = await Outbox.filter(kind="broadcast").order_by("recipient")
    assert [r.recipient for r in rows] == ["o-a", "o-b"]
    assert "亲子阅读会" in rows[0].text and "退订通知" in rows[0].text

    await push.dispatcher(push_templates={"broadcast": "TPL-ACT"}).drain()
    assert {(r.openid, r.kind) for r in push.fake.sends()} == {("o-a", "custom"),
                                                              ("o-b", "template")}
    reply = await push.wx.say("s-wang", "通知结果")
    assert "共2人,已送达2人" in reply and "客服消息:1人" in reply and "模板消息:1人" in reply

    # Announcing it again tells nobody twice.
    await run_transcript(push.wx, "s-wang", [
        (f"通知 {act.id}", r"已通知过的人不会重复收到"),
        ("是", r"已安排通知0位居民,2位之前已通知过"),
    ])
    assert await Outbox.filter(kind="broadcast").count() == 2


async def test_staff_cannot_announce_another_communitys_activity(push):
    await _neighbourhood(push)
    act = await h.activity("江夏的活动", community="江夏第一社区")
    reply = await push.wx.say("s-wang", f"通知 {act.id}")
    assert "只能通知本社区" in reply
    assert await Outbox.filter(kind="broadcast").count() == 0
    await run_transcript(push.wx, "s-wang", [
        ("通知", r"要通知哪个活动"),
        ("99999", r"没有找到这个活动"),
        ("取消", r"已退出"),
    ])


async def test_a_street_broadcast_reaches_every_community_of_the_street(push):
    await _neighbourhood(push)
    await push.resident("o-jx2", seen_hours_ago=1, community="江夏第二社区")
    street_staff = await h.staff("s-street", org="黄石街道办事处")
    from models.activities import Activity
    from models.places import Street
    street = await Street.get(name="黄石街")
    act = await h.activity("街道运动会", community="江夏第一社区")
    await Activity.filter(id=act.id).update(community_id=None, street_id=street.id)
    # Committee staff of one community may not announce a street-wide activity.
    assert "只能通知" in await push.wx.say("s-wang", f"通知 {act.id}")
    b = await broadcast_activity(act.id, street_staff)
    people = set(await Outbox.filter(broadcast_id=b.id).values_list("recipient", flat=True))
    # 江夏第一 and 江夏第二 are on 黄石街; 汇侨北 is not.
    assert people == {"o-far", "o-jx2"}


async def test_residents_turn_notices_off_and_on(push):
    await _neighbourhood(push)
    await run_transcript(push.wx, "o-a", [
        ("退订通知", r"已为您退订.*仍会通知您.*开启通知"),
        ("退订通知", r"已经退订"),
    ])
    act = await h.activity("书法班")
    b = await broadcast_activity(act.id, None)
    assert set(await Outbox.filter(broadcast_id=b.id).values_list("recipient", flat=True)) == {
        "o-b", "s-wang"}  # not o-a any more (s-wang is staff and a resident of 汇侨北 too)
    await run_transcript(push.wx, "o-a", [("开启通知", r"已为您开启")])
    assert (await Resident.get(openid="o-a")).notices_enabled
    b2 = await broadcast_activity(act.id, None)
    assert b2.queued == 1 and b2.audience == 3  # o-a now; the others were told already


async def test_broadcast_outside_the_window_without_templates_waits_in_the_inbox(push):
    await _neighbourhood(push)
    act = await h.activity("义诊")
    b = await broadcast_activity(act.id, None)
    await push.dispatcher().drain()
    reach = await broadcast_reach(b.id)
    assert reach.by_channel == {"custom": 1} and reach.inbox == 2  # o-b and s-wang
    reply = await push.wx.say("o-b", "菜单")
    assert reply.startswith("你有1条新通知") and "义诊" in reply
    reach = await broadcast_reach(b.id)
    assert reach.by_channel == {"custom": 1, "inbox": 1} and reach.inbox == 1


async def test_periodic_jobs_registry_wires_what_exists(push):
    jobs = load_jobs()
    assert "activity_reminders" in jobs
    missing = load_jobs({"x": ("models.not_there", "fn", "* * * * *", 60),
                         "y": ("models.activities", "not_there", "* * * * *", 60)})
    assert missing == {}
    # The reminder job writes a notice the day before, once however often it runs.
    await push.resident("o-r", seen_hours_ago=1)
    act = await h.activity("明天的讲座", start_in=timedelta(hours=20))
    from models.activities import Signup, SignupStatus
    r = await Resident.get(openid="o-r")
    await Signup.create(activity=act, resident=r, participant_key="self", participant_name="测试居民",
                        status=SignupStatus.CONFIRMED)
    await run_job(jobs["activity_reminders"])
    await run_job(jobs["activity_reminders"])
    await push.dispatcher().drain()
    [got] = push.fake.sends()
    assert got.openid == "o-r" and "明天的讲座" in got.text


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_catalog_names_the_other_domains(push):
    assert {m for m, *_ in CATALOG.values()} >= {"models.activities", "models.rewards",
                                                  "models.appeals"}
    # Every domain function named in the catalog exists: a rename elsewhere fails here.
    assert set(load_jobs()) == set(CATALOG)
