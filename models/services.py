"""Bookable services (磨刀, 义诊, 长者助餐, 义剪): sessions split into slots, and bookings.

A service belongs to a community and is provided by an organisation or a merchant. Its
sessions (a date, a start and an end) are cut into slots when created; each slot has a
capacity. Booking follows the rule for activity places: inside one transaction the slot row
is locked (SELECT ... FOR UPDATE on PostgreSQL), the live bookings are re-counted, and a
unique constraint forbids the same resident twice in a slot.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from tortoise import fields
from tortoise.expressions import Q
from tortoise.functions import Count
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.clock import LOCAL_TZ, local, local_text
from models.db import locked
from models.outbox import enqueue, notice
from models.residents import Resident


class BookingStatus:
    BOOKED = "booked"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"
    LABELS = {BOOKED: "已预约", CANCELLED: "已取消", NO_SHOW: "爽约"}


# A no-show still took the place: it counts against the slot's capacity.
TAKEN = (BookingStatus.BOOKED, BookingStatus.NO_SHOW)


class Service(Model):
    id = fields.IntField(primary_key=True)
    community = fields.ForeignKeyField("models.Community", related_name="services")
    organisation = fields.ForeignKeyField("models.Organisation", related_name="services", null=True)
    # A merchant (a resident with the merchant role) may provide the service instead.
    merchant = fields.ForeignKeyField("models.Resident", related_name="services_provided", null=True)
    name = fields.CharField(max_length=40)
    # Other words residents use for it, comma-separated (磨剪刀,磨菜刀).
    aliases = fields.CharField(max_length=200, default="")
    description = fields.TextField(default="")
    place = fields.CharField(max_length=120, default="")
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "service"
        unique_together = (("community", "name"),)

    @property
    def words(self) -> list[str]:
        return [self.name] + [w.strip() for w in self.aliases.split(",") if w.strip()]


class ServiceSession(Model):
    id = fields.IntField(primary_key=True)
    service = fields.ForeignKeyField("models.Service", related_name="sessions")
    start_at = fields.DatetimeField(db_index=True)
    end_at = fields.DatetimeField()
    slot_minutes = fields.IntField()
    capacity = fields.IntField()  # per slot

    class Meta:
        table = "service_session"
        unique_together = (("service", "start_at"),)


class ServiceSlot(Model):
    id = fields.IntField(primary_key=True)
    service = fields.ForeignKeyField("models.Service", related_name="slots")
    session = fields.ForeignKeyField("models.ServiceSession", related_name="slots")
    start_at = fields.DatetimeField(db_index=True)
    end_at = fields.DatetimeField()
    capacity = fields.IntField()

    class Meta:
        table = "service_slot"
        unique_together = (("session", "start_at"),)


class Booking(Model):
    id = fields.IntField(primary_key=True)
    slot = fields.ForeignKeyField("models.ServiceSlot", related_name="bookings")
    service = fields.ForeignKeyField("models.Service", related_name="bookings")
    resident = fields.ForeignKeyField("models.Resident", related_name="bookings")
    status = fields.CharField(max_length=16, default=BookingStatus.BOOKED, db_index=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    booked_at = fields.DatetimeField()
    cancelled_at = fields.DatetimeField(null=True)
    marked_at = fields.DatetimeField(null=True)
    marked_by = fields.ForeignKeyField("models.Resident", related_name="bookings_marked", null=True)

    class Meta:
        table = "booking"
        # Nobody twice in a slot; a cancelled booking is re-used when the resident rebooks.
        unique_together = (("slot", "resident"),)
        indexes = (("resident", "status"),)  # 我的预约


def utc(dt: datetime) -> datetime:
    """Every datetime bound into a query in UTC: SQLite compares the stored text, so an
    +08:00 value would compare wrongly against +00:00 rows."""
    return dt.astimezone(timezone.utc)


# ---------------------------------------------------------------------------- creating

class ServiceError(Exception):
    """A clear message for whoever set the service up; nothing was changed."""


async def create_service(*, community_id: int, name: str, organisation_id: int | None = None,
                         merchant_id: int | None = None, aliases: str = "", place: str = "",
                         description: str = "") -> Service:
    """Create the service, or return the community's existing one of that name (updated)."""
    if not (organisation_id or merchant_id):
        raise ServiceError("服务需要一个提供方(组织或商家)")
    service = await Service.get_or_none(community_id=community_id, name=name)
    values = dict(organisation_id=organisation_id, merchant_id=merchant_id, place=place,
                  description=description, active=True)
    if aliases:
        values["aliases"] = aliases
    if service is None:
        return await Service.create(community_id=community_id, name=name, **values)
    await Service.filter(id=service.id).update(**{k: v for k, v in values.items() if v or k == "active"})
    return await Service.get(id=service.id)


