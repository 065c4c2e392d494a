"""转人工 through the webhook: the resident's words relayed to the on-duty staff with a handle,
staff answers relayed back, either side ends it, idle conversations end by themselves, and
every message is kept. On SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio
from datetime import timedelta

from models.appeals import Appeal, run_appeal_deadlines
from models.handover import Handover, HandoverMessage, HandoverState, close_idle_handovers
from models.outbox import Outbox
from tests import helpers as h
from tests.conftest import run_transcript


async def told(openid: str) -> list[str]:
    return [r.text for r in await Outbox.filter(recipient=openid, kind="handover").order_by("id")]


async def test_relay_both_ways_with_a_handle_and_a_record(wx):
    await h.resident("o-hv", name="陈阿姨")
    await h.staff("o-duty", "汇侨北社区居委会", "社工小王")
    await h.staff("o-off", "汇侨北社区居委会", "社工小李")
    await h.staff("o-elsewhere", "江夏第一社区居委会", "别的社工")
    assert "值班" in await wx.say("o-duty", "值班")
    await run_transcript(wx, "o-hv", [
        ("转人工", r"已为您联系汇侨北社区的值班工作人员.*结束人工"),
        ("楼下的路灯坏了什么时候修好?", r"已转给工作人员"),
    ])
    assert not await Appeal.exists()  # relayed, not taken for a new appeal
    to_duty = await told("o-duty")
    assert "【转人工#1】陈阿姨需要人工服务" in to_duty[0]
    assert "陈阿姨:楼下的路灯坏了什么时候修好?" in to_duty[1] and "#1 内容" in to_duty[1]
    assert not await told("o-off") and not await told("o-elsewhere")

    assert "已发给#1" in await wx.say("o-duty", "#1 您好,明天上午就安排人修")
    assert "【汇侨北社区居委会 社工小王】您好,明天上午就安排人修" in (await told("o-hv"))[-1]
    assert "没有进行中的对话#1" in await wx.say("o-elsewhere", "#1 你好")
    assert "#1 陈阿姨" in await wx.say("o-duty", "会话")
    assert "已转给工作人员" in await wx.say("o-hv", "好的,谢谢")
    assert "好的,谢谢" in (await told("o-duty"))[-1]

    assert "人工对话已结束" in await wx.say("o-hv", "结束人工")
    assert "居民已结束对话" in (await told("o-duty"))[-1]
    handover = await Handover.get()
    assert handover.state == HandoverState.CLOSED and handover.closed_by == "resident"
    assert handover.staff_id is not None
    record = await HandoverMessage.filter(handover_id=handover.id).order_by("id").values_list("sender", "text")
    assert [s for s, _ in record] == ["resident", "staff", "resident", "system"]
    assert record[1][1] == "您好,明天上午就安排人修"
    before = await Outbox.filter(recipient="o-duty").count()
    await wx.say("o-hv", "最近有什么活动")  # no longer relayed
    assert await Outbox.filter(recipient="o-duty").count() == before


async def test_staff_ends_it_and_handles_are_unique_under_concurrency(wx):
    for i in range(3):
        await h.resident(f"o-hc{i}", name=f"居民{i}")
    await h.staff("o-hc-staff", "汇侨北社区居委会")  # nobody on duty: the committee is asked
    replies = await asyncio.gather(*(wx.say(f"o-hc{i}", "转人工") for i in range(3)))
    assert all("已为您联系" in r for r in replies)
    handovers = await Handover.filter(state=HandoverState.OPEN).order_by("handle")
    assert [x.handle for x in handovers] == [1, 2, 3]
    assert "您正在和工作人员对话" in await wx.say("o-hc0", "转人工")
    assert await Handover.filter(resident__openid="o-hc0").count() == 1
    target = await Handover.get(handle=2)
    openid = (await target.resident).openid
    assert "已结束" in await wx.say("o-hc-staff", "#2 结束")
    assert "工作人员已结束" in (await told(openid))[-1]
    assert "没有进行中的对话#2" in await wx.say("o-hc-staff", "#2 还在吗")
    # A new conversation may take the freed handle.
    await wx.say(openid, "人工")
    assert (await Handover.get(resident__openid=openid, state=HandoverState.OPEN)).handle == 2


async def test_idle_conversation_ends_by_itself(wx):
    await h.resident("o-idle1")
    await h.staff("o-idle-staff", "汇侨北社区居委会")
    await wx.say("o-idle1", "转人工")
    opened = (await Handover.get()).last_at
    assert await close_idle_handovers(opened + timedelta(minutes=29)) == 0
    done = await run_appeal_deadlines(opened + timedelta(minutes=31))
    assert done["handovers_closed"] == 1
    assert await close_idle_handovers(opened + timedelta(minutes=40)) == 0  # idempotent
    assert (await Handover.get()).closed_by == "idle"
    assert "自动结束" in (await told("o-idle1"))[-1]
    assert "自动结束" in (await told("o-idle-staff"))[-1]


async def test_no_staff_in_the_community_says_how_else_to_reach_it(wx):
    await h.resident("o-nostaff", community="江夏第二社区")
    reply = await wx.say("o-nostaff", "转人工")
    assert "暂时没有工作人员在线" in reply and "有事找居委" in reply
    assert not await Handover.exists()


async def test_unregistered_person_is_asked_to_register_first(wx):
    reply = await wx.say("o-stranger", "转人工")
    assert "登记" in reply and "社区" in reply
    assert not await Handover.exists()


async def test_bare_cancel_ends_the_conversation_and_otherwise_just_answers(wx):
    await h.resident("o-hc", name="黄伯")
    await h.staff("o-duty2", "汇侨北社区居委会", "社工小王")
    assert "值班" in await wx.say("o-duty2", "值班")
    await run_transcript(wx, "o-hc", [
        ("转人工", r"值班工作人员"),
        ("取消", r"人工对话已结束"),
        ("取消", r"没有正在办理的事"),  # nothing open any more: the plain answer
    ])
    assert (await Handover.get()).state == HandoverState.CLOSED


async def test_photo_and_location_are_relayed_during_a_conversation(wx):
    from tests.wx import xml_of
    await h.resident("o-hp", name="李姨")
    await h.staff("o-duty3", "汇侨北社区居委会", "社工小王")
    assert "值班" in await wx.say("o-duty3", "值班")
    await run_transcript(wx, "o-hp", [("转人工", r"值班工作人员")])
    photo = await wx.post_xml(xml_of("o-hp", "image", PicUrl="http://img.example/crack.jpg",
                                     MediaId="m9", MsgId=880001))
    assert "已转给工作人员" in photo.content
    spot = await wx.post_xml(xml_of("o-hp", "location", Location_X="23.18", Location_Y="113.27",
                                    Scale="15", Label="汇侨北3栋", MsgId=880002))
    assert "已转给工作人员" in spot.content
    to_staff = await told("o-duty3")
    assert "http://img.example/crack.jpg" in to_staff[-2] and "汇侨北3栋" in to_staff[-1]
