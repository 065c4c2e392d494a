"""Appeals through the webhook: filing (photo, location, category, hidden identity,
duplicates), staff handling, relayed replies, rating and redo, deadlines with an injected
clock, authorisation, figures. Every test runs on SQLite and on PostgreSQL."""
from __future__ import annotations

import asyncio
import itertools
import re
import time
from datetime import date, datetime, timedelta, timezone

import chinese_calendar
import pytest
from openpyxl import load_workbook

from models.appeals import (TRANSITIONS, Action, Appeal, AppealError, AppealEvent, AppealState,
                            NewAppeal, accept, add_working_days, file_appeal, is_working_day,
                            rate, resolve, run_appeal_deadlines, set_route)
from models.appeals_admin import report_appeals
from models.clock import LOCAL_TZ
from models.outbox import Outbox
from models.places import Community, Organisation
from models.points import PointsEntry, ledger_mismatches
from models.residents import Resident
from nlp.appeals import CATEGORIES
from tests import helpers as h
from tests.conftest import run_transcript
from tests.wx import xml_of

SEED = ("区人民医院门口原有通行道路因建设工程封闭,自行车与电动车均挤在人行道上通过,"
        "现场道路拥挤,存在交通安全风险。")
_ids = itertools.count(int(time.time() * 1000) + 7_000_000)


async def photo(wx, openid: str, url: str) -> str | None:
    xml = xml_of(openid, "image", PicUrl=url, MediaId=f"media-{next(_ids)}", MsgId=next(_ids))
    return (await wx.post_xml(xml)).content


async def location(wx, openid: str, label: str) -> str | None:
    xml = xml_of(openid, "location", Location_X="23.18", Location_Y="113.27", Scale="15",
                 Label=label, MsgId=next(_ids))
    return (await wx.post_xml(xml)).content


async def notices(openid: str, since: int = 0) -> list[Outbox]:
    return await Outbox.filter(recipient=openid, id__gt=since).order_by("id")


async def last_id() -> int:
    row = await Outbox.all().order_by("-id").first()
    return row.id if row else 0


async def file_by_chat(wx, openid: str, text: str, *, hide: str = "1") -> Appeal:
    await run_transcript(wx, openid, [
        ("有事找居委", r"遇到了什么问题"), (text, r"照片或位置"), ("跳过", r"对吗"), ("是", r"隐藏"),
    ])
    reply = await wx.say(openid, hide)
    if "类似" in reply:
        reply = await wx.say(openid, "2")
    assert "确认提交" in reply, reply
    done = await wx.say(openid, "是")
    ticket = re.search(r"工单号是 (\d{6})", done).group(1)
    return await Appeal.get(ticket=ticket)


# ---------------------------------------------------------------------------- the proof

async def test_seed_story_end_to_end(wx):
    await seed_story(wx)


