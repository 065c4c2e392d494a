"""Appeals (有事找居委): filing, routing, handling, deadlines, rating and redo.

Every change of state goes through `_move`: it locks the appeal row, checks the one table
of allowed transitions (`TRANSITIONS`), writes a timeline row and the notices it causes in
the same transaction. Times come from the caller (`now`), so a test can inject the clock;
`run_appeal_deadlines(now)` is the periodic job (warnings, auto-escalation, closing
unrated tickets) and is idempotent.
"""
from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Awaitable, Callable

import chinese_calendar
from tortoise import fields
from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.clock import LOCAL_TZ, local_text
from models.db import locked
from models.outbox import enqueue, notice
from models.places import Community, Organisation, OrgKind
from models.points import Source, post_entry, rules_for
from models.residents import Resident, Role, flag_attention

log = logging.getLogger(__name__)

# The categorisation contract (nlp/appeals.py CATEGORIES); repeated here because models do
# not import nlp. A test keeps the two equal.
CATEGORY_LABELS: dict[str, str] = {
    "facility": "设施维护", "environment": "环境卫生", "safety": "安全隐患",
    "dispute": "邻里纠纷", "policy": "政策咨询", "living": "生活服务",
    "suggestion": "建议", "other": "其他",
}
# A routing key beside the categories: help a volunteer can give (陪诊, 代买, 搬东西).
HELP = "help"
ROUTE_KEYS = (*CATEGORY_LABELS, HELP)
ROUTE_LABELS = {**CATEGORY_LABELS, HELP: "志愿帮扶"}


@dataclass(frozen=True)
class AppealPolicy:
    """Timings that are not per category; environment overrides for operators."""

    rating_wait_hours: int = 72  # no rating by then: the resolved ticket closes
    duplicate_days: int = 30  # how far back a similar open ticket counts as the same
    answer_window_hours: int = 48  # a resident's next message answers a staff question

    @classmethod
    def from_env(cls) -> "AppealPolicy":
        def val(name: str, default: int) -> int:
            return int(os.environ.get(name) or default)
        return cls(rating_wait_hours=val("APPEAL_RATING_WAIT_HOURS", cls.rating_wait_hours),
                   duplicate_days=val("APPEAL_DUPLICATE_DAYS", cls.duplicate_days),
                   answer_window_hours=val("APPEAL_ANSWER_WINDOW_HOURS", cls.answer_window_hours))


POLICY = AppealPolicy.from_env()


class AppealState:
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REJECTED = "rejected"
    REOPENED = "reopened"
    LABELS = {SUBMITTED: "待受理", ACCEPTED: "已受理", IN_PROGRESS: "处理中",
              ESCALATED: "已上报街道", RESOLVED: "已办结(待评价)", CLOSED: "已完成",
              REJECTED: "已退回", REOPENED: "重办中"}
    OPEN = (SUBMITTED, ACCEPTED, IN_PROGRESS, ESCALATED, REOPENED)


class Action:
    SUBMIT = "submit"
    ACCEPT = "accept"
    REPLY = "reply"  # staff message to the resident
    ANSWER = "answer"  # the resident's answer to a staff message
    ADD = "add"  # the resident adds to an open ticket
    TRANSFER = "transfer"
    ESCALATE = "escalate"
    AUTO_ESCALATE = "auto_escalate"
    RESOLVE = "resolve"
    REJECT = "reject"
    RATE_CLOSE = "rate_close"  # rated 3-5
    RATE_REOPEN = "rate_reopen"  # rated 1-2: 重办, same organisation
    EXPIRE = "expire"  # resolved, no rating in time
    WARN = "warn"  # deadline warning to the handler
    ADOPT = "adopt"  # a suggestion adopted (points)
    COMMENT = "comment"  # the resident's words on the handling, sent after the rating


S = AppealState
_OPEN = S.OPEN
# THE table of allowed transitions: (state, action) -> new state. Anything absent is refused.
TRANSITIONS: dict[tuple[str, str], str] = {
    (S.SUBMITTED, Action.ACCEPT): S.ACCEPTED,
    (S.REOPENED, Action.ACCEPT): S.ACCEPTED,
    (S.ESCALATED, Action.ACCEPT): S.IN_PROGRESS,  # the sub-district takes it on
    (S.SUBMITTED, Action.REPLY): S.IN_PROGRESS,  # a reply is a response too
    (S.ACCEPTED, Action.REPLY): S.IN_PROGRESS,
    (S.IN_PROGRESS, Action.REPLY): S.IN_PROGRESS,
    (S.REOPENED, Action.REPLY): S.IN_PROGRESS,
    (S.ESCALATED, Action.REPLY): S.ESCALATED,
    **{(s, Action.ANSWER): s for s in _OPEN},
    **{(s, Action.ADD): s for s in _OPEN},
    **{(s, Action.WARN): s for s in _OPEN},
    **{(s, Action.TRANSFER): S.SUBMITTED for s in _OPEN},  # the new organisation accepts
    **{(s, Action.ESCALATE): S.ESCALATED for s in _OPEN if s != S.ESCALATED},
    **{(s, Action.AUTO_ESCALATE): S.ESCALATED for s in _OPEN if s != S.ESCALATED},
    **{(s, Action.RESOLVE): S.RESOLVED for s in _OPEN},
    **{(s, Action.REJECT): S.REJECTED for s in _OPEN},
    (S.RESOLVED, Action.RATE_CLOSE): S.CLOSED,
    (S.RESOLVED, Action.RATE_REOPEN): S.REOPENED,
    (S.RESOLVED, Action.EXPIRE): S.CLOSED,
    **{(s, Action.ADOPT): s for s in (*_OPEN, S.RESOLVED, S.CLOSED)},
    # After a rating: closed (3-5) or reopened and on its way again (1-2).
    **{(s, Action.COMMENT): s for s in (*_OPEN, S.RESOLVED, S.CLOSED)},
}


