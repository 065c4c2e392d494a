"""Rewards for residents (list, redeem, my codes, cancel) and staff awards of points.

Points texts follow handlers/points.py: “您现在有 N 积分”.
"""
from __future__ import annotations

import re
import secrets
import unicodedata
from typing import Awaitable, Callable

from tortoise import Tortoise
from tortoise.expressions import Q

from handlers.engine import (REGISTRY, Ctx, EndFlow, Flow, Invalid, Step, confirm_step, flow,
                             intent, numbered, parse_listed, staff_command, start_flow)
from models.clock import local_text
from models.places import Community, Organisation
from models.residents import Resident
from models.rewards import (AwardError, Redemption, RedemptionStatus, RedeemError, Reward,
                            RewardKind, award_points, cancel_redemption, redeem, redeem_problem,
                            rewards_for, rule_table)
from nlp.entities import find_phone, parse_choice
from nlp.fuzzy import Catalog
from nlp.normalize import compact, mask_phone

LIST_LIMIT = 12

# Words that say what the resident wants rather than which reward (stripped before matching).
_VERBS = re.compile(r"(我想|我要|想要|想|要|帮我|帮|用积分|拿积分|积分|用分|兑换|兑个|兑一个|兑一|兑|"
                    r"换个|换一个|换一|换两|换|一下|一份|一个|个|份|的|我|吧|啦|呀|可以|能|吗)")
_VOUCHER_WORDS = ("抵扣", "抵钱", "抵现", "抵")


# ---------------------------------------------------------------------------- listing

def _mark(reward: Reward, balance: int) -> str:
    if reward.stock <= 0:
        return "已兑完"
    if balance >= reward.points:
        return "✓可兑换"
    return f"还差{reward.points - balance}分"


def _line(reward: Reward, balance: int) -> str:
    return f"{reward.summary}({reward.merchant.name})| {reward.points}积分 | {_mark(reward, balance)}"


@intent("reward_list", needs_registration=True)
async def reward_list(ctx: Ctx) -> str:
    rewards = (await rewards_for(ctx.resident))[:LIST_LIMIT]
    if not rewards:
        return "您所在社区暂时还没有合作商家上架积分兑换,敬请期待。回复“积分”查看您的积分。"
    ctx.remember_choices("reward", [r.id for r in rewards])
    return (f"您现在有 {ctx.resident.points} 积分。可以兑换:\n"
            + numbered(_line(r, ctx.resident.points) for r in rewards)
            + "\n回复数字兑换,或直接说“兑个头疗”“换抽纸”。回复“我的兑换”查看兑换码。")


async def reward_choice_hook(ctx: Ctx) -> str | None:
    """A number right after the list starts redeeming that reward."""
    chosen = ctx.chosen("reward")
    if chosen is None:
        return None
    return await start_flow(ctx, "redeem", {"reward": chosen})


# ---------------------------------------------------------------------------- redeeming

def _query(ctx: Ctx) -> str:
    return _VERBS.sub("", compact(ctx.text))


async def _matching(ctx: Ctx, rewards: list[Reward]) -> list[Reward]:
    query = _query(ctx)
    if len(query) < 2 or not rewards:
        return []
    names = [r.name for r in rewards]
    matches = Catalog(names).match(query, limit=5, cutoff=70)
    if not matches:  # the merchant's name or the kind (头疗 at 悦丝美发) also point to rewards
        matches = Catalog([f"{r.merchant.name}{r.name}" for r in rewards]).match(query, 5, 80)
    if not matches:
        return []
    best = matches[0].score
    return [rewards[m.index] for m in matches if m.score >= best - 5]


async def _prefill_redeem(ctx: Ctx, slots: dict) -> None:
    slots.setdefault("nonce", secrets.token_hex(8))
    if "reward" in slots:
        return
    rewards = await rewards_for(ctx.resident)
    if not rewards:
        raise EndFlow("您所在社区暂时还没有合作商家上架积分兑换,敬请期待。")
    found = await _matching(ctx, rewards)
    if not found and any(w in compact(ctx.text) for w in _VOUCHER_WORDS):
        found = [r for r in rewards if r.kind == RewardKind.VOUCHER]
    if len(found) == 1:
        slots["reward"] = found[0].id
    elif found:
        slots["_choices"] = [r.id for r in found]
    elif len(_query(ctx)) >= 2:
        slots["_missed"] = _query(ctx)[:10]


