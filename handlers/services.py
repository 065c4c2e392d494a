"""Service bookings: residents book 磨刀, 义诊, 长者助餐, 义剪 in their own words; providers see
the day's bookings and mark no-shows; staff create services in the chat (新建服务)."""
from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta

from handlers.engine import (MIN_CONFIDENCE, REGISTRY, Ctx, EndFlow, Flow, Invalid, Step,
                             confirm_step, flow, int_between, intent, numbered, parse_listed,
                             staff_command, start_flow, text_between, yes_or_keep)
from models.clock import local
from models.places import Organisation
from models.services import (Booking, BookingError, BookingStatus, Service, ServiceError,
                             ServiceSlot, SlotFull, SlotView, add_session, add_weekly_sessions,
                             book, cancel_booking, create_service, day_bookings, live_bookings,
                             mark_no_show, neighbours, services_provided_by, slot_text,
                             slot_views, upcoming_slots, utc)
from nlp.entities import When, parse_choice, parse_choices, parse_when
from nlp.fuzzy import Catalog
from nlp.normalize import compact, mask_phone

OFFER = 5  # slots offered at once

_MINE = ("我的预约", "预约记录", "我约了", "约了什么", "约咗", "预约了什么", "查预约", "查看预约")
_FILLER = re.compile(r"(时段|时间段|那个|那场|这个|的|吧|啦|呀|了|场)")
# A named day in the text (so 十点 alone means "at ten among those shown").
_DAY_WORDS = re.compile(r"今天|明天|后天|今晚|明晚|今早|明早|周|星期|礼拜|月|号|日")


# ---------------------------------------------------------------------------- understanding

async def community_services(ctx: Ctx) -> list[Service]:
    community = ctx.resident.community_id if ctx.resident else None
    if not community:
        return []
    return await Service.filter(community_id=community, active=True).order_by("id")


def named_services(text: str, services: list[Service]) -> list[Service]:
    """Services the text names: a name or alias as a substring, else a close fuzzy match."""
    words = compact(text)
    hits = [s for s in services if any(w and w in words for w in s.words)]
    if hits:
        return hits
    pairs = [(w, s) for s in services for w in s.words]
    query = re.sub(r"(预约|我想|我要|想|要|约个|约|帮我|一下|有冇|有没有|有吗|吗|服务)", "", words)
    if len(query) < 2 or not pairs:
        return []
    matches = Catalog([w for w, _ in pairs]).match(query, limit=1, cutoff=80)
    return [pairs[matches[0].index][1]] if matches else []


def _line(view: SlotView) -> str:
    return f"{slot_text(view.slot)} 剩{view.left}个"


# ---------------------------------------------------------------------------- booking flow

async def _prefill_booking(ctx: Ctx, slots: dict) -> None:
    services = await community_services(ctx)
    if not services:
        raise EndFlow("您所在的社区暂时没有可以预约的服务。有新服务会通知您。")
    found = named_services(ctx.text, services)
    if len(found) == 1:
        slots["service"] = found[0].id
    elif len(services) == 1 and not found:
        slots["service"] = services[0].id
    when = parse_when(ctx.text, ctx.local_now)
    if when:
        slots["_when"] = [when.start.isoformat(), when.end.isoformat(), when.has_time, when.label]


async def _service_prompt(ctx: Ctx, slots: dict) -> str:
    services = await community_services(ctx)
    slots["_services"] = [s.id for s in services]
    return "想预约哪项服务?回复数字:\n" + numbered(
        f"{s.name}" + (f"({s.place})" if s.place else "") for s in services)


async def _parse_service(ctx: Ctx, slots: dict) -> int:
    ids = slots.get("_services") or []
    index = parse_choice(ctx.text, len(ids))
    if index:
        return ids[index - 1]
    found = named_services(ctx.text, await Service.filter(id__in=ids))
    if len(found) == 1:
        when = parse_when(ctx.text, ctx.local_now)
        if when:
            slots["_when"] = [when.start.isoformat(), when.end.isoformat(), when.has_time, when.label]
        return found[0].id
    raise Invalid("请回复服务前面的数字。")


def _offer_text(service: Service, views: list[SlotView], lead: str = "") -> str:
    head = f"{lead}\n" if lead else ""
    return (f"{head}“{service.name}”可约的时段,回复数字:\n" + numbered(_line(v) for v in views)
            + "\n也可以说“周六上午”“十点那个”。")