class AppealError(Exception):
    """Why an operation was refused; the message is for the person who asked."""


# ---------------------------------------------------------------------------- tables

class Appeal(Model):
    id = fields.IntField(primary_key=True)
    ticket = fields.CharField(max_length=12, unique=True)
    community = fields.ForeignKeyField("models.Community", related_name="appeals")
    street = fields.ForeignKeyField("models.Street", related_name="appeals")
    resident = fields.ForeignKeyField("models.Resident", related_name="appeals")
    organisation = fields.ForeignKeyField("models.Organisation", related_name="appeals")
    category = fields.CharField(max_length=16)
    volunteer_help = fields.BooleanField(default=False)
    description = fields.TextField()
    photos = fields.JSONField(default=list)  # [{"pic_url", "media_id"}]
    location = fields.JSONField(null=True)  # {"x", "y", "label"}
    anonymous = fields.BooleanField(default=False)  # identity shown to the committee only
    state = fields.CharField(max_length=16, default=S.SUBMITTED, db_index=True)
    linked_to = fields.ForeignKeyField("models.Appeal", related_name="linked", null=True)
    handler = fields.ForeignKeyField("models.Resident", related_name="appeals_handled", null=True)
    # The staff member whose message waits for the resident's answer, and since when.
    asked_by = fields.ForeignKeyField("models.Resident", related_name="appeals_asked", null=True)
    asked_at = fields.DatetimeField(null=True)
    result = fields.TextField(default="")
    reject_reason = fields.TextField(default="")
    rating = fields.IntField(null=True)
    rating_comment = fields.CharField(max_length=200, default="")
    reopen_count = fields.IntField(default=0)
    auto_escalated = fields.BooleanField(default=False)
    escalated_at = fields.DatetimeField(null=True)
    responded_at = fields.DatetimeField(null=True)  # first response ever (figures)
    acked_at = fields.DatetimeField(null=True)  # response in the current cycle
    ack_due_at = fields.DatetimeField()
    resolve_due_at = fields.DatetimeField()
    resolved_at = fields.DatetimeField(null=True)
    closed_at = fields.DatetimeField(null=True)
    rating_due_at = fields.DatetimeField(null=True)
    # Warnings already sent in this cycle: 1 = response deadline, 2 = resolution deadline.
    warned = fields.IntField(default=0)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "appeal"
        # The hooks look up a resident's open / unrated tickets on every message.
        indexes = (("resident", "state"), ("community", "state"))

    @property
    def is_open(self) -> bool:
        return self.state in _OPEN

    @property
    def label(self) -> str:
        return CATEGORY_LABELS.get(self.category, self.category)


class AppealEvent(Model):
    """The timeline: one row per change (who, when, from, to, note)."""

    id = fields.BigIntField(primary_key=True)
    appeal = fields.ForeignKeyField("models.Appeal", related_name="events")
    action = fields.CharField(max_length=16)
    from_state = fields.CharField(max_length=16, default="")
    to_state = fields.CharField(max_length=16)
    actor = fields.ForeignKeyField("models.Resident", related_name="appeal_events", null=True)
    actor_org = fields.ForeignKeyField("models.Organisation", related_name="appeal_events", null=True)
    target_org = fields.ForeignKeyField("models.Organisation", related_name="appeal_targets", null=True)
    note = fields.TextField(default="")
    at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "appeal_event"


class AppealRoute(Model):
    """Per community: which organisation handles a category (or HELP)."""

    id = fields.IntField(primary_key=True)
    community = fields.ForeignKeyField("models.Community", related_name="appeal_routes")
    category = fields.CharField(max_length=16)
    organisation = fields.ForeignKeyField("models.Organisation", related_name="appeal_routes")

    class Meta:
        table = "appeal_route"
        unique_together = (("community", "category"),)


class AppealDeadline(Model):
    """Per category time limits; absent rows use DEFAULT_DEADLINES."""

    id = fields.IntField(primary_key=True)
    category = fields.CharField(max_length=16, unique=True)
    accept_hours = fields.IntField()
    resolve_days = fields.IntField()  # working days
    accept_warn_hours = fields.IntField()
    resolve_warn_hours = fields.IntField()

    class Meta:
        table = "appeal_deadline"


@dataclass(frozen=True)
class Deadlines:
    accept_hours: int = 24
    resolve_days: int = 13
    accept_warn_hours: int = 4
    resolve_warn_hours: int = 24


# Guangzhou 12345 practice: respond within a day; consultations answered in 3 working days,
# other matters handled within 13.
DEFAULT_DEADLINES = {c: Deadlines() for c in CATEGORY_LABELS}
DEFAULT_DEADLINES["policy"] = Deadlines(resolve_days=3)


async def deadlines_for(category: str) -> Deadlines:
    row = await AppealDeadline.get_or_none(category=category)
    if row is None:
        return DEFAULT_DEADLINES.get(category, Deadlines())
    return Deadlines(row.accept_hours, row.resolve_days, row.accept_warn_hours,
                     row.resolve_warn_hours)


async def set_deadlines(category: str, *, accept_hours: int | None = None,
                        resolve_days: int | None = None, accept_warn_hours: int | None = None,
                        resolve_warn_hours: int | None = None) -> Deadlines:
    if category not in CATEGORY_LABELS:
        raise AppealError(f"没有这个类别:{category}。可用:{', '.join(CATEGORY_LABELS)}")
    cur = await deadlines_for(category)
    values = dict(accept_hours=accept_hours or cur.accept_hours,
                  resolve_days=resolve_days or cur.resolve_days,
                  accept_warn_hours=accept_warn_hours or cur.accept_warn_hours,
                  resolve_warn_hours=resolve_warn_hours or cur.resolve_warn_hours)
    await AppealDeadline.update_or_create(category=category, defaults=values)
    return Deadlines(**values)