async def _reward_prompt(ctx: Ctx, slots: dict) -> str:
    if slots.get("_choices"):
        rewards = await (Reward.filter(id__in=slots["_choices"]).order_by("points", "id")
                         .prefetch_related("merchant"))
    else:
        rewards = (await rewards_for(ctx.resident))[:LIST_LIMIT]
    slots["_choices"] = [r.id for r in rewards]
    lead = f"没有找到“{slots.pop('_missed')}”。" if slots.get("_missed") else ""
    return (f"{lead}您现在有 {ctx.resident.points} 积分。想兑换哪一个?回复数字:\n"
            + numbered(_line(r, ctx.resident.points) for r in rewards))


async def _parse_reward(ctx: Ctx, slots: dict) -> int:
    words = compact(ctx.text)
    if any(w in words for w in _CANCEL_WORDS):  # about a code already issued, not this one
        raise EndFlow("好的,这次不兑换了。要取消已经兑换的兑换码,请再发一次“取消兑换”。")
    if any(w in words for w in _MY_WORDS):
        raise EndFlow(await my_redemptions(ctx))
    choices = slots.get("_choices") or []
    index = parse_choice(ctx.text, len(choices))
    if index:
        return choices[index - 1]
    rewards = await Reward.filter(id__in=choices).prefetch_related("merchant")
    found = await _matching(ctx, rewards)
    if len(found) == 1:
        return found[0].id
    raise Invalid("没找到这一项,请回复列表里的数字。")


async def _reward(reward_id: int) -> Reward:
    return await Reward.get(id=reward_id).prefetch_related("merchant")


def _how_to_use(reward: Reward) -> str:
    if reward.kind == RewardKind.VOUCHER:
        floor = f",消费满{reward.min_spend_yuan}元可用" if reward.min_spend_yuan else ""
        return f"结账时出示兑换码,抵扣{reward.deduct_yuan}元{floor}"
    return "出示兑换码,由店员核销后" + ("领取" if reward.kind == RewardKind.GOODS else "享受服务")


async def _confirm_prompt(ctx: Ctx, slots: dict) -> str:
    reward = await _reward(slots["reward"])
    if problem := await redeem_problem(ctx.resident, reward, ctx.now):
        more = "\n回复“兑换”看看其他可以兑换的。" if "积分不够" not in problem else \
            "\n参加社区活动签到、做志愿者都能攒积分,回复“积分规则”看看。"
        raise EndFlow(problem + more)
    before = ctx.resident.points
    merchant = reward.merchant
    limit = f"\n每人每月限兑{reward.monthly_limit}次。" if reward.monthly_limit else ""
    return (f"兑换“{reward.summary}”\n商家:{merchant.name}({merchant.address or '地址见商家'})\n"
            f"需要 {reward.points} 积分:您现在有 {before} 积分,兑换后剩 {before - reward.points} 积分。\n"
            f"兑换码{reward.valid_days}天内有效,到店{_how_to_use(reward)}。{limit}\n确认兑换请回复“是”。")


async def _finish_redeem(ctx: Ctx, slots: dict) -> str:
    try:
        redemption, _ = await redeem(ctx.resident.id, slots["reward"], now=ctx.now,
                                     key=f"{ctx.resident.id}:{slots['nonce']}")
    except RedeemError as exc:
        return f"没有兑换成功:{exc}"
    reward = await _reward(redemption.reward_id)
    balance = (await Resident.get(id=ctx.resident.id)).points
    return (f"兑换成功!兑换码:{redemption.code}\n“{reward.summary}”,有效期至{local_text(redemption.expires_at)}。\n"
            f"请到{reward.merchant.name}({reward.merchant.address or '见商家'}){_how_to_use(reward)}。\n"
            f"您现在有 {balance} 积分。回复“我的兑换”随时查看兑换码。")


flow(Flow("redeem", "积分兑换", [
    Step("reward", _reward_prompt, _parse_reward, example="例如:1"),
    confirm_step(_confirm_prompt),
], _finish_redeem, prefill=_prefill_redeem))


@intent("reward_redeem", needs_registration=True)
async def reward_redeem(ctx: Ctx) -> str:
    if compact(ctx.text).startswith("核销"):
        return "核销兑换码由合作商家的店员操作。您兑换后到店出示兑换码就可以了,回复“我的兑换”查看兑换码。"
    return await start_flow(ctx, "redeem")


# ---------------------------------------------------------------------------- my codes, cancel

_MY_WORDS = ("我的兑换", "兑换记录", "兑换码", "兑换券", "兑换历史", "我兑换的", "兑换了什么", "兑过什么",
             "我换了什么", "我的券")