async def seed_story(wx) -> list[Outbox]:
    """File with a photo, accept, reply, answer, resolve, rate 2 (redo), resolve, rate 5.
    Each notice is an outbox row with the right recipient and text; returns the rows."""
    await h.resident("o-li", community="江夏第一社区", name="李女士", phone="13800001111")
    await h.staff("o-huang", "江夏第一社区居委会", "社工小黄")
    await h.staff("o-other", "汇侨北社区居委会", "社工小王")  # another community: never told
    await run_transcript(wx, "o-li", [
        ("有事找居委", r"遇到了什么问题.*取消"),
        (SEED, r"照片或位置"),
    ])
    assert "收到第1张照片" in await photo(wx, "o-li", "http://img.example/road.jpg")
    assert "收到位置:区人民医院" in await location(wx, "o-li", "区人民医院")
    await run_transcript(wx, "o-li", [
        ("好了", r"安全隐患.*对吗"),
        ("是", r"隐藏.*1\. 不用隐藏"),
        ("1", r"确认提交.*照片:1张.*位置:区人民医院.*安全隐患.*隐藏身份:否.*交给:江夏第一社区居委会"),
    ])
    done = await wx.say("o-li", "是")
    m = re.search(r"工单号是 (\d{6})", done)
    assert m and "江夏第一社区居委会" in done and "前会受理" in done
    t = m.group(1)
    appeal = await Appeal.get(ticket=t)
    assert appeal.state == AppealState.SUBMITTED and appeal.category == "safety"
    assert appeal.photos[0]["pic_url"] == "http://img.example/road.jpg"
    assert appeal.location["label"] == "区人民医院"

    [new] = await notices("o-huang")
    assert new.kind == "appeal_staff" and t in new.text and "李女士 138****1111" in new.text
    assert "13800001111" not in new.text and f"受理 {t}" in new.text
    assert not await notices("o-other")

    mark = await last_id()
    assert "已受理工单" in await wx.say("o-huang", f"受理 {t}")
    [n] = await notices("o-li", mark)
    assert "已由江夏第一社区居委会受理" in n.text

    mark = await last_id()
    assert "已把您的回复发给" in await wx.say("o-huang", f"回复 {t} 您好,请问是医院正门还是侧门?")
    [n] = await notices("o-li", mark)
    assert n.kind == "appeal_message" and "江夏第一社区居委会回复您的诉求" in n.text
    assert "请问是医院正门还是侧门" in n.text and t in n.text

    mark = await last_id()
    assert f"已补充到工单{t}" in await wx.say("o-li", "正门,东风路那边")
    [n] = await notices("o-huang", mark)
    assert "居民答复" in n.text and "正门,东风路那边" in n.text and t in n.text

    mark = await last_id()
    assert "已办结" in await wx.say("o-huang", f"办结 {t} 已联系黄石街道和施工单位,道路已恢复通行")
    [n] = await notices("o-li", mark)
    assert "已办结" in n.text and "道路已恢复通行" in n.text and "回复一个数字" in n.text

    mark = await last_id()
    redo = await wx.say("o-li", "2 还是有电动车上人行道")
    assert "重办" in redo and "江夏第一社区居委会" in redo
    appeal = await Appeal.get(ticket=t)
    assert appeal.state == AppealState.REOPENED and appeal.reopen_count == 1 and appeal.rating == 2
    [n] = await notices("o-huang", mark)
    assert "重办(居民评2分)" in n.text and "还是有电动车上人行道" in n.text

    queue = await wx.say("o-huang", "诉求")
    assert t in queue and "重办" in queue

    mark = await last_id()
    await wx.say("o-huang", f"办结 {t} 已在路口加装隔离栏,电动车改走临时便道")
    [n] = await notices("o-li", mark)
    assert "隔离栏" in n.text and "打分" in n.text
    assert "谢谢您的评价(5分)" in await wx.say("o-li", "5")
    appeal = await Appeal.get(ticket=t)
    assert appeal.state == AppealState.CLOSED and appeal.rating == 5

    status = await wx.say("o-li", "我的诉求")
    for words in ("已完成", "您提交了诉求", "已受理", "回复:您好", "您答复:正门", "已办结",
                  "您评价2分", "重办", "您评价5分"):
        assert words in status, (words, status)

    actions = await AppealEvent.filter(appeal_id=appeal.id).order_by("id").values_list("action", flat=True)
    assert actions == [Action.SUBMIT, Action.ACCEPT, Action.REPLY, Action.ANSWER, Action.RESOLVE,
                       Action.RATE_REOPEN, Action.RESOLVE, Action.RATE_CLOSE]
    states = await AppealEvent.filter(appeal_id=appeal.id).order_by("id").values_list("to_state", flat=True)
    assert states == ["submitted", "accepted", "in_progress", "in_progress", "resolved", "reopened",
                      "resolved", "closed"]

    # Nobody else was told anything about this ticket.
    rows = await Outbox.all().order_by("id")
    assert {r.recipient for r in rows} == {"o-li", "o-huang"}
    li = [r.text for r in rows if r.recipient == "o-li"]
    assert len(li) == 4  # accepted, the staff question, resolved, resolved again
    assert "受理" in li[0] and "医院正门" in li[1] and "道路已恢复通行" in li[2]
    assert "隔离栏" in li[3] and "打分" in li[3]
    return rows


async def test_seed_story_escalation_to_the_sub_district(wx):
    await h.resident("o-li2", community="江夏第一社区", name="李女士")
    await h.staff("o-huang2", "江夏第一社区居委会", "社工小黄")
    await h.staff("o-street", "黄石街道办事处", "街道老陈")
    await h.staff("o-street-x", "新市街道办事处", "别的街道")
    appeal = await file_by_chat(wx, "o-li2", SEED)
    t = appeal.ticket
    await wx.say("o-huang2", f"受理 {t}")
    mark = await last_id()
    assert "黄石街道办事处" in await wx.say("o-huang2", f"上报街道 {t} 需协调施工单位恢复通行")
    appeal = await Appeal.get(ticket=t)
    assert appeal.state == AppealState.ESCALATED
    assert appeal.organisation_id == (await Organisation.get(name="黄石街道办事处")).id
    [to_street] = await notices("o-street", mark)
    assert t in to_street.text and "需协调施工单位" in to_street.text
    assert not await notices("o-street-x")
    [to_li] = await notices("o-li2", mark)
    assert "上报黄石街道办事处" in to_li.text
    # The street sees it in its queue; another street does not.
    assert t in await wx.say("o-street", "诉求")
    assert "没有找到" in await wx.say("o-street-x", f"诉求 {t}")
    assert "已受理" in await wx.say("o-street", f"受理 {t}")
    # The committee that works with the street closes the loop with the resident.
    assert "已办结" in await wx.say("o-huang2", f"办结 {t} 道路已恢复通行")
    assert (await Appeal.get(ticket=t)).state == AppealState.RESOLVED


