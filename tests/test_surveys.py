"""Questionnaires: one question at a time with a conditional question, leave and resume,
上一题, answer once (a unique key, proven with concurrent answers), points through the
ledger, invitations to the outbox, staff results in the chat, .xlsx export, the CLI."""
from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from openpyxl import load_workbook

from models.outbox import Outbox
from models.points import PointsEntry, ledger_mismatches
from models.residents import Resident
from models.surveys import (DEMO_SURVEY, ResponseStatus, Survey, SurveyError, SurveyResponse,
                            export_survey, load_definition, record_answer, save_survey,
                            start_response)
from tests import helpers as h
from tests.conftest import run_transcript
from tests.test_cli import database_url, run  # noqa: F401  (the CLI fixture on both databases)

import pytest


async def winter(days_open: int = 30, **changes) -> Survey:
    data = {**load_definition(DEMO_SURVEY), **changes}
    now = h.now()
    return await save_survey(data, opens_at=now - timedelta(days=1),
                             closes_at=now + timedelta(days=days_open))


async def response_of(openid: str) -> SurveyResponse:
    return await SurveyResponse.get(resident__openid=openid)


async def test_conditional_question_leave_resume_and_back(wx):
    survey = await winter()
    await h.resident("o-mum", name="李女士")
    await run_transcript(wx, "o-mum", [
        ("填问卷", r"【寒假活动意向调查】.*填完可得10积分.*下次回复“填问卷”接着填.*"
                  r"第1题:家里有上小学或初中的孩子吗\?.*1\. 有.*2\. 没有.*取消"),
        ("1", r"第2题:孩子寒假想参加哪些活动\?.*6\. 科普实验.*可多选.*上一题"),
        ("1 3", r"第3题:孩子每周大概能来几天\?.*1到7"),
        ("上一题", r"第2题:孩子寒假想参加哪些活动"),
        ("1,3,4", r"第3题"),
        ("取消", r"已退出“填写问卷”"),
    ])
    resp = await response_of("o-mum")
    assert resp.status == ResponseStatus.IN_PROGRESS
    assert resp.answers == {"children": 1, "kids_activities": [1, 3, 4]}  # kept in the database
    await run_transcript(wx, "o-mum", [
        ("我想填问卷", r"欢迎回来.*已答2题.*第3题:孩子每周大概能来几天"),
        ("九", r"请回复1到7之间的数字"),
        ("三天", r"第4题:您自己或家里的老人想参加哪些活动"),
        ("写春联", r"第5题:什么时间参加最方便"),
        ("6", r"请回复1到5之间的一个数字"),
        ("周末上午", r"第6题:去年寒假的社区活动,您打几分\?.*1到5分"),
        ("2", r"第7题:哪里做得不好\?.*跳过"),  # shown because the rating was 2 or less
        ("跳过", r"第8题:还有什么想办的活动或建议"),
        ("多办点书法班", r"“寒假活动意向调查”已提交.*已为您记上10积分"),
        ("填问卷", r"已经填过“寒假活动意向调查”了"),
    ])
    resp = await response_of("o-mum")
    assert resp.status == ResponseStatus.COMPLETED
    assert resp.answers == {"children": 1, "kids_activities": [1, 3, 4], "kids_days": 3,
                            "adult_activities": [2], "time": 3, "last_year": 2, "why_low": None,
                            "ideas": "多办点书法班"}
    entry = await PointsEntry.get(resident__openid="o-mum")
    assert entry.amount == 10 and entry.source == "survey"
    assert entry.key == f"survey:{survey.id}:{resp.resident_id}"
    assert (await Resident.get(openid="o-mum")).points == 10


async def test_conditions_skip_questions_and_required_ones_cannot_be_skipped(wx):
    await winter()
    await h.resident("o-old", name="黄伯")
    await run_transcript(wx, "o-old", [
        ("问卷调查", r"第1题"),
        ("跳过", r"必答题"),
        ("没有", r"第2题:您自己或家里的老人想参加哪些活动"),  # the children's questions skipped
        ("上一题", r"第1题:家里有"),
        ("上一题", r"已经是第一题.*第1题"),
        ("2", r"第2题:您自己或家里的老人"),
        ("3和5", r"第3题:什么时间"),
        ("1", r"第4题:去年寒假"),
        ("五分", r"第5题:还有什么想办的活动或建议"),  # 5 points: the why question is not asked
        ("跳过", r"已提交"),
    ])
    resp = await response_of("o-old")
    assert resp.answers == {"children": 2, "adult_activities": [3, 5], "time": 1, "last_year": 5,
                            "ideas": None}


