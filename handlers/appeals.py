"""Appeals (有事找居委) in the chat, the resident's side: filing, tracking, rating, adding.

有事找居委 (or any problem the classifier calls appeal_file) starts the filing flow;
我的诉求 / a ticket number shows progress; a digit after 办结 rates it; 补充 adds to an open
ticket; the next words after a staff message answer it. Staff handling and figures:
handlers/appeals_staff.py.
"""
from __future__ import annotations

import re

from rapidfuzz import fuzz

from handlers.engine import (MIN_CONFIDENCE, REGISTRY, Ctx, Flow, Invalid, Step, confirm_step,
                             flow, intent, numbered, run_intent, start_flow)
from models.appeals import (CATEGORY_LABELS, TICKET_RE, Action, Appeal, AppealError, AppealState,
                            NewAppeal, awaiting_rating, file_appeal, open_similar_candidates,
                            pending_for, rate, rating_comment, resident_appeal, resident_message,
                            resident_open_appeals, resident_recent_appeals, route_for, timeline)
from models.clock import local_text
from models.places import Organisation
from nlp import tokenizer
from nlp.appeals import CATEGORIES, categorise
from nlp.entities import parse_choice, parse_yes_no
from nlp.normalize import compact, mandarinize

assert tuple(CATEGORY_LABELS) == CATEGORIES  # the contract models/appeals.py repeats

# ---------------------------------------------------------------------------- text helpers

# Words that only say "I want to report something"; what is left is the description.
_TRIGGER_RE = re.compile(
    r"^(我)?(想|要|需要|想要)?(有事找居委会?|找居委会?|投诉一下|投诉|举报|反映一下|反映|反馈一下|反馈|"
    r"报修|上报|提个建议|提建议|提意见|有个问题|有问题|求助|诉求)[,,。.::\s]*")
_DONE_WORDS = {"好了", "好", "好的", "跳过", "没有", "没有了", "不用", "不用了", "完成", "发完了", "发完",
               "冇", "唔使", "不需要", "无", "否", "不", "是", "可以", "就这些", "没了", "下一步", "ok", "得"}
# Help a volunteer can give: routed to the volunteer organisation (routing key "help").
_VOLUNTEER_HELP_RE = re.compile(r"陪诊|陪同|陪伴|代买|买菜|送餐|送药|搬东西|帮忙搬|搬运|独居|探访|助老|上门帮|帮扶|照看")
# Only a reply that the classifier is sure means another feature is not an answer.
_OTHER_FEATURES = {"activity_list", "activity_signup", "activity_cancel", "my_activities", "checkin",
                   "points_balance", "points_history", "points_rules", "reward_list", "reward_redeem",
                   "service_booking", "survey", "register", "appeal_status", "appeal_rate", "help",
                   "human", "appeal_file"}
_STAFF_CMD_RE = re.compile(r"^(受理|回复|转派|上报街道|上报|办结|退回|采纳)[1-9]\d{5}")
_TICKET_ONLY_RE = re.compile(r"^(查|查询|查看|我的)?(工单|诉求|工单号)?(号)?([1-9]\d{5})(的)?(进度|情况|处理到哪了|怎样了|怎么样了)?$")
# A score alone, with 分/星, or followed by a separator and a comment ("4 处理很及时");
# "3栋的灯又坏了" is no score.
_RATE_RE = re.compile(r"^\s*([1-5１-５一二三四五])\s*(?:(分|星)|(?=[\s,,.。::!!、]|$))[\s,,.。::!!、]*(.*)$", re.S)
_CN_SCORE = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5}
# After a rating up to this score without a reason, the next message is taken as the reason.
COMMENT_ASKED_UP_TO = 3
COMMENT_WINDOW_SECONDS = 30 * 60
_NO_COMMENT_WORDS = {"不用", "不用了", "没有", "没有了", "没了", "算了", "取消", "不说了", "没什么",
                     "没意见", "无", "冇", "冇嘢", "唔使", "唔使了", "不需要", "没事", "没事了", "ok", "好", "好的"}
