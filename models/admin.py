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
