"""Activities, signups, the waiting list and check-in.

Places are re-counted inside a transaction that locks the activity row; a unique
constraint forbids the same participant twice; a place is held while a resident confirms;
a cancellation promotes the first on the waiting list, with a notice in the same
transaction; check-in credits points through the ledger with the key `checkin:<signup>`.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise import fields
from tortoise.expressions import Q
from tortoise.functions import Count
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.clock import local_text
from models.db import locked
from models.outbox import enqueue, notice
from models.points import Source, post_entry
from models.residents import Resident


class Kind:
    LABELS = {"class": "课堂", "volunteer": "志愿服务", "culture": "文体活动", "meeting": "居民议事会",
              "talk": "讲座", "service": "便民服务", "other": "活动"}


class Audience:
    LABELS = {"children": "儿童", "elderly": "长者", "everyone": "所有居民"}


class ActivityStatus:
    DRAFT, PUBLISHED, CANCELLED, FINISHED = "draft", "published", "cancelled", "finished"


class SignupStatus:
    HELD = "held"  # a place kept while the resident confirms
    CONFIRMED = "confirmed"
    WAITING = "waiting"
    CHECKED_IN = "checked_in"
    CANCELLED = "cancelled"
    RELEASED = "released"  # a hold given back (said no, or never confirmed)
    LABELS = {HELD: "待确认", CONFIRMED: "报名成功", WAITING: "候补中", CHECKED_IN: "已签到",
              CANCELLED: "已取消", RELEASED: "未报名"}


class Role:
    PARTICIPANT, VOLUNTEER = "participant", "volunteer"


class Activity(Model):
    id = fields.IntField(primary_key=True)
    community = fields.ForeignKeyField("models.Community", related_name="activities", null=True)
    street = fields.ForeignKeyField("models.Street", related_name="activities", null=True)
    organisation = fields.ForeignKeyField("models.Organisation", related_name="activities", null=True)
    title = fields.CharField(max_length=80)
    description = fields.TextField(default="")
    kind = fields.CharField(max_length=16, default="other")
    audience = fields.CharField(max_length=16, default="everyone")
    place = fields.CharField(max_length=120, default="")
    start_at = fields.DatetimeField(db_index=True)
    end_at = fields.DatetimeField()
    signup_opens_at = fields.DatetimeField(null=True)
    signup_closes_at = fields.DatetimeField(null=True)
    cancel_deadline = fields.DatetimeField(null=True)
    capacity = fields.IntField()
    points_participant = fields.IntField(default=0)
    points_volunteer = fields.IntField(default=0)
    status = fields.CharField(max_length=16, default=ActivityStatus.PUBLISHED, db_index=True)
    checkin_code = fields.CharField(max_length=8, db_index=True)
    contact = fields.CharField(max_length=100, default="")
    # Fill levels (50, 80, 100) already announced to the organiser, as a bitmask.
    fill_notified = fields.IntField(default=0)
    created_by = fields.ForeignKeyField("models.Resident", related_name="activities_created", null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "activity"

    def points_for(self, role: str) -> int:
        return self.points_volunteer if role == Role.VOLUNTEER else self.points_participant


class FamilyMember(Model):
    """Someone a resident signs up (usually a child); asked once, remembered."""

    id = fields.IntField(primary_key=True)
    resident = fields.ForeignKeyField("models.Resident", related_name="family")
    name = fields.CharField(max_length=30)
    age = fields.IntField(null=True)
    relation = fields.CharField(max_length=16, default="")

    class Meta:
        table = "family_member"
        unique_together = (("resident", "name"),)


class Signup(Model):
    id = fields.IntField(primary_key=True)
    activity = fields.ForeignKeyField("models.Activity", related_name="signups")
    resident = fields.ForeignKeyField("models.Resident", related_name="signups")
    family_member = fields.ForeignKeyField("models.FamilyMember", related_name="signups", null=True)
    # "self" or "fm:<id>": with the activity, unique — nobody twice.
    participant_key = fields.CharField(max_length=24)
    participant_name = fields.CharField(max_length=50)
    role = fields.CharField(max_length=16, default=Role.PARTICIPANT)
    status = fields.CharField(max_length=16, db_index=True)
    hold_expires_at = fields.DatetimeField(null=True)
    waitlisted_at = fields.DatetimeField(null=True)
    confirmed_at = fields.DatetimeField(null=True)
    cancelled_at = fields.DatetimeField(null=True)
    checked_in_at = fields.DatetimeField(null=True)
    promotions = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "signup"
        unique_together = (("activity", "participant_key", "resident"),)
        indexes = (("resident", "status"),)  # 我的报名


# ---------------------------------------------------------------------------- counting

TAKEN = (SignupStatus.CONFIRMED, SignupStatus.CHECKED_IN)


@dataclass
class Counts:
    confirmed: int = 0  # including checked in
    held: int = 0
    waiting: int = 0
    checked_in: int = 0

    def places_left(self, capacity: int) -> int:
        return max(0, capacity - self.confirmed - self.held)


def _live(now: datetime) -> Q:
    return Q(status__in=TAKEN) | Q(status=SignupStatus.WAITING) | Q(
        status=SignupStatus.HELD, hold_expires_at__gt=now)


async def counts_for(activity_ids: list[int], now: datetime) -> dict[int, Counts]:
    out = {aid: Counts() for aid in activity_ids}
    if not activity_ids:
        return out
    rows = await (Signup.filter(_live(now), activity_id__in=activity_ids)
                  .annotate(n=Count("id")).group_by("activity_id", "status")
                  .values("activity_id", "status", "n"))
    for row in rows:
        c = out[row["activity_id"]]
        if row["status"] in TAKEN:
            c.confirmed += row["n"]
        if row["status"] == SignupStatus.CHECKED_IN:
            c.checked_in += row["n"]
        elif row["status"] == SignupStatus.HELD:
            c.held += row["n"]
        elif row["status"] == SignupStatus.WAITING:
            c.waiting += row["n"]
    return out


async def _counts(activity_id: int, now: datetime) -> Counts:
    return (await counts_for([activity_id], now))[activity_id]


# ---------------------------------------------------------------------------- creating

async def _new_checkin_code() -> str:
    while True:  # unique among activities still running
        code = f"{secrets.randbelow(9000) + 1000}"
        if not await Activity.filter(checkin_code=code, status=ActivityStatus.PUBLISHED).exists():
            return code


async def create_activity(*, title: str, start_at: datetime, capacity: int,
                          end_at: datetime | None = None, code: str | None = None,
                          **extra) -> Activity:
    if capacity <= 0:
        raise ValueError("capacity must be positive")
    return await Activity.create(title=title, start_at=start_at,
                                 end_at=end_at or start_at + timedelta(hours=2), capacity=capacity,
                                 checkin_code=code or await _new_checkin_code(), **extra)


# ---------------------------------------------------------------------------- signing up

class SignupError(Exception):
    """Why the resident cannot sign up (the message is for the resident)."""


@dataclass
class Participant:
    name: str
    key: str = "self"
    family_member_id: int | None = None


def _signup_window_error(activity: Activity, now: datetime) -> str | None:
    if activity.status != ActivityStatus.PUBLISHED:
        return "这个活动已取消或已结束,不能报名了。"
    if activity.signup_opens_at and now < activity.signup_opens_at:
        return "这个活动还没开始报名。"
    if (activity.signup_closes_at and now >= activity.signup_closes_at) or now >= activity.start_at:
        return "这个活动的报名已经截止了。"
    return None


async def _existing(activity_id: int, resident_id: int, key: str) -> Signup | None:
    return await Signup.get_or_none(activity_id=activity_id, resident_id=resident_id,
                                    participant_key=key)


async def hold_place(activity_id: int, resident_id: int, participant: Participant, *,
                     now: datetime, hold_seconds: int, role: str = Role.PARTICIPANT) -> Signup:
    """Keep a place while the resident confirms. Status HELD, or WAITING-offer when full.

    Returns the signup; `status == HELD` means a place is kept until `hold_expires_at`;
    a RELEASED signup means the activity is full (offer the waiting list). Raises
    SignupError when signing up is not possible at all; an existing live signup is returned
    as it is.
    """
    # The participant's own row is read before the activity lock: only this resident's turn
    # (serialised by their own lock) creates or holds it, so every transaction holding the
    # contested lock does one query less.
    signup = await _existing(activity_id, resident_id, participant.key)
    if signup and signup.status in (*TAKEN, SignupStatus.WAITING):
        return signup
    if signup and signup.status == SignupStatus.HELD and signup.hold_expires_at > now:
        return signup
    async with in_transaction():
        activity = await locked(Activity.filter(id=activity_id)).get()
        if error := _signup_window_error(activity, now):
            raise SignupError(error)
        counts = await _counts(activity_id, now)
        free = counts.places_left(activity.capacity) > 0
        values = dict(participant_name=participant.name, family_member_id=participant.family_member_id,
                      role=role, status=SignupStatus.HELD if free else SignupStatus.RELEASED,
                      hold_expires_at=now + timedelta(seconds=hold_seconds) if free else None)
        if signup is None:
            signup = await Signup.create(activity_id=activity_id, resident_id=resident_id,
                                         participant_key=participant.key, **values)
        else:
            await Signup.filter(id=signup.id).update(**values)
            signup = await Signup.get(id=signup.id)
    return signup


async def confirm_signup(signup_id: int, *, now: datetime, waitlist: bool) -> Signup:
    """Turn a hold into a place (re-counted under the lock), or join the waiting list.

    `waitlist=True` lets a resident whose hold lapsed and found the activity full wait.
    """
    async with in_transaction():
        signup = await Signup.get(id=signup_id)
        activity = await locked(Activity.filter(id=signup.activity_id)).get()
        signup = await Signup.get(id=signup_id)  # re-read under the activity lock
        if signup.status in (*TAKEN, SignupStatus.WAITING):
            return signup
        if error := _signup_window_error(activity, now):
            raise SignupError(error)
        counts = await _counts(activity.id, now)
        held_live = signup.status == SignupStatus.HELD and signup.hold_expires_at > now
        # A live hold already counts as taken; otherwise a place must still be free.
        free = held_live or counts.places_left(activity.capacity) > 0
        if free:
            await Signup.filter(id=signup.id).update(status=SignupStatus.CONFIRMED, confirmed_at=now,
                                                     hold_expires_at=None, cancelled_at=None)
            await _announce_fill(activity, counts.confirmed + 1)
        elif waitlist:
            await Signup.filter(id=signup.id).update(status=SignupStatus.WAITING, waitlisted_at=now,
                                                     hold_expires_at=None, cancelled_at=None)
        else:
            await Signup.filter(id=signup.id).update(status=SignupStatus.RELEASED,
                                                     hold_expires_at=None)
        return await Signup.get(id=signup.id)


async def release_hold(signup_id: int) -> None:
    await Signup.filter(id=signup_id, status=SignupStatus.HELD).update(
        status=SignupStatus.RELEASED, hold_expires_at=None)


FILL_LEVELS = (50, 80, 100)


async def _announce_fill(activity: Activity, confirmed: int) -> None:
    """Tell the organiser's staff when the activity passes 50%, 80% and 100% full."""
    percent = confirmed * 100 // activity.capacity
    reached = [lvl for i, lvl in enumerate(FILL_LEVELS)
               if percent >= lvl and not activity.fill_notified & (1 << i)]
    if not reached:
        return
    mask = activity.fill_notified
    for lvl in reached:
        mask |= 1 << FILL_LEVELS.index(lvl)
    await Activity.filter(id=activity.id).update(fill_notified=mask)
    activity.fill_notified = mask
    if not activity.organisation_id:
        return
    staff = await Resident.filter(organisation_id=activity.organisation_id, roles__contains="staff")
    level = reached[-1]
    text = f"“{activity.title}”报名已达{level}%({confirmed}/{activity.capacity})。"
    await enqueue(*(notice(s.openid, "fill_level", text, f"fill:{activity.id}:{level}:{s.id}")
                    for s in staff))