# Thanks and sentence particles around a "no" (不用,谢谢 / 算了吧 / 唔使喇,唔该).
_POLITE_RE = re.compile(r"(谢谢你|谢谢您|谢谢|多谢|唔该|谢啦|thanks|[啦吧呀啊喇嘞喔哦噢咯罗]|[,.!?~…、])+")
_SCORE_WORDS = [("非常不满意", 1), ("很不满意", 1), ("太差", 1), ("好差", 1), ("不太满意", 2),
                ("不满意", 2), ("差评", 2), ("一般般", 3), ("一般", 3), ("还行", 3), ("麻麻", 3),
                ("非常满意", 5), ("十分满意", 5), ("很满意", 5), ("好满意", 5), ("五星", 5), ("满意", 4),
                ("好评", 4), ("不错", 4)]


def _similarity(a: str, b: str) -> float:
    """How alike two problem descriptions are (0-100): characters and jieba words."""
    a, b = mandarinize(compact(a)), mandarinize(compact(b))
    if not a or not b:
        return 0.0
    words = fuzz.token_set_ratio(" ".join(tokenizer.cut(a)), " ".join(tokenizer.cut(b)))
    return max(fuzz.ratio(a, b), words)


SIMILAR_CUTOFF = 65


def _score_of(text: str) -> tuple[int, str] | None:
    m = _RATE_RE.match(text or "")
    if m:
        d = m.group(1)
        score = _CN_SCORE.get(d) or int(d.translate(str.maketrans("１２３４５", "12345")))
        return score, m.group(3).strip()
    return None


def _score_from_words(text: str) -> int | None:
    t = compact(text)
    for word, score in _SCORE_WORDS:
        if word in t:
            return score
    return None


def _short(text: str, n: int = 40) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[:n] + "…"


# ---------------------------------------------------------------------------- filing flow

async def _prefill(ctx: Ctx, slots: dict) -> None:
    slots.setdefault("_photos", [])
    if ctx.chosen("menu") or ctx.incoming.kind != "text":
        return
    rest = _TRIGGER_RE.sub("", ctx.text.strip()).strip()
    if len(compact(rest)) >= 6:
        slots["description"] = rest[:2000]


async def _parse_description(ctx: Ctx, slots: dict) -> str:
    text = ctx.text.strip()
    if len(compact(text)) < 4:
        raise Invalid("请多说几个字:在哪里、发生了什么。")
    return text[:2000]


async def _media_prompt(ctx: Ctx, slots: dict) -> str:
    return ("有照片或位置的话可以现在发给我(可选),方便工作人员了解情况。\n"
            "发完回复“好了”;不需要请回复“跳过”。")


async def _parse_media(ctx: Ctx, slots: dict) -> bool:
    inc = ctx.incoming
    if inc.kind == "image":
        photos = slots.setdefault("_photos", [])
        if len(photos) >= 9:
            raise Invalid("最多9张照片,已经够了。回复“好了”继续。", counts=False)
        photos.append({"pic_url": inc.pic_url, "media_id": inc.media_id})
        raise Invalid(f"收到第{len(photos)}张照片。还可以继续发,发完回复“好了”。", counts=False)
    if inc.kind == "location":
        slots["_location"] = inc.location
        label = (inc.location or {}).get("label") or "您的定位"
        raise Invalid(f"收到位置:{label}。还可以发照片,发完回复“好了”。", counts=False)
    words = compact(ctx.text)
    if words in _DONE_WORDS or parse_yes_no(ctx.text) is not None:
        return True
    # More words at this step add to the description rather than being lost.
    slots["description"] = f"{slots.get('description', '')} {ctx.text.strip()}".strip()[:2000]
    raise Invalid("已把这句补充到描述里。还可以发照片或位置,发完回复“好了”,不需要回复“跳过”。",
                  counts=False)


def _category_menu() -> str:
    return numbered(CATEGORY_LABELS[c] for c in CATEGORIES)


async def _category_prompt(ctx: Ctx, slots: dict) -> str:
    guess = categorise(slots["description"])
    slots["_suggested"] = guess.category
    return (f"我判断这属于“{CATEGORY_LABELS[guess.category]}”。对吗?\n"
            f"对就回复“是”;不对请回复数字换一类:\n{_category_menu()}")


async def _parse_category(ctx: Ctx, slots: dict) -> str:
    index = parse_choice(ctx.text, len(CATEGORIES))
    if index:
        return CATEGORIES[index - 1]
    words = compact(ctx.text)
    for code, label in CATEGORY_LABELS.items():
        if label in words or words in label and len(words) >= 2:
            return code
    if parse_yes_no(ctx.text):
        return slots["_suggested"]
    raise Invalid("请回复“是”,或回复类别前面的数字。")


