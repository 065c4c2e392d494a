"""Service bookings: residents book in their own words (relative dates on a pinned clock),
see and cancel their bookings, a full slot offers its neighbours, 50 residents race for a
slot of 5 through the webhook, reminders are written once, providers see the day's bookings
and mark no-shows, staff create services in the chat and on the command line."""
from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta

from bot import keys
from handlers.engine import Incoming
from models.clock import LOCAL_TZ
from models.outbox import Outbox
from models.places import Community, Organisation
from models.residents import Resident
from models.services import (Booking, BookingStatus, Service, ServiceSlot, add_session,
                             add_weekly_sessions, book, create_service, utc,
                             write_booking_reminders)
from tests import helpers as h
from tests.conftest import run_transcript
from tests.test_cli import database_url, run  # noqa: F401  (the CLI fixture on both databases)

# Wednesday 2 January 2030, 10:00 in Guangzhou: 明天 is Thursday, 周六 is 5 January.
WED = datetime(2030, 1, 2, 10, 0, tzinfo=LOCAL_TZ)


def at(day: datetime, hour: int, minute: int = 0) -> datetime:
    return day.replace(hour=hour, minute=minute)


async def demo_services(first_saturday: datetime, clinic_day: datetime, weeks: int = 2):
    """磨刀 on Saturdays 9:00-11:00 (30-minute slots of 5), 义诊 one afternoon, 义剪 with aliases."""
    hqb = await Community.get(name="汇侨北社区")
    volunteers = await Organisation.get(name="汇侨北社区志愿服务队")
    knives = await create_service(community_id=hqb.id, name="磨刀", organisation_id=volunteers.id,
                                  aliases="磨剪刀,磨菜刀", place="汇侨北社区党群服务中心门口")
    await add_weekly_sessions(knives.id, at(first_saturday, 9), at(first_saturday, 11), weeks=weeks,
                              slot_minutes=30, capacity=5)
    clinic = await create_service(community_id=hqb.id, name="义诊", organisation_id=volunteers.id,
                                  aliases="量血压,看病", place="社区卫生站")
    await add_session(clinic.id, at(clinic_day, 14), at(clinic_day, 16), slot_minutes=30, capacity=10)
    cuts = await create_service(community_id=hqb.id, name="义剪", organisation_id=volunteers.id,
                                aliases="理发,剪头发,剪发", place="社区活动室")
    await add_session(cuts.id, at(first_saturday, 14), at(first_saturday, 15), slot_minutes=30,
                      capacity=3)
    return knives, clinic, cuts


def pinned(client):
    """Drive the conversation with an injected clock (the webhook stamps the real time)."""
    conversation = client.app[keys.CONVERSATION]

    async def say(openid: str, text: str, now: datetime = WED) -> str:
        return await conversation.handle(Incoming(openid=openid, kind="text", now=now, text=text))

    async def transcript(openid: str, lines, now: datetime = WED) -> list[str]:
        replies = []
        for said, expected in lines:
            reply = await say(openid, said, now)
            assert re.search(expected, reply or "", re.S), f"{said!r} → {reply!r} !~ {expected!r}"
            replies.append(reply)
        return replies

    return say, transcript