# ---------------------------------------------------------------------------- filing

async def test_first_message_is_the_description_and_category_can_change(wx):
    await h.resident("o-f1", name="陈阿姨")
    await run_transcript(wx, "o-f1", [
        ("我要投诉楼下垃圾堆了三天没人清理,好臭", r"照片或位置"),
        ("跳过", r"环境卫生.*对吗.*1\. 设施维护"),
        ("4", r"隐藏"),
        ("隐藏", r"类别:邻里纠纷.*隐藏身份:是"),
        ("不", r"已放弃"),
    ])
    assert not await Appeal.exists()
    # A message that only describes a problem starts the flow too.
    await run_transcript(wx, "o-f1", [(SEED, r"照片或位置")])
    assert (await wx.say("o-f1", "取消")).startswith("好的,已退出“有事找居委”")


async def test_bad_answers_are_asked_again_and_text_at_the_photo_step_is_kept(wx):
    await h.resident("o-f2")
    await run_transcript(wx, "o-f2", [
        ("有事找居委", r"什么问题"),
        ("灯", r"多说几个字.*例如"),
        ("3栋楼道的灯坏了", r"照片"),
        ("晚上老人上下楼很危险", r"已把这句补充到描述里"),
        ("好了", r"对吗"),
        ("不知道", r"请回复“是”"),
        ("1", r"隐藏"),
        ("1", r"确认提交.*3栋楼道的灯坏了 晚上老人上下楼很危险.*设施维护"),
        ("是", r"工单号是"),
    ])
    appeal = await Appeal.get()
    assert appeal.category == "facility" and "晚上老人" in appeal.description


async def test_routing_by_category_and_configurable_route(wx):
    await h.resident("o-r1", name="黄伯")
    await h.staff("o-social", "汇侨北社区社工服务站", "社工阿梅")
    await h.staff("o-vol", "汇侨北社区志愿服务队", "志愿者阿强")
    await h.staff("o-cmt", "汇侨北社区居委会", "社工小王")
    living = await file_appeal(await Resident.get(openid="o-r1"), NewAppeal(
        "想问下社区有没有长者饭堂助餐服务", "living", []), h.now())
    assert (await living.organisation).name == "汇侨北社区社工服务站"
    helping = await file_appeal(await Resident.get(openid="o-r1"), NewAppeal(
        "我是独居老人,想找人陪诊去医院复查", "living", [], volunteer_help=True), h.now())
    assert (await helping.organisation).name == "汇侨北社区志愿服务队"
    assert len(await notices("o-social")) == 1 and len(await notices("o-vol")) == 1
    assert not await notices("o-cmt")
    hqb = await Community.get(name="汇侨北社区")
    await set_route(hqb, "living", await Organisation.get(name="汇侨北社区居委会"))
    again = await file_appeal(await Resident.get(openid="o-r1"), NewAppeal(
        "想问下社区有没有上门理发服务", "living", []), h.now())
    assert (await again.organisation).name == "汇侨北社区居委会"
    with pytest.raises(AppealError):  # another community's organisation cannot take them
        await set_route(hqb, "safety", await Organisation.get(name="江夏第一社区居委会"))
    # In the chat, volunteer-suited help is recognised from the words.
    appeal = await file_by_chat(wx, "o-r1", "我是独居老人,腿脚不便,想找人帮忙买菜")
    assert appeal.volunteer_help and (await appeal.organisation).name == "汇侨北社区志愿服务队"


