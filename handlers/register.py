"""Registration: community, name, phone, consent, confirm; and changing them later."""
from __future__ import annotations

import re

from handlers.engine import (Ctx, EndFlow, Flow, Invalid, Step, confirm_step, flow, intent,
                             numbered, start_flow)
from models.places import Community, Street
from models.residents import register_resident, update_profile
from nlp.entities import find_phone, parse_choice
from nlp.fuzzy import Catalog
from nlp.normalize import compact

PRIVACY = ("为了给您提供社区服务,我们会保存您的姓名、手机号和所在社区,只用于本社区的服务和联系,"
           "不会对外公开;工作人员查看时手机号会部分隐藏。")
NAME_RE = re.compile(r"^[\u4e00-\u9fa5A-Za-z·. ]{1,20}$")
NAME_PREFIX = re.compile(r"^(我叫|我是|叫我|我姓名是|姓名是|名字是|我的名字是|我个名叫|我叫做)")


async def _communities() -> list[Community]:
    return await Community.all().order_by("id").prefetch_related("street")


async def match_communities(text: str) -> list[Community]:
    """Communities the words point at: a number from the list, a community, or a street."""
    communities = await _communities()
    words = compact(text)
    if not words:
        return []
    exact = [c for c in communities if c.name in words or c.code == words]
    if exact:
        return exact[:1]
    streets = await Street.all()
    street_hits = [s for s in streets if s.name in words or s.name.rstrip("街") == words]
    if street_hits:
        return [c for c in communities if c.street_id in {s.id for s in street_hits}]
    matches = Catalog([c.name for c in communities]).match(words, limit=5)
    if matches and matches[0].score >= 90:
        close = [m for m in matches if m.score >= matches[0].score - 3]
        return [communities[m.index] for m in close]
    return [communities[m.index] for m in matches]


async def _community_prompt(ctx: Ctx, slots: dict) -> str:
    communities = await _communities()
    shown = communities[:9]
    slots["_choices"] = [c.id for c in shown]
    return ("请问您住在哪个社区?回复数字,或直接说社区名(例如“汇侨北”)。\n"
            + numbered(f"{c.name}({c.street.name})" for c in shown))


async def _parse_community(ctx: Ctx, slots: dict) -> int:
    choices = slots.get("_choices") or []
    index = parse_choice(ctx.text, len(choices)) if choices else None
    if index:
        return choices[index - 1]
    found = await match_communities(ctx.text)
    if len(found) == 1:
        return found[0].id
    if found:
        slots["_choices"] = [c.id for c in found]
        raise Invalid("找到几个相近的社区,请回复数字选一个:\n" + numbered(c.name for c in found),
                      counts=False)
    raise Invalid("没有找到这个社区。")


async def _parse_name(ctx: Ctx, slots: dict) -> str:
    name = NAME_PREFIX.sub("", ctx.text.strip()).strip(" ,.,。!!")
    if not NAME_RE.match(name) or len(name) < 2:
        raise Invalid("姓名请用2到20个汉字或字母。")
    return name


async def _parse_phone(ctx: Ctx, slots: dict) -> str:
    phone = find_phone(ctx.text)
    if not phone:
        raise Invalid("这个手机号好像不对,需要是11位数字,以1开头。")
    return phone


async def _parse_consent(ctx: Ctx, slots: dict) -> bool:
    words = compact(ctx.text)
    if words in {"同意", "我同意", "好", "好的", "是", "可以", "行", "ok", "得", "1", "同意的"}:
        return True
    if words in {"不同意", "不", "唔同意", "否", "2"}:
        raise EndFlow("没关系,不登记也可以问我问题。需要时回复“登记”重新开始。")
    raise Invalid("请回复“同意”继续,或“不同意”。")


async def _community_name(community_id: int) -> str:
    return (await Community.get(id=community_id)).name


async def _confirm_prompt(ctx: Ctx, slots: dict) -> str:
    lines = ["请确认您的登记信息:"]
    if "community" in slots:
        lines.append(f"社区:{await _community_name(slots['community'])}")
    if "name" in slots:
        lines.append(f"姓名:{slots['name']}")
    if "phone" in slots:
        lines.append(f"手机:{slots['phone']}")
    lines.append("没问题请回复“是”。")
    return "\n".join(lines)


