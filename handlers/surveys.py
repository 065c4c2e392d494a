"""Questionnaires in the chat: one question at a time, leave and resume, 上一题, answer once;
staff see results (问卷结果) and invite residents (问卷邀请).

The questions of a questionnaire are data, so the flow has one step, "answer", whose prompt
is the next unanswered question read from the database; after each answer the flow starts
again for the next one. Partial answers live in the response row, not in dialogue state.
"""
from __future__ import annotations

from typing import Any

from handlers.engine import (Ctx, EndFlow, Flow, Invalid, Step, flow, intent, numbered,
                             staff_command, start_flow)
from models.places import Organisation
from models.surveys import (KINDS, ResponseStatus, Survey, SurveyError, SurveyResponse, go_back,
                            invite, next_question, open_surveys_for, record_answer, results,
                            start_response)
from nlp.entities import parse_choice, parse_choices, parse_int
from nlp.normalize import compact

BACK_WORDS = {"上一题", "上一个", "返回上一题", "回到上一题", "上一步", "改上一题", "修改上一题", "返回"}
SKIP_WORDS = {"跳过", "不答", "不想答", "略过", "下一题", "唔答"}


# ---------------------------------------------------------------------------- choosing a survey

async def _pending(ctx: Ctx) -> tuple[list[Survey], list[Survey]]:
    """(questionnaires the resident can still answer, ones they already finished)."""
    surveys = await open_surveys_for(ctx.resident, ctx.now)
    done = set(await SurveyResponse.filter(resident_id=ctx.resident.id,
                                           status=ResponseStatus.COMPLETED,
                                           survey_id__in=[s.id for s in surveys])
               .values_list("survey_id", flat=True))
    return [s for s in surveys if s.id not in done], [s for s in surveys if s.id in done]


async def _prefill(ctx: Ctx, slots: dict) -> None:
    if "survey" in slots:
        return
    todo, done = await _pending(ctx)
    if not todo:
        if done:
            raise EndFlow(f"您已经填过“{done[0].title}”了,每份问卷只能填一次,谢谢您!")
        raise EndFlow("目前没有需要您填写的问卷。有新问卷会通知您。")
    started = set(await SurveyResponse.filter(resident_id=ctx.resident.id,
                                              survey_id__in=[s.id for s in todo])
                  .values_list("survey_id", flat=True))
    named = [s for s in todo if s.title in ctx.text or s.key in ctx.text]
    if len(todo) == 1 or len(named) == 1:
        slots["survey"] = (named or todo)[0].id
    elif len(started) == 1:
        slots["survey"] = next(iter(started))  # resume the one already begun
    else:
        slots["_choices"] = [s.id for s in todo]


async def _survey_prompt(ctx: Ctx, slots: dict) -> str:
    surveys = await Survey.filter(id__in=slots["_choices"]).order_by("closes_at", "id")
    return "有这些问卷可以填,回复数字:\n" + numbered(
        s.title + (f"(填完得{s.points}积分)" if s.points else "") for s in surveys)


async def _parse_survey(ctx: Ctx, slots: dict) -> int:
    index = parse_choice(ctx.text, len(slots["_choices"]))
    if not index:
        raise Invalid("请回复问卷前面的数字。")
    return slots["_choices"][index - 1]


# ---------------------------------------------------------------------------- asking

def _hint(q: dict) -> str:
    kind = q["kind"]
    if kind == "single":
        return "回复一个数字"
    if kind == "multi":
        return "可多选,回复数字,多个用空格或逗号隔开,例如“1 3”"
    if kind == "rating":
        return "回复1到5分,5分最好"
    if kind == "number":
        return f"回复一个数字({q['min']}到{q['max']})"
    return "直接回复文字"


def question_text(q: dict, number: int) -> str:
    body = f"第{number}题:{q['text']}"
    if q.get("options"):
        body += "\n" + numbered(q["options"])
    extra = "" if q["required"] else ",不想答可回复“跳过”"
    back = ",回复“上一题”可修改上一题" if number > 1 else ""
    return f"{body}\n({_hint(q)}{extra}{back})"


async def _response(ctx: Ctx, slots: dict) -> tuple[Survey, SurveyResponse]:
    survey = await Survey.get(id=slots["survey"])
    try:
        response = await start_response(survey, ctx.resident.id, ctx.now)
    except SurveyError as exc:
        raise EndFlow(str(exc)) from None
    if response.status == ResponseStatus.COMPLETED:
        raise EndFlow(f"您已经填过“{survey.title}”了,每份问卷只能填一次,谢谢您!")
    return survey, response


