"""The dispatcher against the fake WeChat server, on SQLite+memory and PostgreSQL+Redis."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bot.dispatcher import Dispatcher
from bot.wechat_api import WeChatAPI
from models.clock import utcnow
from models.outbox import Outbox, OutboxStatus
from tests.push_fixtures import fake, push  # noqa: F401

TEMPLATES = {"*": "TPL-GENERIC"}


async def test_inside_the_window_a_customer_service_message(push):
    await push.resident("o-in", seen_hours_ago=2)
    await push.notice("o-in", "您报名的书法班明天开始", "k1")
    assert await push.dispatcher().drain() == 1
    [got] = push.fake.sends()
    assert (got.kind, got.openid, got.text) == ("custom", "o-in", "您报名的书法班明天开始")
    row = (await push.rows())["k1"]
    assert (row.status, row.channel, row.attempts) == (OutboxStatus.SENT, "custom", 1)
    assert row.sent_at is not None and row.wire_at is not None


async def test_outside_the_window_falls_back_to_the_template(push):
    await push.resident("o-old", seen_hours_ago=60)  # 48 h window long closed
    await push.resident("o-edge", seen_hours_ago=47)  # we think it is open, WeChat says 45015
    push.fake.closed_window.add("o-edge")
    await push.notice("o-old", "提醒:明天上午九点义诊", "a")
    await push.notice("o-edge", "提醒:明天上午九点义诊", "b")
    await push.dispatcher(push_templates=TEMPLATES).drain()
    kinds = {r.openid: r.kind for r in push.fake.sends()}
    assert kinds == {"o-old": "template", "o-edge": "template"}
    assert push.fake.refused == [("custom", 45015)]  # the edge case tried custom first
    rows = await push.rows()
    assert rows["a"].channel == rows["b"].channel == "template"
    assert push.fake.sends("template")[0].body["template_id"] == "TPL-GENERIC"


async def test_subscription_notice_fields_fit_and_refusal_goes_to_the_inbox(push):
    await push.resident("o-sub", seen_hours_ago=None)
    await push.resident("o-no", seen_hours_ago=None)
    long = "您反映的“楼道灯不亮”已由汇侨北社区居委会受理,预计三天内处理完毕"
    await push.notice("o-sub", long, "s1")
    await push.notice("o-no", long, "s2")
    push.fake.fail_for[("subscribe", "o-no")] = 43101  # o-no refused subscriptions
    d = push.dispatcher(push_subscribe_templates={"reminder": "SUB-1"})
    await d.drain()
    [got] = push.fake.sends("subscribe")
    assert got.openid == "o-sub"
    assert len(got.body["data"]["thing1"]["value"]) <= 20  # thing <= 20 chars, else 47003
    rows = await push.rows()
    assert rows["s1"].status == OutboxStatus.SENT and rows["s1"].channel == "subscribe"
    assert rows["s2"].status == OutboxStatus.INBOX


async def test_no_channel_waits_in_the_inbox_and_is_shown_when_the_resident_writes(push):
    await push.resident("o-quiet", seen_hours_ago=100)
    await push.notice("o-quiet", "您的候补已转为报名成功:亲子阅读会", "n1", kind="promotion")
    await push.notice("o-quiet", "您的诉求有了新回复", "n2", kind="appeal_update")
    await push.dispatcher().drain()  # no template configured, window closed
    assert push.fake.sends() == []
    rows = await push.rows()
    assert {rows["n1"].status, rows["n2"].status} == {OutboxStatus.INBOX}

    reply = await push.wx.say("o-quiet", "你好")
    assert reply.startswith("你有2条新通知")
    assert "亲子阅读会" in reply and "新回复" in reply
    assert "您好" in reply  # the answer to what they said follows
    rows = await push.rows()
    assert {rows["n1"].status, rows["n2"].status} == {OutboxStatus.SENT}
    assert rows["n1"].channel == "inbox"
    again = await push.wx.say("o-quiet", "你好")
    assert "新通知" not in again  # read once, never again


async def test_quota_error_pauses_that_channel_and_resumes_after_reset(push):
    for i in range(5):
        await push.resident(f"o-q{i}")
        await push.notice(f"o-q{i}", f"通知{i}", f"q{i}")
    push.fake.quota_per_minute = 2
    d = push.dispatcher(push_concurrency=1)
    await d.drain()
    assert len(push.fake.sends()) == 2
    assert ("custom", 45011) in push.fake.refused
    rows = list((await push.rows()).values())
    waiting = [r for r in rows if r.status == OutboxStatus.PENDING]
    assert len(waiting) == 3
    # Paused for every worker until the next minute: nothing is even tried meanwhile.
    assert await push.store.get("push:pause:custom")
    refused = len(push.fake.refused)
    other = push.dispatcher()
    assert await other.drain() == 0
    assert all(r.due_at > utcnow() for r in waiting)
    # The quota resets (a new minute): the rows go out, each once.
    push.fake.quota_per_minute = 0
    await push.store.delete("push:pause:custom")
    later = utcnow() + timedelta(minutes=1, seconds=2)
    await other.drain(now=later)
    assert len(push.fake.refused) == refused
    assert sorted(push.fake.per_openid().values()) == [1] * 5


async def test_daily_quota_pauses_until_local_midnight(push):
    await push.resident("o-d")
    await push.notice("o-d", "每日限额", "d1")
    push.fake.quota_per_day = 0
    push.fake.fail["custom"] = [45009]
    await push.dispatcher().drain()
    row = (await push.rows())["d1"]
    assert row.status == OutboxStatus.PENDING and "45009" in row.last_error
    hours = (row.due_at - utcnow()).total_seconds() / 3600
    assert 0 < hours <= 24


async def test_token_expiry_mid_batch_refreshes_once(push):
    for i in range(30):
        await push.resident(f"o-t{i}")
        await push.notice(f"o-t{i}", f"第{i}条", f"t{i}")
    d = push.dispatcher(push_batch_size=10, push_concurrency=5)
    await d.run_once()
    assert push.fake.token_requests == 1
    push.fake.expire_tokens()  # WeChat now answers 42001 to the token in everybody's hands
    await d.drain()
    assert push.fake.token_requests == 2  # one refresh, not one per concurrent send
    assert sorted(push.fake.per_openid().values()) == [1] * 30
    assert {c for _, c in push.fake.refused} == {42001}


async def test_transient_errors_retry_with_backoff_then_give_up(push):
    await push.resident("o-busy")
    await push.resident("o-dead")
    await push.notice("o-busy", "系统繁忙后重试", "b1")
    await push.notice("o-dead", "一直失败", "b2")
    d = push.dispatcher(push_backoff_seconds=10, push_max_attempts=3)
    push.fake.fail["custom"] = [-1, -1]  # two busy answers, then fine
    await d.drain()
    rows = await push.rows()
    assert rows["b1"].status == rows["b2"].status == OutboxStatus.PENDING
    assert 5 < (rows["b1"].due_at - utcnow()).total_seconds() <= 10  # backoff 10 s, 20 s, ...
    push.fake.fail["custom"] = [-1, -1, -1]
    t = utcnow()
    for step in (15, 40, 80):
        await d.drain(now=t + timedelta(seconds=step))
    rows = await push.rows()
    statuses = {rows["b1"].status, rows["b2"].status}
    assert statuses == {OutboxStatus.SENT, OutboxStatus.FAILED}
    failed = rows["b1"] if rows["b1"].status == OutboxStatus.FAILED else rows["b2"]
    assert failed.attempts == 3 and "gave up" in failed.last_error
    assert len(push.fake.sends()) == 1


async def test_timeout_is_unknown_and_never_resent(push):
    await push.resident("o-slow")
    await push.notice("o-slow", "慢", "u1")
    push.fake.latency = 1.5
    d = push.dispatcher(wechat_timeout_seconds=0.5)
    await d.drain()
    await asyncio.sleep(1.2)  # the fake got it after all
    row = (await push.rows())["u1"]
    assert row.status == OutboxStatus.UNKNOWN and "not resent" in row.last_error
    push.fake.latency = 0
    await d.drain(now=utcnow() + timedelta(hours=1))
    await d.reconcile(now=utcnow() + timedelta(hours=1))
    assert len(push.fake.sends()) == 1  # shown once; we never send it again


async def test_timeout_with_a_delivery_check_settles_on_the_servers_answer(push):
    await push.resident("o-slow")
    await push.resident("o-lost")
    await push.notice("o-slow", "慢", "u1")
    await push.notice("o-lost", "丢", "u2")
    push.fake.latency = 1.0
    push.fake.fail_for[("custom", "o-lost")] = -1  # refused before it was ever recorded
    d = push.dispatcher(wechat_timeout_seconds=0.4, wechat_delivery_check=True,
                        push_backoff_seconds=30)
    await d.drain()
    await asyncio.sleep(0.8)
    rows = await push.rows()
    assert rows["u1"].status == OutboxStatus.SENT  # the server says it got it: not resent
    assert rows["u2"].status == OutboxStatus.PENDING  # never got it: sent again later
    assert push.fake.per_openid() == {"o-slow": 1} and push.fake.duplicates == []


async def test_reconciliation_of_a_dead_workers_rows(push):
    for i in range(3):
        await push.resident(f"o-r{i}")
        await push.notice(f"o-r{i}", f"对账{i}", f"r{i}")
    # A worker claimed three rows, put one on the wire, and died.
    from models import outbox as ob
    old = utcnow() - timedelta(minutes=10)
    claimed = await ob.claim_due("dead-1", utcnow(), 10)
    assert len(claimed) == 3
    await Outbox.filter(claim="dead-1").update(claimed_at=old)
    await ob.mark_wire(claimed[0].id, "dead-1", old)
    d = push.dispatcher()
    # A live worker does not touch in-flight rows before they are stale...
    assert await d.drain() == 0
    done = await d.reconcile(now=utcnow())
    assert done["reset"] == 2 and done["unknown"] == 1
    await d.drain()
    rows = await push.rows()
    assert rows["r0"].status == OutboxStatus.UNKNOWN  # may have been shown: never resent
    assert rows["r1"].status == rows["r2"].status == OutboxStatus.SENT
    assert sorted(push.fake.per_openid()) == ["o-r1", "o-r2"]
    # ...and the dead worker, were it only slow, can no longer send or overwrite.
    assert not await ob.mark_wire(claimed[1].id, "dead-1", utcnow())


async def test_reconciliation_with_a_delivery_check(push):
    for i in range(2):
        await push.resident(f"o-c{i}")
        await push.notice(f"o-c{i}", f"核对{i}", f"c{i}")
    from models import outbox as ob
    old = utcnow() - timedelta(minutes=10)
    claimed = await ob.claim_due("dead-2", utcnow(), 10)
    await Outbox.filter(claim="dead-2").update(claimed_at=old)
    for row in claimed:
        await ob.mark_wire(row.id, "dead-2", old)
    d = push.dispatcher(wechat_delivery_check=True)
    # WeChat got the first one before the worker died, not the second.
    await d.api.send_text(claimed[0].recipient, claimed[0].text, client_id=str(claimed[0].id))
    done = await d.reconcile()
    assert done["sent"] == 1 and done["resent"] == 1
    await d.drain()
    assert push.fake.per_openid() == {"o-c0": 1, "o-c1": 1}


async def test_concurrent_dispatchers_never_send_a_row_twice(push):
    n = 120
    for i in range(n):
        await push.resident(f"o-p{i}")
        await push.notice(f"o-p{i}", f"并发{i}", f"p{i}")
    push.fake.latency = 0.005
    workers = [push.dispatcher(push_batch_size=7, push_concurrency=4) for _ in range(4)]
    await asyncio.gather(*(w.drain() for w in workers))
    assert sorted(push.fake.per_openid().values()) == [1] * n
    assert await Outbox.filter(status=OutboxStatus.SENT).count() == n


async def test_rate_limit_per_minute_is_shared_by_all_workers(push):
    for i in range(10):
        await push.resident(f"o-l{i}")
        await push.notice(f"o-l{i}", f"限速{i}", f"l{i}")
    a = push.dispatcher(push_rate_per_minute=4)
    b = push.dispatcher(push_rate_per_minute=4)
    await asyncio.gather(a.drain(), b.drain())
    assert len(push.fake.sends()) == 4
    pending = await Outbox.filter(status=OutboxStatus.PENDING).all()
    assert len(pending) == 6 and all(r.attempts == 0 for r in pending)
    assert all("rate limit" in r.last_error for r in pending)


async def test_unknown_recipient_and_unfollowed_go_to_the_inbox(push):
    await push.resident("o-gone")
    await push.notice("o-gone", "已取关", "g1")
    push.fake.fail["custom"] = [43004]
    await push.dispatcher().drain()
    assert (await push.rows())["g1"].status == OutboxStatus.INBOX


async def test_in_process_dispatcher_sends_late_replies(backend, tmp_path, request, fake,
                                                        app_client):
    from tests.push_fixtures import push_settings
    settings = push_settings(backend, tmp_path, request, fake, push_in_process=True)
    client = await app_client(settings)
    from tests.wx import WeChat
    wx = WeChat(client, settings.wechat_token, settings.wechat_aes_key, settings.wechat_appid)
    from models.outbox import enqueue, notice
    await wx.say("o-late", "你好")  # opens the customer-service window
    await enqueue(notice("o-late", "late_reply", "迟到的回复", "late:x"))
    for _ in range(100):
        if fake.sends():
            break
        await asyncio.sleep(0.05)
    assert [r.text for r in fake.sends()] == ["迟到的回复"]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_webhook_settings_never_start_the_dispatcher(client, settings):
    from bot.jobs import DISPATCHER
    assert settings.push_in_process is False
    assert client.server.app[DISPATCHER] is not None  # built, not running: tests stay fast


async def test_rows_stuck_past_the_limit_are_flagged_and_counted(push, backend, tmp_path):
    await push.resident("o-stuck")
    await push.notice("o-stuck", "卡住了", "st1")
    await Outbox.filter(dedupe_key="st1").update(created_at=utcnow() - timedelta(hours=7),
                                                 due_at=utcnow() + timedelta(hours=1))
    d = push.dispatcher(push_stuck_seconds=6 * 3600)
    assert (await d.reconcile())["flagged"] == 1
    assert (await d.reconcile())["flagged"] == 0  # flagged once
    from models.outbox import status_counts
    counts = await status_counts()
    assert counts["pending"] == 1 and counts["flagged"] == 1
    if backend == "sqlite":  # the operator's view of the same numbers
        import os
        import sys

        from bot.config import ROOT
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "main.py", "outbox", "status", cwd=ROOT,
            env=dict(os.environ, DATABASE_URL=push.settings.database_url),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()[-500:]
        assert "flagged    1" in out.decode() and "pending    1" in out.decode()


async def test_an_operator_resends_an_unknown_notice_once(push, backend):
    from models.outbox import resend
    from tests.conftest import run_cli
    await push.resident("o-lost", seen_hours_ago=2)
    await push.notice("o-lost", "您的兑换码明天到期,有问题打13812345678", "u1")
    await push.notice("o-lost", "已送达的通知", "u2")
    await Outbox.filter(dedupe_key="u1").update(status=OutboxStatus.UNKNOWN, attempts=1,
                                                 last_error="timeout", wire_at=utcnow())
    d = push.dispatcher()
    await d.drain()
    assert [s.text for s in push.fake.sends()] == ["已送达的通知"]  # unknown is never resent
    rows = await push.rows()
    lost, sent = rows["u1"].id, rows["u2"].id

    if backend == "sqlite":  # the operator's way: look, then resend by id
        url = push.settings.database_url
        listed = run_cli(url, "outbox", "list").stdout
        assert f"{lost}\to-lost\treminder\t" in listed and "timeout" in listed
        assert "138****5678" in listed and "13812345678" not in listed
        assert [line.split("\t")[0] for line in listed.splitlines()] == [str(lost)]
        assert "已重新排队 1 条" in run_cli(url, "outbox", "resend", str(lost)).stdout
        bad = run_cli(url, "outbox", "resend", str(sent), "999999", ok=False)
        assert bad.returncode != 0 and f"没有改动:{sent} 999999" in bad.stderr
    else:
        assert await resend([lost, sent, 999999]) == ([lost], [sent, 999999])
    assert (await push.rows())["u2"].status == OutboxStatus.SENT  # a refused id is untouched

    assert await d.drain() == 1
    assert [s.text for s in push.fake.sends()] == ["已送达的通知",
                                                   "您的兑换码明天到期,有问题打13812345678"]
    row = (await push.rows())["u1"]
    assert (row.status, row.attempts) == (OutboxStatus.SENT, 1)
    assert await resend([lost]) == ([], [lost])  # sent now: not again