async def test_similar_open_appeal_is_offered_and_linked(wx):
    await h.resident("o-d1", community="江夏第一社区", name="李女士")
    await h.resident("o-d2", community="江夏第一社区", name="王伯")
    await h.resident("o-d3", community="江夏第二社区", name="别区")
    await h.staff("o-dstaff", "江夏第一社区居委会")
    first = await file_by_chat(wx, "o-d1", "区人民医院门口道路封闭,自行车挤在人行道上,很危险")
    # Another community: never linked.
    other = await file_by_chat(wx, "o-d3", "区人民医院门口的路封了,单车都上人行道,很危险")
    assert other.linked_to_id is None
    await run_transcript(wx, "o-d2", [
        ("有事找居委", r"问题"), ("区人民医院门口的路封了,单车都上人行道,很危险", r"照片"),
        ("跳过", r"安全隐患"), ("是", r"隐藏"),
        ("1", rf"已有居民反映过类似的问题\(工单{first.ticket},待受理\).*1\. 是同一件事"),
        ("1", rf"关联:工单{first.ticket}"),
        ("是", rf"已和工单{first.ticket}关联"),
    ])
    child = await Appeal.get(resident__openid="o-d2")
    assert child.linked_to_id == first.id and child.organisation_id == first.organisation_id
    staff_note = (await notices("o-dstaff"))[-1]
    assert "与已有工单相同" in staff_note.text
    # Resolving the first resolves the linked one, and both residents are asked to rate.
    await wx.say("o-dstaff", f"办结 {first.ticket} 道路已恢复通行")
    assert (await Appeal.get(id=child.id)).state == AppealState.RESOLVED
    assert "打分" in (await notices("o-d2"))[-1].text
    assert "谢谢您的评价" in await wx.say("o-d2", "4")


# ---------------------------------------------------------------------------- the resident

async def test_status_by_list_and_by_ticket_and_additions(wx):
    await h.resident("o-s1")
    await h.staff("o-s-staff", "汇侨北社区居委会")
    assert "还没有提交过诉求" in await wx.say("o-s1", "我的诉求")
    a = await file_by_chat(wx, "o-s1", "3栋楼道的灯坏了好几天")
    b = await file_by_chat(wx, "o-s1", "小区门口垃圾桶满了没人清")
    listing = await wx.say("o-s1", "我的诉求")
    assert f"1. 工单{b.ticket}" in listing and f"2. 工单{a.ticket}" in listing
    assert f"工单{a.ticket}" in await wx.say("o-s1", "2") and "待受理" in await wx.say("o-s1", "2")
    assert "3栋楼道" in await wx.say("o-s1", a.ticket)
    assert "没有找到您的工单" in await wx.say("o-s1", "999999")
    mark = await last_id()
    assert f"已补充到工单{a.ticket}" in await wx.say("o-s1", f"补充 {a.ticket} 晚上特别黑,老人摔过一次")
    [n] = await notices("o-s-staff", mark)
    assert "居民补充" in n.text and "老人摔过一次" in n.text
    # 补充 alone asks for the content (a photo is fine) and adds it to the newest open ticket.
    await run_transcript(wx, "o-s1", [("补充", rf"补充到工单{b.ticket}.*文字、照片或位置")])
    assert "已补充" in await photo(wx, "o-s1", "http://img.example/bin.jpg")
    assert (await Appeal.get(id=b.id)).photos[-1]["pic_url"] == "http://img.example/bin.jpg"


async def test_rating_words_and_no_rating_closes_by_itself(wx):
    resident = await h.resident("o-rt")
    staff = await h.staff("o-rt-staff", "汇侨北社区居委会")
    now = h.now()
    a = await file_appeal(resident, NewAppeal("楼道灯坏了很久了", "facility", []), now)
    await resolve(a.id, staff, "已更换灯泡", now)
    assert "请为工单" in await wx.say("o-rt", "评价")
    assert "4分" in await wx.say("o-rt", "满意")
    b = await file_appeal(resident, NewAppeal("门口井盖松动", "facility", []), now)
    await resolve(b.id, staff, "已固定井盖", now)
    # A number that starts a sentence is no score: this is a new problem.
    assert "照片或位置" in await wx.say("o-rt", "3栋楼道灯又坏了")
    await wx.say("o-rt", "取消")
    assert (await Appeal.get(id=b.id)).rating is None
    assert (await run_appeal_deadlines(now + timedelta(hours=71)))["closed"] == 0
    assert (await run_appeal_deadlines(now + timedelta(hours=73)))["closed"] == 1
    assert (await run_appeal_deadlines(now + timedelta(hours=74)))["closed"] == 0
    b = await Appeal.get(id=b.id)
    assert b.state == AppealState.CLOSED and b.rating is None
    assert "没有待评价" in await wx.say("o-rt", "评价")


