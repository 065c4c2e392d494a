"""Appeals (有事找居委) in the chat, the staff side: the queue, a ticket's detail, 受理, 回复,
转派, 上报街道, 办结, 退回, 采纳 (each with a ticket number or its place in the queue), and 统计.

Who may see and do what is decided in models/appeals.py (can_act, staff_scope_filter).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta

from handlers.appeals import _TICKET_ONLY_RE, _short, appeal_hook
from handlers.engine import REGISTRY, Ctx, numbered, staff_command
from models.appeals import (Action, Appeal, AppealError, AppealState, accept, adopt_suggestion,
                            escalate, find_for_staff, identity_for, overdue_text, reject, reply,
                            resident_appeal, resolve, staff_org, staff_queue, timeline, transfer)
from models.appeals_admin import appeal_figures, percent, stars
from models.clock import LOCAL_TZ, local_text
from models.places import Community, Organisation, OrgKind
from models.residents import Resident
from nlp.fuzzy import Catalog
from nlp.normalize import compact

STAFF_APPEAL_HELP = ("诉求命令:诉求(我的待办)、诉求 全部、诉求 工单号(详情)、受理 工单号、"
                     "回复 工单号 内容、转派 工单号 组织、上报街道 工单号 说明、办结 工单号 结果、"
                     "退回 工单号 原因、采纳 工单号(建议奖励积分)、统计(本月)、统计 上月")


def _args(ctx: Ctx, keyword: str) -> str:
    """What follows the keyword in the raw text (compact() would lose the spaces)."""
    pattern = r"^\s*" + r"\s*".join(map(re.escape, keyword))
    return re.sub(pattern, "", ctx.text.strip()).strip(" ,,::")


def _ticket_and_rest(ctx: Ctx, keyword: str) -> tuple[str | None, str]:
    rest = _args(ctx, keyword)
    m = re.match(r"^(工单)?\s*(\d{1,6})(?!\d)[\s,,::]*(.*)$", rest, re.S)
    if not m:
        return None, rest
    number, tail = m.group(2), m.group(3).strip()
    if len(number) == 6:
        return number, tail
    ids = (ctx.state.get("choices") or {}).get("ids") if (ctx.state.get("choices") or {}).get(
        "kind") == "staff_appeal" else None
    k = int(number)
    if ids and 1 <= k <= len(ids):
        return ids[k - 1], tail
    return None, rest


async def _staff_appeal(ctx: Ctx, keyword: str, example: str) -> tuple[Appeal, str]:
    ticket, rest = _ticket_and_rest(ctx, keyword)
    if ticket is None:
        raise AppealError(f"请带上工单号,例如:{example}\n发“诉求”看待办工单。")
    return await find_for_staff(ctx.resident, ticket), rest


async def _staff_run(ctx: Ctx, keyword: str, example: str, op) -> str:
    try:
        appeal, rest = await _staff_appeal(ctx, keyword, example)
        return await op(appeal, rest)
    except AppealError as exc:
        return str(exc)


def _staff_event_line(e) -> str:
    who = e.actor_org.name if e.actor_org else ("居民" if e.actor_id else "系统")
    target = f"→{e.target_org.name}" if e.target_org else ""
    labels = {Action.SUBMIT: "提交", Action.ACCEPT: "受理", Action.REPLY: "回复居民", Action.ANSWER: "居民答复",
              Action.ADD: "居民补充", Action.TRANSFER: "转派", Action.ESCALATE: "上报街道",
              Action.AUTO_ESCALATE: "超时自动上报", Action.RESOLVE: "办结", Action.REJECT: "退回",
              Action.RATE_CLOSE: "居民评价", Action.RATE_REOPEN: "居民评价,重办", Action.EXPIRE: "未评价自动完成",
              Action.WARN: "时限提醒", Action.ADOPT: "采纳建议", Action.COMMENT: "居民说明评价"}
    note = f":{_short(e.note, 40)}" if e.note else ""
    return f"{local_text(e.at, with_weekday=False)} {who} {labels.get(e.action, e.action)}{target}{note}"


async def _staff_detail(ctx: Ctx, ticket: str) -> str:
    try:
        appeal = await find_for_staff(ctx.resident, ticket)
    except AppealError as exc:
        return str(exc)
    viewer = await staff_org(ctx.resident)
    filer = await Resident.get(id=appeal.resident_id)
    community = await Community.get(id=appeal.community_id)
    org = await Organisation.get(id=appeal.organisation_id)
    flags = " ".join(x for x in (overdue_text(appeal, ctx.now),
                                 "重办" if appeal.reopen_count else "",
                                 "关联" if appeal.linked_to_id else "") if x)
    photos = "".join(f"\n照片{i}:{p.get('pic_url')}" for i, p in enumerate(appeal.photos, 1))
    loc = appeal.location
    where = (f"\n位置:{loc.get('label') or ''}({loc.get('x')},{loc.get('y')})" if loc else "")
    events = await timeline(appeal)
    return (f"工单{appeal.ticket}【{appeal.label}】{AppealState.LABELS[appeal.state]} {flags}\n"
            f"{community.name} | 由{org.name}处理\n居民:{identity_for(appeal, filer, viewer)}\n"
            f"受理期限:{local_text(appeal.ack_due_at)};办结期限:{local_text(appeal.resolve_due_at)}\n"
            f"内容:{appeal.description}{photos}{where}\n进展:\n"
            + "\n".join(_staff_event_line(e) for e in events[-10:])
            + f"\n可用:受理/回复/转派/上报街道/办结/退回 {appeal.ticket}")


async def staff_ticket_hook(ctx: Ctx) -> str | None:
    """A bare ticket number from staff that is not their own appeal: its detail."""
    if ctx.resident is None or not ctx.resident.is_staff:
        return None
    m = _TICKET_ONLY_RE.match(compact(ctx.text))
    if not m or await resident_appeal(ctx.resident, m.group(4)) is not None:
        return None
    return await _staff_detail(ctx, m.group(4))


# Right after the resident's hook, which answers for the staff member's own appeals.
REGISTRY.hooks.insert(REGISTRY.hooks.index(appeal_hook) + 1, staff_ticket_hook)


QUEUE_SIZE = 15


@staff_command("诉求", "工单")
async def staff_appeals(ctx: Ctx) -> str:
    words = compact(ctx.text)
    keyword = "诉求" if words.startswith("诉求") else "工单"
    rest = words[len(keyword):]
    if rest in ("帮助", "命令", "怎么用"):
        return STAFF_APPEAL_HELP
    ticket, _ = _ticket_and_rest(ctx, keyword)
    if ticket:
        return await _staff_detail(ctx, ticket)
    try:
        appeals = await staff_queue(ctx.resident, everything=rest in ("全部", "所有", "all"),
                                    limit=QUEUE_SIZE)
    except AppealError as exc:
        return str(exc)
    if not appeals:
        return "目前没有待办的诉求。\n" + STAFF_APPEAL_HELP
    ctx.remember_choices("staff_appeal", [a.ticket for a in appeals])
    more = len(appeals) == QUEUE_SIZE
    lines = [f"工单{a.ticket}【{a.label}】{AppealState.LABELS[a.state]}"
             f"{' 重办' if a.reopen_count else ''} {overdue_text(a, ctx.now)}".rstrip() + f"\n   {_short(a.description, 24)}"
             for a in appeals]
    return ("待办诉求(最早的在前):\n" + numbered(lines)
            + (f"\n(只列出最早的{QUEUE_SIZE}件,先处理这些)" if more else "")
            + "\n发“诉求 1”看详情,“受理 1”受理。更多命令发“诉求 帮助”。")


@staff_command("受理")
async def staff_accept(ctx: Ctx) -> str:
    async def op(appeal: Appeal, rest: str) -> str:
        appeal = await accept(appeal.id, ctx.resident, ctx.now)
        return (f"已受理工单{appeal.ticket},已通知居民。请在{local_text(appeal.resolve_due_at)}前办结。\n"
                f"回复居民:回复 {appeal.ticket} 内容")
    return await _staff_run(ctx, "受理", "受理 123456", op)


@staff_command("回复")
async def staff_reply(ctx: Ctx) -> str:
    async def op(appeal: Appeal, rest: str) -> str:
        appeal = await reply(appeal.id, ctx.resident, rest, ctx.now)
        return f"已把您的回复发给工单{appeal.ticket}的居民,居民的答复会转给您。"
    return await _staff_run(ctx, "回复", "回复 123456 我们明天上午去现场查看", op)


async def _transfer_targets(appeal: Appeal) -> list[Organisation]:
    return await (Organisation.filter(community_id=appeal.community_id)
                  .exclude(id=appeal.organisation_id).exclude(kind=OrgKind.SUBDISTRICT).order_by("id"))


_KIND_WORDS = {OrgKind.COMMITTEE: ("居委",), OrgKind.SOCIAL: ("社工", "社会组织", "服务站"),
               OrgKind.VOLUNTEER: ("志愿",)}


@staff_command("转派", "转交")
async def staff_transfer(ctx: Ctx) -> str:
    async def op(appeal: Appeal, rest: str) -> str:
        targets = await _transfer_targets(appeal)
        pick, note = None, ""
        m = re.match(r"^(\d{1,2})(?!\d)[\s,,::]*(.*)$", rest, re.S)
        if m and 1 <= int(m.group(1)) <= len(targets):
            pick, note = targets[int(m.group(1)) - 1], m.group(2).strip()
        elif rest:
            head = rest.split()[0] if rest.split() else rest
            for org in targets:
                if any(w in head for w in _KIND_WORDS.get(org.kind, ())) or org.name in head:
                    pick = org
                    break
            if pick is None:
                match = Catalog([o.name for o in targets]).match(head, limit=1, cutoff=70)
                pick = targets[match[0].index] if match else None
            note = rest[len(head):].strip()
        if pick is None:
            return (f"要转派给哪个组织?回复“转派 {appeal.ticket} 数字 说明”:\n"
                    + numbered(o.name for o in targets))
        appeal = await transfer(appeal.id, ctx.resident, pick, note, ctx.now)
        return f"已把工单{appeal.ticket}转派给{pick.name},已通知对方和居民。"
    return await _staff_run(ctx, "转派" if compact(ctx.text).startswith("转派") else "转交",
                            "转派 123456 志愿服务队", op)


@staff_command("上报街道", "上报")
async def staff_escalate(ctx: Ctx) -> str:
    keyword = "上报街道" if compact(ctx.text).startswith("上报街道") else "上报"

    async def op(appeal: Appeal, rest: str) -> str:
        appeal = await escalate(appeal.id, ctx.resident, rest, ctx.now)
        org = await Organisation.get(id=appeal.organisation_id)
        return f"已把工单{appeal.ticket}上报{org.name},已通知街道和居民。"
    return await _staff_run(ctx, keyword, "上报街道 123456 需协调施工单位", op)


@staff_command("办结")
async def staff_resolve(ctx: Ctx) -> str:
    async def op(appeal: Appeal, rest: str) -> str:
        linked = await Appeal.filter(linked_to_id=appeal.id, state__in=AppealState.OPEN).count()
        appeal = await resolve(appeal.id, ctx.resident, rest, ctx.now)
        also = f"关联的{linked}张工单一并办结。" if linked else ""
        return f"工单{appeal.ticket}已办结,已请居民评价。{also}"
    return await _staff_run(ctx, "办结", "办结 123456 道路已恢复通行", op)


@staff_command("退回")
async def staff_reject(ctx: Ctx) -> str:
    async def op(appeal: Appeal, rest: str) -> str:
        appeal = await reject(appeal.id, ctx.resident, rest, ctx.now)
        return f"工单{appeal.ticket}已退回,已把原因告诉居民。"
    return await _staff_run(ctx, "退回", "退回 123456 属于物业管理范围,请联系物业", op)


@staff_command("采纳")
async def staff_adopt(ctx: Ctx) -> str:
    async def op(appeal: Appeal, rest: str) -> str:
        appeal, points = await adopt_suggestion(appeal.id, ctx.resident, ctx.now)
        return f"已采纳工单{appeal.ticket}的建议,给居民奖励{points}积分。"
    return await _staff_run(ctx, "采纳", "采纳 123456", op)


# ---------------------------------------------------------------------------- figures

def period_of(words: str, now: datetime) -> tuple[datetime, datetime, str]:
    """本月 (default), 上月, 本周, 今年, 近30天 in local time."""
    today = now.astimezone(LOCAL_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    month = today.replace(day=1)
    if "上月" in words or "上个月" in words:
        start = (month - timedelta(days=1)).replace(day=1)
        return start, month, f"{start.month}月"
    if "本周" in words or "这周" in words:
        start = today - timedelta(days=today.weekday())
        return start, today + timedelta(days=1), "本周"
    if "今年" in words or "本年" in words:
        return today.replace(month=1, day=1), today + timedelta(days=1), f"{today.year}年"
    m = re.search(r"近(\d{1,3})天", words)
    if m:
        return today - timedelta(days=int(m.group(1)) - 1), today + timedelta(days=1), f"近{m.group(1)}天"
    nxt = (month + timedelta(days=32)).replace(day=1)
    return month, nxt, f"{month.month}月"


@staff_command("统计", "诉求统计")
async def staff_figures(ctx: Ctx) -> str:
    try:
        org = await staff_org(ctx.resident)
    except AppealError as exc:
        return str(exc)
    start, end, label = period_of(compact(ctx.text), ctx.now)
    scope = ({"street_id": org.street_id} if org.kind == OrgKind.SUBDISTRICT else
             {"community_id": org.community_id} if org.kind == OrgKind.COMMITTEE else
             {"community_id": org.community_id, "org_id": org.id})
    by_community, by_org = await appeal_figures(start, end, **scope)
    if not by_community:
        return f"{label}还没有诉求。可发“统计 上月”“统计 今年”看其他时段。"

    def line(f) -> str:
        return (f"{f.name}:{f.total}件,响应率{percent(f.response_rate)},"
                f"按时办结率{percent(f.on_time_rate)},满意度{stars(f.satisfaction)}")
    return (f"诉求统计({label}):\n按社区:\n" + "\n".join(line(f) for f in by_community)
            + "\n按组织:\n" + "\n".join(line(f) for f in by_org)
            + "\n(响应率:时限内首次响应;满意度:5分制)完整报表:python main.py report appeals")