# The Gregorian-dated statutory holidays (全国年节及纪念日放假办法): known before the State
# Council publishes a year's schedule; the lunar ones and 调休 come with the schedule.
_FIXED_HOLIDAYS = {(1, 1), (5, 1), (5, 2), (10, 1), (10, 2), (10, 3)}
_UNKNOWN_YEARS: set[int] = set()  # warned about once each


def is_working_day(day: date) -> bool:
    """China's official calendar: statutory holidays off, 调休 weekends on."""
    try:
        return chinese_calendar.is_workday(day)
    except NotImplementedError:  # a year not yet in the calendar: upgrade chinesecalendar
        if day.year not in _UNKNOWN_YEARS:
            _UNKNOWN_YEARS.add(day.year)
            log.warning("chinesecalendar %s has no holiday schedule for %d: deadlines count "
                        "weekdays without the Gregorian-dated holidays; upgrade the package",
                        chinese_calendar.__version__, day.year)
        return day.weekday() < 5 and (day.month, day.day) not in _FIXED_HOLIDAYS


def add_working_days(start: datetime, days: int) -> datetime:
    """`days` working days (local calendar) after `start`, same time of day."""
    d = start.astimezone(LOCAL_TZ)
    while days > 0:
        d += timedelta(days=1)
        if is_working_day(d.date()):
            days -= 1
    return d


# ---------------------------------------------------------------------------- routing

DEFAULT_ROUTE_KIND = {"living": OrgKind.SOCIAL, HELP: OrgKind.VOLUNTEER}


async def route_for(community_id: int, category: str, volunteer_help: bool = False) -> Organisation:
    """The organisation that handles this category here: the routing table, else defaults."""
    key = HELP if volunteer_help else category
    route = await AppealRoute.get_or_none(community_id=community_id, category=key)
    if route is not None:
        return await Organisation.get(id=route.organisation_id)
    kind = DEFAULT_ROUTE_KIND.get(key, OrgKind.COMMITTEE)
    org = await Organisation.filter(community_id=community_id, kind=kind).order_by("id").first()
    if org is None:  # a community without that organisation: its committee
        org = await Organisation.filter(community_id=community_id,
                                        kind=OrgKind.COMMITTEE).order_by("id").first()
    if org is None:
        raise AppealError("这个社区还没有登记居委会,暂时不能受理诉求。")
    return org


async def set_route(community: Community, category: str, org: Organisation) -> AppealRoute:
    if category not in ROUTE_KEYS:
        raise AppealError(f"没有这个类别:{category}。可用:{', '.join(ROUTE_KEYS)}")
    if org.community_id != community.id:
        raise AppealError(f"“{org.name}”不属于{community.name},不能接收这个社区的诉求。")
    route, _ = await AppealRoute.update_or_create(community_id=community.id, category=category,
                                                  defaults={"organisation_id": org.id})
    return route


async def routing_table(community: Community) -> list[tuple[str, str]]:
    return [(key, (await route_for(community.id, key if key != HELP else "living",
                                   key == HELP)).name) for key in ROUTE_KEYS]


# ---------------------------------------------------------------------------- who sees what

def ticket_for(appeal_id: int) -> str:
    """Six digits, unique for the first 900,000 appeals and not guessable in sequence
    (7919 is prime to 900000, so the map is one-to-one)."""
    return str(100000 + (appeal_id * 7919 + 4099) % 900000)


TICKET_RE = re.compile(r"(?<!\d)([1-9]\d{5})(?!\d)")


def mask(phone: str) -> str:
    return f"{phone[:3]}****{phone[7:]}" if len(phone) == 11 else ("" if not phone else "****")


def identity_for(appeal: Appeal, resident: Resident, viewer: Organisation | None) -> str:
    """The filer as a viewer may see them: hidden identity is for the committee only."""
    if appeal.anonymous and (viewer is None or viewer.kind != OrgKind.COMMITTEE):
        return "匿名居民"
    phone = mask(resident.phone)
    return f"{resident.name or '居民'}{' ' + phone if phone else ''}" + ("(要求匿名)" if appeal.anonymous else "")


async def staff_org(staff: Resident) -> Organisation:
    if not staff.is_staff or not staff.organisation_id:
        raise AppealError("这个操作只有社区工作人员可以使用。")
    return await Organisation.get(id=staff.organisation_id)


def can_act(org: Organisation, appeal: Appeal) -> bool:
    """Committee staff: their community's tickets; sub-district staff: their street's;
    social and volunteer organisations: the tickets routed to them."""
    if org.kind == OrgKind.SUBDISTRICT:
        return appeal.street_id == org.street_id
    if org.kind == OrgKind.COMMITTEE:
        return appeal.community_id == org.community_id
    return appeal.organisation_id == org.id


async def find_for_staff(staff: Resident, ticket: str) -> Appeal:
    org = await staff_org(staff)
    appeal = await Appeal.get_or_none(ticket=ticket)
    if appeal is None or not can_act(org, appeal):
        # The same answer whether it exists elsewhere or not: nothing leaks across communities.
        raise AppealError(f"没有找到您可以处理的工单 {ticket}。")
    return appeal


def staff_scope_filter(org: Organisation) -> dict:
    if org.kind == OrgKind.SUBDISTRICT:
        return {"street_id": org.street_id}
    if org.kind == OrgKind.COMMITTEE:
        return {"community_id": org.community_id}
    return {"organisation_id": org.id}


async def staff_queue(staff: Resident, *, everything: bool = False, limit: int = 15) -> list[Appeal]:
    """Open tickets, oldest first: the organisation's own, or all it may see."""
    org = await staff_org(staff)
    scope = staff_scope_filter(org) if everything else {"organisation_id": org.id}
    if not everything and org.kind != OrgKind.SUBDISTRICT:
        scope["community_id"] = org.community_id
    return await (Appeal.filter(state__in=_OPEN, **scope).order_by("created_at", "id")
                  .limit(limit))