async def test_the_reason_for_a_low_rating_can_come_in_the_next_message(wx):
    resident = await h.resident("o-why")
    staff = await h.staff("o-why-staff", "汇侨北社区居委会")
    now = h.now()

    async def resolved(text: str) -> Appeal:
        a = await file_appeal(resident, NewAppeal(text, "facility", []), now)
        await resolve(a.id, staff, "已处理", now)
        return a

    # 1-2 without a reason: asked why; the next words go on the ticket and to its handlers.
    a = await resolved("楼道灯坏了很久了")
    assert "哪里不满意?直接回复" in await wx.say("o-why", "2")
    mark = await last_id()
    said = await wx.say("o-why", "灯是换了,但是楼梯口那盏还是不亮")
    assert f"意见已记在工单{a.ticket}上" in said and "汇侨北社区居委会" in said
    a = await Appeal.get(id=a.id)
    assert a.state == AppealState.REOPENED and a.rating_comment == "灯是换了,但是楼梯口那盏还是不亮"
    [n] = await notices("o-why-staff", mark)
    assert "对评价(2分)的说明:灯是换了" in n.text
    assert "您的意见:灯是换了" in await wx.say("o-why", a.ticket)
    assert (await AppealEvent.filter(appeal_id=a.id).order_by("-id").first()).action == Action.COMMENT
    # Asked once: the message after that is routed as usual.
    assert "您现在有" in await wx.say("o-why", "我有多少积分")

    # 3: asked how it could be better; "不用" ends it and writes nothing.
    b = await resolved("门口井盖松动")
    assert "有什么可以做得更好的" in await wx.say("o-why", "3")
    events = await AppealEvent.filter(appeal_id=b.id).count()
    assert "谢谢您的评价" in await wx.say("o-why", "不用")
    assert await AppealEvent.filter(appeal_id=b.id).count() == events
    assert (await Appeal.get(id=b.id)).rating_comment == ""

    # A polite "no" writes nothing either.
    f = await resolved("楼下水管漏水")
    assert "有什么可以做得更好的" in await wx.say("o-why", "3")
    assert "谢谢您的评价" in await wx.say("o-why", "不用了,谢谢")
    assert (await Appeal.get(id=f.id)).rating_comment == ""

    # Staff ask something after a low rating: the next words answer them, not the rating.
    g = await resolved("单元门禁坏了")
    assert "哪里不满意" in await wx.say("o-why", "1")
    await wx.say("o-why-staff", f"回复 {g.ticket} 明天上午上门看看可以吗?")
    assert f"已补充到工单{g.ticket}" in await wx.say("o-why", "好的")  # not a "no comment"
    g = await Appeal.get(id=g.id)
    assert g.rating_comment == "" and g.asked_at is None
    assert (await AppealEvent.filter(appeal_id=g.id).order_by("-id").first()).action == Action.ANSWER

    # Asked, but the resident turns to something else: that is answered, nothing is kept.
    c = await resolved("电梯按钮失灵")
    assert "哪里不满意" in await wx.say("o-why", "1")
    assert "您现在有" in await wx.say("o-why", "查一下积分")
    assert (await Appeal.get(id=c.id)).rating_comment == ""

    # 4-5 or a reason given with the digit: nothing is asked.
    d = await resolved("路灯不亮")
    reply = await wx.say("o-why", "5")
    assert "谢谢您的评价(5分)" in reply and "直接回复" not in reply
    e = await resolved("垃圾没人收")
    reply = await wx.say("o-why", "2 收垃圾的还是不按时来")
    assert "重办" in reply and "直接回复" not in reply
    assert (await Appeal.get(id=e.id)).rating_comment == "收垃圾的还是不按时来"
    assert (await Appeal.get(id=d.id)).state == AppealState.CLOSED


async def test_adopted_suggestion_earns_points_once(wx):
    resident = await h.resident("o-sg")
    await h.staff("o-sg-staff", "汇侨北社区居委会")
    a = await file_appeal(resident, NewAppeal("建议在小区门口装个快递柜", "suggestion", []), h.now())
    assert "奖励20积分" in await wx.say("o-sg-staff", f"采纳 {a.ticket}")
    assert "已经采纳过" in await wx.say("o-sg-staff", f"采纳 {a.ticket}")
    assert (await Resident.get(openid="o-sg")).points == 20
    assert await PointsEntry.filter(source="suggestion").count() == 1
    assert not await ledger_mismatches()


# ---------------------------------------------------------------------------- authorisation