async def test_book_in_own_words_on_a_pinned_clock(client):
    knives, clinic, _ = await demo_services(at(WED + timedelta(days=3), 0), WED + timedelta(days=1))
    await h.resident("o-knife", name="陈阿姨")
    say, transcript = pinned(client)
    await transcript("o-knife", [
        ("约个磨刀", r"“磨刀”可约的时段.*1\. 1月5日\(周六\)09:00-09:30 剩5个.*"
                    r"2\. 1月5日\(周六\)09:30-10:00.*5\. 1月12日\(周六\)09:00-09:30"),
        ("第二个时段", r"确认预约“磨刀”.*1月5日\(周六\)09:30-10:00.*党群服务中心门口.*是"),
        ("是", r"预约成功!“磨刀”1月5日\(周六\)09:30-10:00"),
        ("我的预约", r"1\. 磨刀 \| 1月5日\(周六\)09:30-10:00"),
        # Same session twice is refused, politely, with how to change.
        ("约个磨刀", r"可约的时段"), ("1", r"确认预约"), ("是", r"同一场只能约一个时段"),
        ("明天下午有义诊吗", r"“义诊”可约的时段.*1月3日\(周四\)14:00-14:30 剩10个.*15:30-16:00"),
        ("取消", r"已退出"),
    ])
    mine = await Booking.filter(resident__openid="o-knife").prefetch_related("slot")
    assert [(b.status, b.slot.start_at) for b in mine] == [
        (BookingStatus.BOOKED, at(WED + timedelta(days=3), 9, 30))]

    # 周六上午 narrows to that morning; 十点那个 picks by time among those shown.
    await h.resident("o-ten")
    await transcript("o-ten", [
        ("我想约磨刀", r"可约的时段"),
        ("周六上午", r"1月5日\(周六\)上午:.*1\. 1月5日\(周六\)09:00-09:30.*4\. 1月5日\(周六\)10:30-11:00"),
        ("十点那个", r"确认预约.*1月5日\(周六\)10:00-10:30"),
        ("好", r"预约成功"),
    ])
    # Days named by 号 and a weekday with a Chinese-numeral hour.
    await h.resident("o-hao")
    await transcript("o-hao", [
        ("预约磨刀 12号", r"1\. 1月12日\(周六\)09:00-09:30"),
        ("取消", r"已退出"),
        ("约磨刀 周六九点半", r"有这个时段.*1月5日\(周六\)09:30-10:00 剩4个"),
        ("1", r"确认预约"), ("是", r"预约成功"),
    ])
    # Nothing that afternoon: the nearest free slots are offered instead.
    await transcript("o-hao", [("明天上午有义诊吗", r"1月3日\(周四\)上午没有可约的“义诊”时段.*14:00-14:30")])


async def test_full_slot_offers_neighbours_and_cancel_frees_it(client):
    knives, _, _ = await demo_services(at(WED + timedelta(days=3), 0), WED + timedelta(days=1))
    saturday = WED + timedelta(days=3)
    ten = await ServiceSlot.get(service_id=knives.id, start_at=utc(at(saturday, 10)))
    for i in range(5):
        r = await h.resident(f"o-full{i}")
        await book(ten.id, r.id, now=WED)
    await h.resident("o-late")
    say, transcript = pinned(client)
    await transcript("o-late", [
        ("周六十点约磨刀", r"10:00-10:30已经约满了,相邻还有空位的时段:.*09:30-10:00 剩5个.*10:30-11:00 剩5个"),
        ("十点那个", r"10:00-10:30已经约满了"),  # asking again for the full one: neighbours again
        ("3", r"确认预约.*10:30-11:00"), ("是", r"预约成功"),
    ])
    # One of the five cancels: the place is free again.
    await transcript("o-full0", [
        ("取消预约", r"确定取消“磨刀”1月5日\(周六\)10:00-10:30"),
        ("是", r"已取消"),
        ("我的预约", r"没有预约"),
    ])
    assert await Booking.filter(slot_id=ten.id, status=BookingStatus.BOOKED).count() == 4
    await h.resident("o-next")
    await transcript("o-next", [("约个磨刀 周六10点", r"有这个时段.*10:00-10:30 剩1个"),
                                ("1", r"确认"), ("是", r"预约成功")])
    # Rebooking after a cancellation re-uses the row (the unique key holds).
    await transcript("o-full0", [("约个磨刀 周六10点", r"10:00-10:30已经约满了")])
    # Too late to cancel once the slot has begun.
    await transcript("o-next", [("取消预约", r"没有可以取消的预约")], now=at(saturday, 10, 5))
    assert await Booking.filter(slot_id=ten.id, status=BookingStatus.BOOKED).count() == 5