_CANCEL_WORDS = ("取消兑换", "退兑换", "退回兑换", "撤销兑换", "不要兑换", "兑换不要了", "退积分")


def _state_text(r: Redemption, ctx: Ctx) -> str:
    if r.status == RedemptionStatus.ISSUED and r.expires_at <= ctx.now:
        return "已过期(积分将自动退回)"
    if r.status == RedemptionStatus.ISSUED:
        return f"待使用,有效期至{local_text(r.expires_at)}"
    if r.status == RedemptionStatus.REDEEMED:
        return f"已于{local_text(r.redeemed_at)}核销"
    if r.status == RedemptionStatus.EXPIRED:
        return "已过期,积分已退回"
    return "已取消,积分已退回"


async def my_redemptions(ctx: Ctx) -> str:
    rows = await (Redemption.filter(resident_id=ctx.resident.id).order_by("-id").limit(10)
                  .prefetch_related("reward", "merchant"))
    if not rows:
        return "您还没有兑换过。回复“兑换”看看积分能换什么。"
    lines = [f"{r.code} {r.reward.name}({r.merchant.name})| {_state_text(r, ctx)}" for r in rows]
    live = any(r.status == RedemptionStatus.ISSUED and r.expires_at > ctx.now for r in rows)
    tail = "\n到店出示兑换码即可使用;不需要了回复“取消兑换”退回积分。" if live else ""
    return "您的兑换(最新在前):\n" + numbered(lines) + tail


async def _live_codes(ctx: Ctx) -> list[Redemption]:
    return await (Redemption.filter(resident_id=ctx.resident.id, status=RedemptionStatus.ISSUED,
                                    expires_at__gt=ctx.now)
                  .order_by("-id").prefetch_related("reward"))


async def _prefill_cancel(ctx: Ctx, slots: dict) -> None:
    live = await _live_codes(ctx)
    if not live:
        raise EndFlow("您现在没有可以取消的兑换码。回复“我的兑换”查看兑换记录。")
    digits = re.search(r"(?<!\d)(\d{6})(?!\d)", unicodedata.normalize("NFKC", ctx.text))
    picked = [r for r in live if digits and r.code == digits.group(1)]
    if not picked and len(live) > 1:
        found = Catalog([r.reward.name for r in live]).match(_query_cancel(ctx), 5, 80)
        picked = [live[m.index] for m in found] if len({m.choice for m in found}) == 1 else []
    if len(live) == 1:
        picked = live
    if picked:
        slots["redemption"] = picked[0].id


def _query_cancel(ctx: Ctx) -> str:
    text = compact(ctx.text)
    for word in _CANCEL_WORDS:
        text = text.replace(word, "")
    return _VERBS.sub("", text)


async def _cancel_choice_prompt(ctx: Ctx, slots: dict) -> str:
    live = await _live_codes(ctx)
    slots["_choices"] = [r.id for r in live]
    return "要取消哪一个兑换?回复数字:\n" + numbered(f"{r.code} {r.reward.name}" for r in live)


async def _cancel_confirm_prompt(ctx: Ctx, slots: dict) -> str:
    r = await Redemption.get(id=slots["redemption"]).prefetch_related("reward")
    return (f"确定取消兑换码 {r.code}(“{r.reward.name}”)吗?取消后退回 {r.points} 积分,"
            "兑换码作废。回复“是”确认。")


async def _finish_cancel(ctx: Ctx, slots: dict) -> str:
    try:
        r = await cancel_redemption(slots["redemption"], ctx.resident.id, now=ctx.now)
    except RedeemError as exc:
        return str(exc)
    await r.fetch_related("reward")
    balance = (await Resident.get(id=ctx.resident.id)).points
    return f"已取消兑换码 {r.code}(“{r.reward.name}”),退回 {r.points} 积分。您现在有 {balance} 积分。"


flow(Flow("cancel_redemption", "取消兑换", [
    Step("redemption", _cancel_choice_prompt, parse_listed, example="例如:1"),
    confirm_step(_cancel_confirm_prompt),
], _finish_cancel, prefill=_prefill_cancel))


async def redemptions_hook(ctx: Ctx) -> str | None:
    """我的兑换 and 取消兑换: phrases the classifier folds into other intents."""
    words = compact(ctx.text)
    wants_cancel = any(w in words for w in _CANCEL_WORDS)
    if not wants_cancel and not any(w in words for w in _MY_WORDS):
        return None
    if not ctx.registered:
        return await start_flow(ctx, "register", intro="这项服务需要先登记所在社区,只要一分钟。")
    if wants_cancel:
        return await start_flow(ctx, "cancel_redemption")
    return await my_redemptions(ctx)