async def _nearest_free(service: Service, ctx: Ctx, start=None, end=None) -> list[SlotView]:
    views = await upcoming_slots(service.id, ctx.now, start=start, end=end)
    return [v for v in views if v.left > 0][:OFFER]


async def _offers_for(ctx: Ctx, service: Service, when: When | None) -> tuple[list[SlotView], str]:
    """(slots to offer, a lead sentence) for what the resident asked."""
    if when is None:
        return await _nearest_free(service, ctx), ""
    if when.has_time:
        slot = await _slot_at(ctx, service, when, [])
        if slot is not None:
            view = (await slot_views([slot]))[0]
            if view.left > 0:
                return [view], ""
            return (await neighbours(slot, ctx.now),
                    f"{slot_text(slot)}已经约满了,相邻还有空位的时段:")
        window = (local(when.start).replace(hour=0, minute=0), local(when.start).replace(hour=23, minute=59))
    else:
        window = (when.start, when.end)
    views = await _nearest_free(service, ctx, *window)
    if views:
        return views, ""
    return await _nearest_free(service, ctx), f"{when.label}没有可约的“{service.name}”时段。"


async def _slot_at(ctx: Ctx, service: Service, when: When, offered: list[int]) -> ServiceSlot | None:
    """The slot starting at the time said: among those just shown when no day was named."""
    hm = (when.start.hour, when.start.minute)
    day_named = bool(_DAY_WORDS.search(compact(ctx.text)))
    if offered and not day_named:
        shown = await ServiceSlot.filter(id__in=offered).order_by("start_at")
        same = [s for s in shown if (local(s.start_at).hour, local(s.start_at).minute) == hm]
        if same:
            return same[0]
    if day_named:
        return await ServiceSlot.get_or_none(service_id=service.id, start_at=utc(when.start))
    upcoming = await (ServiceSlot.filter(service_id=service.id, start_at__gt=utc(ctx.now))
                      .order_by("start_at").limit(200))
    return next((s for s in upcoming if (local(s.start_at).hour, local(s.start_at).minute) == hm),
                None)


async def _slot_prompt(ctx: Ctx, slots: dict) -> str:
    service = await Service.get(id=slots["service"])
    if slots.get("_offer"):
        views = await slot_views(await ServiceSlot.filter(id__in=slots["_offer"]).order_by("start_at"))
        lead = slots.pop("_note", "")
    else:
        raw = slots.get("_when")
        when = When(datetime.fromisoformat(raw[0]), datetime.fromisoformat(raw[1]), raw[2],
                    raw[3]) if raw else None
        views, lead = await _offers_for(ctx, service, when)
    if not views:
        raise EndFlow(f"“{service.name}”最近的时段都约满了(或还没排期),有新时段会通知您。")
    slots["_offer"] = [v.id for v in views]
    if len(views) == 1 and not lead:
        return _offer_text(service, views, "有这个时段:")
    return _offer_text(service, views, lead)


async def _reoffer(ctx: Ctx, slots: dict, service: Service, views: list[SlotView], lead: str):
    if not views:
        views = await _nearest_free(service, ctx)
    if not views:
        raise EndFlow(f"“{service.name}”最近的时段都约满了,有新时段会通知您。")
    slots["_offer"] = [v.id for v in views]
    return Invalid(_offer_text(service, views, lead), counts=False)


async def _parse_slot(ctx: Ctx, slots: dict) -> int:
    service = await Service.get(id=slots["service"])
    offered = slots.get("_offer") or []
    index = parse_choice(ctx.text, len(offered)) or parse_choice(
        _FILLER.sub("", compact(ctx.text)), len(offered))
    slot = None
    if index:
        slot = await ServiceSlot.get(id=offered[index - 1])
    else:
        when = parse_when(ctx.text, ctx.local_now)
        if when is None:
            raise Invalid("请回复时段前面的数字,或说“周六上午”“十点那个”。")
        if not when.has_time:
            views, lead = await _offers_for(ctx, service, when)
            raise await _reoffer(ctx, slots, service, views, lead or f"{when.label}:")
        slot = await _slot_at(ctx, service, when, offered)
        if slot is None:
            views = await slot_views(await ServiceSlot.filter(id__in=offered).order_by("start_at"))
            raise await _reoffer(ctx, slots, service, views,
                                 f"{when.start:%H:%M}没有“{service.name}”的时段。")
    if slot.start_at <= ctx.now:
        raise await _reoffer(ctx, slots, service, await _nearest_free(service, ctx),
                             "这个时段已经过了。")
    view = (await slot_views([slot]))[0]
    if view.left <= 0:
        raise await _reoffer(ctx, slots, service, await neighbours(slot, ctx.now),
                             f"{slot_text(slot)}已经约满了,相邻还有空位的时段:")
    return slot.id