async def test_booking_over_http_in_other_words(wx):
    saturday = datetime.now(LOCAL_TZ) + timedelta(days=3)
    await demo_services(at(saturday, 0), saturday)
    await h.resident("o-hair", name="黄伯")
    await run_transcript(wx, "o-hair", [
        ("我想理发", r"“义剪”可约的时段.*1\. .*14:00-14:30 剩3个"),
        ("帮助", r"预约服务"),
        ("随便", r"请回复时段前面的数字"),
        ("1", r"确认预约“义剪”"),
        ("唔要", r"已放弃"),
        ("预约服务", r"想预约哪项服务.*1\. 磨刀.*2\. 义诊.*3\. 义剪"),
        ("3", r"义剪"), ("1", r"确认"), ("是", r"预约成功"),
        ("我约了什么", r"义剪"),
        ("取消义剪预约", r"确定取消“义剪”"), ("不是", r"预约保留不变"),
    ])
    assert await Booking.filter(resident__openid="o-hair", status=BookingStatus.BOOKED).count() == 1
    # Not registered: registration first.
    assert "先登记" in await wx.say("o-stranger", "约个磨刀")
    # Another community has no services.
    await h.resident("o-jx", community="江夏第一社区")
    assert "没有可以预约的服务" in await wx.say("o-jx", "预约服务")


async def test_fifty_residents_race_for_a_slot_of_five(wx):
    hqb = await Community.get(name="汇侨北社区")
    volunteers = await Organisation.get(name="汇侨北社区志愿服务队")
    knives = await create_service(community_id=hqb.id, name="磨刀", organisation_id=volunteers.id)
    start = (datetime.now(LOCAL_TZ) + timedelta(days=2)).replace(hour=9, minute=0, second=0,
                                                                  microsecond=0)
    await add_session(knives.id, start, start + timedelta(minutes=30), slot_minutes=30, capacity=5)
    await add_session(knives.id, start + timedelta(days=7), start + timedelta(days=7, minutes=30),
                      slot_minutes=30, capacity=5)
    slot = await ServiceSlot.get(service_id=knives.id, start_at=utc(start))
    openids = [f"o-race{i:02d}" for i in range(50)]
    await Resident.bulk_create([Resident(openid=o, name=f"街坊{i}", phone=f"137{i:08d}",
                                         community=hqb, registered=True)
                                for i, o in enumerate(openids)])
    offers = await asyncio.gather(*(wx.say(o, "约个磨刀") for o in openids))
    assert all("剩5个" in r for r in offers)
    confirms = await asyncio.gather(*(wx.say(o, "1") for o in openids))
    assert all("确认预约" in r for r in confirms)
    results = await asyncio.gather(*(wx.say(o, "是") for o in openids))  # everyone at once
    won = [r for r in results if "预约成功" in r]
    lost = [r for r in results if "刚刚被约满了" in r]
    assert len(won) == 5 and len(lost) == 45, results
    assert all("剩5个" in r for r in lost)  # next week's slot offered as the neighbour
    assert await Booking.filter(slot_id=slot.id, status=BookingStatus.BOOKED).count() == 5
    assert await Booking.filter(slot_id=slot.id).count() == 5


async def test_reminders_written_once(client):
    saturday = WED + timedelta(days=3)
    knives, _, _ = await demo_services(at(saturday, 0), WED + timedelta(days=1))
    slots = await ServiceSlot.filter(service_id=knives.id).order_by("start_at").limit(2)
    a, b = await h.resident("o-rem-a"), await h.resident("o-rem-b")
    await book(slots[0].id, a.id, now=WED)
    booked = await book(slots[1].id, b.id, now=WED)
    await Booking.filter(id=booked.id).update(status=BookingStatus.CANCELLED)
    friday = at(saturday - timedelta(days=1), 12)
    assert await write_booking_reminders(WED) == 0  # more than a day ahead
    assert await write_booking_reminders(friday) == 1
    await write_booking_reminders(friday + timedelta(hours=1))  # the scheduler runs again
    rows = await Outbox.filter(kind="booking_reminder")
    assert len(rows) == 1 and rows[0].recipient == "o-rem-a" and "磨刀" in rows[0].text