REGISTRY.hooks.extend([redemptions_hook, reward_choice_hook])


# ---------------------------------------------------------------------------- staff awards

# Ways to find a resident from a ticket: each takes (ctx, text) and returns resident ids, or
# None when the text is no such ticket. Appeals' 6-digit tickets are built in; more can be added.
TicketFinder = Callable[[Ctx, str], Awaitable[list[int] | None]]


async def _appeal_ticket(ctx: Ctx, text: str) -> list[int] | None:
    """An appeal ticket (6 digits) names its filer: an adopted suggestion earns points."""
    m = re.search(r"(?<!\d)(\d{6})(?!\d)", unicodedata.normalize("NFKC", text))
    models = Tortoise.apps["models"] if Tortoise.apps and "models" in Tortoise.apps else {}
    appeal = models.get("Appeal")  # looked up, not imported: appeals are optional here
    if not m or appeal is None:
        return None
    rows = await appeal.filter(ticket=m.group(1)).values("resident_id", "anonymous")
    org = await Organisation.get(id=ctx.resident.organisation_id)
    # An anonymous filer's identity is for the committee only.
    return [r["resident_id"] for r in rows if not r["anonymous"] or org.kind == "committee"] \
        if rows else None


TICKET_FINDERS: list[TicketFinder] = [_appeal_ticket]

_RULE_WORDS = {
    "volunteer": ("志愿", "义工", "志愿者", "汇演"),
    "meeting": ("议事", "议事会", "开会", "居民会议"),
    "neighbour_help": ("邻里", "互助", "帮忙", "帮助邻居"),
    "facility": ("设施", "维护", "维修", "保洁"),
    "suggestion": ("建议", "采纳", "合理化"),
}
_NO_NOTE = {"无", "没有", "不用", "没", "冇", "不需要", "0", "跳过", "无备注", "否"}
_RESIDENT_NO = re.compile(r"(?:居民编号|编号|居民号|#|ID|id)\s*(\d{1,9})")


async def _staff_scope(ctx: Ctx) -> Q:
    """Staff award residents of their community; sub-district staff those of their street."""
    org = await Organisation.get(id=ctx.resident.organisation_id)
    if org.community_id:
        return Q(community_id=org.community_id)
    ids = await Community.filter(street_id=org.street_id).values_list("id", flat=True)
    return Q(community_id__in=list(ids))


async def _find_residents(ctx: Ctx, text: str) -> list[Resident]:
    scope = await _staff_scope(ctx)
    base = Resident.filter(scope, registered=True)
    if phone := find_phone(text):
        return await base.filter(phone=phone).limit(5)
    if m := _RESIDENT_NO.search(unicodedata.normalize("NFKC", text)):
        return await base.filter(id=int(m.group(1)))
    for finder in TICKET_FINDERS:
        ids = await finder(ctx, text)
        if ids is not None:
            return await base.filter(id__in=ids)
    name = re.sub(r"[\s,,。.、]+", "", text)
    if not name:
        return []
    exact = await base.filter(name=name).limit(9)
    if exact:
        return exact
    people = await base.exclude(name="").order_by("id").limit(2000)
    matches = Catalog([p.name for p in people]).match(name, limit=5, cutoff=85)
    return [people[m.index] for m in matches]


def _who_line(r: Resident) -> str:
    return f"{r.name}({mask_phone(r.phone) or '无手机号'},编号{r.id})"


async def _parse_who(ctx: Ctx, slots: dict) -> int:
    choices = slots.pop("_who", None)
    if choices and (index := parse_choice(ctx.text, len(choices))):
        return choices[index - 1]
    found = await _find_residents(ctx, ctx.text)
    if not found:
        raise Invalid("没有找到这位居民(只能给本社区已登记的居民加积分)。请回复姓名、手机号或“编号+数字”。")
    if len(found) > 1:
        slots["_who"] = [r.id for r in found]
        raise Invalid("找到几位居民,请回复数字选择:\n" + numbered(_who_line(r) for r in found),
                      counts=False)
    return found[0].id


async def _rules(slots: dict):
    resident = await Resident.get(id=slots["who"])
    return await rule_table(resident.community_id)


