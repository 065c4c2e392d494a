"""Questionnaires: definitions from a YAML/JSON file, answers one question at a time.

A resident has at most one response per questionnaire (a unique constraint, not a session
flag). Answers are written to the response row as they come, so a resident who leaves
resumes at the next unanswered question. Each answer names the question it answers and is
accepted only if that question is the next one: a repeated or concurrent submission of the
same answer changes nothing. Completing credits the points through the ledger with the key
`survey:<id>:<resident>`, in the same transaction.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.clock import LOCAL_TZ, local
from models.db import locked
from models.outbox import enqueue, notice
from models.places import Community
from models.points import Source, post_entry
from models.residents import Resident

KINDS = {"single": "单选", "multi": "多选", "rating": "评分", "number": "数字", "text": "文字"}


class ResponseStatus:
    IN_PROGRESS, COMPLETED = "in_progress", "completed"
    LABELS = {IN_PROGRESS: "未完成", COMPLETED: "已完成"}


class Survey(Model):
    id = fields.IntField(primary_key=True)
    key = fields.CharField(max_length=60, unique=True)
    title = fields.CharField(max_length=80)
    intro = fields.TextField(default="")
    opens_at = fields.DatetimeField()
    closes_at = fields.DatetimeField()
    points = fields.IntField(default=0)
    # Community ids the questionnaire is for; empty means every community.
    communities = fields.JSONField(default=list)
    questions = fields.JSONField(default=list)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "survey"

    def is_open(self, now: datetime) -> bool:
        return self.opens_at <= now < self.closes_at

    def is_for(self, community_id: int | None) -> bool:
        return not self.communities or community_id in self.communities

    def question(self, qid: str) -> dict:
        return next(q for q in self.questions if q["id"] == qid)


class SurveyResponse(Model):
    id = fields.IntField(primary_key=True)
    survey = fields.ForeignKeyField("models.Survey", related_name="responses")
    resident = fields.ForeignKeyField("models.Resident", related_name="survey_responses")
    answers = fields.JSONField(default=dict)  # question id -> answer (None = skipped)
    path = fields.JSONField(default=list)  # question ids in the order answered (for 上一题)
    status = fields.CharField(max_length=16, default=ResponseStatus.IN_PROGRESS, db_index=True)
    started_at = fields.DatetimeField()
    completed_at = fields.DatetimeField(null=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "survey_response"
        unique_together = (("survey", "resident"),)  # answer once
        indexes = (("resident", "status"),)


class SurveyError(Exception):
    """A clear message (for the operator or the resident); nothing was changed."""


# ---------------------------------------------------------------------------- definitions

def _time(value: Any, what: str) -> datetime:
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise SurveyError(f"{what}格式不对:{value}(例如 2026-12-20 09:00)") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=LOCAL_TZ)


def validate_questions(raw: Any) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise SurveyError("questions 必须是一个非空列表")
    seen: dict[str, dict] = {}
    out = []
    for n, q in enumerate(raw, 1):
        if not isinstance(q, dict):
            raise SurveyError(f"第{n}题格式不对")
        qid = str(q.get("id") or f"q{n}")
        kind = q.get("kind", "single")
        text = str(q.get("text") or "").strip()
        if qid in seen:
            raise SurveyError(f"题目编号 {qid} 重复")
        if kind not in KINDS:
            raise SurveyError(f"第{n}题的 kind 只能是 {'/'.join(KINDS)}")
        if not text:
            raise SurveyError(f"第{n}题缺少 text")
        item: dict[str, Any] = {"id": qid, "kind": kind, "text": text,
                                "required": bool(q.get("required", True))}
        if kind in ("single", "multi"):
            options = [str(o).strip() for o in q.get("options") or []]
            if len(options) < 2 or not all(options):
                raise SurveyError(f"第{n}题({qid})至少要两个选项")
            item["options"] = options
        if kind == "number":
            item["min"], item["max"] = int(q.get("min", 0)), int(q.get("max", 100000))
            if item["min"] > item["max"]:
                raise SurveyError(f"第{n}题({qid})的 min 大于 max")
        if "show_if" in q:
            cond = q["show_if"]
            if not isinstance(cond, dict) or cond.get("question") not in seen:
                raise SurveyError(f"第{n}题({qid})的 show_if 必须引用前面的题目编号")
            ref = seen[cond["question"]]
            item["show_if"] = _condition(cond, ref, n, qid)
        seen[qid] = item
        out.append(item)
    return out


def _condition(cond: dict, ref: dict, n: int, qid: str) -> dict:
    out: dict[str, Any] = {"question": ref["id"]}
    if "any_of" in cond or "equals" in cond:
        values = cond.get("any_of", cond.get("equals"))
        values = values if isinstance(values, list) else [values]
        if ref["kind"] in ("single", "multi"):
            # Options may be named by number or by their text.
            resolved = []
            for v in values:
                if isinstance(v, int) and 1 <= v <= len(ref["options"]):
                    resolved.append(v)
                elif str(v) in ref["options"]:
                    resolved.append(ref["options"].index(str(v)) + 1)
                else:
                    raise SurveyError(f"第{n}题({qid})的 show_if 选项 {v} 不在 {ref['id']} 的选项里")
            values = resolved
        out["any_of"] = values
    for bound in ("at_least", "at_most"):
        if bound in cond:
            out[bound] = cond[bound]
    if len(out) == 1:
        raise SurveyError(f"第{n}题({qid})的 show_if 需要 any_of、equals、at_least 或 at_most")
    return out


def load_definition(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SurveyError(f"读不到文件 {path}:{exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SurveyError(f"{path.name} 不是有效的 YAML/JSON:{exc}") from None
    if not isinstance(data, dict):
        raise SurveyError(f"{path.name} 的顶层必须是一个对象")
    return data


async def save_survey(data: dict, *, opens_at: datetime | None = None,
                      closes_at: datetime | None = None) -> Survey:
    """Create a questionnaire, or replace one of the same key that nobody has answered yet."""
    key = str(data.get("key") or "").strip()
    title = str(data.get("title") or "").strip()
    if not key or not title:
        raise SurveyError("问卷需要 key 和 title")
    questions = validate_questions(data.get("questions"))
    opens = opens_at or _time(data.get("opens"), "opens")
    closes = closes_at or _time(data.get("closes"), "closes")
    if closes <= opens:
        raise SurveyError("closes 必须晚于 opens")
    ids = []
    for name in data.get("communities") or []:
        community = await Community.get_or_none(name=name) or await Community.get_or_none(code=name)
        if community is None:
            raise SurveyError(f"没有名为“{name}”的社区")
        ids.append(community.id)
    points = int(data.get("points") or 0)
    if points < 0:
        raise SurveyError("points 不能为负")
    values = dict(title=title, intro=str(data.get("intro") or "").strip(),
                  opens_at=opens.astimezone(timezone.utc), closes_at=closes.astimezone(timezone.utc), points=points, communities=ids, questions=questions)
    async with in_transaction():
        existing = await Survey.get_or_none(key=key)
        if existing is None:
            return await Survey.create(key=key, **values)
        if await SurveyResponse.filter(survey_id=existing.id).exists():
            raise SurveyError(f"问卷 {key} 已经有人填写,不能再改;请换一个 key")
        await Survey.filter(id=existing.id).update(**values)
    return await Survey.get(id=existing.id)


# ---------------------------------------------------------------------------- the questions

def visible(question: dict, answers: dict) -> bool:
    cond = question.get("show_if")
    if not cond:
        return True
    value = answers.get(cond["question"])
    if value is None:
        return False
    values = value if isinstance(value, list) else [value]
    if "any_of" in cond and not set(values) & set(cond["any_of"]):
        return False
    if "at_least" in cond and not all(v >= cond["at_least"] for v in values):
        return False
    if "at_most" in cond and not all(v <= cond["at_most"] for v in values):
        return False
    return True


def next_question(survey: Survey, answers: dict) -> dict | None:
    for q in survey.questions:
        if q["id"] not in answers and visible(q, answers):
            return q
    return None


# ---------------------------------------------------------------------------- answering

async def open_surveys_for(resident: Resident, now: datetime) -> list[Survey]:
    now = now.astimezone(timezone.utc)  # SQLite compares stored text: bind UTC
    surveys = await Survey.filter(opens_at__lte=now, closes_at__gt=now).order_by("closes_at", "id")
    return [s for s in surveys if s.is_for(resident.community_id)]


async def start_response(survey: Survey, resident_id: int, now: datetime) -> SurveyResponse:
    """The resident's one response: created on the first question, found again afterwards."""
    if not survey.is_open(now):
        raise SurveyError(f"问卷“{survey.title}”不在填写时间内。")
    response = await SurveyResponse.get_or_none(survey_id=survey.id, resident_id=resident_id)
    if response is not None:
        return response
    try:
        async with in_transaction():
            return await SurveyResponse.create(survey_id=survey.id, resident_id=resident_id,
                                               started_at=now)
    except IntegrityError:  # created meanwhile by a concurrent start: the unique key held
        return await SurveyResponse.get(survey_id=survey.id, resident_id=resident_id)