async def test_providers_see_the_day_and_mark_no_shows(client):
    saturday = WED + timedelta(days=3)
    knives, _, cuts = await demo_services(at(saturday, 0), WED + timedelta(days=1))
    slots = await ServiceSlot.filter(service_id=knives.id).order_by("start_at").limit(2)
    a = await h.resident("o-p-a", name="陈阿姨", phone="13912345678")
    b = await h.resident("o-p-b", name="黄伯")
    await book(slots[0].id, a.id, now=WED)
    await book(slots[1].id, b.id, now=WED)
    await h.staff("o-vol", org="汇侨北社区志愿服务队", name="志愿者小林")
    await h.resident("o-plain")
    say, transcript = pinned(client)
    morning = at(saturday, 9, 40)
    await transcript("o-vol", [
        ("预约名单", r"1月2日“磨刀、义诊、义剪”还没有预约"),
        ("爽约 1", r"先发“预约名单”"),
    ])
    replies = await transcript("o-vol", [
        ("预约名单 磨刀", r"1月5日预约名单\(2人\):.*1\. 09:00 磨刀 陈阿姨 139\*\*\*\*5678 已预约"
                          r".*2\. 09:30 磨刀 黄伯"),
        ("爽约 2", r"时段还没开始"),  # 09:30 has not begun at 09:20
    ], now=at(saturday, 9, 20))
    assert "13912345678" not in replies[0]
    await transcript("o-vol", [
        ("预约名单", r"1\. 09:00 磨刀 陈阿姨"),
        ("爽约 1 2", r"陈阿姨 已标记爽约.*黄伯 已标记爽约"),
        ("预约名单", r"陈阿姨 \S+ 爽约"),
        ("爽约 9", r"编号\(1到2\)"),
    ], now=morning)
    assert await Booking.filter(status=BookingStatus.NO_SHOW).count() == 2
    # A resident who is no provider gets the booking flow, not the roster.
    assert "预约名单(" not in await say("o-plain", "预约名单", morning)
    # A merchant providing 义剪 sees their own service's day.
    merchant = await h.resident("o-barber", name="阿强理发")
    await Resident.filter(id=merchant.id).update(roles="merchant,resident")
    await Service.filter(id=cuts.id).update(merchant_id=merchant.id, organisation_id=None)
    cut_slot = await ServiceSlot.filter(service_id=cuts.id).first()
    await book(cut_slot.id, a.id, now=WED)
    assert re.search(r"14:00 义剪 陈阿姨", await say("o-barber", "预约名单", morning))


async def test_staff_create_a_service_in_the_chat(client):
    await h.staff("o-staff")
    say, transcript = pinned(client)
    await transcript("o-staff", [
        ("新建服务", r"服务名称"),
        ("磨刀", r"什么时候"),
        ("下午", r"起止时间"),
        ("每周六 9:00-11:00", r"多少分钟"),
        ("30", r"几个人"),
        ("5", r"几周"),
        ("4", r"在哪里"),
        ("党群服务中心门口", r"名称:磨刀.*1月5日 09:00-11:00\(每周一次,共4周\).*每30分钟一个时段,每个时段5人"),
        ("是", r"已新建服务“磨刀”.*共4场、16个时段"),
    ])
    await h.resident("o-after")
    await transcript("o-after", [("约个磨刀", r"1月5日\(周六\)09:00-09:30 剩5个")])
    await transcript("o-staff", [
        ("新建服务 义诊", r"什么时候"),
        ("明天 14:00-16:00", r"多少分钟"),
        ("60", r"几个人"), ("8", r"在哪里"), ("卫生站", r"一场"), ("是", r"共1场、2个时段"),
    ])
    # Residents cannot create services.
    assert "服务名称" not in await say("o-after", "新建服务")


def test_service_add_on_the_command_line(database_url):  # noqa: F811
    run(database_url, "init-db")
    run(database_url, "seed-demo")
    out = run(database_url, "service", "add", "--community", "汇侨北社区", "--name", "助浴",
              "--org", "汇侨北社区社工服务站", "--start", "2031-03-01T09:00", "--end", "11:00",
              "--slot-minutes", "30", "--capacity", "2", "--weeks", "3", "--place", "社区长者中心").stdout
    assert "助浴" in out and "3场" in out and "12个时段" in out
    bad = run(database_url, "service", "add", "--community", "火星社区", "--name", "x",
              "--org", "汇侨北社区居委会", "--start", "2031-03-01T09:00", "--end", "11:00", ok=False)
    assert bad.returncode != 0 and "火星社区" in bad.stderr
    bad = run(database_url, "service", "add", "--community", "汇侨北社区", "--name", "x",
              "--org", "汇侨北社区居委会", "--start", "2031-03-01T09:00", "--end", "08:00", ok=False)
    assert "结束时间" in bad.stderr