async def _parse_anonymous(ctx: Ctx, slots: dict) -> bool:
    words = compact(ctx.text)
    if any(w in words for w in ("不隐藏", "不用隐藏", "不需要隐藏", "无所谓", "公开", "不匿名")):
        hidden = False
    elif any(w in words for w in ("隐藏", "匿名", "保密")):
        hidden = True
    else:
        index = parse_choice(ctx.text, 2)
        if index:
            hidden = index == 2
        else:
            answer = parse_yes_no(ctx.text)
            if answer is None:
                raise Invalid("请回复1(不用隐藏)或2(隐藏)。")
            hidden = answer
    await _find_duplicate(ctx, slots)
    return hidden


async def _find_duplicate(ctx: Ctx, slots: dict) -> None:
    """An open ticket in the community that looks like the same problem: offer to link."""
    slots.pop("_dup", None)
    candidates = await open_similar_candidates(ctx.resident.community_id, slots["category"], ctx.now)
    best, best_score = None, 0.0
    for a in candidates:
        score = _similarity(slots["description"], a.description)
        if score > best_score:
            best, best_score = a, score
    if best is not None and best_score >= SIMILAR_CUTOFF:
        slots["_dup"] = {"id": best.id, "ticket": best.ticket, "state": best.state,
                         "text": _short(best.description, 50), "mine": best.resident_id == ctx.resident.id}


async def _link_prompt(ctx: Ctx, slots: dict) -> str:
    d = slots["_dup"]
    who = "您之前" if d["mine"] else "社区里已有居民"
    return (f"{who}反映过类似的问题(工单{d['ticket']},{AppealState.LABELS[d['state']]}):\n“{d['text']}”\n"
            "1. 是同一件事,关联过去一起跟进\n2. 不是,单独提交")


async def _parse_link(ctx: Ctx, slots: dict) -> bool:
    index = parse_choice(ctx.text, 2)
    if index:
        return index == 1
    answer = parse_yes_no(ctx.text)
    if answer is None:
        raise Invalid("请回复1(关联)或2(单独提交)。")
    return answer


def _volunteer_help(slots: dict) -> bool:
    return slots["category"] in ("living", "other") and bool(_VOLUNTEER_HELP_RE.search(slots["description"]))


async def _handler_for(ctx: Ctx, slots: dict) -> Organisation:
    if slots.get("link") and slots.get("_dup"):
        parent = await Appeal.get(id=slots["_dup"]["id"])
        return await Organisation.get(id=parent.organisation_id)
    return await route_for(ctx.resident.community_id, slots["category"], _volunteer_help(slots))


async def _confirm_prompt(ctx: Ctx, slots: dict) -> str:
    org = await _handler_for(ctx, slots)
    extra = []
    if slots.get("_photos"):
        extra.append(f"照片:{len(slots['_photos'])}张")
    if slots.get("_location"):
        extra.append(f"位置:{slots['_location'].get('label') or '已发送'}")
    link = f"\n关联:工单{slots['_dup']['ticket']}" if slots.get("link") else ""
    return (f"请确认提交:\n问题:{_short(slots['description'], 80)}\n" + "".join(f"{e}\n" for e in extra)
            + f"类别:{CATEGORY_LABELS[slots['category']]}\n"
            f"隐藏身份:{'是(只有居委会能看到您的姓名电话)' if slots['anonymous'] else '否'}{link}\n"
            f"交给:{org.name}\n确认请回复“是”。")


async def _finish(ctx: Ctx, slots: dict) -> str:
    try:
        appeal = await file_appeal(ctx.resident, NewAppeal(
            description=slots["description"], category=slots["category"],
            photos=slots.get("_photos") or [], location=slots.get("_location"),
            anonymous=slots["anonymous"], volunteer_help=_volunteer_help(slots),
            link_to=slots["_dup"]["id"] if slots.get("link") and slots.get("_dup") else None), ctx.now)
    except AppealError as exc:
        return str(exc)
    org = await Organisation.get(id=appeal.organisation_id)
    link = f"已和工单{slots['_dup']['ticket']}关联,会一起跟进、一起通知您。\n" if appeal.linked_to_id else ""
    return (f"已提交!您的工单号是 {appeal.ticket}。\n{link}"
            f"由{org.name}处理,{local_text(appeal.ack_due_at)}前会受理回复您,"
            f"一般{local_text(appeal.resolve_due_at, with_weekday=False)}前办结。\n"
            "有进展会通知您;回复“我的诉求”随时看进度。")