def overdue_text(appeal: Appeal, now: datetime) -> str:
    if appeal.is_open and not appeal.acked_at and now > appeal.ack_due_at:
        return "⚠超时未受理"
    if appeal.is_open and now > appeal.resolve_due_at:
        return "⚠超时未办结"
    return ""


async def staff_recipients(org_id: int) -> list[Resident]:
    people = await Resident.filter(organisation_id=org_id, active=True).order_by("id")
    return [p for p in people if p.has_role(Role.STAFF)]


# ---------------------------------------------------------------------------- notices

def _short(text: str, n: int = 60) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[:n] + "…"


async def _notify_org(appeal: Appeal, org_id: int, event_id: int, text_for: Callable[[Organisation], str],
                      *, exclude: int | None = None) -> None:
    org = await Organisation.get(id=org_id)
    text = text_for(org)
    await enqueue(*[notice(p.openid, "appeal_staff", text, f"appeal:{event_id}:{p.id}",
                           data={"appeal": appeal.id, "ticket": appeal.ticket})
                    for p in await staff_recipients(org_id) if p.id != exclude])


async def _notify_person(appeal: Appeal, person: Resident, event_id: int, text: str,
                         kind: str = "appeal_update") -> None:
    await enqueue(notice(person.openid, kind, text, f"appeal:{event_id}:{person.id}",
                         data={"appeal": appeal.id, "ticket": appeal.ticket}))
    if person.id == appeal.resident_id:  # the filer may be asked to answer or to rate
        await flag_attention(ids=[person.id])


def new_ticket_text(appeal: Appeal, filer: Resident, viewer: Organisation, community: Community,
                    lead: str = "新诉求") -> str:
    extra = []
    if appeal.photos:
        extra.append(f"照片{len(appeal.photos)}张")
    if appeal.location:
        extra.append(f"位置:{appeal.location.get('label') or '已发送定位'}")
    if appeal.linked_to_id:
        extra.append("与已有工单相同,已关联")
    return (f"【{lead}】工单{appeal.ticket}({appeal.label})\n{community.name} "
            f"{identity_for(appeal, filer, viewer)}:\n{_short(appeal.description, 120)}"
            + (f"\n{';'.join(extra)}" if extra else "")
            + f"\n请在{local_text(appeal.ack_due_at)}前受理:回复“受理 {appeal.ticket}”;"
              f"“诉求 {appeal.ticket}”看详情。")


# ---------------------------------------------------------------------------- the core move

async def _event(appeal: Appeal, action: str, from_state: str, to_state: str, now: datetime, *,
                 actor: Resident | None = None, actor_org_id: int | None = None,
                 target_org_id: int | None = None, note: str = "") -> AppealEvent:
    return await AppealEvent.create(appeal_id=appeal.id, action=action, from_state=from_state,
                                    to_state=to_state, actor_id=actor.id if actor else None,
                                    actor_org_id=actor_org_id, target_org_id=target_org_id,
                                    note=note, at=now)


Mutate = Callable[[Appeal, AppealEvent | None], Awaitable[None]]


async def _move(appeal_id: int, action: str, now: datetime, *, actor: Resident | None = None,
                actor_org: Organisation | None = None, note: str = "",
                target_org_id: int | None = None,
                before: Callable[[Appeal], Awaitable[None]] | None = None,
                after: Mutate | None = None, authorize: bool = True) -> tuple[Appeal, AppealEvent]:
    """Lock, check the transition table, change, write the timeline row, run `after`
    (which writes notices) — all in one transaction."""
    async with in_transaction():
        appeal = await locked(Appeal.filter(id=appeal_id)).get()
        if authorize and actor_org is not None and not can_act(actor_org, appeal):
            raise AppealError(f"没有找到您可以处理的工单 {appeal.ticket}。")
        new_state = TRANSITIONS.get((appeal.state, action))
        if new_state is None:
            raise AppealError(f"工单{appeal.ticket}现在是“{S.LABELS[appeal.state]}”,不能{_ACTION_VERBS.get(action, '这样操作')}。")
        if before is not None:
            await before(appeal)
        from_state = appeal.state
        appeal.state = new_state
        event = await _event(appeal, action, from_state, new_state, now, actor=actor,
                             actor_org_id=actor_org.id if actor_org else None,
                             target_org_id=target_org_id, note=note)
        if after is not None:
            await after(appeal, event)
        await appeal.save()
    return appeal, event


_ACTION_VERBS = {Action.ACCEPT: "受理", Action.REPLY: "回复", Action.TRANSFER: "转派",
                 Action.ESCALATE: "上报街道", Action.RESOLVE: "办结", Action.REJECT: "退回",
                 Action.ANSWER: "补充", Action.ADD: "补充", Action.RATE_CLOSE: "评价",
                 Action.RATE_REOPEN: "评价", Action.ADOPT: "采纳", Action.COMMENT: "补充评价"}


def _respond(appeal: Appeal, now: datetime) -> None:
    appeal.acked_at = appeal.acked_at or now
    appeal.responded_at = appeal.responded_at or now


# ---------------------------------------------------------------------------- filing

@dataclass
class NewAppeal:
    description: str
    category: str
    photos: list
    location: dict | None = None
    anonymous: bool = False
    volunteer_help: bool = False
    link_to: int | None = None


async def open_similar_candidates(community_id: int, category: str, now: datetime,
                                  policy: AppealPolicy = POLICY) -> list[Appeal]:
    """Open, unlinked tickets of the same community and category from the recent past."""
    since = now - timedelta(days=policy.duplicate_days)
    return await (Appeal.filter(community_id=community_id, category=category, state__in=_OPEN,
                                linked_to_id=None, created_at__gte=since)
                  .order_by("-created_at").limit(50))


