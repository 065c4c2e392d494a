"""Greeting, help, the fallback, media without a flow, and WeChat events."""
from __future__ import annotations

import logging

from handlers.engine import MENU, REGISTRY, Ctx, intent, menu_text, run_intent, start_flow
from models.outbox import Outbox, OutboxStatus
from models.places import Community
from models.residents import get_or_create_resident, set_subscribed

log = logging.getLogger(__name__)

WELCOME = "欢迎关注云芳邻!我是社区小助手,可以帮您报名社区活动、查积分换礼品、预约服务、向居委反映问题。"


def show_menu(ctx: Ctx, lead: str = "") -> str:
    ctx.remember_choices("menu", [name for _, name in MENU])
    return f"{lead}\n{menu_text()}" if lead else menu_text()


@intent("greeting")
async def greeting(ctx: Ctx) -> str:
    name = ctx.resident.name if ctx.registered and ctx.resident.name else ""
    hello = f"{name},您好!" if name else "您好!"
    return show_menu(ctx, hello)


@intent("help")
async def help_(ctx: Ctx) -> str:
    staff = "\n工作人员请回复“工作台”查看工作命令。" if ctx.resident and ctx.resident.is_staff else ""
    return show_menu(ctx) + staff


@intent("unknown")
async def unknown(ctx: Ctx) -> str:
    return show_menu(ctx, "抱歉,这个我暂时帮不上忙。")


@intent("cancel")
async def cancel(ctx: Ctx) -> str:
    return "好的,现在没有正在办理的事。需要时回复“菜单”。"


@intent("_media")
async def media(ctx: Ctx) -> str:
    kinds = {"image": "图片", "location": "位置", "link": "链接", "video": "视频", "voice": "语音"}
    what = kinds.get(ctx.incoming.kind, "消息")
    return show_menu(ctx, f"收到您的{what},谢谢!不过我现在只看得懂文字。")


# ---------------------------------------------------------------------------- events

def _scene(key: str) -> str:
    return key[len("qrscene_"):] if key.startswith("qrscene_") else key


async def _scene_reply(ctx: Ctx, scene: str) -> str | None:
    for prefix in sorted(REGISTRY.scenes, key=len, reverse=True):
        if scene.startswith(prefix):
            return await REGISTRY.scenes[prefix](ctx, scene[len(prefix):])
    return None


async def _community_from_scene(scene: str) -> Community | None:
    return await Community.get_or_none(code=scene) if scene else None


@intent("_event")
async def on_event(ctx: Ctx) -> str | None:
    inc = ctx.incoming
    event = inc.event
    if event == "unsubscribe":
        await set_subscribed(inc.openid, False)
        return None  # WeChat ignores replies to unsubscribe; nothing is sent
    if event == "subscribe":
        ctx.resident = await set_subscribed(inc.openid, True)
        scene = _scene(inc.event_key)
        if ctx.registered:
            lead = f"{ctx.resident.name or ''}欢迎回来!"
            handled = await _scene_reply(ctx, scene) if scene else None
            return handled or show_menu(ctx, lead)
        community = await _community_from_scene(scene)
        slots = {"community": community.id} if community else {}
        return await start_flow(ctx, "register", slots, intro=WELCOME + "\n先花一分钟登记所在社区吧。")
    if event == "scan":
        scene = _scene(inc.event_key)
        handled = await _scene_reply(ctx, scene)
        if handled:
            return handled
        community = await _community_from_scene(scene)
        if community and not ctx.registered:
            ctx.resident = ctx.resident or await get_or_create_resident(inc.openid)
            return await start_flow(ctx, "register", {"community": community.id})
        if community:
            return show_menu(ctx, f"您已登记在{(await ctx.resident.community).name}。")
        return show_menu(ctx)
    if event == "click":
        return await run_intent(ctx, CLICK_KEYS.get(inc.event_key, "help"))
    return None  # location reports, template job results, etc.: answered "success"


# Custom-menu keys (see docs/menu.json) mapped to intents.
CLICK_KEYS = {
    "ACTIVITIES": "activity_list",
    "MY_ACTIVITIES": "my_activities",
    "CHECKIN": "checkin",
    "POINTS": "points_balance",
    "POINTS_HISTORY": "points_history",
    "REWARDS": "reward_list",
    "SERVICES": "service_booking",
    "APPEAL": "appeal_file",
    "APPEAL_STATUS": "appeal_status",
    "SURVEY": "survey",
    "HUMAN": "human",
    "PROFILE": "register",
    "HELP": "help",
}


async def _inbox_waiting(resident, now) -> bool:
    """Notices no channel could deliver wait to be shown with the next reply."""
    return await Outbox.filter(recipient=resident.openid, status=OutboxStatus.INBOX).exists()


REGISTRY.pending_checks.append(_inbox_waiting)