def _rule_from(text: str, rules) -> str | None:
    words = compact(text)
    for rule in rules:
        if rule.code == words or any(w in words for w in _RULE_WORDS.get(rule.code, ())):
            return rule.code
    match = Catalog([r.name for r in rules]).match(words, limit=1, cutoff=75) if words else []
    return rules[match[0].index].code if match else None


async def _rule_prompt(ctx: Ctx, slots: dict) -> str:
    rules = await _rules(slots)
    return "按哪一项加积分?回复数字:\n" + numbered(
        f"{r.name}:{r.points}分(每人每天最多{r.daily_cap}次)" for r in rules)


async def _parse_rule(ctx: Ctx, slots: dict) -> str:
    rules = await _rules(slots)
    index = parse_choice(ctx.text, len(rules))
    if index:
        return rules[index - 1].code
    if code := _rule_from(ctx.text, rules):
        return code
    raise Invalid("请回复积分项目前面的数字。")


async def _parse_note(ctx: Ctx, slots: dict) -> str:
    note = ctx.text.strip()
    if compact(note) in _NO_NOTE:
        return ""
    if len(note) > 40:
        raise Invalid("备注请控制在40个字以内。")
    return note


async def _award_confirm(ctx: Ctx, slots: dict) -> str:
    resident = await Resident.get(id=slots["who"])
    rule = next(r for r in await _rules(slots) if r.code == slots["rule"])
    note = f"\n备注:{slots['note']}" if slots.get("note") else ""
    return (f"请确认:给 {_who_line(resident)} 加 {rule.points} 积分\n项目:{rule.name}{note}\n"
            "对方会收到通知。确认请回复“是”。")


async def _finish_award(ctx: Ctx, slots: dict) -> str:
    resident = await Resident.get(id=slots["who"])
    try:
        entry, _ = await award_points(resident.id, slots["rule"], staff_id=ctx.resident.id,
                                      community_id=resident.community_id, note=slots.get("note", ""),
                                      now=ctx.now, nonce=slots["nonce"])
    except AwardError as exc:
        return f"没有加积分:{exc}"
    return (f"已给{resident.name}加 {entry.amount} 积分,项目:{entry.reason}。已通知对方,"
            f"TA现在有 {entry.balance_after} 积分。")


async def _prefill_award(ctx: Ctx, slots: dict) -> None:
    """奖励积分 李敏 志愿服务 布置会场: who, the rule and a note may come with the command."""
    slots.setdefault("nonce", secrets.token_hex(8))
    rest = slots.pop("_rest", "")
    tokens = [t for t in re.split(r"[\s,,。;;、]+", rest) if t]
    leftover = []
    for token in tokens:
        if "who" not in slots:
            found = await _find_residents(ctx, token)
            if len(found) == 1:
                slots["who"] = found[0].id
                continue
        if "who" in slots and "rule" not in slots:
            if code := _rule_from(token, await _rules(slots)):
                slots["rule"] = code
                continue
        leftover.append(token)
    if "who" in slots and "rule" in slots:  # a one-line command: the note is optional
        slots["note"] = "".join(leftover)[:40]


flow(Flow("award", "奖励积分", [
    Step("who", "给哪位居民加积分?请回复姓名、手机号或“编号+数字”。", _parse_who,
         example="例如:李敏 或 13800138000"),
    Step("rule", _rule_prompt, _parse_rule, example="例如:1"),
    Step("note", "有备注吗?例如做了什么(会一并告诉居民)。没有请回复“无”。", _parse_note,
         example="例如:帮忙布置新春汇演会场"),
    confirm_step(_award_confirm),
], _finish_award, prefill=_prefill_award))

_AWARD_KEYWORDS = ("奖励积分", "积分奖励", "加积分", "加分", "给积分", "发积分")


@staff_command(*_AWARD_KEYWORDS)
async def award(ctx: Ctx) -> str:
    words = ctx.text.strip()
    compacted = compact(words)
    keyword = next(k for k in sorted(_AWARD_KEYWORDS, key=len, reverse=True) if compacted.startswith(k))
    # Keep the spaces the staff typed: they separate name, rule and note.
    pattern = r"^\s*" + r"\s*".join(keyword) + r"[\s::]*"
    raw = unicodedata.normalize("NFKC", words)
    rest = re.sub(pattern, "", raw) if re.match(pattern, raw) else compacted[len(keyword):]
    return await start_flow(ctx, "award", {"_rest": rest})


__all__ = ["TICKET_FINDERS", "reward_list", "reward_redeem", "my_redemptions"]