async def position_in_waitlist(signup: Signup) -> int:
    return await Signup.filter(
        Q(waitlisted_at__lt=signup.waitlisted_at) | Q(waitlisted_at=signup.waitlisted_at,
                                                      id__lt=signup.id),
        activity_id=signup.activity_id, status=SignupStatus.WAITING).count() + 1


# ---------------------------------------------------------------------------- cancelling

class CancelError(Exception):
    pass


async def cancel_signup(signup_id: int, resident_id: int, *, now: datetime) -> Signup | None:
    """Cancel; a freed place goes to the first on the waiting list, who is told.

    Returns the promoted signup, if any. Raises CancelError past the deadline.
    """
    async with in_transaction():
        signup = await Signup.get(id=signup_id, resident_id=resident_id)
        activity = await locked(Activity.filter(id=signup.activity_id)).get()
        signup = await Signup.get(id=signup_id)
        if signup.status in (SignupStatus.CANCELLED, SignupStatus.RELEASED):
            return None
        if signup.status == SignupStatus.CHECKED_IN:
            raise CancelError("您已经签到了,不能取消。")
        deadline = activity.cancel_deadline or activity.start_at
        if now >= deadline:
            raise CancelError("已过取消截止时间")
        freed = signup.status in TAKEN
        await Signup.filter(id=signup.id).update(status=SignupStatus.CANCELLED, cancelled_at=now)
        if not freed:
            return None
        return await _promote_first(activity, now)