async def _confirm_prompt(ctx: Ctx, slots: dict) -> str:
    slot = await ServiceSlot.get(id=slots["slot"])
    service = await Service.get(id=slot.service_id)
    return (f"确认预约“{service.name}”\n时间:{slot_text(slot)}\n地点:{service.place or '社区'}\n"
            "确认请回复“是”。")


async def _finish_booking(ctx: Ctx, slots: dict) -> str:
    slot = await ServiceSlot.get(id=slots["slot"])
    service = await Service.get(id=slot.service_id)
    try:
        await book(slot.id, ctx.resident.id, now=ctx.now)
    except SlotFull:
        near = await neighbours(slot, ctx.now)
        if not near:
            return f"抱歉,{slot_text(slot)}刚刚被约满了,“{service.name}”附近也没有空位了。"
        return await start_flow(ctx, "booking", {"service": service.id, "_offer": [v.id for v in near],
                                                 "_note": f"抱歉,{slot_text(slot)}刚刚被约满了。相邻还有空位:"})
    except BookingError as exc:
        return str(exc)
    return (f"预约成功!“{service.name}”{slot_text(slot)},地点:{service.place or '社区'}。"
            "开始前会提醒您。回复“我的预约”查看或取消。")


flow(Flow("booking", "预约服务", [
    Step("service", _service_prompt, _parse_service, example="例如:1"),
    Step("slot", _slot_prompt, _parse_slot, example="例如:1,或“周六上午”"),
    confirm_step(_confirm_prompt),
], _finish_booking, prefill=_prefill_booking))


# ---------------------------------------------------------------------------- mine and cancelling

async def my_bookings(ctx: Ctx) -> str:
    live = await live_bookings(ctx.resident.id, ctx.now)
    if not live:
        return "您现在没有预约。回复“预约服务”看看能约什么。"
    lines = [f"{b.service.name} | {slot_text(b.slot)} | {b.service.place or '社区'}" for b in live]
    return "您的预约:\n" + numbered(lines) + "\n要取消请说“取消预约”。"


async def _prefill_cancel(ctx: Ctx, slots: dict) -> None:
    live = await live_bookings(ctx.resident.id, ctx.now)
    live = [b for b in live if b.slot.start_at > ctx.now]
    if not live:
        raise EndFlow("您现在没有可以取消的预约。")
    named = named_services(ctx.text, list({b.service_id: b.service for b in live}.values()))
    matching = [b for b in live if b.service_id in {s.id for s in named}] if named else live
    if len(matching) == 1:
        slots["booking"] = matching[0].id
    slots["_choices"] = [b.id for b in (matching or live)]


async def _cancel_choice_prompt(ctx: Ctx, slots: dict) -> str:
    bookings = await (Booking.filter(id__in=slots["_choices"]).order_by("id")
                      .prefetch_related("slot", "service"))
    return "要取消哪个预约?回复数字:\n" + numbered(
        f"{b.service.name} {slot_text(b.slot)}" for b in bookings)


async def _cancel_confirm_prompt(ctx: Ctx, slots: dict) -> str:
    b = await Booking.get(id=slots["booking"]).prefetch_related("slot", "service")
    return f"确定取消“{b.service.name}”{slot_text(b.slot)}的预约吗?回复“是”确认取消。"


async def _finish_cancel(ctx: Ctx, slots: dict) -> str:
    b = await Booking.get(id=slots["booking"]).prefetch_related("slot", "service")
    try:
        await cancel_booking(b.id, ctx.resident.id, now=ctx.now)
    except BookingError as exc:
        return str(exc)
    return f"已取消“{b.service.name}”{slot_text(b.slot)}的预约,位置会留给其他街坊。"


flow(Flow("cancel_booking", "取消预约", [
    Step("booking", _cancel_choice_prompt, parse_listed, example="例如:1"),
    Step("confirm", _cancel_confirm_prompt, yes_or_keep("好的,预约保留不变。"), example="例如:是"),
], _finish_cancel, prefill=_prefill_cancel))


# ---------------------------------------------------------------------------- the intent and hook

def _asks_mine(words: str) -> bool:
    return any(w in words for w in _MINE)


def _asks_cancel(words: str) -> bool:
    return "取消" in words or "唔约" in words or "不约了" in words


