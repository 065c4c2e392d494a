"""转人工: the resident talks to the community's on-duty staff through the bot.

While a conversation is open, the resident's text goes to the relay before the classifier
(a hook at the front of REGISTRY.hooks). Staff answer with the handle: “#1 内容”, and end
it with “#1 结束”. Staff say 值班 / 下班 to be (not) the ones asked, 会话 to see the open ones.
"""
from __future__ import annotations

import re

from handlers.engine import REGISTRY, HUMAN_WORDS, Ctx, intent, numbered, staff_command, start_flow
from models.clock import local_text
from models.handover import (IDLE_MINUTES, HandoverError, close_idle_handovers, end_by_resident,
                             end_by_staff, find_for_staff, messages_of, open_for_staff,
                             open_handover, open_handover_of, relay_from_resident,
                             relay_from_staff, set_duty)
from models.places import Community
from nlp.normalize import compact

END_WORDS = {"取消", "退出", "结束", "结束人工", "结束对话", "结束会话", "退出人工", "结束聊天", "挂断",
             "不用了谢谢", "好了谢谢",
             "没事了", "没有了谢谢", "冇嘢喇", "唔该晒"}
_HANDLE_RE = re.compile(r"^\s*[#＃]\s*(\d{1,3})\s*[,,::]?\s*(.*)$", re.S)
_STAFF_END = {"结束", "结束对话", "结束会话", "完", "再见"}


@intent("human")
async def human(ctx: Ctx) -> str:
    if not ctx.registered or not ctx.resident.community_id:
        return await start_flow(ctx, "register", intro="转人工需要先知道您住在哪个社区,先花一分钟登记吧。")
    first = "" if compact(ctx.text) in HUMAN_WORDS else ctx.text.strip()
    try:
        h, created, told = await open_handover(ctx.resident, first, ctx.now)
    except HandoverError as exc:
        return str(exc)
    if not created:
        return "您正在和工作人员对话,直接说您的问题就行。回复“结束人工”结束对话。"
    community = await Community.get(id=ctx.resident.community_id)
    said = "已把您的话转给了工作人员。" if first else "请直接说您的问题,"
    return (f"好的,已为您联系{community.name}的值班工作人员。{said}工作人员会在这里回复您。\n"
            f"回复“结束人工”可结束对话;{IDLE_MINUTES}分钟没有消息会自动结束。")


async def relay_hook(ctx: Ctx) -> str | None:
    r = ctx.resident
    if r is None:
        return None
    if r.is_staff:
        m = _HANDLE_RE.match(ctx.text)
        if m:
            return await _staff_answer(ctx, int(m.group(1)), m.group(2).strip())
    h = await open_handover_of(r.id) if ctx.attention else None
    if h is None:
        return None
    if (ctx.now - h.last_at).total_seconds() >= IDLE_MINUTES * 60:
        await close_idle_handovers(ctx.now)  # it ended by itself: this message is a new start
        return None
    if compact(ctx.text) in END_WORDS:
        await end_by_resident(r, ctx.now)
        return "好的,人工对话已结束。还有需要随时回复“转人工”,或回复“菜单”。"
    try:
        told = await relay_from_resident(h.id, r, ctx.text.strip(), ctx.now)
    except HandoverError:
        return None
    wait = "已转给工作人员,请稍候。" if told else "已记录,工作人员上线后会回复您。"
    return f"{wait}(回复“结束人工”结束对话)"


REGISTRY.hooks.insert(0, relay_hook)


async def relay_media_hook(ctx: Ctx) -> str | None:
    """A photo or a location sent during 转人工 goes to the staff member too."""
    r, inc = ctx.resident, ctx.incoming
    h = await open_handover_of(r.id) if r is not None and ctx.attention else None
    if h is None:
        return None
    if inc.kind == "image":
        text = f"[图片] {inc.pic_url}"
    elif inc.kind == "location" and inc.location:
        loc = inc.location
        text = f"[位置] {loc.get('label') or ''}({loc.get('x')},{loc.get('y')})"
    else:
        return None
    try:
        await relay_from_resident(h.id, r, text, ctx.now)
    except HandoverError:
        return None
    return "已转给工作人员。(回复“结束人工”结束对话)"


REGISTRY.media_hooks.append(relay_media_hook)


async def _handover_open(resident, now) -> bool:
    return await open_handover_of(resident.id) is not None


REGISTRY.pending_checks.append(_handover_open)


async def _staff_answer(ctx: Ctx, handle: int, text: str) -> str:
    try:
        if compact(text) in _STAFF_END:
            await end_by_staff(ctx.resident, handle, ctx.now)
            return f"对话#{handle}已结束,已告诉居民。"
        if not text:
            return f"请在#{handle}后面写上要回复的内容,例如:#{handle} 您好,我们马上安排人去看。"
        await relay_from_staff(ctx.resident, handle, text, ctx.now)
        return f"已发给#{handle}的居民。"
    except HandoverError as exc:
        return str(exc)


@staff_command("值班", "上班")
async def on_duty(ctx: Ctx) -> str:
    await set_duty(ctx.resident, True, ctx.now)
    return "已设为值班:居民“转人工”时会联系您。下班请回复“下班”。"


@staff_command("下班", "结束值班")
async def off_duty(ctx: Ctx) -> str:
    await set_duty(ctx.resident, False, ctx.now)
    return "已结束值班,辛苦了!"


@staff_command("会话", "人工会话")
async def conversations(ctx: Ctx) -> str:
    m = re.search(r"[#＃]?\s*(\d{1,3})\s*$", ctx.text)
    if m and compact(ctx.text) not in ("会话", "人工会话"):
        try:
            h = await find_for_staff(ctx.resident, int(m.group(1)))
        except HandoverError as exc:
            return str(exc)
        msgs = await messages_of(h)
        who = {"resident": "居民", "staff": "工作人员", "system": "系统"}
        return (f"对话#{h.handle}记录:\n" + "\n".join(
            f"{local_text(x.at, with_weekday=False)} {who.get(x.sender, x.sender)}:{x.text}"
            for x in msgs[-15:]) + f"\n回复“#{h.handle} 内容”答复。")
    open_ = await open_for_staff(ctx.resident)
    if not open_:
        return "现在没有进行中的人工对话。"
    return ("进行中的人工对话:\n"
            + numbered(f"#{h.handle} {h.resident.name or '居民'}(开始于{local_text(h.opened_at, with_weekday=False)})"
                       for h in open_)
            + "\n回复“#编号 内容”答复,“#编号 结束”结束,“会话 #编号”看记录。")
