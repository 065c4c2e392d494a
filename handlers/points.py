"""Points for residents: balance, history (newest first, paged) and the rules."""
from __future__ import annotations

from handlers.engine import REGISTRY, Ctx, intent
from models.activities import Activity, ActivityStatus
from models.clock import local
from models.points import history, rules_for
from nlp.normalize import compact

PAGE = 8
MORE_WORDS = {"更多", "下一页", "再看", "继续", "还有吗", "仲有冇"}


@intent("points_balance", needs_registration=True)
async def balance(ctx: Ctx) -> str:
    r = ctx.resident
    last = f"\n最近一笔:{r.last_points_reason} {r.last_points_amount:+d}" \
        if r.last_points_amount is not None else ""
    return (f"您现在有 {ctx.resident.points} 积分。{last}\n"
            "回复“积分明细”看收支,“积分规则”看怎么攒分,“兑换”看能换什么。")


async def _history_page(ctx: Ctx, page: int) -> str:
    entries = await history(ctx.resident.id, page, PAGE)
    if not entries:
        return "还没有积分记录。参加社区活动签到、做志愿者都能攒积分。" if page == 1 else "没有更早的记录了。"
    lines = [f"{local(e.created_at):%m-%d} {e.reason} {e.amount:+d}(余{e.balance_after})"
             for e in entries]
    more = len(entries) == PAGE
    ctx.state["more"] = {"kind": "points_history", "page": page + 1} if more else None
    tail = "\n回复“更多”看更早的记录。" if more else ""
    return f"积分明细(第{page}页,最新在前):\n" + "\n".join(lines) + tail


@intent("points_history", needs_registration=True)
async def points_history(ctx: Ctx) -> str:
    return await _history_page(ctx, 1)


async def more_hook(ctx: Ctx) -> str | None:
    more = ctx.state.get("more")
    if not more or compact(ctx.text) not in MORE_WORDS or more.get("kind") != "points_history":
        return None
    return await _history_page(ctx, more["page"])


REGISTRY.hooks.append(more_hook)


@intent("points_rules")
async def points_rules(ctx: Ctx) -> str:
    community_id = ctx.resident.community_id if ctx.resident else None
    rules = await rules_for(community_id)
    lines = [f"{name}:{points}分" for _, name, points in rules]
    upcoming = await (Activity.filter(status=ActivityStatus.PUBLISHED, start_at__gt=ctx.now,
                                      community_id=community_id, points_participant__gt=0)
                      .order_by("start_at").limit(3)) if community_id else []
    extra = "".join(f"\n· {a.title}:签到得{a.points_participant}分" for a in upcoming)
    return ("积分怎么攒:\n" + "\n".join(f"· {line}" for line in lines)
            + (f"\n近期可得积分的活动:{extra}" if extra else "")
            + "\n积分可以在社区合作商家兑换洗剪吹、头疗、纸巾等。")