@intent("service_booking", needs_registration=True)
async def booking(ctx: Ctx) -> str:
    words = compact(ctx.text)
    if _asks_mine(words):
        return await my_bookings(ctx)
    if _asks_cancel(words):
        return await start_flow(ctx, "cancel_booking")
    return await start_flow(ctx, "booking")


async def booking_hook(ctx: Ctx) -> str | None:
    """我的预约 / 取消预约 / a service named in words the classifier does not know (我想理发)."""
    if not ctx.registered:
        return None
    words = compact(ctx.text)
    if _asks_mine(words):
        return await my_bookings(ctx)
    if _asks_cancel(words) and "预约" in words:
        return await start_flow(ctx, "cancel_booking")
    if ctx.nlu.intent not in ("unknown", "service_booking") and ctx.nlu.confidence >= MIN_CONFIDENCE:
        return None
    services = await community_services(ctx)
    if services and any(w in words for s in services for w in s.words):
        return await booking(ctx)
    return None


REGISTRY.hooks.append(booking_hook)


# ---------------------------------------------------------------------------- providers

def _rest(ctx: Ctx, keyword: str) -> str:
    words = compact(ctx.text)
    return words[words.index(keyword) + len(keyword):] if keyword in words else ""


async def day_roster(ctx: Ctx) -> str:
    services = await services_provided_by(ctx.resident)
    if not services:
        return "您没有负责的预约服务。"
    rest = _rest(ctx, "预约名单")
    named = named_services(rest, services) if rest else []
    chosen = named or services
    when = parse_when(rest, ctx.local_now) if rest else None
    day = local(when.start if when else ctx.now).replace(hour=0, minute=0, second=0, microsecond=0)
    bookings = await day_bookings([s.id for s in chosen], day, day + timedelta(days=1))
    label = f"{day.month}月{day.day}日"
    names = "、".join(s.name for s in chosen)
    if not bookings:
        ctx.remember_choices("booking_roster", [])
        return f"{label}“{names}”还没有预约。可以说“预约名单 明天”看别的日子。"
    ctx.remember_choices("booking_roster", [b.id for b in bookings])
    lines = [f"{local(b.slot.start_at):%H:%M} {b.service.name} {b.resident.name} "
             f"{mask_phone(b.resident.phone)} {BookingStatus.LABELS[b.status]}" for b in bookings]
    return (f"{label}预约名单({len(bookings)}人):\n" + numbered(lines)
            + "\n没来的请回复“爽约 编号”,例如“爽约 2”或“爽约 2 3”。")


async def no_show(ctx: Ctx) -> str:
    ids = (ctx.state.get("choices") or {}).get("ids") if (
        ctx.state.get("choices") or {}).get("kind") == "booking_roster" else None
    if not ids:
        return "请先发“预约名单”,再按编号标记,例如“爽约 2”。"
    picks = parse_choices(_rest(ctx, "爽约"), len(ids))
    if not picks:
        return f"请在“爽约”后写名单上的编号(1到{len(ids)}),例如“爽约 2”。"
    mine = {s.id for s in await services_provided_by(ctx.resident)}
    lines = []
    for n in picks:
        booking = await Booking.get(id=ids[n - 1]).prefetch_related("resident")
        if booking.service_id not in mine:
            lines.append(f"{n}. 不是您负责的服务。")
            continue
        try:
            await mark_no_show(booking.id, by_id=ctx.resident.id, now=ctx.now)
            lines.append(f"{n}. {booking.resident.name} 已标记爽约。")
        except BookingError as exc:
            lines.append(f"{n}. {booking.resident.name}:{exc}")
    return "\n".join(lines)


staff_command("预约名单")(day_roster)
staff_command("爽约")(no_show)


async def merchant_hook(ctx: Ctx) -> str | None:
    """Merchants providing a service use the same two commands (they are not staff)."""
    r = ctx.resident
    if r is None or r.is_staff or not r.has_role("merchant"):
        return None
    words = compact(ctx.text)
    if words.startswith("预约名单"):
        return await day_roster(ctx)
    if words.startswith("爽约"):
        return await no_show(ctx)
    return None


REGISTRY.hooks.insert(0, merchant_hook)


# ---------------------------------------------------------------------------- staff: a new service

_RANGE_RE = re.compile(r"(\d{1,2})(?:[:：点](\d{2}|半)?)?\s*[-~～到至]\s*(\d{1,2})(?:[:：点](\d{2}|半)?)?")


def _minute(s: str | None) -> int:
    return 30 if s == "半" else int(s or 0)


