"""Appeal figures and reports (响应率, 按时办结率, 满意度), the operator commands behind
`main.py route set / deadline set / report appeals`, and the demo story. The tables, the
transitions and every change of state are in models/appeals.py."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from models.admin import AdminError, community_by_name
from models.appeals import (CATEGORY_LABELS, ROUTE_LABELS, Appeal, AppealError, Deadlines,
                            NewAppeal, S, accept, deadlines_for, escalate, file_appeal, rate,
                            resolve, set_deadlines, set_route)
from models.exports import write_table
from models.places import Community, Organisation, OrgKind
from models.residents import Resident, add_staff, register_resident

# ---------------------------------------------------------------------------- figures

@dataclass
class Figures:
    scope: str
    name: str
    total: int = 0
    responded_on_time: int = 0
    resolved: int = 0
    resolved_on_time: int = 0
    rated: int = 0
    rating_sum: int = 0

    @property
    def response_rate(self) -> float | None:
        return self.responded_on_time / self.total if self.total else None

    @property
    def on_time_rate(self) -> float | None:
        return self.resolved_on_time / self.resolved if self.resolved else None

    @property
    def satisfaction(self) -> float | None:
        return self.rating_sum / self.rated if self.rated else None


def _resolved_on_time(a: Appeal, resolve_at: datetime | None) -> bool:
    return resolve_at is not None and resolve_at <= a.resolve_due_at


async def appeal_figures(start: datetime, end: datetime, *, street_id: int | None = None,
                         community_id: int | None = None, org_id: int | None = None
                         ) -> tuple[list[Figures], list[Figures]]:
    """Per community and per organisation, for appeals filed in [start, end):
    response rate (first response within the response deadline), on-time resolution rate,
    average satisfaction."""
    q = Appeal.filter(created_at__gte=start, created_at__lt=end)
    if street_id:
        q = q.filter(street_id=street_id)
    if community_id:
        q = q.filter(community_id=community_id)
    appeals = await q.order_by("id")
    if org_id:
        appeals = [a for a in appeals if a.organisation_id == org_id]
    communities = {c.id: c.name for c in await Community.all()}
    orgs = {o.id: o.name for o in await Organisation.all()}
    # The first response deadline of the first cycle is in the timeline: submit time + limit.
    by_community: dict[int, Figures] = {}
    by_org: dict[int, Figures] = {}
    rules = {c: await deadlines_for(c) for c in CATEGORY_LABELS}
    for a in appeals:
        limits = rules.get(a.category) or Deadlines()
        first_due = a.created_at + timedelta(hours=limits.accept_hours)
        resolved_at = a.resolved_at or (a.closed_at if a.state == S.CLOSED else None)
        for key, table, names, scope in ((a.community_id, by_community, communities, "社区"),
                                         (a.organisation_id, by_org, orgs, "组织")):
            f = table.setdefault(key, Figures(scope, names.get(key, str(key))))
            f.total += 1
            if a.responded_at and a.responded_at <= first_due:
                f.responded_on_time += 1
            if a.state in (S.RESOLVED, S.CLOSED):
                f.resolved += 1
                f.resolved_on_time += _resolved_on_time(a, resolved_at)
            if a.rating is not None:
                f.rated += 1
                f.rating_sum += a.rating
    return list(by_community.values()), list(by_org.values())


def percent(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.0f}%"


def stars(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


FIGURE_HEADERS = ["范围", "名称", "诉求数", "及时响应数", "响应率", "办结数", "按时办结数",
                  "按时办结率", "评价数", "平均满意度"]


def figure_row(f: Figures) -> list:
    return [f.scope, f.name, f.total, f.responded_on_time,
            None if f.response_rate is None else round(f.response_rate, 4), f.resolved,
            f.resolved_on_time, None if f.on_time_rate is None else round(f.on_time_rate, 4),
            f.rated, None if f.satisfaction is None else round(f.satisfaction, 2)]


# ---------------------------------------------------------------------------- operator commands

async def route_set(community_name: str, category: str, org_name: str) -> str:
    """`main.py route set`: raise AdminError with a clear message on bad input."""
    community = await community_by_name(community_name)
    org = await Organisation.get_or_none(name=org_name)
    if org is None:
        names = await Organisation.filter(community_id=community.id).values_list("name", flat=True)
        raise AdminError(f"没有名为“{org_name}”的组织。{community.name}的组织:{'、'.join(names)}")
    try:
        await set_route(community, category, org)
    except AppealError as exc:
        raise AdminError(str(exc)) from None
    return f"{community.name}:{ROUTE_LABELS[category]} → {org.name}"


async def deadline_set(category: str, accept_hours: int | None, resolve_days: int | None,
                       accept_warn_hours: int | None, resolve_warn_hours: int | None) -> Deadlines:
    try:
        return await set_deadlines(category, accept_hours=accept_hours, resolve_days=resolve_days,
                                   accept_warn_hours=accept_warn_hours,
                                   resolve_warn_hours=resolve_warn_hours)
    except AppealError as exc:
        raise AdminError(str(exc)) from None


async def report_appeals(start: datetime, end: datetime, path) -> list:
    """`main.py report appeals`: figures per community and per organisation as .xlsx/.csv."""
    by_community, by_org = await appeal_figures(start, end)
    return write_table(path, FIGURE_HEADERS, [figure_row(f) for f in (*by_community, *by_org)])


# ---------------------------------------------------------------------------- demo data

DEMO_APPEAL_OPENID = "demo-resident-jx1"


async def seed_demo_appeals(now: datetime) -> None:
    """The seed article's story in 江夏第一社区: filed, accepted, sent up to 黄石街道,
    resolved, rated. Idempotent: skipped when the demo resident already has an appeal."""
    community = await Community.get_or_none(name="江夏第一社区")
    if community is None:
        return
    committee = await Organisation.get(name="江夏第一社区居委会")
    street = await Organisation.filter(kind=OrgKind.SUBDISTRICT, street_id=community.street_id).first()
    staff = await add_staff("demo-staff-jx1", "社工小黄", committee)
    if street is not None:
        await add_staff("demo-staff-hs", "街道老陈", street)
    resident = await Resident.get_or_none(openid=DEMO_APPEAL_OPENID)
    if resident is not None and await Appeal.filter(resident_id=resident.id).exists():
        return
    resident = await register_resident(DEMO_APPEAL_OPENID, community, "李女士", "13800138001")
    start = now - timedelta(days=6)
    appeal = await file_appeal(resident, NewAppeal(
        "区人民医院门口原有通行道路因建设工程封闭,自行车与电动车均挤在人行道上通过,"
        "现场道路拥挤,存在交通安全风险。", "safety", []), start)
    await accept(appeal.id, staff, start + timedelta(hours=2))
    if street is not None:
        await escalate(appeal.id, staff, "需街道协调建设单位加快恢复交通", start + timedelta(hours=3))
    await resolve(appeal.id, staff, "已联动黄石街道及建设单位,道路已恢复通行", start + timedelta(days=4))
    await rate(appeal.id, resident, 5, "处理很及时", start + timedelta(days=4, hours=2))
