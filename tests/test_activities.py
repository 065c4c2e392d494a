"""Activities through the webhook: list, details, sign up (self and child), the last place,
holds, the waiting list, cancellation, check-in with points, staff commands."""
from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from handlers.vocabulary import catalog_words
from models.activities import Activity, FamilyMember, Signup, SignupStatus
from models.outbox import Outbox
from models.points import PointsEntry, ledger_mismatches
from models.residents import Resident
from nlp import tokenizer
from tests import helpers as h
from tests.conftest import make_settings, run_transcript
from tests.wx import WeChat, event_xml, text_xml


async def test_list_details_and_filters(wx):
    await h.resident("o-list")
    await h.activity("寒假作业辅导班", audience="children", capacity=30)
    await h.activity("长者健康讲座", audience="elderly", kind="talk", capacity=50,
                     start_in=timedelta(days=3))
    await h.activity("江夏的活动", community="江夏第一社区")  # another community: not shown
    reply = await wx.say("o-list", "最近有什么活动")
    assert "1. 寒假作业辅导班" in reply and "剩余 30/30" in reply and "长者健康讲座" in reply
    assert "江夏的活动" not in reply
    details = await wx.say("o-list", "1")
    assert "【寒假作业辅导班】" in details and "剩余名额:30/30" in details and "报名" in details
    kids = await wx.say("o-list", "有没有适合孩子的活动")
    assert "寒假作业辅导班" in kids and "长者健康讲座" not in kids
    old = await wx.say("o-list", "有冇老人活动")
    assert "长者健康讲座" in old and "寒假作业辅导班" not in old


async def test_signup_self_confirm_and_my_signups(wx):
    await h.resident("o-self", name="陈阿姨")
    act = await h.activity("马上送福手工活动", capacity=15)
    await run_transcript(wx, "o-self", [
        ("我想报名马上送福手工活动", r"马上送福手工活动.*参加人:陈阿姨.*保留.*还剩14个.*是"),
        ("是", r"报名成功"),
        ("我报上了吗", r"马上送福手工活动.*报名成功"),
        ("报名马上送福手工活动", r"已经报名"),
    ])
    assert await Signup.filter(activity_id=act.id, status=SignupStatus.CONFIRMED).count() == 1


async def test_signup_child_remembered_for_next_time(wx):
    await h.resident("o-mum", name="李女士")
    await h.activity("寒假作业辅导班", audience="children")
    await h.activity("舞蹈公益课堂", audience="children", start_in=timedelta(days=4))
    await run_transcript(wx, "o-mum", [
        ("帮我女儿报寒假作业辅导班", r"家人的姓名"),
        ("李小满", r"几岁"),
        ("八岁", r"参加人:李小满.*是"),
        ("是", r"报名成功!李小满"),
        ("给孩子报舞蹈公益课堂", r"哪位家人.*1\. 李小满\(8岁\)"),
        ("1", r"舞蹈公益课堂.*李小满"),
        ("好", r"报名成功"),
    ])
    assert await FamilyMember.filter(name="李小满").count() == 1
    assert await Signup.filter(participant_name="李小满", status=SignupStatus.CONFIRMED).count() == 2


async def test_last_place_hold_and_waiting_list(wx):
    await h.resident("o-a", name="陈阿姨")
    await h.resident("o-b", name="黄女士")
    act = await h.activity("手工活动", capacity=1)
    assert "保留" in await wx.say("o-a", "报名手工活动")  # A holds the last place
    full = await wx.say("o-b", "报名手工活动")
    assert "满了" in full and "候补" in full
    assert "报名成功" in await wx.say("o-a", "是")
    assert "候补名单,排第1位" in await wx.say("o-b", "是")
    assert "候补第1位" in await wx.say("o-b", "我的报名")
    # A cancels: B is promoted and told, once.
    await run_transcript(wx, "o-a", [("取消报名", r"确定取消.*手工活动"), ("是", r"已取消")])
    b = await Signup.get(activity_id=act.id, resident__openid="o-b")
    assert b.status == SignupStatus.CONFIRMED
    rows = await Outbox.filter(recipient="o-b", kind="promotion")
    assert len(rows) == 1 and "候补转为报名成功" in rows[0].text
    # B cancels too: the place is free again for a new resident.
    await run_transcript(wx, "o-b", [("取消报名手工活动", r"确定取消"), ("是", r"已取消")])
    await h.resident("o-c")
    assert "保留" in await wx.say("o-c", "报名手工活动")


