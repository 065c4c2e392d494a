"""转人工: a resident talks to the on-duty staff of their community through the bot.

A handover is a conversation record: the resident's messages are relayed to staff with a
short handle (#1, #2 ... unique among the community's open conversations), staff answer
with that handle, and every message is kept. Either side can end it; an idle conversation
ends by itself (`close_idle_handovers(now)`, also run by `run_appeal_deadlines`' caller).
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.db import locked
from models.outbox import enqueue, notice
from models.places import Community, Organisation, OrgKind
from models.residents import Resident, Role, flag_attention

IDLE_MINUTES = int(os.environ.get("HANDOVER_IDLE_MINUTES") or 30)


class HandoverState:
    OPEN = "open"
    CLOSED = "closed"


class Handover(Model):
    id = fields.IntField(primary_key=True)
    resident = fields.ForeignKeyField("models.Resident", related_name="handovers")
    community = fields.ForeignKeyField("models.Community", related_name="handovers")
    # The staff member who answered first (later answers go to them).
    staff = fields.ForeignKeyField("models.Resident", related_name="handovers_taken", null=True)
    handle = fields.IntField()
    # Equal to `handle` while open, NULL once closed: the unique pair keeps handles unique
    # among open conversations only (NULLs never collide).
    open_handle = fields.IntField(null=True)
    # Equal to the resident id while open: one open conversation per resident.
    open_resident = fields.IntField(null=True, unique=True)
    state = fields.CharField(max_length=8, default=HandoverState.OPEN, db_index=True)
    opened_at = fields.DatetimeField()
    last_at = fields.DatetimeField()
    closed_at = fields.DatetimeField(null=True)
    closed_by = fields.CharField(max_length=16, default="")  # resident, staff, idle

    class Meta:
        table = "handover"
        unique_together = (("community", "open_handle"),)


class HandoverMessage(Model):
    id = fields.BigIntField(primary_key=True)
    handover = fields.ForeignKeyField("models.Handover", related_name="messages")
    sender = fields.CharField(max_length=8)  # resident, staff, system
    staff = fields.ForeignKeyField("models.Resident", related_name="handover_messages", null=True)
    text = fields.TextField()
    at = fields.DatetimeField()

    class Meta:
        table = "handover_message"


class StaffDuty(Model):
    """Who is on duty for 转人工 (staff say 值班 / 下班)."""

    id = fields.IntField(primary_key=True)
    staff = fields.ForeignKeyField("models.Resident", related_name="duty", unique=True)
    on_duty = fields.BooleanField(default=False)
    changed_at = fields.DatetimeField()

    class Meta:
        table = "staff_duty"


class HandoverError(Exception):
    """Why it could not be done; the message is for the person who asked."""


def _is_staff_of(person: Resident, community_id: int, org: Organisation | None) -> bool:
    return bool(person.has_role(Role.STAFF) and org and org.community_id == community_id)


async def community_staff(community_id: int) -> list[Resident]:
    org_ids = await Organisation.filter(community_id=community_id).values_list("id", flat=True)
    people = await Resident.filter(organisation_id__in=list(org_ids), active=True).order_by("id")
    return [p for p in people if p.has_role(Role.STAFF)]


async def on_duty_staff(community_id: int) -> list[Resident]:
    """Staff on duty in the community; if nobody said 值班, the committee's staff."""
    people = await community_staff(community_id)
    duty = set(await StaffDuty.filter(staff_id__in=[p.id for p in people], on_duty=True)
               .values_list("staff_id", flat=True))
    on = [p for p in people if p.id in duty]
    if on:
        return on
    committee = await Organisation.filter(community_id=community_id,
                                          kind=OrgKind.COMMITTEE).values_list("id", flat=True)
    return [p for p in people if p.organisation_id in set(committee)]


async def set_duty(staff: Resident, on: bool, now: datetime) -> None:
    await StaffDuty.update_or_create(staff_id=staff.id, defaults={"on_duty": on, "changed_at": now})


async def open_handover_of(resident_id: int) -> Handover | None:
    return await Handover.get_or_none(open_resident=resident_id)


