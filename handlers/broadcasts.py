"""Broadcasts: staff announce an activity to their community; residents turn notices off/on.

Staff: "通知 12" (activity number, or a number from 报名统计) shows who would be reached and
asks to confirm; "通知结果 3" shows how many a broadcast reached, by channel.
Residents: "退订通知" / "开启通知" (activity announcements only; notices about their own
signups, appeals and points always come).
"""
from __future__ import annotations

from handlers.engine import (REGISTRY, Ctx, EndFlow, Flow, Invalid, Step, confirm_step, flow,
                             staff_command, start_flow)
from models.activities import Activity
from models.broadcasts import (Broadcast, BroadcastError, audience_size, broadcast_activity,
                               broadcast_reach, may_announce, set_notices)
from models.clock import local_text
from nlp.entities import parse_int
from nlp.normalize import compact

CHANNELS = {"custom": "客服消息", "template": "模板消息", "subscribe": "订阅通知", "inbox": "留言箱(居民回复后看到)"}

OFF_WORDS = {"退订通知", "取消通知", "关闭通知", "不要通知", "不再通知", "别再通知", "退订", "唔要通知"}
ON_WORDS = {"开启通知", "打开通知", "恢复通知", "订阅通知", "接收通知"}


# ---------------------------------------------------------------------------- residents

async def notices_hook(ctx: Ctx) -> str | None:
    words = compact(ctx.text)
    if words not in OFF_WORDS and words not in ON_WORDS:
        return None
    if not ctx.registered:
        return "您还没有登记,不会收到社区活动通知。回复“登记”开始。"
    if words in OFF_WORDS:
        changed = await set_notices(ctx.resident, False)
        lead = "好的,已为您退订社区活动通知。" if changed else "您已经退订了社区活动通知。"
        return lead + "您报名的活动、诉求进度和积分变动仍会通知您。想再收到时回复“开启通知”。"
    changed = await set_notices(ctx.resident, True)
    return ("好的,已为您开启社区活动通知,有新活动会第一时间告诉您。" if changed
            else "您的社区活动通知本来就是开启的。") + "不想收到时回复“退订通知”。"


REGISTRY.hooks.append(notices_hook)


# ---------------------------------------------------------------------------- staff

def _number(ctx: Ctx, keyword: str) -> int | None:
    rest = compact(ctx.text)[len(keyword):]
    return parse_int(rest) if rest else None


async def _resolve(ctx: Ctx, number: int | None) -> Activity | None:
    """A number from the last 报名统计 list, else an activity number."""
    if number is None:
        return None
    choices = ctx.state.get("choices") or {}
    if choices.get("kind") == "staff_activity" and 1 <= number <= len(choices["ids"]):
        return await Activity.get_or_none(id=choices["ids"][number - 1])
    return await Activity.get_or_none(id=number)


async def _parse_activity(ctx: Ctx, slots: dict) -> int:
    activity = await _resolve(ctx, parse_int(ctx.text))
    if activity is None:
        raise Invalid("没有找到这个活动,请回复活动编号(发送“报名统计”可看编号)。")
    if not await may_announce(ctx.resident, activity):
        raise EndFlow("只能通知本社区(或本街道)的活动,没有发送。")
    return activity.id


async def _prefill(ctx: Ctx, slots: dict) -> None:
    activity = await _resolve(ctx, _number(ctx, "通知"))
    if activity is not None:
        if not await may_announce(ctx.resident, activity):
            raise EndFlow("只能通知本社区(或本街道)的活动,没有发送。")
        slots["activity"] = activity.id


async def _confirm_prompt(ctx: Ctx, slots: dict) -> str:
    activity = await Activity.get(id=slots["activity"])
    n = await audience_size(activity, ctx.resident)
    where = "本社区" if activity.community_id else "本街道"
    return (f"将把“{activity.title}”({local_text(activity.start_at)})通知{where}"
            f"{n}位开启了通知的居民;已通知过的人不会重复收到。确认发送请回复“是”。")


async def _finish(ctx: Ctx, slots: dict) -> str:
    try:
        b = await broadcast_activity(slots["activity"], ctx.resident, ctx.now)
    except BroadcastError as exc:
        return f"{exc}没有发送。"
    told = b.audience - b.queued
    extra = f",{told}位之前已通知过" if told else ""
    return (f"已安排通知{b.queued}位居民{extra}(通知编号{b.id})。"
            f"稍后发送“通知结果 {b.id}”查看送达情况。")


flow(Flow("broadcast", "通知居民", [
    Step("activity", "要通知哪个活动?请回复活动编号。", _parse_activity, example="例如:12"),
    confirm_step(_confirm_prompt),
], _finish, prefill=_prefill))


@staff_command("通知居民", "通知")
async def announce(ctx: Ctx) -> str:
    return await start_flow(ctx, "broadcast")


@staff_command("通知结果")
async def reach(ctx: Ctx) -> str:
    number = _number(ctx, "通知结果")
    query = Broadcast.filter(created_by_id=ctx.resident.id)
    b = await (query.filter(id=number).first() if number else query.order_by("-id").first())
    if b is None:
        return "没有找到这次通知。请发送“通知结果 通知编号”。"
    r = await broadcast_reach(b.id)
    sent = sum(v for k, v in r.by_channel.items())
    lines = [f"通知编号{b.id}:共{r.queued}人,已送达{sent}人。"]
    lines += [f"- {CHANNELS.get(k, k)}:{v}人" for k, v in sorted(r.by_channel.items())]
    if r.inbox:
        lines.append(f"- 等居民回复时再看到:{r.inbox}人")
    if r.waiting:
        lines.append(f"- 正在发送:{r.waiting}人")
    if r.failed:
        lines.append(f"- 未能送达:{r.failed}人")
    return "\n".join(lines)
