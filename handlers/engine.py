"""The conversation engine: incoming messages, flows declared as data, and the router.

A handler gets a `Ctx` and returns the reply text (or None for no reply). Flows are lists of
`Step`s; each step has a prompt and a parser; the first step whose slot is still empty is
asked next, so slots filled from the first message are skipped. A parser returns the slot's
value or raises `Invalid` (asked again, with why and an example) or `EndFlow` (leave).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, Iterable

from nlp.entities import parse_choice, parse_int, parse_yes_no
from nlp.intents import IntentResult, classify
from models.residents import flag_attention, take_attention
from nlp.normalize import compact, normalize

log = logging.getLogger(__name__)
unmatched_log = logging.getLogger("yfl.unmatched")

LEAVE_HINT = "(回复“取消”退出)"


# ---------------------------------------------------------------------------- messages

@dataclass
class Incoming:
    openid: str
    kind: str  # text, voice, image, location, link, video, event, unknown
    now: datetime
    text: str = ""
    event: str = ""  # subscribe, unsubscribe, scan, click, ...
    event_key: str = ""
    msg_id: str = ""
    media_id: str = ""
    pic_url: str = ""
    location: dict | None = None  # {"x", "y", "label"}


@dataclass(frozen=True)
class EngineConfig:
    state_idle_seconds: int = 1800
    max_misses: int = 3
    tz: Any = None  # zoneinfo for local dates and times
    hold_seconds: int = 120  # a place kept while a resident confirms a signup


class Invalid(Exception):
    """The answer does not fit the step: the message says why, with an example.

    `counts=False` for a follow-up question (several matches, pick one) that is no miss.
    """

    def __init__(self, message: str, *, counts: bool = True) -> None:
        super().__init__(message)
        self.counts = counts


class EndFlow(Exception):
    """Leave the flow with this message (for example: the resident said no)."""


# ---------------------------------------------------------------------------- context

class Ctx:
    def __init__(self, incoming: Incoming, resident, state: dict, config: EngineConfig) -> None:
        self.incoming = incoming
        self.resident = resident
        self.state = state
        self.config = config
        self._nlu: IntentResult | None = None
        self._norm: str | None = None
        # The resident's attention flag at the start of the turn: hooks look up what may be
        # waiting for them (an open 转人工, an appeal question or rating) only when it is set.
        self.attention = bool(resident and resident.attention)

    @property
    def now(self) -> datetime:
        return self.incoming.now

    @property
    def local_now(self) -> datetime:
        return self.now.astimezone(self.config.tz) if self.config.tz else self.now

    @property
    def text(self) -> str:
        return self.incoming.text

    @property
    def norm(self) -> str:
        if self._norm is None:
            self._norm = normalize(self.incoming.text)
        return self._norm

    @property
    def nlu(self) -> IntentResult:
        if self._nlu is None:
            self._nlu = classify(self.incoming.text)
        return self._nlu

    @property
    def registered(self) -> bool:
        return bool(self.resident and self.resident.registered)

    @property
    def flow(self) -> dict | None:
        return self.state.get("flow")

    def remember_choices(self, kind: str, ids: list) -> None:
        """The numbered list just shown, so that "2" or "第二个" can refer to it next."""
        self.state["choices"] = {"kind": kind, "ids": ids}

    def chosen(self, kind: str) -> Any | None:
        choices = self.state.get("choices") or {}
        if choices.get("kind") != kind:
            return None
        index = parse_choice(self.text, len(choices["ids"]))
        return choices["ids"][index - 1] if index else None


Handler = Callable[[Ctx], Awaitable[str | None]]
Prompt = str | Callable[[Ctx, dict], Awaitable[str]]


# ---------------------------------------------------------------------------- flows as data

@dataclass
class Step:
    slot: str
    prompt: Prompt
    parse: Callable[[Ctx, dict], Awaitable[Any]]
    # Shown with a wrong answer and on 帮助.
    example: str = ""
    accepts: tuple[str, ...] = ("text",)
    when: Callable[[dict], bool] = lambda slots: True


@dataclass
class Flow:
    name: str
    title: str  # what the resident is doing, e.g. "登记"
    steps: list[Step]
    finish: Callable[[Ctx, dict], Awaitable[str]]
    # Fill slots from the message that started the flow (报名书法班 fills the activity).
    prefill: Callable[[Ctx, dict], Awaitable[None]] | None = None
    # Called when the flow is left without finishing (cancel, no, misses, expiry): give back
    # what it was holding (a place kept for confirmation, for example).
    on_abort: Callable[[Ctx, dict], Awaitable[None]] | None = None


@dataclass
class Registry:
    intents: dict[str, Handler] = field(default_factory=dict)
    needs_registration: set[str] = field(default_factory=set)
    flows: dict[str, Flow] = field(default_factory=dict)
    # Staff commands: a leading keyword (longest first) -> handler.
    staff_commands: dict[str, Handler] = field(default_factory=dict)
    # Event-key scenes (QR codes): a prefix -> handler (ctx, scene) for SCAN / subscribe.
    scenes: dict[str, Callable[[Ctx, str], Awaitable[str | None]]] = field(default_factory=dict)
    # Extra text hooks tried before the classifier (e.g. a rating digit after resolution).
    hooks: list[Handler] = field(default_factory=list)
    # Hooks for images, locations and other media outside a flow (e.g. relayed in 转人工).
    media_hooks: list[Handler] = field(default_factory=list)
    # (resident, now) -> is something still waiting for the resident's next message? Asked
    # only when the resident's attention flag was set (see settle_attention).
    pending_checks: list[Callable] = field(default_factory=list)


REGISTRY = Registry()


def intent(name: str, *, needs_registration: bool = False):
    def deco(fn: Handler) -> Handler:
        REGISTRY.intents[name] = fn
        if needs_registration:
            REGISTRY.needs_registration.add(name)
        return fn
    return deco


def flow(f: Flow) -> Flow:
    REGISTRY.flows[f.name] = f
    return f


def staff_command(*keywords: str):
    def deco(fn: Handler) -> Handler:
        for kw in keywords:
            REGISTRY.staff_commands[kw] = fn
        return fn
    return deco


def scene(prefix: str):
    def deco(fn):
        REGISTRY.scenes[prefix] = fn
        return fn
    return deco


# ---------------------------------------------------------------------------- running flows

async def _prompt_text(ctx: Ctx, step: Step, slots: dict) -> str:
    text = step.prompt if isinstance(step.prompt, str) else await step.prompt(ctx, slots)
    return f"{text}\n{LEAVE_HINT}"


def _next_step(f: Flow, slots: dict) -> Step | None:
    for step in f.steps:
        if step.slot not in slots and step.when(slots):
            return step
    return None


async def start_flow(ctx: Ctx, name: str, slots: dict | None = None, intro: str = "") -> str:
    f = REGISTRY.flows[name]
    ctx.state["flow"] = {"name": name, "step": None, "slots": dict(slots or {}), "misses": 0}
    try:
        if f.prefill:
            await f.prefill(ctx, ctx.state["flow"]["slots"])
        reply = await _advance(ctx, f)
    except EndFlow as end:
        await abort_flow(ctx)
        reply = str(end)
    return f"{intro}\n{reply}" if intro else reply


def end_flow(ctx: Ctx) -> None:
    ctx.state["flow"] = None


async def abort_flow(ctx: Ctx) -> str:
    """Leave the flow without finishing it; returns its title."""
    fs = ctx.flow
    end_flow(ctx)
    f = REGISTRY.flows.get(fs["name"]) if fs else None
    if f and f.on_abort:
        await f.on_abort(ctx, fs["slots"])
    return f.title if f else ""


async def _advance(ctx: Ctx, f: Flow) -> str:
    fs = ctx.state["flow"]
    step = _next_step(f, fs["slots"])
    if step is None:
        slots = fs["slots"]
        end_flow(ctx)
        return await f.finish(ctx, slots)
    fs["step"], fs["misses"] = step.slot, 0
    return await _prompt_text(ctx, step, fs["slots"])


def current_step(ctx: Ctx) -> tuple[Flow, Step] | None:
    fs = ctx.flow
    if not fs:
        return None
    f = REGISTRY.flows.get(fs["name"])
    step = next((s for s in f.steps if s.slot == fs["step"]), None) if f else None
    return (f, step) if step else None


async def reprompt(ctx: Ctx) -> str:
    f, step = current_step(ctx)
    return await _prompt_text(ctx, step, ctx.flow["slots"])


async def run_step(ctx: Ctx) -> str:
    f, step = current_step(ctx)
    fs = ctx.state["flow"]
    if ctx.incoming.kind not in step.accepts:
        return f"这一步需要文字回复。\n{await _prompt_text(ctx, step, fs['slots'])}"
    try:
        fs["slots"][step.slot] = await step.parse(ctx, fs["slots"])
    except EndFlow as end:
        await abort_flow(ctx)
        return str(end)
    except Invalid as bad:
        fs["misses"] += bad.counts
        if fs["misses"] >= ctx.config.max_misses:
            await abort_flow(ctx)
            return f"{bad}\n连续几次没有听明白,先帮您退出“{f.title}”了。\n\n{menu_text()}"
        example = f"\n{step.example}" if step.example else ""
        return f"{bad}{example}\n{LEAVE_HINT}"
    try:
        return await _advance(ctx, f)
    except EndFlow as end:
        await abort_flow(ctx)
        return str(end)


# ---------------------------------------------------------------------------- reusable parsers

async def parse_confirm(ctx: Ctx, slots: dict) -> bool:
    answer = parse_yes_no(ctx.text)
    if answer is None and compact(ctx.text) in {"1", "确认"}:
        answer = True
    if answer is None:
        raise Invalid("请回复“是”确认,或回复“取消”放弃。")
    if not answer:
        raise EndFlow("好的,已放弃,没有做任何更改。")
    return True


def confirm_step(prompt: Prompt) -> Step:
    return Step("confirm", prompt, parse_confirm, example="例如回复:是")


def yes_or_keep(kept: str):
    """A parser for "are you sure?" steps: yes goes on; no leaves the flow saying `kept`."""
    async def parse(ctx: Ctx, slots: dict) -> bool:
        answer = parse_yes_no(ctx.text)
        if answer is None:
            raise Invalid("请回复“是”或“不是”。")
        if not answer:
            raise EndFlow(kept)
        return True
    return parse


async def parse_listed(ctx: Ctx, slots: dict):
    """The id chosen by number from the list a prompt stored in slots["_choices"]."""
    choices = slots.get("_choices") or []
    index = parse_choice(ctx.text, len(choices))
    if not index:
        raise Invalid("请回复列表里的数字。")
    return choices[index - 1]


def text_between(low: int, high: int, what: str):
    """A parser for free text (a name, a title, a place) of low..high characters."""
    async def parse(ctx: Ctx, slots: dict) -> str:
        text = ctx.text.strip()
        if not low <= len(text) <= high:
            raise Invalid(f"{what}请用{low}到{high}个字。")
        return text
    return parse


def int_between(low: int, high: int, what: str = "数字"):
    """A parser for a whole number in [low, high] (Arabic or Chinese numerals)."""
    async def parse(ctx: Ctx, slots: dict) -> int:
        n = parse_int(ctx.text)
        if n is None or not low <= n <= high:
            raise Invalid(f"请回复{low}到{high}之间的{what}。")
        return n
    return parse


def duration_text(seconds: int) -> str:
    return f"{seconds // 60}分钟" if seconds >= 60 else f"{seconds}秒"


def numbered(options: Iterable[str]) -> str:
    return "\n".join(f"{i}. {opt}" for i, opt in enumerate(options, 1))


# ---------------------------------------------------------------------------- the menu

MENU = [
    ("社区活动(报名、签到)", "activity_list"),
    ("我的积分", "points_balance"),
    ("积分兑换", "reward_list"),
    ("预约服务", "service_booking"),
    ("有事找居委", "appeal_file"),
    ("问卷调查", "survey"),
    ("我的登记信息", "register"),
    ("转人工", "human"),
]


def menu_text() -> str:
    return "我可以帮您办这些事,回复数字或直接说:\n" + numbered(label for label, _ in MENU)


# ---------------------------------------------------------------------------- the router

CANCEL_WORDS = {"取消", "退出", "不办了", "算了", "退出吧", "不要了", "唔要了", "唔使了", "结束", "q", "quit"}
HELP_WORDS = {"帮助", "菜单", "help", "功能", "功能介绍", "怎么用", "点用", "?", "不会用"}
# 我要找人工, 帮我转人工服务, 人工客服吧 (but not 结束人工, which the 转人工 relay handles).
HUMAN_RE = re.compile(r"^(我要|我想|要|想|帮我|请)?(转|找|叫|接|转接)?人工(服务|客服)?(吧|啦|呀|啊)?$")
HUMAN_WORDS = {"转人工", "人工", "人工服务", "找人工", "真人", "找真人"}
MIN_CONFIDENCE = 0.45


def _words(ctx: Ctx) -> str:
    return compact(ctx.text)


async def dispatch(ctx: Ctx) -> str | None:
    """Route one message; first match wins (see DESIGN.md, 'One message's way through')."""
    inc = ctx.incoming
    if inc.kind == "event":
        return await REGISTRY.intents["_event"](ctx)

    notes = []
    fs = ctx.flow
    if fs and ctx.now.timestamp() - ctx.state.get("updated", 0) > ctx.config.state_idle_seconds:
        span = duration_text(ctx.config.state_idle_seconds)
        title = REGISTRY.flows[fs["name"]].title if fs["name"] in REGISTRY.flows else ""
        notes.append(f"刚才的“{title}”超过{span}没有回复,已自动结束。")
        await abort_flow(ctx)

    reply = await _route(ctx)
    return "\n\n".join(notes + [reply]) if notes and reply else reply


async def _route(ctx: Ctx) -> str | None:
    inc = ctx.incoming
    step = current_step(ctx)
    if inc.kind not in ("text", "voice"):
        if step and inc.kind in step[1].accepts:
            return await run_step(ctx)
        for hook in REGISTRY.media_hooks:
            if (reply := await hook(ctx)) is not None:
                return reply
        return await REGISTRY.intents["_media"](ctx)
    if not ctx.norm:
        return "我没有收到文字内容。" + ("\n" + await reprompt(ctx) if step else "\n\n" + menu_text())

    words = _words(ctx)
    if words in CANCEL_WORDS and ctx.flow:
        title = await abort_flow(ctx)
        return f"好的,已退出“{title}”,没有做任何更改。需要时随时再找我。"
    # Outside a flow a bare 取消 goes on: an open 转人工 conversation ends with it (a hook),
    # else the classifier's `cancel` intent answers.
    if words in HELP_WORDS:
        if step:
            f, s = step
            example = f"\n{s.example}" if s.example else ""
            return f"您正在办理“{f.title}”。{example}\n{await reprompt(ctx)}"
        return await REGISTRY.intents["help"](ctx)
    if words in HUMAN_WORDS or HUMAN_RE.match(words):
        if ctx.flow:
            await abort_flow(ctx)
        return await REGISTRY.intents["human"](ctx)

    if step:
        return await run_step(ctx)

    if ctx.resident is not None and ctx.resident.is_staff:
        for kw in sorted(REGISTRY.staff_commands, key=len, reverse=True):
            if words.startswith(kw):
                return await REGISTRY.staff_commands[kw](ctx)

    for hook in REGISTRY.hooks:
        reply = await hook(ctx)
        if reply is not None:
            return reply

    menu_choice = ctx.chosen("menu")
    if menu_choice:
        return await run_intent(ctx, menu_choice)

    result = ctx.nlu
    if result.intent == "unknown" or result.confidence < MIN_CONFIDENCE:
        unmatched_log.info("unmatched text=%r intent=%s conf=%.2f", ctx.norm, result.intent,
                           result.confidence)
        return await REGISTRY.intents["unknown"](ctx)
    return await run_intent(ctx, result.intent)


async def settle_attention(ctx: Ctx) -> None:
    """After a turn that started with the attention flag: clear it, then set it again if
    something still waits (clear first, so a flag set meanwhile by staff is never lost)."""
    resident = ctx.resident
    if not ctx.attention or resident is None or not await take_attention(resident):
        return
    for still_pending in REGISTRY.pending_checks:
        if await still_pending(resident, ctx.now):
            await flag_attention(ids=[resident.id])
            return


async def run_intent(ctx: Ctx, name: str) -> str | None:
    handler = REGISTRY.intents.get(name) or REGISTRY.intents["unknown"]
    if name in REGISTRY.needs_registration and not ctx.registered:
        return await start_flow(ctx, "register", intro="这项服务需要先登记所在社区,只要一分钟。")
    return await handler(ctx)