flow(Flow("appeal", "有事找居委", [
    Step("description", "请说说遇到了什么问题:在哪里、什么情况?", _parse_description,
         example="例如:3栋楼道的灯坏了好几天,晚上很黑。"),
    Step("media", _media_prompt, _parse_media, accepts=("text", "image", "location")),
    Step("category", _category_prompt, _parse_category, example="例如:是,或回复 2"),
    Step("anonymous", "需要对其他人隐藏您的姓名和电话吗?(居委会始终能看到)\n1. 不用隐藏\n2. 隐藏",
         _parse_anonymous, example="例如:1"),
    Step("link", _link_prompt, _parse_link, example="例如:1", when=lambda s: bool(s.get("_dup"))),
    confirm_step(_confirm_prompt),
], _finish, prefill=_prefill))


@intent("appeal_file", needs_registration=True)
async def appeal_file(ctx: Ctx) -> str:
    return await start_flow(ctx, "appeal")


# ---------------------------------------------------------------------------- tracking

def _resident_line(e, appeal: Appeal) -> str | None:
    org = e.actor_org.name if e.actor_org else ""
    target = e.target_org.name if e.target_org else ""
    text = {
        Action.SUBMIT: f"您提交了诉求,交给{target}" + (f"({e.note})" if e.note else ""),
        Action.ACCEPT: f"{org}已受理",
        Action.REPLY: f"{org}回复:{e.note}",
        Action.ANSWER: f"您答复:{e.note}",
        Action.ADD: f"您补充:{e.note}",
        Action.TRANSFER: f"转交{target}办理",
        Action.ESCALATE: f"已上报{target}协助处理",
        Action.AUTO_ESCALATE: f"超过时限,已上报{target}督办",
        Action.RESOLVE: f"已办结:{e.note}",
        Action.REJECT: f"已退回:{e.note}",
        Action.RATE_CLOSE: f"您评价{e.note}",
        Action.RATE_REOPEN: f"您评价{e.note},已重新办理(重办)",
        Action.EXPIRE: "未评价,已自动完成",
        Action.ADOPT: "您的建议被采纳,已奖励积分",
        Action.COMMENT: f"您的意见:{e.note}",
    }.get(e.action)
    return f"{local_text(e.at, with_weekday=False)} {_short(text, 60)}" if text else None


async def resident_view(ctx: Ctx, appeal: Appeal) -> str:
    lines = [line for e in await timeline(appeal) if (line := _resident_line(e, appeal))]
    tail = ""
    if appeal.state == AppealState.RESOLVED and appeal.rating is None:
        tail = "\n请回复1-5为处理结果打分(5分最满意)。"
    elif appeal.is_open:
        tail = f"\n要补充情况,回复“补充 {appeal.ticket} 内容”。"
    redo = "(重办)" if appeal.reopen_count and appeal.is_open else ""
    return (f"工单{appeal.ticket}({appeal.label})\n状态:{AppealState.LABELS[appeal.state]}{redo}\n"
            f"内容:{_short(appeal.description, 60)}\n进展:\n" + "\n".join(lines) + tail)


@intent("appeal_status", needs_registration=True)
async def appeal_status(ctx: Ctx) -> str:
    m = TICKET_RE.search(compact(ctx.text))
    if m:
        appeal = await resident_appeal(ctx.resident, m.group(1))
        if appeal:
            return await resident_view(ctx, appeal)
    appeals = await resident_recent_appeals(ctx.resident)
    if not appeals:
        return "您还没有提交过诉求。有问题想反映,回复“有事找居委”。"
    if len(appeals) == 1:
        return await resident_view(ctx, appeals[0])
    ctx.remember_choices("appeal", [a.id for a in appeals])
    return ("您的诉求(最新在前),回复数字看进展:\n"
            + numbered(f"工单{a.ticket} {AppealState.LABELS[a.state]} {_short(a.description, 14)}"
                       for a in appeals))


# ---------------------------------------------------------------------------- rating