async def test_a_resident_cannot_use_staff_commands(wx):
    resident = await h.resident("o-a1")
    await h.resident("o-a2")
    a = await file_appeal(resident, NewAppeal("楼下有人乱停车堵住消防通道", "safety", []), h.now())
    for command in (f"受理 {a.ticket}", f"办结 {a.ticket} 好了", f"退回 {a.ticket} 不管",
                    f"回复 {a.ticket} 你好"):
        assert "没有这个权限" in await wx.say("o-a2", command)
    assert "没有这个权限" in await wx.say("o-a1", f"办结 {a.ticket} 自己办结")
    assert (await Appeal.get(id=a.id)).state == AppealState.SUBMITTED
    assert await AppealEvent.filter(appeal_id=a.id).count() == 1
    assert "没有找到您的工单" in await wx.say("o-a2", a.ticket)  # not another resident's either


async def test_staff_of_another_community_cannot_see_or_move_a_ticket(wx):
    resident = await h.resident("o-b1", community="江夏第一社区")
    await h.staff("o-b-own", "江夏第一社区居委会")
    await h.staff("o-b-other", "汇侨北社区居委会")
    await h.staff("o-b-social", "江夏第一社区社工服务站")
    a = await file_appeal(resident, NewAppeal("楼道堆满杂物", "safety", []), h.now())
    for command in (f"诉求 {a.ticket}", f"受理 {a.ticket}", f"办结 {a.ticket} 好了",
                    f"转派 {a.ticket} 1", f"上报街道 {a.ticket} x", f"回复 {a.ticket} 你好"):
        assert f"没有找到您可以处理的工单 {a.ticket}" in await wx.say("o-b-other", command)
        # A social organisation of the same community sees only what is routed to it.
        assert f"没有找到您可以处理的工单 {a.ticket}" in await wx.say("o-b-social", command)
    assert a.ticket not in await wx.say("o-b-other", "诉求 全部")
    assert (await Appeal.get(id=a.id)).state == AppealState.SUBMITTED
    assert "楼道堆满杂物" in await wx.say("o-b-own", f"诉求 {a.ticket}")
    # A bare ticket number from staff: the detail for its handlers, nothing for the others.
    assert "楼道堆满杂物" in await wx.say("o-b-own", a.ticket)
    assert f"没有找到您可以处理的工单 {a.ticket}" in await wx.say("o-b-other", a.ticket)


async def test_hidden_identity_never_reaches_social_or_volunteer_organisations(wx):
    await h.resident("o-h1", name="张秘密", phone="13912345678")
    await h.staff("o-h-social", "汇侨北社区社工服务站")
    await h.staff("o-h-vol", "汇侨北社区志愿服务队")
    await h.staff("o-h-cmt", "汇侨北社区居委会")
    await h.staff("o-h-street", "新市街道办事处")
    await run_transcript(wx, "o-h1", [
        ("有事找居委", r"问题"), ("想问下社区有没有长者饭堂助餐服务", r"照片"), ("跳过", r"生活服务"),
        ("是", r"隐藏"), ("2", r"隐藏身份:是"), ("是", r"工单号是"),
    ])
    a = await Appeal.get()
    assert a.anonymous and (await a.organisation).name == "汇侨北社区社工服务站"
    await wx.say("o-h-cmt", f"转派 {a.ticket} 志愿 需要志愿者上门")
    await wx.say("o-h1", f"补充 {a.ticket} 我住5栋,电话可以打给我")
    detail_social = await wx.say("o-h-cmt", f"诉求 {a.ticket}")
    assert "张秘密" in detail_social and "139****5678" in detail_social  # the committee sees it
    await wx.say("o-h-cmt", f"上报街道 {a.ticket} 请街道协调")
    for openid in ("o-h-social", "o-h-vol", "o-h-street"):
        rows = await notices(openid)
        assert rows, openid
        for row in rows:
            assert "张秘密" not in row.text and "5678" not in row.text, (openid, row.text)
            assert "匿名居民" in row.text or "居民补充" not in row.text
    assert "匿名居民" in await wx.say("o-h-street", f"诉求 {a.ticket}")
    assert "张秘密" not in await wx.say("o-h-street", f"诉求 {a.ticket}")


async def test_two_staff_accept_the_same_ticket_at_once(wx):
    resident = await h.resident("o-c1")
    await h.staff("o-c-s1", "汇侨北社区居委会", "小王")
    await h.staff("o-c-s2", "汇侨北社区居委会", "小李")
    a = await file_appeal(resident, NewAppeal("电梯坏了三天", "facility", []), h.now())
    replies = await asyncio.gather(wx.say("o-c-s1", f"受理 {a.ticket}"),
                                   wx.say("o-c-s2", f"受理 {a.ticket}"))
    assert sum("已受理工单" in r for r in replies) == 1
    assert sum("不能受理" in r for r in replies) == 1
    assert await AppealEvent.filter(appeal_id=a.id, action=Action.ACCEPT).count() == 1
    assert await Outbox.filter(recipient="o-c1").count() == 1


