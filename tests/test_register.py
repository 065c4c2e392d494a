"""Registration and profile changes as transcripts through the webhook."""
from __future__ import annotations

import asyncio

from models.places import Community
from models.residents import Resident
from tests.conftest import make_settings, run_transcript
from tests.wx import WeChat


async def test_subscribe_then_register_happy_path(wx):
    welcome = await wx.event("o-reg", "subscribe")
    assert "欢迎关注云芳邻" in welcome and "哪个社区" in welcome and "取消" in welcome
    await run_transcript(wx, "o-reg", [
        ("汇侨北", r"怎么称呼"),
        ("我叫陈美玲", r"手机号"),
        ("138 0013 8001", r"同意"),
        ("同意", r"汇侨北社区.*陈美玲.*13800138001.*是"),
        ("是", r"登记成功.*陈美玲.*汇侨北社区"),
    ])
    r = await Resident.get(openid="o-reg").prefetch_related("community")
    assert r.registered and r.community.name == "汇侨北社区" and r.name == "陈美玲"
    assert r.phone == "13800138001" and not r.verified and r.consented_at is not None


async def test_phone_on_roster_is_verified(wx):
    await run_transcript(wx, "o-roster", [
        ("我要登记", r"哪个社区"),
        ("1", r"怎么称呼"),
        ("李敏", r"手机号"),
        ("13800138000", r"同意"),
        ("同意", r"请确认"),
        ("好的", r"登记成功.*已核对"),
    ])
    assert (await Resident.get(openid="o-roster")).verified


async def test_unhappy_path_help_bad_answers_and_cancel(wx):
    await run_transcript(wx, "o-unhappy", [
        ("我要登记", r"哪个社区"),
        ("火星社区", r"没有找到.*例如.*取消"),
        ("江夏", r"几个相近.*1\. 江夏第一社区.*2\. 江夏第二社区"),
        ("第二个", r"怎么称呼"),
        ("帮助", r"正在办理“登记”.*例如.*怎么称呼"),
        ("陈伯", r"手机号"),
        ("12345", r"手机号好像不对.*11位.*例如"),
        ("取消", r"已退出“登记”"),
    ])
    r = await Resident.get(openid="o-unhappy")
    assert not r.registered and r.community_id is None


async def test_three_misses_leave_the_flow_with_menu(wx):
    await run_transcript(wx, "o-miss", [
        ("我要登记", r"哪个社区"),
        ("汇侨北", r"怎么称呼"),
        ("陈伯", r"手机号"),
        ("不记得", r"不对"),
        ("888", r"不对"),
        ("还是不记得", r"退出“登记”.*回复数字"),
    ])
    reply = await wx.say("o-miss", "13800138009")  # no longer inside the flow
    assert "手机" not in reply or "登记成功" not in reply
    assert not (await Resident.get(openid="o-miss")).registered


async def test_saying_no_to_consent_changes_nothing(wx):
    await run_transcript(wx, "o-no", [
        ("登记", r"哪个社区"),
        ("南方医科大学", r"怎么称呼"),
        ("黄姨", r"手机号"),
        ("13900139000", r"同意"),
        ("不同意", r"没关系"),
    ])
    assert not (await Resident.get(openid="o-no")).registered


async def test_qr_scene_preselects_community(wx):
    reply = await wx.event("o-qr", "subscribe", "qrscene_jx2")
    assert "怎么称呼" in reply and "哪个社区" not in reply
    await run_transcript(wx, "o-qr", [
        ("王伯", r"手机号"), ("13700137000", r"同意"), ("同意", r"江夏第二社区"), ("是", r"登记成功"),
    ])
    r = await Resident.get(openid="o-qr").prefetch_related("community")
    assert r.community.code == "jx2"


async def test_idle_state_expires_and_bot_says_so(app_client, backend, tmp_path, request):
    settings = make_settings(backend, tmp_path, request, state_idle_seconds=1)
    client = await app_client(settings)
    wx = WeChat(client, settings.wechat_token)
    await run_transcript(wx, "o-idle", [("我要登记", r"哪个社区"), ("汇侨北", r"怎么称呼")])
    await asyncio.sleep(1.3)
    reply = await wx.say("o-idle", "陈伯")
    assert "超过0分钟" not in reply and "已自动结束" in reply
    assert not (await Resident.get(openid="o-idle")).registered


async def _registered(wx, openid="o-change"):
    await run_transcript(wx, openid, [
        ("登记", r"社区"), ("汇侨北", r"称呼"), ("陈美玲", r"手机"), ("13800138002", r"同意"),
        ("同意", r"确认"), ("是", r"登记成功"),
    ])


async def test_change_community_later(wx):
    await _registered(wx)
    await run_transcript(wx, "o-change", [
        ("我搬到京溪街了", r"南方医科大学社区.*是"),
        ("是", r"改好了"),
    ])
    r = await Resident.get(openid="o-change").prefetch_related("community")
    assert r.community.name == "南方医科大学社区" and r.name == "陈美玲"


async def test_change_phone_later(wx):
    await _registered(wx, "o-phone")
    await run_transcript(wx, "o-phone", [
        ("我要改手机号", r"手机号"),
        ("13912345678", r"13912345678.*是"),
        ("是", r"改好了"),
    ])
    assert (await Resident.get(openid="o-phone")).phone == "13912345678"


async def test_profile_menu_by_number(wx):
    await _registered(wx, "o-menu")
    await run_transcript(wx, "o-menu", [
        ("我要登记", r"要修改哪一项.*1\. 所在社区"),
        ("2", r"称呼"),
        ("陈美美", r"陈美美.*是"),
        ("不", r"已放弃"),
    ])
    assert (await Resident.get(openid="o-menu")).name == "陈美玲"
    assert await Community.all().count() == 4


async def test_asking_for_a_person_interrupts_a_flow(wx):
    await _registered(wx, "o-human")
    await run_transcript(wx, "o-human", [
        ("我要改手机号", r"手机号"),
        ("我要找人工", r"^(?!.*手机号好像不对).*工作人员"),  # handed over, not a bad phone
    ])
    assert "改好了" not in await wx.say("o-human", "是")  # the change flow was left
    assert (await Resident.get(openid="o-human")).phone == "13800138002"


def test_every_intent_has_a_handler():
    from handlers.engine import REGISTRY
    from nlp.intents import INTENTS
    assert set(INTENTS) <= set(REGISTRY.intents)


async def test_a_profile_change_never_undoes_points_moved_meanwhile(wx):
    """The turn loads the resident when it starts; points granted by staff (or refunded by
    the worker) before the profile is saved must survive the save."""
    from models.points import Source, ledger_mismatches, post_entry
    from models.residents import register_resident, update_profile

    community = await Community.get(name="汇侨北社区")
    loaded = await register_resident("o-stale", community, "陈姨", "13800138000")
    await post_entry(loaded.id, 50, reason="志愿服务", source=Source.STAFF_AWARD, key="stale:1")
    await update_profile(loaded, name="陈阿姨")  # `loaded` still says 0 points
    await register_resident("o-stale", community, "陈阿姨", "13800138001")
    fresh = await Resident.get(openid="o-stale")
    assert (fresh.name, fresh.phone, fresh.points) == ("陈阿姨", "13800138001", 50)
    assert (fresh.last_points_reason, fresh.last_points_amount) == ("志愿服务", 50)
    assert await ledger_mismatches() == []