async def file_appeal(resident: Resident, new: NewAppeal, now: datetime) -> Appeal:
    """Create the ticket, route it, write the first timeline row and the handler's notice."""
    if new.category not in CATEGORY_LABELS:
        raise AppealError("诉求类别不对。")
    if not resident.community_id:
        raise AppealError("请先登记所在社区。")
    description = new.description.strip()
    if not description:
        raise AppealError("请先说说遇到了什么问题。")
    community = await Community.get(id=resident.community_id)
    parent = None
    if new.link_to:
        parent = await Appeal.get_or_none(id=new.link_to, community_id=community.id)
        parent = parent if parent and parent.is_open else None
    org = (await Organisation.get(id=parent.organisation_id) if parent else
           await route_for(community.id, new.category, new.volunteer_help))
    limits = await deadlines_for(new.category)
    async with in_transaction():
        appeal = await Appeal.create(
            ticket=uuid.uuid4().hex[:12], community_id=community.id,
            street_id=community.street_id, resident_id=resident.id, organisation_id=org.id,
            category=new.category, volunteer_help=new.volunteer_help, description=description[:2000],
            photos=list(new.photos or [])[:9], location=new.location, anonymous=new.anonymous,
            state=S.SUBMITTED, linked_to_id=parent.id if parent else None,
            ack_due_at=now + timedelta(hours=limits.accept_hours),
            resolve_due_at=add_working_days(now, limits.resolve_days), created_at=now)
        appeal.ticket = ticket_for(appeal.id)
        await appeal.save(update_fields=["ticket"])
        note = f"关联工单{parent.ticket}" if parent else ""
        event = await _event(appeal, Action.SUBMIT, "", S.SUBMITTED, now, actor=resident,
                             target_org_id=org.id, note=note)
        await _notify_org(appeal, org.id, event.id,
                          lambda viewer: new_ticket_text(appeal, resident, viewer, community))
    return appeal


# ---------------------------------------------------------------------------- staff actions

def _from(org: Organisation) -> str:
    return org.name


async def accept(appeal_id: int, staff: Resident, now: datetime) -> Appeal:
    org = await staff_org(staff)

    async def after(appeal: Appeal, event: AppealEvent) -> None:
        _respond(appeal, now)
        appeal.handler_id = staff.id
        filer = await Resident.get(id=appeal.resident_id)
        await _notify_person(appeal, filer, event.id,
                             f"您的诉求(工单{appeal.ticket})已由{_from(org)}受理,"
                             f"会在{local_text(appeal.resolve_due_at)}前办理完毕。"
                             f"回复“我的诉求”看进度。")
    appeal, _ = await _move(appeal_id, Action.ACCEPT, now, actor=staff, actor_org=org, after=after)
    return appeal


async def reply(appeal_id: int, staff: Resident, text: str, now: datetime) -> Appeal:
    text = text.strip()
    if not text:
        raise AppealError("回复内容不能为空。例如:回复 工单号 我们明天上午去现场查看。")
    org = await staff_org(staff)

    async def after(appeal: Appeal, event: AppealEvent) -> None:
        _respond(appeal, now)
        appeal.handler_id = appeal.handler_id or staff.id
        appeal.asked_by_id, appeal.asked_at = staff.id, now
        filer = await Resident.get(id=appeal.resident_id)
        await _notify_person(appeal, filer, event.id,
                             f"{_from(org)}回复您的诉求(工单{appeal.ticket}):\n{text}\n"
                             "直接回复文字即可答复工作人员。", kind="appeal_message")
    appeal, _ = await _move(appeal_id, Action.REPLY, now, actor=staff, actor_org=org, note=text,
                            after=after)
    return appeal


async def transfer(appeal_id: int, staff: Resident, target: Organisation, note: str,
                   now: datetime) -> Appeal:
    org = await staff_org(staff)
    limits_holder: dict = {}

    async def before(appeal: Appeal) -> None:
        if target.id == appeal.organisation_id:
            raise AppealError(f"工单{appeal.ticket}已经由{target.name}处理。")
        if target.kind == OrgKind.SUBDISTRICT:
            raise AppealError("上报街道请用“上报街道 工单号 说明”。")
        if target.community_id != appeal.community_id:
            raise AppealError(f"“{target.name}”不在本社区,不能转派。")
        limits_holder["d"] = await deadlines_for(appeal.category)

    async def after(appeal: Appeal, event: AppealEvent) -> None:
        _respond(appeal, now)
        appeal.organisation_id = target.id
        appeal.handler_id, appeal.acked_at, appeal.warned = None, None, appeal.warned & ~1
        appeal.ack_due_at = now + timedelta(hours=limits_holder["d"].accept_hours)
        filer = await Resident.get(id=appeal.resident_id)
        community = await Community.get(id=appeal.community_id)
        await _notify_person(appeal, filer, event.id,
                             f"您的诉求(工单{appeal.ticket})已转交{target.name}办理。")
        await _notify_org(appeal, target.id, event.id,
                          lambda viewer: new_ticket_text(appeal, filer, viewer, community,
                                                         lead=f"{org.name}转派")
                          + (f"\n转派说明:{note}" if note else ""))
    appeal, _ = await _move(appeal_id, Action.TRANSFER, now, actor=staff, actor_org=org, note=note,
                            target_org_id=target.id, before=before, after=after)
    return appeal


async def subdistrict_of(appeal: Appeal) -> Organisation:
    office = await Organisation.filter(kind=OrgKind.SUBDISTRICT,
                                       street_id=appeal.street_id).order_by("id").first()
    if office is None:
        raise AppealError("本街道还没有登记街道办,暂时不能上报。")
    return office