async def add_session(service_id: int, start_at: datetime, end_at: datetime, *,
                      slot_minutes: int, capacity: int) -> ServiceSession:
    """A session cut into slots of `slot_minutes`; idempotent on (service, start)."""
    start_at, end_at = utc(start_at), utc(end_at)
    if end_at <= start_at:
        raise ServiceError("结束时间要晚于开始时间")
    if not 5 <= slot_minutes <= 24 * 60 or capacity <= 0:
        raise ServiceError("每个时段至少5分钟,名额必须大于0")
    if (end_at - start_at) < timedelta(minutes=slot_minutes):
        raise ServiceError("时段长度超过了整场时间")
    async with in_transaction():
        session, created = await ServiceSession.get_or_create(
            service_id=service_id, start_at=start_at,
            defaults=dict(end_at=end_at, slot_minutes=slot_minutes, capacity=capacity))
        if not created:
            return session
        step = timedelta(minutes=slot_minutes)
        t, slots = start_at, []
        while t + step <= end_at:
            slots.append(ServiceSlot(service_id=service_id, session_id=session.id, start_at=t,
                                     end_at=t + step, capacity=capacity))
            t += step
        await ServiceSlot.bulk_create(slots)
    return session


async def add_weekly_sessions(service_id: int, first_start: datetime, first_end: datetime, *,
                              weeks: int, slot_minutes: int, capacity: int) -> list[ServiceSession]:
    """The same session on the same weekday for `weeks` weeks (local wall-clock times)."""
    out = []
    for week in range(max(1, weeks)):
        start, end = local(first_start) + timedelta(weeks=week), local(first_end) + timedelta(weeks=week)
        out.append(await add_session(service_id, start, end, slot_minutes=slot_minutes,
                                     capacity=capacity))
    return out


# ---------------------------------------------------------------------------- reading

@dataclass
class SlotView:
    slot: ServiceSlot
    taken: int

    @property
    def left(self) -> int:
        return max(0, self.slot.capacity - self.taken)

    @property
    def id(self) -> int:
        return self.slot.id


async def taken_counts(slot_ids: list[int]) -> dict[int, int]:
    out = {sid: 0 for sid in slot_ids}
    if not slot_ids:
        return out
    rows = await (Booking.filter(slot_id__in=slot_ids, status__in=TAKEN)
                  .annotate(n=Count("id")).group_by("slot_id").values("slot_id", "n"))
    for row in rows:
        out[row["slot_id"]] = row["n"]
    return out


async def slot_views(slots: list[ServiceSlot]) -> list[SlotView]:
    counts = await taken_counts([s.id for s in slots])
    return [SlotView(s, counts[s.id]) for s in slots]


async def upcoming_slots(service_id: int, now: datetime, *, start: datetime | None = None,
                         end: datetime | None = None, limit: int = 200) -> list[SlotView]:
    q = ServiceSlot.filter(service_id=service_id, start_at__gt=utc(max(now, start or now)))
    if end is not None:
        q = q.filter(start_at__lt=utc(end))
    return await slot_views(await q.order_by("start_at", "id").limit(limit))


async def neighbours(slot: ServiceSlot, now: datetime, n: int = 3) -> list[SlotView]:
    """Free slots of the same service closest in time to `slot` (a full slot offers these)."""
    around = await (ServiceSlot.filter(service_id=slot.service_id, start_at__gt=utc(now),
                                       start_at__gte=utc(slot.start_at - timedelta(days=7)),
                                       start_at__lte=utc(slot.start_at + timedelta(days=14)))
                    .exclude(id=slot.id).order_by("start_at"))
    free = [v for v in await slot_views(around) if v.left > 0]
    free.sort(key=lambda v: abs((v.slot.start_at - slot.start_at).total_seconds()))
    return sorted(free[:n], key=lambda v: v.slot.start_at)