async def test_who_sees_which_questionnaire(wx):
    await winter(communities=["江夏第一社区"])
    await h.resident("o-hqb")
    await h.resident("o-jx", community="江夏第一社区")
    assert "没有需要您填写的问卷" in await wx.say("o-hqb", "填问卷")
    assert "第1题" in await wx.say("o-jx", "填问卷")
    await Survey.all().update(closes_at=h.now() - timedelta(minutes=1))
    assert "截止" in await wx.say("o-jx", "1")  # closed while answering: told, nothing stored
    assert (await response_of("o-jx")).answers == {}
    assert "没有需要您填写的问卷" in await wx.say("o-jx", "填问卷")
    assert "先登记" in await wx.say("o-nobody", "填问卷")


async def test_answering_twice_concurrently_gives_one_response(wx):
    survey = await winter()
    await h.resident("o-twice")
    for said in ("填问卷", "2", "1", "1"):
        await wx.say("o-twice", said)
    assert "第5题:还有什么想办的活动或建议" in await wx.say("o-twice", "4")
    # The last answer sent twice at once (a double tap, two deliveries).
    replies = await asyncio.gather(*(wx.say("o-twice", "没有了") for _ in range(2)))
    assert sum("已提交" in r for r in replies) == 1, replies
    assert await SurveyResponse.filter(survey_id=survey.id).count() == 1
    assert await PointsEntry.filter(resident__openid="o-twice").count() == 1

    # The domain operation raced directly: many starts, one row; one answer twice, once stored.
    r = await h.resident("o-race")
    starts = await asyncio.gather(*(start_response(survey, r.id, h.now()) for _ in range(8)))
    assert len({s.id for s in starts}) == 1
    assert await SurveyResponse.filter(survey_id=survey.id, resident_id=r.id).count() == 1
    rid = starts[0].id
    for qid, value in (("children", 2), ("adult_activities", [1]), ("time", 1), ("last_year", 4)):
        await record_answer(rid, qid, value, now=h.now())
    done = await asyncio.gather(*(record_answer(rid, "ideas", f"第{i}次", now=h.now())
                                  for i in range(6)))
    assert sum(d.completed for d in done) == 1 and sum(d.accepted for d in done) == 1
    assert sum(d.points for d in done) == 10
    assert await PointsEntry.filter(resident_id=r.id).count() == 1
    assert await ledger_mismatches() == []


async def _complete(wx, openid: str, answers: list[str]) -> None:
    await wx.say(openid, "填问卷")
    for said in answers:
        reply = await wx.say(openid, said)
    assert "已提交" in reply, reply