COMMUNITY = Step("community", _community_prompt, _parse_community, example="例如:汇侨北")
NAME = Step("name", "请问怎么称呼您?请回复姓名。", _parse_name, example="例如:陈美玲")
PHONE = Step("phone", "请回复您的手机号,方便社区联系您。", _parse_phone, example="例如:13800138000")
CONSENT = Step("consent", PRIVACY + "\n同意请回复“同意”。", _parse_consent, example="回复:同意")


async def _finish_register(ctx: Ctx, slots: dict) -> str:
    community = await Community.get(id=slots["community"])
    ctx.resident = await register_resident(ctx.incoming.openid, community, slots["name"],
                                           slots["phone"])
    verified = "已核对为本社区居民。" if ctx.resident.verified else "社区工作人员核对后会标记为已认证居民。"
    return (f"登记成功!{slots['name']},欢迎加入{community.name}。{verified}\n"
            "回复“活动”看看最近的社区活动,回复“菜单”看看我能做什么。")


flow(Flow("register", "登记", [COMMUNITY, NAME, PHONE, CONSENT, confirm_step(_confirm_prompt)],
          _finish_register))


# ---------------------------------------------------------------------------- changes later

FIELDS = [("community", "所在社区"), ("name", "姓名"), ("phone", "手机号")]


async def _field_prompt(ctx: Ctx, slots: dict) -> str:
    r = ctx.resident
    community = await r.community if r.community_id else None
    return (f"您现在的登记信息:{community.name if community else '未登记社区'},{r.name},{r.phone}。\n"
            "要修改哪一项?回复数字:\n" + numbered(label for _, label in FIELDS))


async def _parse_field(ctx: Ctx, slots: dict) -> str:
    index = parse_choice(ctx.text, len(FIELDS))
    if index:
        return FIELDS[index - 1][0]
    words = compact(ctx.text)
    for key, label in FIELDS:
        if label in words or label[:2] in words:
            return key
    raise Invalid("请回复1、2或3。")


async def _prefill_change(ctx: Ctx, slots: dict) -> None:
    """我搬到京溪街了 → changing community, with the place already said."""
    words = compact(ctx.text)
    phone = find_phone(ctx.text)
    if phone:
        slots.update(field="phone", phone=phone)
    elif any(w in words for w in ("搬", "社区", "街")):
        slots["field"] = "community"
        found = await match_communities(ctx.text)
        if len(found) == 1 and found[0].id != ctx.resident.community_id:
            slots["community"] = found[0].id
    elif any(w in words for w in ("手机", "电话")):
        slots["field"] = "phone"
    elif any(w in words for w in ("名字", "姓名")):
        slots["field"] = "name"


def _only(field_name: str):
    return lambda slots: slots.get("field") == field_name


async def _finish_change(ctx: Ctx, slots: dict) -> str:
    changes = {k: slots[k] for k in ("name", "phone") if k in slots}
    if "community" in slots:
        changes["community"] = await Community.get(id=slots["community"])
    await update_profile(ctx.resident, **changes)
    return "已经帮您改好了。回复“我的信息”可以随时查看。"


flow(Flow("profile", "修改登记信息", [
    Step("field", _field_prompt, _parse_field, example="例如:1"),
    Step(COMMUNITY.slot, COMMUNITY.prompt, COMMUNITY.parse, COMMUNITY.example, when=_only("community")),
    Step(NAME.slot, NAME.prompt, NAME.parse, NAME.example, when=_only("name")),
    Step(PHONE.slot, PHONE.prompt, PHONE.parse, PHONE.example, when=_only("phone")),
    confirm_step(_confirm_prompt),
], _finish_change, prefill=_prefill_change))


@intent("register")
async def register(ctx: Ctx) -> str:
    if ctx.registered:
        return await start_flow(ctx, "profile")
    return await start_flow(ctx, "register")