def slot_text(slot: ServiceSlot) -> str:
    """12月20日(周六)09:00-09:30"""
    return f"{local_text(slot.start_at)}-{local(slot.end_at):%H:%M}"


async def live_bookings(resident_id: int, now: datetime) -> list[Booking]:
    return await (Booking.filter(resident_id=resident_id, status=BookingStatus.BOOKED,
                                 slot__end_at__gt=utc(now))
                  .order_by("slot__start_at").prefetch_related("slot", "service"))


# ---------------------------------------------------------------------------- booking

class BookingError(Exception):
    """Why the booking cannot be made (the message is for the resident)."""


class SlotFull(BookingError):
    def __init__(self, slot: ServiceSlot) -> None:
        super().__init__("这个时段已经约满了")
        self.slot = slot


async def book(slot_id: int, resident_id: int, *, now: datetime) -> Booking:
    """Book a place in a slot: lock the slot, re-count, write (or revive) the booking.

    Raises SlotFull when no place is left, BookingError when the slot has started or the
    resident already holds a booking in the same session.
    """
    async with in_transaction():
        slot = await locked(ServiceSlot.filter(id=slot_id)).get()
        if slot.start_at <= now:
            raise BookingError("这个时段已经开始或过去了,不能再约。")
        service = await Service.get(id=slot.service_id)
        if not service.active:
            raise BookingError(f"“{service.name}”暂停预约了。")
        mine = await Booking.get_or_none(slot_id=slot.id, resident_id=resident_id)
        if mine and mine.status == BookingStatus.BOOKED:
            return mine
        same_day = await (Booking.filter(resident_id=resident_id, status=BookingStatus.BOOKED,
                                         slot__session_id=slot.session_id)
                          .prefetch_related("slot").first())
        if same_day:
            raise BookingError(f"您已经约了“{service.name}”{slot_text(same_day.slot)},"
                               "同一场只能约一个时段。要改时间请先说“取消预约”。")
        taken = await Booking.filter(slot_id=slot.id, status__in=TAKEN).count()
        if taken >= slot.capacity:
            raise SlotFull(slot)
        if mine is None:
            mine = await Booking.create(slot_id=slot.id, service_id=slot.service_id,
                                        resident_id=resident_id, status=BookingStatus.BOOKED,
                                        booked_at=now)
        else:
            await Booking.filter(id=mine.id).update(status=BookingStatus.BOOKED, booked_at=now,
                                                    cancelled_at=None)
            mine = await Booking.get(id=mine.id)
    return mine


async def cancel_booking(booking_id: int, resident_id: int, *, now: datetime) -> Booking:
    async with in_transaction():
        booking = await Booking.get(id=booking_id, resident_id=resident_id)
        slot = await locked(ServiceSlot.filter(id=booking.slot_id)).get()
        booking = await Booking.get(id=booking_id)
        if booking.status != BookingStatus.BOOKED:
            raise BookingError("这个预约已经取消了。")
        if slot.start_at <= now:
            raise BookingError("时段已经开始,不能取消了。")
        await Booking.filter(id=booking.id).update(status=BookingStatus.CANCELLED, cancelled_at=now)
        booking.status, booking.cancelled_at = BookingStatus.CANCELLED, now
    return booking


async def mark_no_show(booking_id: int, *, by_id: int, now: datetime) -> Booking:
    """The provider marks a resident who did not come; only once the slot has started."""
    async with in_transaction():
        booking = await locked(Booking.filter(id=booking_id)).get()
        slot = await ServiceSlot.get(id=booking.slot_id)
        if booking.status == BookingStatus.NO_SHOW:
            return booking
        if booking.status != BookingStatus.BOOKED:
            raise BookingError("这个预约已取消,不用标记。")
        if slot.start_at > now:
            raise BookingError("时段还没开始,不能标记爽约。")
        await Booking.filter(id=booking.id).update(status=BookingStatus.NO_SHOW, marked_at=now,
                                                   marked_by_id=by_id)
        booking.status = BookingStatus.NO_SHOW
    return booking


