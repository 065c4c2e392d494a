"""Administrative operations behind `main.py`: residents, rosters, staff."""
from __future__ import annotations

import csv
from pathlib import Path

from datetime import datetime

from tortoise.transactions import in_transaction

from models.activities import Activity, create_activity
from models.clock import LOCAL_TZ

from models.places import Community, Organisation, RosterEntry
from models.residents import Resident, add_staff, register_resident


class AdminError(Exception):
    """A clear message for the operator; nothing was changed."""


async def community_by_name(name: str) -> Community:
    community = await Community.get_or_none(name=name) or await Community.get_or_none(code=name)
    if community is None:
        known = "、".join(await Community.all().values_list("name", flat=True))
        raise AdminError(f"没有名为“{name}”的社区。现有:{known or '无(先运行 seed-demo)'}")
    return community


async def add_resident(openid: str, name: str, phone: str, community: str) -> Resident:
    return await register_resident(openid, await community_by_name(community), name, phone)


async def import_roster(path: Path) -> tuple[int, list[str]]:
    """Read a roster CSV (name, phone, community). Returns (lines added or kept, problems)."""
    problems: list[str] = []
    rows = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for lineno, row in enumerate(csv.DictReader(fh), start=2):
            name, phone, community = (row.get(k, "").strip() for k in ("name", "phone", "community"))
            if not (name and phone.isdigit() and len(phone) == 11 and community):
                problems.append(f"第{lineno}行不完整或手机号不是11位数字,已跳过")
                continue
            rows.append((lineno, name, phone, community))
    count = 0
    async with in_transaction():
        for lineno, name, phone, community_name in rows:
            try:
                community = await community_by_name(community_name)
            except AdminError as exc:
                problems.append(f"第{lineno}行:{exc}")
                continue
            await RosterEntry.update_or_create(community=community, phone=phone,
                                               defaults={"name": name})
            count += 1
        # Residents already registered with a phone on the roster become verified.
        for entry in await RosterEntry.all():
            await Resident.filter(community_id=entry.community_id, phone=entry.phone,
                                  verified=False).update(verified=True)
    return count, problems


async def add_staff_member(openid: str, name: str, org: str) -> Resident:
    organisation = await Organisation.get_or_none(name=org)
    if organisation is None:
        known = "、".join(await Organisation.all().values_list("name", flat=True))
        raise AdminError(f"没有名为“{org}”的组织。现有:{known or '无(先运行 seed-demo)'}")
    return await add_staff(openid, name, organisation)


async def add_activity(community: str, title: str, start: str, capacity: int, points: int = 0,
                       code: str | None = None, place: str = "") -> Activity:
    target = await community_by_name(community)
    try:
        start_at = datetime.fromisoformat(start)
    except ValueError:
        raise AdminError(f"时间格式不对:{start}(例如 2026-12-20T15:00)") from None
    if start_at.tzinfo is None:
        start_at = start_at.replace(tzinfo=LOCAL_TZ)
    if capacity <= 0:
        raise AdminError("名额必须大于0")
    if code and not (code.isdigit() and 4 <= len(code) <= 6):
        raise AdminError("签到码必须是4到6位数字")
    committee = await Organisation.filter(community=target, kind="committee").first()
    return await create_activity(title=title, start_at=start_at, capacity=capacity, code=code,
                                 community=target, organisation=committee, place=place,
                                 points_participant=points,
                                 contact=committee.contact if committee else "")


# ---------------------------------------------------------------------------- services and surveys

async def add_service(community: str, name: str, start: str, end: str, *, org: str | None = None,
                      merchant: str | None = None, slot_minutes: int = 30, capacity: int = 5,
                      weeks: int = 1, place: str = "", aliases: str = "") -> tuple:
    """A service with `weeks` weekly sessions; returns (service, sessions, slot count)."""
    from models.services import ServiceError, ServiceSlot, add_weekly_sessions, create_service

    target = await community_by_name(community)
    organisation = provider = None
    if org:
        organisation = await Organisation.get_or_none(name=org)
        if organisation is None:
            raise AdminError(f"没有名为“{org}”的组织")
    if merchant:
        provider = await Resident.get_or_none(openid=merchant)
        if provider is None or not provider.has_role("merchant"):
            raise AdminError(f"openid {merchant} 不是商家")
    if not (organisation or provider):
        raise AdminError("请用 --org 或 --merchant 指定提供方")
    try:
        start_at = datetime.fromisoformat(start)
        end_at = datetime.fromisoformat(end) if "T" in end or "-" in end else datetime.combine(
            start_at.date(), datetime.strptime(end, "%H:%M").time())
    except ValueError:
        raise AdminError(f"时间格式不对:{start} / {end}(例如 --start 2026-12-19T09:00 --end 11:00)") from None
    start_at = start_at if start_at.tzinfo else start_at.replace(tzinfo=LOCAL_TZ)
    end_at = end_at if end_at.tzinfo else end_at.replace(tzinfo=LOCAL_TZ)
    if end_at <= start_at:
        raise AdminError("结束时间要晚于开始时间")
    try:
        async with in_transaction():
            service = await create_service(community_id=target.id, name=name, place=place,
                                           organisation_id=organisation.id if organisation else None,
                                           merchant_id=provider.id if provider else None,
                                           aliases=aliases)
            sessions = await add_weekly_sessions(service.id, start_at, end_at, weeks=weeks,
                                                 slot_minutes=slot_minutes, capacity=capacity)
    except ServiceError as exc:
        raise AdminError(str(exc)) from None
    slots = await ServiceSlot.filter(session_id__in=[s.id for s in sessions]).count()
    return service, sessions, slots


async def add_survey(path: Path, invite_now: bool = False) -> tuple:
    """Load a questionnaire file; returns (survey, invitations written)."""
    from models.clock import utcnow
    from models.surveys import SurveyError, invite, load_definition, save_survey

    try:
        survey = await save_survey(load_definition(path))
        invited = await invite(survey.id, utcnow()) if invite_now else 0
    except SurveyError as exc:
        raise AdminError(str(exc)) from None
    return survey, invited


async def invite_survey(survey_id: int) -> int:
    from models.clock import utcnow
    from models.surveys import Survey, SurveyError, invite

    if not await Survey.exists(id=survey_id):
        raise AdminError(f"没有编号为 {survey_id} 的问卷")
    try:
        return await invite(survey_id, utcnow())
    except SurveyError as exc:
        raise AdminError(str(exc)) from None


async def export_survey(survey_id: int, path: Path) -> list[Path]:
    from models.surveys import SurveyError, export_survey as write

    try:
        return await write(survey_id, path)
    except SurveyError as exc:
        raise AdminError(str(exc)) from None