async def _escalation_after(appeal: Appeal, event: AppealEvent, office: Organisation, now: datetime,
                            note: str, by: str) -> None:
    previous = appeal.organisation_id
    appeal.organisation_id = office.id
    appeal.escalated_at = now
    appeal.warned = 0
    limits = await deadlines_for(appeal.category)
    # The sub-district gets its own response window; resolution keeps the original limit
    # unless that has already passed.
    appeal.acked_at = None
    appeal.ack_due_at = now + timedelta(hours=limits.accept_hours)
    if appeal.resolve_due_at <= now:
        appeal.resolve_due_at = add_working_days(now, limits.resolve_days)
    filer = await Resident.get(id=appeal.resident_id)
    community = await Community.get(id=appeal.community_id)
    await _notify_person(appeal, filer, event.id,
                         f"您的诉求(工单{appeal.ticket})已上报{office.name}协助处理,"
                         "有进展会告诉您。")
    lead = f"{by}上报街道" if by else "超时自动上报"
    await _notify_org(appeal, office.id, event.id,
                      lambda viewer: new_ticket_text(appeal, filer, viewer, community, lead=lead)
                      + (f"\n说明:{note}" if note else ""))
    if previous != office.id and not by:  # the organisation that missed the deadline is told
        await _notify_org(appeal, previous, event.id,
                          lambda viewer: f"工单{appeal.ticket}已超过时限,系统已自动上报{office.name}。")


async def escalate(appeal_id: int, staff: Resident, note: str, now: datetime) -> Appeal:
    org = await staff_org(staff)
    holder: dict = {}

    async def before(appeal: Appeal) -> None:
        holder["office"] = await subdistrict_of(appeal)

    async def after(appeal: Appeal, event: AppealEvent) -> None:
        _respond(appeal, now)
        event.target_org_id = holder["office"].id
        await event.save(update_fields=["target_org_id"])
        await _escalation_after(appeal, event, holder["office"], now, note, org.name)
    appeal, _ = await _move(appeal_id, Action.ESCALATE, now, actor=staff, actor_org=org, note=note,
                            before=before, after=after)
    return appeal


async def _rating_request(appeal: Appeal, event: AppealEvent, result: str, org: Organisation) -> None:
    filer = await Resident.get(id=appeal.resident_id)
    await _notify_person(appeal, filer, event.id,
                         f"您的诉求(工单{appeal.ticket})已办结。\n处理结果:{result}\n"
                         "请为处理结果打分,回复一个数字即可:\n5 很满意 4 满意 3 一般 2 不满意 1 很不满意\n"
                         "也可以附一句话,例如“4 处理很及时”。")


async def resolve(appeal_id: int, staff: Resident | None, result: str, now: datetime, *,
                  policy: AppealPolicy = POLICY, _org: Organisation | None = None) -> Appeal:
    result = result.strip()
    if not result:
        raise AppealError("请写上处理结果,例如:办结 工单号 道路已恢复通行。")
    org = _org or await staff_org(staff)

    async def after(appeal: Appeal, event: AppealEvent) -> None:
        _respond(appeal, now)
        appeal.result, appeal.resolved_at = result, now
        appeal.rating, appeal.rating_comment = None, ""  # a redo is rated afresh
        appeal.rating_due_at = now + timedelta(hours=policy.rating_wait_hours)
        appeal.asked_by_id = appeal.asked_at = None
        await _rating_request(appeal, event, result, org)
        await _cascade(appeal, Action.RESOLVE, now, staff, org, result, policy)
    appeal, _ = await _move(appeal_id, Action.RESOLVE, now, actor=staff, actor_org=org, note=result,
                            after=after, authorize=_org is None)
    return appeal


async def reject(appeal_id: int, staff: Resident | None, reason: str, now: datetime, *,
                 _org: Organisation | None = None) -> Appeal:
    reason = reason.strip()
    if not reason:
        raise AppealError("退回请写明原因,例如:退回 工单号 属于物业管理范围,请联系物业。")
    org = _org or await staff_org(staff)

    async def after(appeal: Appeal, event: AppealEvent) -> None:
        _respond(appeal, now)
        appeal.reject_reason, appeal.closed_at = reason, now
        appeal.asked_by_id = appeal.asked_at = None
        filer = await Resident.get(id=appeal.resident_id)
        await _notify_person(appeal, filer, event.id,
                             f"您的诉求(工单{appeal.ticket})不在{org.name}的受理范围,已退回。\n原因:{reason}\n"
                             "如有疑问,回复“转人工”。")
        await _cascade(appeal, Action.REJECT, now, staff, org, reason, POLICY)
    appeal, _ = await _move(appeal_id, Action.REJECT, now, actor=staff, actor_org=org, note=reason,
                            after=after, authorize=_org is None)
    return appeal


async def _cascade(parent: Appeal, action: str, now: datetime, staff: Resident | None,
                   org: Organisation, note: str, policy: AppealPolicy) -> None:
    """Linked tickets (the same problem reported by others) end with their parent."""
    for child in await Appeal.filter(linked_to_id=parent.id, state__in=_OPEN):
        if action == Action.RESOLVE:
            await resolve(child.id, staff, note, now, policy=policy, _org=org)
        else:
            await reject(child.id, staff, note, now, _org=org)


# ---------------------------------------------------------------------------- the resident

async def resident_appeal(resident: Resident, ticket: str) -> Appeal | None:
    return await Appeal.get_or_none(ticket=ticket, resident_id=resident.id)


async def resident_open_appeals(resident: Resident) -> list[Appeal]:
    return await Appeal.filter(resident_id=resident.id, state__in=_OPEN).order_by("-created_at")


async def resident_recent_appeals(resident: Resident, limit: int = 8) -> list[Appeal]:
    return await Appeal.filter(resident_id=resident.id).order_by("-created_at", "-id").limit(limit)


async def pending_for(resident: Resident, now: datetime, policy: AppealPolicy = POLICY
                      ) -> tuple[Appeal | None, Appeal | None]:
    """(the ticket waiting for a rating, the ticket whose staff message waits for an answer)
    in one query: the chat hook asks this on every message."""
    since = now - timedelta(hours=policy.answer_window_hours)
    rows = await Appeal.filter(Q(state=S.RESOLVED, rating=None) | Q(state__in=_OPEN, asked_at__gte=since),
                               resident_id=resident.id)
    rating = max((a for a in rows if a.state == S.RESOLVED), key=lambda a: a.resolved_at, default=None)
    asked = max((a for a in rows if a.is_open and a.asked_at), key=lambda a: a.asked_at, default=None)
    return rating, asked


