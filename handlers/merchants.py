"""Merchants in the chat: verify a resident's code (核销), see today's and this month's redemptions.

A merchant's staff are people with role `merchant` linked to their Merchant (models.rewards).
Their words are caught by a hook before the classifier, so they need not register as residents.
"""
from __future__ import annotations

import re
import unicodedata

from handlers.engine import (REGISTRY, Ctx, EndFlow, Flow, Invalid, Step, confirm_step, flow,
                             numbered, start_flow)
from models.clock import local, local_text
from models.rewards import (Redemption, RewardKind, VerifyError, find_code, merchant_of,
                            merchant_stats, verify_redemption)
from nlp.normalize import compact, mask_phone

# Wrong codes allowed in a window before a pause: 6 digits must not be guessable by trying.
MAX_WRONG_CODES = 5
WRONG_CODE_WINDOW_SECONDS = 600

MERCHANT_HELP = ("商家店员可以:\n1. 核销兑换码:发送“核销 123456”\n2. 查看核销记录:发送“核销记录”"
                 "(今天和本月)")
_STATS_WORDS = ("核销记录", "今日核销", "今天核销", "本月核销", "核销统计", "核销情况", "核销明细")
_HELP_WORDS = {"商家", "商家帮助", "商家菜单", "店员", "核销帮助"}
_CODE_RE = re.compile(r"(?<!\d)(\d{6})(?!\d)")


def _code_in(text: str) -> str | None:
    m = _CODE_RE.search(re.sub(r"\s+", "", unicodedata.normalize("NFKC", text or "")))
    return m.group(1) if m else None


def _wrong_codes(ctx: Ctx) -> list[float]:
    now = ctx.now.timestamp()
    recent = [t for t in ctx.state.get("wrong_codes", []) if now - t < WRONG_CODE_WINDOW_SECONDS]
    ctx.state["wrong_codes"] = recent
    return recent


async def _lookup(ctx: Ctx, merchant_id: int, code: str) -> Redemption:
    """The redemption to verify, or VerifyError; unknown codes count towards the pause."""
    try:
        return await find_code(code, merchant_id, ctx.now)
    except VerifyError as exc:
        if "没有找到" in str(exc) or "不是本店" in str(exc):
            ctx.state["wrong_codes"] = _wrong_codes(ctx) + [ctx.now.timestamp()]
        raise


def _item(r: Redemption) -> str:
    if r.reward.kind == RewardKind.VOUCHER:
        return r.reward.summary  # already says what it takes off the bill
    return f"{r.reward.name}({RewardKind.LABELS.get(r.reward.kind, '')})"


async def _prompt_confirm(ctx: Ctx, slots: dict) -> str:
    r = await Redemption.get(id=slots["redemption"]).prefetch_related("reward", "resident")
    return (f"兑换码 {r.code}\n项目:{_item(r)}\n居民:{r.resident.name or '居民'} "
            f"{mask_phone(r.resident.phone) or ''}\n兑换于{local_text(r.issued_at)},"
            f"有效期至{local_text(r.expires_at)}\n确认核销请回复“是”。").replace(" \n", "\n")


async def _parse_code(ctx: Ctx, slots: dict) -> int:
    code = _code_in(ctx.text)
    if not code:
        raise Invalid("兑换码是居民出示的6位数字。")
    if len(_wrong_codes(ctx)) >= MAX_WRONG_CODES:
        raise EndFlow("兑换码输错次数太多,请10分钟后再试。")
    try:
        return (await _lookup(ctx, slots["merchant"], code)).id
    except VerifyError as exc:
        raise EndFlow(str(exc)) from None


async def _finish_verify(ctx: Ctx, slots: dict) -> str:
    try:
        r = await verify_redemption(slots["redemption"], merchant_id=slots["merchant"],
                                    staff_id=ctx.resident.id, now=ctx.now)
    except VerifyError as exc:
        return f"核销失败:{exc}"
    return (f"核销成功!兑换码 {r.code}:{_item(r)},居民 {r.resident.name or ''} "
            f"{mask_phone(r.resident.phone)}。\n发送“核销记录”查看今天和本月的核销。")


flow(Flow("verify", "核销兑换码", [
    Step("redemption", "请回复居民出示的6位兑换码。", _parse_code, example="例如:核销 123456"),
    confirm_step(_prompt_confirm),
], _finish_verify))


async def _verify(ctx: Ctx, merchant_id: int) -> str:
    code = _code_in(ctx.text)
    if code is None:
        return await start_flow(ctx, "verify", {"merchant": merchant_id})
    if len(_wrong_codes(ctx)) >= MAX_WRONG_CODES:
        return "兑换码输错次数太多,请10分钟后再试。"
    try:
        r = await _lookup(ctx, merchant_id, code)
    except VerifyError as exc:
        return str(exc)
    return await start_flow(ctx, "verify", {"merchant": merchant_id, "redemption": r.id})


async def _stats(ctx: Ctx, merchant) -> str:
    stats = await merchant_stats(merchant.id, ctx.now)
    today = [f"{local(r.redeemed_at):%H:%M} {r.reward.name} {r.resident.name or '居民'} "
             f"{mask_phone(r.resident.phone)}" for r in stats.today]
    head = f"{merchant.name}\n今天已核销 {len(today)} 单" + (":\n" + numbered(today) if today else "。")
    total = sum(n for _, n, _ in stats.month)
    month = "".join(f"\n· {name}:{n}单(共{pts}积分)" for name, n, pts in stats.month)
    return f"{head}\n本月已核销 {total} 单{':' if month else '。'}{month}"


async def merchant_hook(ctx: Ctx) -> str | None:
    if ctx.resident is None or not ctx.resident.has_role("merchant"):
        return None
    words = compact(ctx.text)
    wants_stats = any(words.startswith(w) for w in _STATS_WORDS)
    wants_verify = words.startswith("核销") or _CODE_RE.fullmatch(words) is not None
    if not (wants_stats or wants_verify or words in _HELP_WORDS):
        return None
    merchant = await merchant_of(ctx.resident)
    if merchant is None:
        return "您的商家账号还没有关联商家(或商家已停用),请联系社区工作人员。"
    if wants_stats:
        return await _stats(ctx, merchant)
    if wants_verify:
        return await _verify(ctx, merchant.id)
    return f"{merchant.name}\n{MERCHANT_HELP}"


# Before the resident hooks: 核销 from a merchant is never a resident's redemption.
REGISTRY.hooks.insert(0, merchant_hook)