async def test_expired_hold_frees_the_place(app_client, backend, tmp_path, request):
    settings = make_settings(backend, tmp_path, request, signup_hold_seconds=1)
    client = await app_client(settings)
    wx = WeChat(client, settings.wechat_token)
    await h.resident("o-slow")
    await h.resident("o-fast")
    await h.activity("手工活动", capacity=1)
    assert "保留一个名额1秒" in await wx.say("o-slow", "报名手工活动")
    await asyncio.sleep(1.2)
    assert "保留" in await wx.say("o-fast", "报名手工活动")
    assert "报名成功" in await wx.say("o-fast", "是")
    lapsed = await wx.say("o-slow", "是")
    assert "已过时" in lapsed and "候补名单,排第1位" in lapsed


async def test_saying_no_releases_the_hold(wx):
    await h.resident("o-no")
    await h.resident("o-next")
    await h.activity("手工活动", capacity=1)
    await run_transcript(wx, "o-no", [("报名手工活动", r"保留"), ("不要", r"名额已经释放")])
    assert "保留" in await wx.say("o-next", "报名手工活动")
    await run_transcript(wx, "o-next", [("取消", r"已退出")])  # cancel releases too
    assert "保留" in await wx.say("o-no", "报名手工活动")


async def test_signup_closed_or_unregistered(wx):
    await h.activity("已开始的活动", start_in=timedelta(minutes=-10))
    reply = await wx.say("o-new", "报名已开始的活动")
    assert "先登记" in reply and "哪个社区" in reply  # unregistered: registration first
    await h.resident("o-late")
    reply = await wx.say("o-late", "报名已开始的活动")
    assert "没有" in reply or "截止" in reply or "哪个活动" in reply


async def test_cancel_after_deadline_gives_contact(wx):
    await h.resident("o-dl")
    act = await h.activity("议事会", capacity=10)
    await run_transcript(wx, "o-dl", [("报名议事会", r"是"), ("是", r"报名成功")])
    await Activity.filter(id=act.id).update(cancel_deadline=h.now() - timedelta(minutes=1))
    await run_transcript(wx, "o-dl", [
        ("取消报名", r"确定取消"), ("是", r"已过取消截止时间.*020-86001234"),
    ])
    assert (await Signup.get(activity_id=act.id)).status == SignupStatus.CONFIRMED


async def test_checkin_paths_and_points(wx):
    await h.resident("o-ci", name="王女士")
    await h.resident("o-stranger")
    act = await h.activity("新春文艺汇演志愿者", start_in=timedelta(minutes=10), points=100,
                           code="4521", capacity=5)
    later = await h.activity("下周讲座", start_in=timedelta(days=7), code="7788")
    await run_transcript(wx, "o-ci", [
        ("报名新春文艺汇演志愿者", r"是"), ("是", r"报名成功"),
        ("报名下周讲座", r"是"), ("是", r"报名成功"),
        ("签到 9999", r"签到码不对"),
        ("签到 7788", r"还没到签到时间"),
        ("我要签到", r"签到码"),
        ("4521", r"签到成功.*获得100积分"),
        ("签到 4521", r"已签到,不用重复签到"),
        ("我有几多积分", r"100 积分"),
        ("积分明细", r"参加“新春文艺汇演志愿者” \+100"),
    ])
    assert "没有报名" in await wx.say("o-stranger", "签到 4521")
    assert await PointsEntry.filter(key__startswith="checkin:").count() == 1
    assert (await Resident.get(openid="o-ci")).points == 100
    await Activity.filter(id=later.id).update(status="cancelled")
    assert "已取消" in await wx.say("o-ci", "签到 7788")
    assert act.id and await ledger_mismatches() == []