async def awaiting_rating(resident: Resident) -> Appeal | None:
    return await (Appeal.filter(resident_id=resident.id, state=S.RESOLVED, rating=None)
                  .order_by("-resolved_at").first())


def _staff_line(appeal: Appeal, filer: Resident, viewer: Organisation) -> str:
    return f"工单{appeal.ticket}({identity_for(appeal, filer, viewer)})"


async def resident_message(appeal_id: int, resident: Resident, text: str, now: datetime, *,
                           photos: list | None = None, location: dict | None = None) -> Appeal:
    """The resident answers a staff message, or adds to an open ticket. The words go to the
    timeline and to the staff member who asked (else the handling organisation)."""
    text = (text or "").strip()
    if not text and not photos and not location:
        raise AppealError("没有收到要补充的内容。")
    holder: dict = {}

    async def before(appeal: Appeal) -> None:
        if appeal.resident_id != resident.id:
            raise AppealError("没有找到这个工单。")
        holder["action"] = Action.ANSWER if appeal.asked_by_id else Action.ADD

    async def after(appeal: Appeal, event: AppealEvent) -> None:
        event.action = holder["action"]
        await event.save(update_fields=["action"])
        if photos:
            appeal.photos = [*appeal.photos, *photos][:18]
        if location:
            appeal.location = location
        what = text or ("[照片]" if photos else "[位置]")
        asked_by = await Resident.get_or_none(id=appeal.asked_by_id) if appeal.asked_by_id else None
        appeal.asked_by_id = appeal.asked_at = None
        if asked_by is not None and asked_by.is_staff:
            viewer = await Organisation.get_or_none(id=asked_by.organisation_id)
            await _notify_person(appeal, asked_by, event.id,
                                 f"居民答复 {_staff_line(appeal, resident, viewer)}:\n{what}\n"
                                 f"继续回复:回复 {appeal.ticket} 内容", kind="appeal_staff")
        else:
            await _notify_org(appeal, appeal.organisation_id, event.id,
                              lambda viewer: f"居民补充 {_staff_line(appeal, resident, viewer)}:\n{what}\n"
                                             f"回复居民:回复 {appeal.ticket} 内容")
    note = text or ("[照片]" if photos else "[位置]")
    appeal, _ = await _move(appeal_id, Action.ADD, now, actor=resident, note=note, before=before,
                            after=after)
    return appeal


async def rate(appeal_id: int, resident: Resident, score: int, comment: str, now: datetime) -> Appeal:
    """1-5. 3-5 closes the ticket; 1-2 reopens it (重办) with the same organisation."""
    if not 1 <= score <= 5:
        raise AppealError("请回复1到5之间的数字。")
    comment = (comment or "").strip()[:200]
    action = Action.RATE_CLOSE if score >= 3 else Action.RATE_REOPEN

    async def before(appeal: Appeal) -> None:
        if appeal.resident_id != resident.id:
            raise AppealError("没有找到这个工单。")
        if appeal.rating is not None and appeal.state != S.RESOLVED:
            raise AppealError(f"工单{appeal.ticket}已经评价过了,谢谢!")

    async def after(appeal: Appeal, event: AppealEvent) -> None:
        appeal.rating, appeal.rating_comment = score, comment
        appeal.rating_due_at = None
        org = await Organisation.get(id=appeal.organisation_id)
        if action == Action.RATE_CLOSE:
            appeal.closed_at = now
            await _notify_org(appeal, org.id, event.id,
                              lambda viewer: f"工单{appeal.ticket}居民评价{score}分"
                                             + (f":{comment}" if comment else "") + "。已完成。")
            return
        appeal.reopen_count += 1
        limits = await deadlines_for(appeal.category)
        appeal.acked_at, appeal.warned = None, 0
        appeal.ack_due_at = now + timedelta(hours=limits.accept_hours)
        appeal.resolve_due_at = add_working_days(now, limits.resolve_days)
        appeal.resolved_at = None
        filer = resident
        community = await Community.get(id=appeal.community_id)
        await _notify_org(appeal, org.id, event.id,
                          lambda viewer: new_ticket_text(appeal, filer, viewer, community,
                                                         lead=f"重办(居民评{score}分)")
                          + f"\n上次处理结果:{_short(appeal.result, 60)}"
                          + (f"\n居民意见:{comment}" if comment else ""))
    appeal, _ = await _move(appeal_id, action, now, actor=resident,
                            note=f"{score}分" + (f" {comment}" if comment else ""),
                            before=before, after=after)
    return appeal


async def rating_comment(appeal_id: int, resident: Resident, comment: str, now: datetime) -> Appeal:
    """The resident's reason for their rating, sent as the next message: kept on the ticket
    (once; a rating given with its comment has one already) and told to the handlers."""
    comment = (comment or "").strip()[:200]
    if not comment:
        raise AppealError("没有收到您的意见。")

    async def before(appeal: Appeal) -> None:
        if appeal.resident_id != resident.id:
            raise AppealError("没有找到这个工单。")
        if appeal.rating is None:
            raise AppealError(f"工单{appeal.ticket}还没有评价。")
        if appeal.rating_comment:
            raise AppealError(f"已经收到您对工单{appeal.ticket}的意见了,谢谢!")

    async def after(appeal: Appeal, event: AppealEvent) -> None:
        appeal.rating_comment = comment
        await _notify_org(appeal, appeal.organisation_id, event.id,
                          lambda viewer: f"工单{appeal.ticket}居民对评价({appeal.rating}分)的说明:{comment}")
    appeal, _ = await _move(appeal_id, Action.COMMENT, now, actor=resident, note=comment,
                            before=before, after=after)
    return appeal