async def _question_prompt(ctx: Ctx, slots: dict) -> str:
    survey, response = await _response(ctx, slots)
    q = next_question(survey, response.answers)
    if q is None:  # nothing left (the definition's last visible question was answered)
        raise EndFlow(f"“{survey.title}”您已经答完了,谢谢!")
    slots["_q"] = q["id"]
    number = len(response.path) + 1
    if number == 1 and not slots.pop("_back", False):
        points = f"填完可得{survey.points}积分。" if survey.points else ""
        intro = f"{survey.intro}\n" if survey.intro else ""
        head = (f"【{survey.title}】\n{intro}{points}一题一题回答,中途退出也没关系,"
                "已答的会保存,下次回复“填问卷”接着填。\n\n")
    elif slots.pop("_resumed", False):
        head = f"欢迎回来,接着填“{survey.title}”(已答{number - 1}题)。\n\n"
    else:
        head = ""
    return head + question_text(q, number)


# ---------------------------------------------------------------------------- parsing answers

def _option_by_text(text: str, options: list[str]) -> list[int]:
    words = compact(text)
    found = {i: compact(o) for i, o in enumerate(options, 1) if compact(o) and compact(o) in words}
    # 没有 also contains 有: an option inside a longer matched one does not count.
    return [i for i, o in found.items()
            if not any(o != other and o in other for other in found.values())]


def parse_answer(q: dict, text: str) -> Any:
    """The stored value for an answer: option numbers, a rating, a number or text."""
    kind = q["kind"]
    if kind == "single":
        n = len(q["options"])
        index = parse_choice(text, n)
        by_text = _option_by_text(text, q["options"])
        if index:
            return index
        if len(by_text) == 1:
            return by_text[0]
        raise Invalid(f"请回复1到{n}之间的一个数字。")
    if kind == "multi":
        n = len(q["options"])
        picks = parse_choices(text, n) or _option_by_text(text, q["options"])
        if not picks:
            raise Invalid(f"请回复1到{n}之间的数字,多个用空格或逗号隔开,例如“1 3”。")
        return sorted(picks)
    if kind == "rating":
        score = parse_int(text)
        if score is None or not 1 <= score <= 5:
            raise Invalid("请回复1到5之间的分数,5分最好。")
        return score
    if kind == "number":
        value = parse_int(text)
        if value is None or not q["min"] <= value <= q["max"]:
            raise Invalid(f"请回复{q['min']}到{q['max']}之间的数字。")
        return value
    answer = text.strip()
    if not answer:
        raise Invalid("请回复文字。")
    return answer[:500]


async def _parse(ctx: Ctx, slots: dict) -> str:
    survey = await Survey.get(id=slots["survey"])
    words = compact(ctx.text)
    response = await SurveyResponse.get(survey_id=survey.id, resident_id=ctx.resident.id)
    if words in BACK_WORDS:
        if await go_back(response.id) is None:
            raise Invalid("这已经是第一题了。\n" + question_text(survey.question(slots["_q"]), 1),
                          counts=False)
        slots["_back"] = True
        return "back"
    q = survey.question(slots["_q"])
    if words in SKIP_WORDS:
        if q["required"]:
            raise Invalid("这道题是必答题,请回答后再继续。")
        value = None
    else:
        value = parse_answer(q, ctx.text)
    try:
        recorded = await record_answer(response.id, q["id"], value, now=ctx.now)
    except SurveyError as exc:
        raise EndFlow(str(exc)) from None
    if recorded.completed:
        slots["_points"] = recorded.points
        return "done"
    return "next"


async def _finish(ctx: Ctx, slots: dict) -> str:
    survey = await Survey.get(id=slots["survey"])
    if slots.get("answer") == "done":
        points = f"已为您记上{slots['_points']}积分,回复“积分”查看。" if slots.get("_points") else ""
        return f"“{survey.title}”已提交,谢谢您的意见!{points}"
    return await start_flow(ctx, "survey", {"survey": survey.id, "_back": slots.get("_back", False)})


flow(Flow("survey", "填写问卷", [
    Step("survey", _survey_prompt, _parse_survey, example="例如:1"),
    Step("answer", _question_prompt, _parse, example="也可以回复“上一题”修改上一题"),
], _finish, prefill=_prefill))