async def test_checkin_replayed_concurrently_credits_once(wx):
    await h.resident("o-tap")
    await h.activity("居民议事会", start_in=timedelta(minutes=5), points=50, code="3141")
    await run_transcript(wx, "o-tap", [("报名居民议事会", r"是"), ("是", r"报名成功")])
    retried = text_xml("o-tap", "签到 3141", msg_id=31415)
    posts = [wx.post_xml(retried) for _ in range(3)]  # WeChat's retries of one message
    posts += [wx.say("o-tap", "签到 3141") for _ in range(2)]  # double taps
    await asyncio.gather(*posts)
    assert (await Resident.get(openid="o-tap")).points == 50
    assert await PointsEntry.filter(resident__openid="o-tap").count() == 1
    assert await ledger_mismatches() == []


async def test_checkin_by_qr_scene(wx):
    await h.resident("o-scan")
    act = await h.activity("扫码活动", start_in=timedelta(minutes=5), points=10)
    await run_transcript(wx, "o-scan", [("报名扫码活动", r"是"), ("是", r"报名成功")])
    t = int(time.time())
    first = await wx.post_xml(event_xml("o-scan", "SCAN", f"checkin_{act.id}", create_time=t))
    assert "签到成功" in first.content
    again = await wx.post_xml(event_xml("o-scan", "SCAN", f"checkin_{act.id}", create_time=t + 1))
    assert "已签到" in again.content
    assert (await Resident.get(openid="o-scan")).points == 10


async def test_points_rules_and_empty_history(wx):
    await h.resident("o-rules")
    assert "志愿服务" in await wx.say("o-rules", "积分怎么攒") and "100分" in await wx.say(
        "o-rules", "积分规则")
    assert "还没有积分记录" in await wx.say("o-rules", "积分明细")


async def test_staff_publish_counts_roster_code_and_fill_notices(wx):
    await h.staff("o-staff")
    reply = await wx.say("o-staff", "发布活动")
    assert "活动名称" in reply
    await run_transcript(wx, "o-staff", [
        ("周末亲子手工", r"什么时候"),
        ("明天下午三点", r"在哪里"),
        ("社区活动室", r"类型"),
        ("3", r"名额"),
        ("5", r"积分"),
        ("20", r"周末亲子手工.*名额:5.*是"),
        ("是", r"已发布.*签到码"),
    ])
    act = await Activity.get(title="周末亲子手工")
    assert "周末亲子手工" in tokenizer.cut("我想报名周末亲子手工")  # the new name is one word
    assert "周末亲子手工" in await catalog_words()  # and is loaded again at the next start
    assert act.capacity == 5 and act.points_participant == 20 and act.kind == "culture"
    for i in range(5):
        await h.resident(f"o-fill{i}")
        await run_transcript(wx, f"o-fill{i}", [("报名周末亲子手工", r"是"), ("是", r"报名成功")])
    fills = await Outbox.filter(recipient="o-staff", kind="fill_level").order_by("id")
    assert [r.text.split("报名已达")[1][:4] for r in fills] == ["50%(", "80%(", "100%"]
    counts = await wx.say("o-staff", "报名统计")
    assert "周末亲子手工" in counts and "报名5/5" in counts
    roster = await wx.say("o-staff", "名单 1")
    assert "5人" in roster and "****" in roster
    assert act.checkin_code in await wx.say("o-staff", "签到码 1")


async def test_resident_cannot_use_staff_commands(wx):
    await h.resident("o-plain")
    reply = await wx.say("o-plain", "发布活动")
    assert "活动名称" not in reply