async def _rate(ctx: Ctx, appeal: Appeal, score: int, comment: str) -> str:
    try:
        appeal = await rate(appeal.id, ctx.resident, score, comment, ctx.now)
    except AppealError as exc:
        return str(exc)
    ask = ""
    if not comment and score <= COMMENT_ASKED_UP_TO:
        # The reason usually comes as the next message, not in the same one as the digit.
        ctx.state["rating_comment"] = {"appeal": appeal.id, "at": ctx.now.timestamp()}
        ask = ("\n哪里不满意?直接回复告诉我们,工作人员重办时会看到。" if score <= 2 else
               "\n有什么可以做得更好的?直接回复告诉我们。") + "(不想说可以回复“不用”)"
    if appeal.state == AppealState.REOPENED:
        org = await Organisation.get(id=appeal.organisation_id)
        return (f"很抱歉没能让您满意。工单{appeal.ticket}已重新交给{org.name}办理(重办),"
                f"{local_text(appeal.ack_due_at)}前会联系您。{ask}")
    return f"谢谢您的评价({score}分)!工单{appeal.ticket}已完成。{ask}"


async def _rating_followup(ctx: Ctx, asked: dict, words: str,
                           question: Appeal | None) -> str | None:
    """The message after a rating of 1-3 given without a reason: the reason, a "no", or
    something else altogether (then it is routed as usual). Asked about once only.
    `question`: the ticket whose staff message waits for an answer, if any."""
    ctx.state.pop("rating_comment", None)
    if ctx.now.timestamp() - asked.get("at", 0) > COMMENT_WINDOW_SECONDS:
        return None
    # First: 好的 / 没有 are answers to a staff question asked since the rating, too.
    if question is not None and question.asked_at.timestamp() >= asked.get("at", 0):
        return None
    if words in _NO_COMMENT_WORDS or _POLITE_RE.sub("", words) in _NO_COMMENT_WORDS | {""}:
        return "好的,谢谢您的评价!需要时随时找我。"
    if len(words) < 2 or _score_of(ctx.text) or _TICKET_ONLY_RE.match(words):
        return None
    nlu = ctx.nlu
    if nlu.intent in _OTHER_FEATURES and nlu.confidence >= max(MIN_CONFIDENCE, 0.6):
        return None
    try:
        appeal = await rating_comment(asked["appeal"], ctx.resident, ctx.text, ctx.now)
    except AppealError as exc:
        return str(exc)
    org = await Organisation.get(id=appeal.organisation_id)
    return f"谢谢,您的意见已记在工单{appeal.ticket}上,并转给了{org.name}。"


@intent("appeal_rate", needs_registration=True)
async def appeal_rate(ctx: Ctx) -> str:
    appeal = await awaiting_rating(ctx.resident)
    if appeal is None:
        return "您目前没有待评价的诉求。回复“我的诉求”看进度。"
    parsed = _score_of(ctx.text)
    score = parsed[0] if parsed else _score_from_words(ctx.text)
    if score is None:
        return (f"请为工单{appeal.ticket}的处理结果打分,回复一个数字:\n"
                "5 很满意 4 满意 3 一般 2 不满意 1 很不满意")
    comment = parsed[1] if parsed else ctx.text.strip()
    return await _rate(ctx, appeal, score, comment)


# ---------------------------------------------------------------------------- adding

async def _add(ctx: Ctx, appeal: Appeal, text: str, **media) -> str:
    try:
        appeal = await resident_message(appeal.id, ctx.resident, text, ctx.now, **media)
    except AppealError as exc:
        return str(exc)
    return f"已补充到工单{appeal.ticket},并转给了工作人员。"


async def _parse_addition(ctx: Ctx, slots: dict) -> dict:
    inc = ctx.incoming
    if inc.kind == "image":
        return {"text": "", "photos": [{"pic_url": inc.pic_url, "media_id": inc.media_id}]}
    if inc.kind == "location":
        return {"text": "", "location": inc.location}
    if len(ctx.text.strip()) < 2:
        raise Invalid("请多写几个字。")
    return {"text": ctx.text.strip()}


async def _finish_addition(ctx: Ctx, slots: dict) -> str:
    appeal = await Appeal.get_or_none(id=slots["appeal"], resident_id=ctx.resident.id)
    if appeal is None:
        return "没有找到这个工单。"
    content = slots["content"]
    return await _add(ctx, appeal, content.get("text", ""), photos=content.get("photos"),
                      location=content.get("location"))


flow(Flow("appeal_add", "补充诉求", [
    Step("content", "请发要补充的内容(文字、照片或位置都可以)。", _parse_addition,
         accepts=("text", "image", "location")),
], _finish_addition))