async def _parse_schedule(ctx: Ctx, slots: dict) -> dict:
    text = re.sub(r"\s+", "", unicodedata.normalize("NFKC", ctx.text))
    m = _RANGE_RE.search(text)
    if not m:
        raise Invalid("请写明起止时间,例如“每周六 9:00-11:00”。")
    h0, m0, h1, m1 = int(m.group(1)), _minute(m.group(2)), int(m.group(3)), _minute(m.group(4))
    if h1 < h0 and h1 <= 12 and ("下午" in text or "晚上" in text):
        h1 += 12
    day = parse_when(text.replace(m.group(0), ""), ctx.local_now)
    if day is None:
        raise Invalid("请写明哪一天,例如“每周六”或“12月20号”。")
    if not (0 <= h0 < 24 and 0 <= h1 < 24):
        raise Invalid("时间不对,请用24小时制,例如 9:00-11:00。")
    start = local(day.start).replace(hour=h0, minute=m0)
    end = local(day.start).replace(hour=h1, minute=m1)
    if end <= start:
        raise Invalid("结束时间要晚于开始时间。")
    if start <= ctx.now:
        raise Invalid("这个时间已经过去了。")
    return {"start": start.isoformat(), "end": end.isoformat(), "weekly": "每" in text}


async def _new_service_confirm(ctx: Ctx, slots: dict) -> str:
    sch = slots["schedule"]
    start, end = datetime.fromisoformat(sch["start"]), datetime.fromisoformat(sch["end"])
    repeat = f"每周一次,共{slots['weeks']}周" if sch["weekly"] else "一场"
    return (f"请确认新建服务:\n名称:{slots['name']}\n时间:{slot_text_of(start, end)}({repeat})\n"
            f"每{slots['minutes']}分钟一个时段,每个时段{slots['capacity']}人\n地点:{slots['place']}\n"
            "确认请回复“是”。")


def slot_text_of(start: datetime, end: datetime) -> str:
    return f"{start.month}月{start.day}日 {start:%H:%M}-{end:%H:%M}"


async def _finish_new_service(ctx: Ctx, slots: dict) -> str:
    org = await Organisation.get(id=ctx.resident.organisation_id)
    if not org.community_id:
        return "您的组织不属于某个社区,请用命令行 python main.py service add --community 指定社区。"
    sch = slots["schedule"]
    start, end = datetime.fromisoformat(sch["start"]), datetime.fromisoformat(sch["end"])
    try:
        service = await create_service(community_id=org.community_id, name=slots["name"],
                                       organisation_id=org.id, place=slots["place"])
        if sch["weekly"]:
            sessions = await add_weekly_sessions(service.id, start, end, weeks=slots["weeks"],
                                                 slot_minutes=slots["minutes"],
                                                 capacity=slots["capacity"])
        else:
            sessions = [await add_session(service.id, start, end, slot_minutes=slots["minutes"],
                                          capacity=slots["capacity"])]
    except ServiceError as exc:
        return f"没有建成:{exc}。"
    count = await ServiceSlot.filter(session_id__in=[s.id for s in sessions]).count()
    return (f"已新建服务“{service.name}”(编号{service.id}),共{len(sessions)}场、{count}个时段。"
            "居民现在就可以说“预约" + service.name + "”了。发“预约名单”看当天预约。")


flow(Flow("new_service", "新建服务", [
    Step("name", "请回复服务名称。", text_between(2, 20, "服务名称"), example="例如:磨刀"),
    Step("schedule", "什么时候提供?写明日期和起止时间,每周都有请写“每周”。", _parse_schedule,
         example="例如:每周六 9:00-11:00,或 12月20号 14:00-16:00"),
    Step("minutes", "每个时段多少分钟?", int_between(5, 240, "分钟数"), example="例如:30"),
    Step("capacity", "每个时段可以约几个人?", int_between(1, 500), example="例如:5"),
    Step("weeks", "连续开放几周?", int_between(1, 26, "周数"), example="例如:4",
         when=lambda s: s.get("schedule", {}).get("weekly")),
    Step("place", "在哪里?", text_between(2, 60, "地点"), example="例如:汇侨北社区党群服务中心门口"),
    confirm_step(_new_service_confirm),
], _finish_new_service))


@staff_command("新建服务")
async def new_service(ctx: Ctx) -> str:
    name = _rest(ctx, "新建服务").strip(" ::")
    return await start_flow(ctx, "new_service", {"name": name} if 2 <= len(name) <= 20 else {})