async def day_bookings(service_ids: list[int], day_start: datetime,
                       day_end: datetime) -> list[Booking]:
    """The day's live and no-show bookings of these services, in slot order (for providers)."""
    return await (Booking.filter(service_id__in=service_ids, status__in=TAKEN,
                                 slot__start_at__gte=utc(day_start), slot__start_at__lt=utc(day_end))
                  .order_by("slot__start_at", "id").prefetch_related("slot", "service", "resident"))


async def services_provided_by(resident: Resident) -> list[Service]:
    """The services a provider sees: their merchant services, their organisation's, and as
    committee/sub-district staff every service of their community or street."""
    q = Q(merchant_id=resident.id)
    if resident.organisation_id:
        org = await resident.organisation
        q |= Q(organisation_id=org.id)
        if org.community_id:
            q |= Q(community_id=org.community_id)
        elif org.street_id:
            q |= Q(community__street_id=org.street_id)
    return await Service.filter(q, active=True).order_by("id")


# ---------------------------------------------------------------------------- reminders

async def write_booking_reminders(now: datetime, ahead: timedelta = timedelta(hours=24)) -> int:
    """A notice to every resident booked in a slot starting within `ahead`.

    Idempotent: each booking's reminder has the dedupe key `booking-remind:<id>`, so running
    it as often as you like writes each reminder once. Returns the rows offered to the outbox.
    """
    bookings = await (Booking.filter(status=BookingStatus.BOOKED, slot__start_at__gt=utc(now),
                                     slot__start_at__lte=utc(now + ahead))
                      .prefetch_related("slot", "service", "resident"))
    rows = [notice(b.resident.openid, "booking_reminder",
                   f"提醒:您预约的“{b.service.name}”在{slot_text(b.slot)},地点:"
                   f"{b.service.place or '社区'}。不能来请回复“取消预约”,把位置让给街坊。",
                   f"booking-remind:{b.id}") for b in bookings]
    await enqueue(*rows)
    return len(rows)


# ---------------------------------------------------------------------------- demo data

# name, community, provider organisation, aliases, place, weekdays (Mon=0), start, end,
# slot minutes, places per slot
DEMO_SERVICES = [
    ("磨刀", "汇侨北社区", "汇侨北社区志愿服务队", "磨剪刀,磨菜刀,磨较剪", "汇侨北社区党群服务中心门口",
     (5,), (9, 0), (11, 0), 30, 5),
    ("义诊", "汇侨北社区", "汇侨北社区社工服务站", "量血压,看病,体检", "汇侨北社区卫生服务站",
     (2,), (14, 0), (16, 0), 30, 8),
    ("长者助餐", "汇侨北社区", "汇侨北社区社工服务站", "助餐,长者饭堂,老人饭堂", "汇侨北社区长者饭堂",
     (0, 1, 2, 3, 4), (11, 30), (12, 30), 60, 20),
    ("义剪", "汇侨北社区", "汇侨北社区志愿服务队", "理发,剪头发,剪发,飞发", "汇侨北社区文体活动室",
     (5,), (14, 0), (16, 0), 30, 3),
    ("义诊", "南方医科大学社区", "南方医科大学社区志愿服务队", "量血压,看病,体检", "南方医科大学社区广场",
     (6,), (9, 0), (11, 0), 30, 10),
]


async def seed_demo_services(weeks: int = 4) -> None:
    """The pilot's services with sessions in the coming weeks; idempotent per session."""
    from models.places import Community, Organisation  # noqa: PLC0415

    today = datetime.now(LOCAL_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    for (name, community_name, org_name, aliases, place, weekdays, (h0, m0), (h1, m1), minutes,
         capacity) in DEMO_SERVICES:
        community = await Community.get(name=community_name)
        org = await Organisation.get(name=org_name)
        service = await Service.get_or_none(community_id=community.id, name=name)
        if service is None:
            service = await create_service(community_id=community.id, name=name,
                                           organisation_id=org.id, aliases=aliases, place=place)
        for offset in range(1, weeks * 7 + 1):
            day = today + timedelta(days=offset)
            if day.weekday() in weekdays:
                await add_session(service.id, day.replace(hour=h0, minute=m0),
                                  day.replace(hour=h1, minute=m1), slot_minutes=minutes,
                                  capacity=capacity)