async def test_staff_results_invitations_and_export(wx, tmp_path):
    survey = await winter()
    for i in range(4):
        await h.resident(f"o-r{i}", name=f"街坊{i}")
    await h.resident("o-jx", community="江夏第一社区")
    await h.staff("o-staff")
    # Invitations: every registered resident of the staff member's community, once.
    reply = await wx.say("o-staff", "问卷邀请")
    assert "已向5位居民" in reply  # four residents and the staff member, not 江夏
    await wx.say("o-staff", "问卷邀请 1")
    invites = await Outbox.filter(kind="survey_invite")
    assert len(invites) == 5 and "回复“填问卷”" in invites[0].text
    assert not await Outbox.filter(kind="survey_invite", recipient="o-jx").exists()

    await _complete(wx, "o-r0", ["1", "1 2", "3", "2", "4", "5", "跳过"])
    await _complete(wx, "o-r1", ["1", "1", "5", "2 3", "4", "4", "多办书法"])
    await _complete(wx, "o-r2", ["2", "6", "1", "1", "太冷清", "跳过"])
    await wx.say("o-r3", "填问卷")
    await wx.say("o-r3", "2")  # started, not finished
    results = await wx.say("o-staff", "问卷结果")
    assert "已完成3份,填写中1份" in results
    assert "1. 家里有上小学或初中的孩子吗?(单选,3人作答)" in results
    assert "有:2人(67%)" in results and "没有:1人(33%)" in results
    assert "寒假作业辅导:2人(100%)" in results and "舞蹈:1人(50%)" in results
    assert "平均3.3分" in results  # (5 + 4 + 1) / 3
    assert "平均4.0(最少3,最多5)" in results
    assert "· 太冷清" in results and "· 多办书法" in results
    assert "export survey --id" in results

    paths = await export_survey(survey.id, tmp_path / "winter")
    book = load_workbook(paths[0])
    rows = list(book.active.values)
    assert rows[0][:5] == ("编号", "居民", "社区", "手机号", "状态")
    assert len(rows) == 5  # header + every response, finished or not
    by_name = {row[1]: row for row in rows[1:]}
    first = by_name["街坊0"]
    assert first[4] == "已完成" and first[7] == "有" and first[8] == "寒假作业辅导、舞蹈"
    assert by_name["街坊3"][4] == "未完成"
    assert by_name["街坊0"][3].startswith("139")  # full phone in the staff export only
    # Residents cannot see results.
    assert "已完成" not in await wx.say("o-r3", "问卷结果")


def test_definitions_are_checked():
    from models.surveys import validate_questions
    bad = [
        ([], "非空"),
        ([{"id": "a", "kind": "single", "text": "x", "options": ["只有一个"]}], "至少要两个选项"),
        ([{"id": "a", "kind": "star", "text": "x"}], "kind"),
        ([{"id": "a", "kind": "text", "text": "x", "show_if": {"question": "b", "any_of": [1]}},
          {"id": "b", "kind": "single", "text": "y", "options": ["1", "2"]}], "前面的题目"),
        ([{"id": "a", "kind": "single", "text": "x", "options": ["是", "否"]},
          {"id": "b", "kind": "text", "text": "y", "show_if": {"question": "a", "any_of": ["也许"]}}],
         "不在"),
        ([{"id": "a", "kind": "text", "text": "x"}, {"id": "a", "kind": "text", "text": "y"}], "重复"),
    ]
    for questions, why in bad:
        with pytest.raises(SurveyError, match=why):
            validate_questions(questions)


def test_survey_cli_add_invite_and_export(database_url, tmp_path):  # noqa: F811
    run(database_url, "init-db")
    run(database_url, "seed-demo")  # includes the winter questionnaire, open now
    run(database_url, "resident", "add", "--openid", "o-cli", "--name", "李敏",
        "--phone", "13800138000", "--community", "汇侨北社区")
    invited = run(database_url, "survey", "invite", "--id", "1").stdout
    assert "已邀请" in invited
    spring = tmp_path / "spring.json"
    spring.write_text(json.dumps({
        "key": "spring", "title": "春节活动满意度", "opens": "2026-01-01 00:00",
        "closes": "2036-12-31 00:00", "communities": ["汇侨北社区"], "points": 5,
        "questions": [{"id": "score", "kind": "rating", "text": "您满意吗?"},
                      {"id": "why", "kind": "text", "text": "为什么?", "required": False,
                       "show_if": {"question": "score", "at_most": 3}}]}, ensure_ascii=False))
    out = run(database_url, "survey", "add", str(spring), "--invite").stdout
    assert "春节活动满意度" in out and "已邀请" in out
    exported = run(database_url, "export", "survey", "--id", "1", "--out",
                   str(tmp_path / "winter")).stdout
    assert exported.strip().splitlines()[0].endswith("winter.xlsx")
    assert load_workbook(tmp_path / "winter.xlsx").active.max_row == 1  # headers, no answers yet
    broken = tmp_path / "broken.yaml"
    broken.write_text("key: x\ntitle: y\nopens: 2026-01-01\ncloses: 2026-02-01\nquestions: []\n")
    bad = run(database_url, "survey", "add", str(broken), ok=False)
    assert bad.returncode != 0 and "questions" in bad.stderr
    missing = run(database_url, "export", "survey", "--id", "99", ok=False)
    assert "没有编号为 99 的问卷" in missing.stderr