@dataclass
class Recorded:
    response: SurveyResponse
    completed: bool = False
    points: int = 0
    accepted: bool = True  # False: that question was already answered (a repeat)


async def record_answer(response_id: int, qid: str, value: Any, *, now: datetime) -> Recorded:
    """Store one answer if `qid` is the next question; completing credits the points."""
    async with in_transaction():
        response = await locked(SurveyResponse.filter(id=response_id)).get()
        survey = await Survey.get(id=response.survey_id)
        if response.status == ResponseStatus.COMPLETED:
            return Recorded(response, accepted=False)
        if now >= survey.closes_at:
            raise SurveyError(f"问卷“{survey.title}”已经截止了,谢谢您的关心。")
        expected = next_question(survey, response.answers)
        if expected is None or expected["id"] != qid:
            return Recorded(response, accepted=False)
        answers = {**response.answers, qid: value}
        path = [*response.path, qid]
        done = next_question(survey, answers) is None
        update = dict(answers=answers, path=path)
        if done:
            update.update(status=ResponseStatus.COMPLETED, completed_at=now)
        await SurveyResponse.filter(id=response.id).update(**update)
        points = 0
        if done and survey.points:
            _, created = await post_entry(response.resident_id, survey.points,
                                          reason=f"填写问卷“{survey.title}”", source=Source.SURVEY,
                                          key=f"survey:{survey.id}:{response.resident_id}")
            points = survey.points if created else 0
        response = await SurveyResponse.get(id=response.id)
    return Recorded(response, completed=done, points=points)