@intent("survey", needs_registration=True)
async def survey(ctx: Ctx) -> str:
    todo, _ = await _pending(ctx)
    resumed = await SurveyResponse.filter(resident_id=ctx.resident.id,
                                          survey_id__in=[s.id for s in todo]).exists()
    return await start_flow(ctx, "survey", {"_resumed": True} if resumed else {})


# ---------------------------------------------------------------------------- staff

async def _staff_surveys(ctx: Ctx) -> list[Survey]:
    org = await Organisation.get(id=ctx.resident.organisation_id)
    surveys = await Survey.all().order_by("-closes_at", "-id")
    if org.community_id:
        return [s for s in surveys if s.is_for(org.community_id)]
    from models.places import Community  # noqa: PLC0415
    mine = set(await Community.filter(street_id=org.street_id).values_list("id", flat=True))
    return [s for s in surveys if not s.communities or mine & set(s.communities)]


async def _pick_survey(ctx: Ctx, keyword: str) -> Survey | list[Survey]:
    surveys = await _staff_surveys(ctx)
    rest = compact(ctx.text)[len(keyword):]
    number = parse_int(rest) if rest else None
    chosen = (ctx.state.get("choices") or {})
    ids = chosen.get("ids") if chosen.get("kind") == "staff_survey" else None
    if number is not None:
        if ids and 1 <= number <= len(ids):
            number = ids[number - 1]
        found = next((s for s in surveys if s.id == number), None)
        return found or surveys
    if rest:
        named = [s for s in surveys if rest in compact(s.title)]
        if len(named) == 1:
            return named[0]
    return surveys[0] if len(surveys) == 1 else surveys


def _list_surveys(ctx: Ctx, surveys: list[Survey], keyword: str) -> str:
    if not surveys:
        return "暂时没有本社区的问卷。用 python main.py survey add 文件 添加。"
    ctx.remember_choices("staff_survey", [s.id for s in surveys[:10]])
    return ("有这些问卷:\n" + numbered(f"{s.title}(编号{s.id})" for s in surveys[:10])
            + f"\n请发“{keyword} 数字”。")


def _percent(n: int, total: int) -> str:
    return f"{round(100 * n / total)}%" if total else "0%"


@staff_command("问卷结果", "问卷统计")
async def survey_results(ctx: Ctx) -> str:
    keyword = "问卷结果" if compact(ctx.text).startswith("问卷结果") else "问卷统计"
    picked = await _pick_survey(ctx, keyword)
    if isinstance(picked, list):
        return _list_surveys(ctx, picked, "问卷结果")
    r = await results(picked.id)
    lines = [f"“{picked.title}”结果:已完成{r.completed}份,填写中{r.in_progress}份。"]
    for i, qr in enumerate(r.questions, 1):
        q = qr.question
        lines.append(f"\n{i}. {q['text']}({KINDS[q['kind']]},{qr.answered}人作答)")
        if q["kind"] in ("single", "multi"):
            lines += [f"   {opt}:{n}人({_percent(n, qr.answered)})"
                      for opt, n in zip(q["options"], qr.counts)]
        elif q["kind"] == "rating" and qr.average is not None:
            lines.append(f"   平均{qr.average:.1f}分")
        elif q["kind"] == "number" and qr.average is not None:
            lines.append(f"   平均{qr.average:.1f}(最少{qr.low:g},最多{qr.high:g})")
        elif q["kind"] == "text" and qr.texts:
            lines += [f"   · {t[:40]}" for t in qr.texts[:3]]
    lines.append(f"\n全部答卷请导出:python main.py export survey --id {picked.id}")
    return "\n".join(lines)


@staff_command("问卷邀请", "邀请填问卷")
async def survey_invite(ctx: Ctx) -> str:
    keyword = "问卷邀请" if compact(ctx.text).startswith("问卷邀请") else "邀请填问卷"
    picked = await _pick_survey(ctx, keyword)
    if isinstance(picked, list):
        return _list_surveys(ctx, picked, "问卷邀请")
    org = await Organisation.get(id=ctx.resident.organisation_id)
    try:
        count = await invite(picked.id, ctx.now, community_id=org.community_id)
    except SurveyError as exc:
        return str(exc)
    return f"已向{count}位居民发出“{picked.title}”的填写邀请(每人只发一次)。"