def _tag(h: Handover) -> str:
    return f"#{h.handle}"


def _staff_hint(h: Handover) -> str:
    return f"回复“{_tag(h)} 内容”答复,“{_tag(h)} 结束”结束对话。"


async def open_handover(resident: Resident, first_text: str, now: datetime
                        ) -> tuple[Handover, bool, int]:
    """Open (or return the open) conversation. Returns (handover, created, staff told)."""
    if not resident.community_id:
        raise HandoverError("请先登记所在社区。")
    existing = await open_handover_of(resident.id)
    if existing is not None:
        return existing, False, 0
    staff = await on_duty_staff(resident.community_id)
    if not staff:
        community = await Community.get(id=resident.community_id)
        org = await Organisation.filter(community_id=community.id, kind=OrgKind.COMMITTEE).first()
        contact = f",也可以致电{org.contact}" if org and org.contact else ""
        raise HandoverError(f"{community.name}暂时没有工作人员在线。您可以回复“有事找居委”留下诉求{contact}。")
    for _ in range(5):  # two residents opening at once may pick the same handle: retry
        try:
            async with in_transaction():
                used = set(await Handover.filter(community_id=resident.community_id,
                                                 state=HandoverState.OPEN)
                           .values_list("handle", flat=True))
                handle = next(i for i in range(1, len(used) + 2) if i not in used)
                h = await Handover.create(resident_id=resident.id, community_id=resident.community_id,
                                          handle=handle, open_handle=handle,
                                          open_resident=resident.id, opened_at=now, last_at=now)
                await flag_attention(ids=[resident.id])  # their next messages go to staff
                who = resident.name or "居民"
                lines = [f"【转人工{_tag(h)}】{who}需要人工服务。"]
                if first_text:
                    await HandoverMessage.create(handover_id=h.id, sender="resident",
                                                 text=first_text, at=now)
                    lines.append(f"{who}:{first_text}")
                lines.append(_staff_hint(h))
                await enqueue(*[notice(p.openid, "handover", "\n".join(lines),
                                       f"handover:{h.id}:open:{p.id}", data={"handover": h.id})
                                for p in staff])
            return h, True, len(staff)
        except IntegrityError:
            existing = await open_handover_of(resident.id)
            if existing is not None:
                return existing, False, 0
    raise HandoverError("现在联系工作人员的人较多,请稍后再试。")


async def _close(h: Handover, by: str, now: datetime, notices: list) -> None:
    await Handover.filter(id=h.id).update(state=HandoverState.CLOSED, open_handle=None,
                                          open_resident=None, closed_at=now, closed_by=by)
    await HandoverMessage.create(handover_id=h.id, sender="system", text=f"结束({by})", at=now)
    if notices:
        await enqueue(*notices)


async def _recipients(h: Handover) -> list[Resident]:
    if h.staff_id:
        person = await Resident.get_or_none(id=h.staff_id)
        if person is not None:
            return [person]
    return await on_duty_staff(h.community_id)


async def relay_from_resident(handover_id: int, resident: Resident, text: str, now: datetime) -> int:
    """Keep the resident's message and relay it to staff; returns how many were told."""
    async with in_transaction():
        h = await locked(Handover.filter(id=handover_id)).get()
        if h.state != HandoverState.OPEN:
            raise HandoverError("这次人工对话已经结束了。")
        msg = await HandoverMessage.create(handover_id=h.id, sender="resident", text=text, at=now)
        await Handover.filter(id=h.id).update(last_at=now)
        staff = await _recipients(h)
        await enqueue(*[notice(p.openid, "handover", f"【{_tag(h)}】{resident.name or '居民'}:{text}\n"
                               + _staff_hint(h), f"handover:{h.id}:m{msg.id}:{p.id}",
                               data={"handover": h.id}) for p in staff])
    return len(staff)


async def find_for_staff(staff: Resident, handle: int) -> Handover:
    org = await Organisation.get_or_none(id=staff.organisation_id) if staff.organisation_id else None
    if org is None or not org.community_id:
        raise HandoverError("只有社区工作人员可以答复人工对话。")
    h = await Handover.get_or_none(community_id=org.community_id, open_handle=handle)
    if h is None:
        raise HandoverError(f"没有进行中的对话#{handle}(可能已结束)。发送“会话”看进行中的对话。")
    return h