# ---------------------------------------------------------------------------- deadlines

async def test_deadline_warning_then_auto_escalation_with_an_injected_clock(wx):
    resident = await h.resident("o-dl", community="江夏第一社区")
    await h.staff("o-dl-cmt", "江夏第一社区居委会")
    await h.staff("o-dl-street", "黄石街道办事处")
    t0 = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)  # Monday 09:00 in Guangzhou
    a = await file_appeal(resident, NewAppeal(SEED, "safety", []), t0)
    assert a.ack_due_at == t0 + timedelta(hours=24)
    assert a.resolve_due_at == add_working_days(t0, 13) == t0 + timedelta(days=17)
    assert await run_appeal_deadlines(t0 + timedelta(hours=19)) == \
        {"warned": 0, "escalated": 0, "closed": 0, "handovers_closed": 0}
    mark = await last_id()
    assert (await run_appeal_deadlines(t0 + timedelta(hours=20)))["warned"] == 1
    assert (await run_appeal_deadlines(t0 + timedelta(hours=21)))["warned"] == 0  # idempotent
    [warning] = await notices("o-dl-cmt", mark)
    assert "提醒" in warning.text and a.ticket in warning.text and "自动上报街道" in warning.text
    assert not await notices("o-dl-street")

    mark = await last_id()
    done = await run_appeal_deadlines(t0 + timedelta(hours=24, minutes=1))
    assert done["escalated"] == 1
    again = await run_appeal_deadlines(t0 + timedelta(hours=24, minutes=2))
    assert again["escalated"] == 0 and again["warned"] == 0
    a = await Appeal.get(id=a.id)
    assert a.state == AppealState.ESCALATED and a.auto_escalated
    assert (await a.organisation).name == "黄石街道办事处"
    [to_street] = await notices("o-dl-street", mark)
    assert "超时自动上报" in to_street.text and a.ticket in to_street.text
    assert "自动上报" in (await notices("o-dl-cmt", mark))[0].text
    assert "上报黄石街道办事处" in (await notices("o-dl", mark))[0].text
    event = await AppealEvent.get(appeal_id=a.id, action=Action.AUTO_ESCALATE)
    assert event.actor_id is None and event.note == "超时未受理"
    assert "超过时限" in await wx.say("o-dl", "我的诉求")


def test_working_days_follow_the_official_calendar(caplog):
    # 2026: National Day 1–7 October off, Saturday 10 October worked (调休).
    t0 = datetime(2026, 9, 30, 2, 0, tzinfo=timezone.utc)  # Wednesday 10:00 in Guangzhou
    assert add_working_days(t0, 1) == datetime(2026, 10, 8, 10, 0, tzinfo=LOCAL_TZ)
    assert add_working_days(t0, 3).date() == date(2026, 10, 10)  # a Saturday, worked
    assert add_working_days(t0, 4).date() == date(2026, 10, 12)  # Sunday 11th is off
    # A year the calendar has not published: weekdays, without the Gregorian-dated holidays.
    assert not is_working_day(date(2099, 1, 1)) and is_working_day(date(2099, 12, 31))  # Thursdays
    assert not is_working_day(date(2099, 5, 1)) and not is_working_day(date(2099, 10, 2))  # Fridays
    assert is_working_day(date(2099, 10, 5)) and not is_working_day(date(2099, 10, 10))  # Mon, Sat
    # Said once per missing year, for the operator to upgrade the package.
    assert [r.getMessage() for r in caplog.records].count(
        f"chinesecalendar {chinese_calendar.__version__} has no holiday schedule for 2099: "
        "deadlines count weekdays "
        "without the Gregorian-dated holidays; upgrade the package") == 1