async def go_back(response_id: int) -> str | None:
    """Forget the last answer so that question is asked again; returns its id (None: first)."""
    async with in_transaction():
        response = await locked(SurveyResponse.filter(id=response_id)).get()
        if response.status == ResponseStatus.COMPLETED or not response.path:
            return None
        path = list(response.path)
        last = path.pop()
        answers = {k: v for k, v in response.answers.items() if k != last}
        await SurveyResponse.filter(id=response.id).update(answers=answers, path=path)
    return last


# ---------------------------------------------------------------------------- invitations

async def invite(survey_id: int, now: datetime, community_id: int | None = None) -> int:
    """A notice to every registered, following resident of the target communities (once each)."""
    survey = await Survey.get(id=survey_id)
    if now >= survey.closes_at:
        raise SurveyError("问卷已经截止,不能再邀请。")
    q = Q(registered=True, active=True, notices_enabled=True)
    if survey.communities:
        q &= Q(community_id__in=survey.communities)
    if community_id is not None:
        q &= Q(community_id=community_id)
    done = set(await SurveyResponse.filter(survey_id=survey.id, status=ResponseStatus.COMPLETED)
               .values_list("resident_id", flat=True))
    points = f"填完可得{survey.points}积分," if survey.points else ""
    text = (f"邀请您填写问卷“{survey.title}”,{points}{local(survey.closes_at):%m月%d日}截止。"
            "回复“填问卷”即可开始,一题一题回答,随时可以退出、下次接着填。")
    rows = [notice(r.openid, "survey_invite", text, f"survey-invite:{survey.id}:{r.id}",
                   due_at=max(now, survey.opens_at))
            for r in await Resident.filter(q) if r.id not in done]
    async with in_transaction():
        await enqueue(*rows)
    return len(rows)