async def relay_from_staff(staff: Resident, handle: int, text: str, now: datetime) -> Handover:
    h = await find_for_staff(staff, handle)
    org = await Organisation.get(id=staff.organisation_id)
    async with in_transaction():
        h = await locked(Handover.filter(id=h.id)).get()
        if h.state != HandoverState.OPEN:
            raise HandoverError(f"对话#{handle}已经结束了。")
        msg = await HandoverMessage.create(handover_id=h.id, sender="staff", staff_id=staff.id,
                                           text=text, at=now)
        await Handover.filter(id=h.id).update(last_at=now, staff_id=h.staff_id or staff.id)
        resident = await Resident.get(id=h.resident_id)
        await enqueue(notice(resident.openid, "handover",
                             f"【{org.name} {staff.name or '工作人员'}】{text}\n"
                             "(直接回复即可继续对话,回复“结束人工”结束)",
                             f"handover:{h.id}:m{msg.id}:{resident.id}", data={"handover": h.id}))
    return h


async def end_by_resident(resident: Resident, now: datetime) -> Handover | None:
    h = await open_handover_of(resident.id)
    if h is None:
        return None
    async with in_transaction():
        h = await locked(Handover.filter(id=h.id)).get()
        if h.state != HandoverState.OPEN:
            return None
        staff = await _recipients(h)
        await _close(h, "resident", now, [
            notice(p.openid, "handover", f"对话{_tag(h)}:居民已结束对话。",
                   f"handover:{h.id}:end:{p.id}", data={"handover": h.id}) for p in staff])
    return h


async def end_by_staff(staff: Resident, handle: int, now: datetime) -> Handover:
    h = await find_for_staff(staff, handle)
    async with in_transaction():
        h = await locked(Handover.filter(id=h.id)).get()
        if h.state != HandoverState.OPEN:
            raise HandoverError(f"对话#{handle}已经结束了。")
        resident = await Resident.get(id=h.resident_id)
        await _close(h, "staff", now, [
            notice(resident.openid, "handover",
                   "工作人员已结束这次人工对话。还有需要随时回复“转人工”,或回复“菜单”。",
                   f"handover:{h.id}:end:{resident.id}", data={"handover": h.id})])
    return h


async def close_idle_handovers(now: datetime, idle_minutes: int = IDLE_MINUTES) -> int:
    """End conversations nobody wrote in for `idle_minutes`; both sides are told. Idempotent."""
    closed = 0
    cutoff = now - timedelta(minutes=idle_minutes)
    for h in await Handover.filter(state=HandoverState.OPEN, last_at__lte=cutoff):
        async with in_transaction():
            h = await locked(Handover.filter(id=h.id)).get()
            if h.state != HandoverState.OPEN or h.last_at > cutoff:
                continue
            resident = await Resident.get(id=h.resident_id)
            staff = await _recipients(h)
            text = f"人工对话{idle_minutes}分钟没有新消息,已自动结束。"
            await _close(h, "idle", now, [
                notice(resident.openid, "handover", text + "还有需要随时回复“转人工”。",
                       f"handover:{h.id}:end:{resident.id}", data={"handover": h.id}),
                *[notice(p.openid, "handover", f"对话{_tag(h)}:{text}",
                         f"handover:{h.id}:end:{p.id}", data={"handover": h.id}) for p in staff]])
            closed += 1
    return closed


async def open_for_staff(staff: Resident) -> list[Handover]:
    org = await Organisation.get_or_none(id=staff.organisation_id) if staff.organisation_id else None
    if org is None or not org.community_id:
        return []
    return await (Handover.filter(community_id=org.community_id, state=HandoverState.OPEN)
                  .order_by("opened_at").prefetch_related("resident"))


async def messages_of(h: Handover) -> list[HandoverMessage]:
    return await HandoverMessage.filter(handover_id=h.id).order_by("at", "id")