async def _addition(ctx: Ctx, words: str) -> str:
    rest = re.sub(r"^\s*补充(一下|说明|情况)?[\s,,::]*", "", ctx.text.strip())
    m = re.match(r"^(工单)?([1-9]\d{5})[\s,,::]*(.*)$", rest, re.S)
    if m:
        appeal = await resident_appeal(ctx.resident, m.group(2))
        if appeal is None:
            return f"没有找到您的工单{m.group(2)}。回复“我的诉求”看您的工单号。"
        rest = m.group(3).strip()
    else:
        open_ = await resident_open_appeals(ctx.resident)
        if not open_:
            return "您没有正在办理的诉求。有新问题请回复“有事找居委”。"
        appeal = open_[0]
    if not appeal.is_open:
        return f"工单{appeal.ticket}已经{AppealState.LABELS[appeal.state]},不能再补充了。有新问题请回复“有事找居委”。"
    if len(rest) >= 2:
        return await _add(ctx, appeal, rest)
    return await start_flow(ctx, "appeal_add", {"appeal": appeal.id},
                            intro=f"补充到工单{appeal.ticket}({_short(appeal.description, 16)})。")


# ---------------------------------------------------------------------------- the hook

def _takes_digit_as_rating(ctx: Ctx, appeal: Appeal) -> bool:
    """A digit rates the ticket unless the resident chose from a list shown after it."""
    shown_after = ctx.state.get("updated", 0) > appeal.resolved_at.timestamp()
    return not (ctx.state.get("choices") and shown_after)


async def _waiting(ctx: Ctx) -> tuple[Appeal | None, Appeal | None]:
    """Only a resident with the attention flag can have a ticket waiting on them."""
    return await pending_for(ctx.resident, ctx.now) if ctx.attention else (None, None)


async def appeal_hook(ctx: Ctx) -> str | None:
    if ctx.resident is None or not ctx.registered:
        return None
    words = compact(ctx.text)
    if _STAFF_CMD_RE.match(words) and not ctx.resident.is_staff:
        return "这是社区工作人员使用的命令,您的账号没有这个权限。需要帮忙请回复“菜单”。"
    waiting = None  # (awaiting a rating, awaiting an answer): read once, where first needed
    asked_why = ctx.state.get("rating_comment")
    if asked_why:
        waiting = await _waiting(ctx)
        if (reply := await _rating_followup(ctx, asked_why, words, waiting[1])) is not None:
            return reply
    m = _TICKET_ONLY_RE.match(words)
    if m:
        ticket = m.group(4)
        appeal = await resident_appeal(ctx.resident, ticket)
        if appeal is not None:
            return await resident_view(ctx, appeal)
        if ctx.resident.is_staff:  # a ticket they handle: handlers/appeals_staff.py
            return None
        return f"没有找到您的工单{ticket}。回复“我的诉求”看您的所有诉求。"
    chosen = ctx.chosen("appeal")
    if chosen is not None:
        appeal = await Appeal.get_or_none(id=chosen, resident_id=ctx.resident.id)
        if appeal is not None:
            return await resident_view(ctx, appeal)
    pending, asked = waiting or await _waiting(ctx)
    if pending is not None:
        parsed = _score_of(ctx.text)
        if parsed and _takes_digit_as_rating(ctx, pending):
            return await _rate(ctx, pending, *parsed)
    if words.startswith("补充"):
        return await _addition(ctx, words)
    if asked is not None and words:
        if ctx.state.get("choices") and parse_choice(ctx.text, len(ctx.state["choices"]["ids"])):
            return None
        nlu = ctx.nlu
        if nlu.intent in _OTHER_FEATURES and nlu.confidence >= max(MIN_CONFIDENCE, 0.6):
            return None
        return await _add(ctx, asked, ctx.text.strip())
    if _describes_a_problem(ctx, words):
        return await run_intent(ctx, "appeal_file")
    return None


def _describes_a_problem(ctx: Ctx, words: str) -> bool:
    """A long message about a problem that the classifier leans towards appeal_file (or
    cannot place) but not confidently enough: it is the start of an appeal."""
    nlu = ctx.nlu
    if len(words) < 12 or nlu.confidence >= MIN_CONFIDENCE or nlu.intent not in ("appeal_file", "unknown"):
        return False
    guess = categorise(ctx.text)
    return guess.category != "other" and guess.confidence >= (0.5 if nlu.intent == "appeal_file" else 0.7)


REGISTRY.hooks.insert(0, appeal_hook)


async def _appeal_waiting(resident, now) -> bool:
    return any(await pending_for(resident, now))


REGISTRY.pending_checks.append(_appeal_waiting)