async def adopt_suggestion(appeal_id: int, staff: Resident, now: datetime) -> tuple[Appeal, int]:
    """An adopted suggestion earns the filer points through the ledger (once per ticket)."""
    org = await staff_org(staff)
    appeal = await Appeal.get(id=appeal_id)
    if appeal.category != "suggestion":
        raise AppealError(f"工单{appeal.ticket}不是建议类,不能按“建议被采纳”奖励积分。")
    rules = {code: pts for code, _name, pts in await rules_for(appeal.community_id)}
    points = rules.get("suggestion", 20)
    holder: dict = {}

    async def before(a: Appeal) -> None:
        if await AppealEvent.filter(appeal_id=a.id, action=Action.ADOPT).exists():
            raise AppealError(f"工单{a.ticket}的建议已经采纳过了。")

    async def after(a: Appeal, event: AppealEvent) -> None:
        _, created = await post_entry(a.resident_id, points, reason=f"合理化建议被采纳(工单{a.ticket})",
                                      source=Source.SUGGESTION, key=f"suggestion:{a.id}",
                                      actor_id=staff.id, notify=True)
        holder["points"] = points if created else 0
    appeal, _ = await _move(appeal_id, Action.ADOPT, now, actor=staff, actor_org=org,
                            note=f"采纳建议,奖励{points}积分", before=before, after=after)
    return appeal, holder.get("points", 0)


async def timeline(appeal: Appeal) -> list[AppealEvent]:
    return await (AppealEvent.filter(appeal_id=appeal.id).order_by("at", "id")
                  .prefetch_related("actor_org", "target_org"))


# ---------------------------------------------------------------------------- the periodic job

class _Skip(AppealError):
    """Another run (or a person) got there first: nothing to do."""


async def _system_move(appeal: Appeal, action: str, now: datetime, note: str,
                       still: Callable[[Appeal], bool], after: Mutate) -> bool:
    """A change made by the clock. `still` re-checks the condition under the row lock, so
    two runs at the same time cannot both act."""
    async def before(a: Appeal) -> None:
        if not still(a):
            raise _Skip("")
    try:
        await _move(appeal.id, action, now, note=note, before=before, after=after)
        return True
    except AppealError:  # the state moved on since the scan
        return False


def _ack_missed(a: Appeal, now: datetime) -> bool:
    return not a.acked_at and now >= a.ack_due_at


def _may_auto_escalate(a: Appeal, now: datetime) -> bool:
    return (a.is_open and a.state != S.ESCALATED and not a.escalated_at
            and (_ack_missed(a, now) or now >= a.resolve_due_at))


def _warning_due(a: Appeal, limits: Deadlines, now: datetime) -> int:
    if not a.is_open:
        return 0
    if not a.acked_at and not a.warned & 1 and \
            now >= a.ack_due_at - timedelta(hours=limits.accept_warn_hours) and now < a.ack_due_at:
        return 1
    if not a.warned & 2 and a.resolve_due_at - timedelta(hours=limits.resolve_warn_hours) <= now < a.resolve_due_at:
        return 2
    return 0


async def run_appeal_deadlines(now: datetime, policy: AppealPolicy = POLICY) -> dict[str, int]:
    """Warnings before deadlines, auto-escalation to the sub-district when one is missed,
    closing resolved tickets nobody rated in time.

    Idempotent: every condition is re-checked under the row lock and recorded on the
    appeal (`warned`, `escalated_at`, the state), so a second run with the same clock —
    or a concurrent one — changes nothing. Call it every few minutes.
    """
    done = {"warned": 0, "escalated": 0, "closed": 0}
    rules = {c: await deadlines_for(c) for c in CATEGORY_LABELS}  # one read per run, not per ticket
    # Linked tickets follow their parent and have no clock of their own.
    for appeal in await Appeal.filter(state__in=_OPEN, linked_to_id=None).order_by("id"):
        limits = rules.get(appeal.category) or Deadlines()
        if _may_auto_escalate(appeal, now):
            why = "超时未受理" if _ack_missed(appeal, now) else "超时未办结"
            try:
                office = await subdistrict_of(appeal)
            except AppealError:
                continue

            async def after(a: Appeal, event: AppealEvent, office=office, why=why) -> None:
                a.auto_escalated = True
                event.target_org_id = office.id
                await event.save(update_fields=["target_org_id"])
                await _escalation_after(a, event, office, now, why, "")
            if await _system_move(appeal, Action.AUTO_ESCALATE, now, why,
                                  lambda a: _may_auto_escalate(a, now), after):
                done["escalated"] += 1
            continue
        warn = _warning_due(appeal, limits, now)
        if not warn:
            continue
        what = "受理" if warn == 1 else "办结"

        async def after(a: Appeal, event: AppealEvent, warn=warn, what=what) -> None:
            a.warned |= warn
            due = a.ack_due_at if warn == 1 else a.resolve_due_at
            tail = "逾期将自动上报街道。" if not a.escalated_at else ""
            await _notify_org(a, a.organisation_id, event.id,
                              lambda viewer: f"⏰提醒:工单{a.ticket}({a.label})需在{local_text(due)}前"
                                             f"{what}。{tail}回复“诉求 {a.ticket}”看详情。")
        if await _system_move(appeal, Action.WARN, now, f"{what}时限提醒",
                              lambda a, warn=warn, limits=limits: _warning_due(a, limits, now) == warn,
                              after):
            done["warned"] += 1
    for appeal in await Appeal.filter(state=S.RESOLVED, rating=None, rating_due_at__lte=now):
        async def after(a: Appeal, event: AppealEvent) -> None:
            a.closed_at = now
            a.rating_due_at = None
        if await _system_move(appeal, Action.EXPIRE, now, "未评价,自动完成",
                              lambda a: a.rating is None and a.rating_due_at is not None
                              and a.rating_due_at <= now, after):
            done["closed"] += 1
    # Idle 转人工 conversations end on the same tick (one periodic entry point).
    from models.handover import close_idle_handovers  # noqa: PLC0415 - avoids an import cycle
    done["handovers_closed"] = await close_idle_handovers(now)
    return done