async def test_resolution_deadline_after_acceptance_and_configured_limits(wx):
    from models.appeals import set_deadlines
    await set_deadlines("facility", accept_hours=2, resolve_days=1, resolve_warn_hours=3)
    resident = await h.resident("o-dl2")
    staff = await h.staff("o-dl2-s", "汇侨北社区居委会")
    await h.staff("o-dl2-street", "新市街道办事处")
    t0 = datetime(2026, 3, 6, 2, 0, tzinfo=timezone.utc)  # Friday 10:00: 1 working day = Monday
    a = await file_appeal(resident, NewAppeal("电梯坏了", "facility", []), t0)
    assert a.ack_due_at == t0 + timedelta(hours=2) and a.resolve_due_at == t0 + timedelta(days=3)
    await accept(a.id, staff, t0 + timedelta(hours=1))
    assert (await run_appeal_deadlines(t0 + timedelta(hours=5)))["escalated"] == 0  # accepted in time
    mark = await last_id()
    assert (await run_appeal_deadlines(t0 + timedelta(days=3, hours=-2)))["warned"] == 1
    assert "前办结" in (await notices("o-dl2-s", mark))[0].text
    assert (await run_appeal_deadlines(t0 + timedelta(days=3, minutes=1)))["escalated"] == 1
    assert (await Appeal.get(id=a.id)).state == AppealState.ESCALATED
    event = await AppealEvent.get(appeal_id=a.id, action=Action.AUTO_ESCALATE)
    assert event.note == "超时未办结"


def test_transition_table_is_the_only_way():
    """Every (state, action) pair outside the table is refused; terminal states are final."""
    states = list(AppealState.LABELS)
    assert {s for s, _ in TRANSITIONS} <= set(states)
    # From a terminal state only timeline rows that keep it: an adoption, a rating's reason.
    terminal = {k: v for k, v in TRANSITIONS.items()
                if k[0] in (AppealState.CLOSED, AppealState.REJECTED)}
    assert all(k[1] in (Action.ADOPT, Action.COMMENT) and v == k[0] for k, v in terminal.items())
    assert (AppealState.REJECTED, Action.COMMENT) not in TRANSITIONS  # a rejection is not rated
    assert TRANSITIONS[(AppealState.RESOLVED, Action.RATE_REOPEN)] == AppealState.REOPENED
    assert (AppealState.CLOSED, Action.ACCEPT) not in TRANSITIONS
    assert tuple(CATEGORIES) == tuple(__import__("models.appeals").appeals.CATEGORY_LABELS)


async def test_closed_ticket_refuses_moves_and_double_rating(wx):
    resident = await h.resident("o-x1")
    staff = await h.staff("o-x-s", "汇侨北社区居委会")
    a = await file_appeal(resident, NewAppeal("路灯不亮", "facility", []), h.now())
    await resolve(a.id, staff, "已修好", h.now())
    await rate(a.id, resident, 5, "", h.now())
    with pytest.raises(AppealError):
        await rate(a.id, resident, 1, "", h.now())
    assert "不能受理" in await wx.say("o-x-s", f"受理 {a.ticket}")
    assert "不能再补充" in await wx.say("o-x1", f"补充 {a.ticket} 又坏了")


# ---------------------------------------------------------------------------- figures

async def test_figures_in_the_chat_and_the_report(wx, tmp_path):
    r1 = await h.resident("o-fg1")
    r2 = await h.resident("o-fg2", community="江夏第一社区")
    staff = await h.staff("o-fg-s", "汇侨北社区居委会")
    jx = await h.staff("o-fg-jx", "江夏第一社区居委会")
    now = h.now()
    a = await file_appeal(r1, NewAppeal("楼道灯坏了", "facility", []), now - timedelta(hours=2))
    await accept(a.id, staff, now - timedelta(hours=1))
    await resolve(a.id, staff, "已修好", now)
    await rate(a.id, r1, 4, "", now)
    await file_appeal(r1, NewAppeal("垃圾没人清", "environment", []), now - timedelta(hours=30))
    b = await file_appeal(r2, NewAppeal("井盖松动", "facility", []), now)
    await resolve(b.id, jx, "已固定", now)
    await rate(b.id, r2, 2, "", now)
    text = await wx.say("o-fg-s", "统计")
    assert "汇侨北社区:2件,响应率50%,按时办结率100%,满意度4.0" in text
    assert "江夏第一社区" not in text  # committee staff see their own community
    street = await h.staff("o-fg-street", "黄石街道办事处")
    assert "江夏第一社区:1件" in await wx.say("o-fg-street", "统计")
    assert street.id
    paths = await report_appeals(now - timedelta(days=2), now + timedelta(days=1), tmp_path / "appeals")
    sheet = load_workbook(paths[0]).active
    rows = [[c.value for c in row] for row in sheet.iter_rows()]
    assert rows[0][:5] == ["范围", "名称", "诉求数", "及时响应数", "响应率"]
    hqb = next(r for r in rows if r[1] == "汇侨北社区")
    assert hqb[2] == 2 and hqb[3] == 1 and hqb[4] == 0.5 and hqb[9] == 4.0
    reopened = next(r for r in rows if r[1] == "江夏第一社区")
    assert reopened[2] == 1 and reopened[9] == 2.0