async def _promote_first(activity: Activity, now: datetime) -> Signup | None:
    counts = await _counts(activity.id, now)
    if counts.places_left(activity.capacity) <= 0:
        return None
    first = await (Signup.filter(activity_id=activity.id, status=SignupStatus.WAITING)
                   .order_by("waitlisted_at", "id").first())
    if first is None:
        return None
    promotions = first.promotions + 1
    await Signup.filter(id=first.id).update(status=SignupStatus.CONFIRMED, confirmed_at=now,
                                            promotions=promotions)
    resident = await Resident.get(id=first.resident_id)
    when = local_text(activity.start_at)
    await enqueue(notice(resident.openid, "promotion",
                         f"好消息!“{activity.title}”有人退出,{first.participant_name}已从候补转为报名成功。"
                         f"时间:{when},地点:{activity.place or '见活动详情'}。不能参加请回复“取消报名”。",
                         f"promote:{first.id}:{promotions}"))
    return first


# ---------------------------------------------------------------------------- check-in

class CheckinError(Exception):
    pass


@dataclass
class CheckinResult:
    signup: Signup
    points: int
    already: bool


async def check_in(signup_id: int, *, now: datetime, early_minutes: int = 30) -> CheckinResult:
    """Idempotent: a second check-in awards nothing."""
    async with in_transaction():
        signup = await locked(Signup.filter(id=signup_id)).get()
        activity = await Activity.get(id=signup.activity_id)
        if signup.status == SignupStatus.CHECKED_IN:
            return CheckinResult(signup, 0, True)
        if activity.status == ActivityStatus.CANCELLED:
            raise CheckinError("这个活动已取消。")
        if signup.status != SignupStatus.CONFIRMED:
            raise CheckinError("您没有这个活动的有效报名(候补或已取消的报名不能签到)。")
        if now < activity.start_at - timedelta(minutes=early_minutes):
            raise CheckinError(f"还没到签到时间,活动开始前{early_minutes}分钟可以签到。")
        if now > activity.end_at:
            raise CheckinError("活动已经结束,不能签到了。")
        await Signup.filter(id=signup.id).update(status=SignupStatus.CHECKED_IN, checked_in_at=now)
        points = activity.points_for(signup.role)
        if points:
            await post_entry(signup.resident_id, points, reason=f"参加“{activity.title}”",
                             source=Source.ACTIVITY, key=f"checkin:{signup.id}")
        signup.status, signup.checked_in_at = SignupStatus.CHECKED_IN, now
    return CheckinResult(signup, points, False)


# ---------------------------------------------------------------------------- reminders

async def write_reminders(now: datetime, ahead: timedelta = timedelta(hours=24)) -> int:
    """A notice the day before to everyone confirmed; safe to run as often as you like."""
    activities = await Activity.filter(status=ActivityStatus.PUBLISHED, start_at__gt=now,
                                       start_at__lte=now + ahead)
    written = 0
    for activity in activities:
        signups = await Signup.filter(activity_id=activity.id, status=SignupStatus.CONFIRMED
                                      ).prefetch_related("resident")
        when = local_text(activity.start_at)
        rows = [notice(s.resident.openid, "reminder",
                       f"提醒:{s.participant_name}报名的“{activity.title}”将于{when}在"
                       f"{activity.place or '社区'}开始。签到码现场公布。",
                       f"remind:{s.id}") for s in signups]
        await enqueue(*rows)
        written += len(rows)
    return written