# ---------------------------------------------------------------------------- results

@dataclass
class QuestionResult:
    question: dict
    answered: int = 0
    counts: list[int] = field(default_factory=list)  # per option (choices)
    average: float | None = None  # ratings and numbers
    low: float | None = None
    high: float | None = None
    texts: list[str] = field(default_factory=list)  # newest first


@dataclass
class Results:
    survey: Survey
    completed: int
    in_progress: int
    questions: list[QuestionResult]


async def results(survey_id: int) -> Results:
    survey = await Survey.get(id=survey_id)
    done = await (SurveyResponse.filter(survey_id=survey.id, status=ResponseStatus.COMPLETED)
                  .order_by("-completed_at", "-id"))
    pending = await SurveyResponse.filter(survey_id=survey.id,
                                          status=ResponseStatus.IN_PROGRESS).count()
    out = []
    for q in survey.questions:
        r = QuestionResult(q, counts=[0] * len(q.get("options", [])))
        values = [resp.answers.get(q["id"]) for resp in done]
        values = [v for v in values if v is not None]
        r.answered = len(values)
        if q["kind"] in ("single", "multi"):
            for v in values:
                for choice in (v if isinstance(v, list) else [v]):
                    if 1 <= choice <= len(r.counts):
                        r.counts[choice - 1] += 1
        elif q["kind"] in ("rating", "number") and values:
            r.average = sum(values) / len(values)
            r.low, r.high = min(values), max(values)
        elif q["kind"] == "text":
            r.texts = [str(v) for v in values]
        out.append(r)
    return Results(survey, len(done), pending, out)


def answer_text(question: dict, value: Any) -> str:
    if value is None:
        return ""
    if question["kind"] in ("single", "multi"):
        chosen = value if isinstance(value, list) else [value]
        return "、".join(question["options"][c - 1] for c in chosen if 1 <= c <= len(question["options"]))
    return str(value)


async def export_survey(survey_id: int, path: Path) -> list[Path]:
    """Every response (finished or not), one row each, one column per question."""
    from models.exports import write_table  # noqa: PLC0415 - keeps the import graph shallow

    survey = await Survey.get_or_none(id=survey_id)
    if survey is None:
        raise SurveyError(f"没有编号为 {survey_id} 的问卷")
    responses = await (SurveyResponse.filter(survey_id=survey.id).order_by("id")
                       .prefetch_related("resident", "resident__community"))
    headers = ["编号", "居民", "社区", "手机号", "状态", "开始时间", "完成时间"] + [
        f"{i}. {q['text']}" for i, q in enumerate(survey.questions, 1)]
    rows = []
    for resp in responses:
        who = resp.resident
        rows.append([resp.id, who.name, who.community.name if who.community else "", who.phone,
                     ResponseStatus.LABELS[resp.status], f"{local(resp.started_at):%Y-%m-%d %H:%M}",
                     f"{local(resp.completed_at):%Y-%m-%d %H:%M}" if resp.completed_at else ""]
                    + [answer_text(q, resp.answers.get(q["id"])) for q in survey.questions])
    return write_table(path, headers, rows)


# ---------------------------------------------------------------------------- demo data

DEMO_SURVEY = Path(__file__).resolve().parent.parent / "docs" / "surveys" / "winter.yaml"


async def seed_demo_survey(now: datetime) -> Survey:
    """The winter-break questionnaire, open from now for 60 days whatever the file's dates."""
    from datetime import timedelta  # noqa: PLC0415

    data = load_definition(DEMO_SURVEY)
    existing = await Survey.get_or_none(key=data["key"])
    if existing is not None:
        return existing
    return await save_survey(data, opens_at=now - timedelta(days=1), closes_at=now + timedelta(days=60))
