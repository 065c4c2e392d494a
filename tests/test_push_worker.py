"""`python main.py worker` as a real separate process on PostgreSQL + Redis, killed with SIGKILL
in the middle of a 2,000-notice batch and started again: nobody gets a notice twice."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import timedelta

import pytest

from bot.config import ROOT
from models.clock import utcnow
from models.outbox import Outbox, OutboxStatus, enqueue, notice
from models.places import Community
from models.residents import Resident
from tests.push_fixtures import fake, push  # noqa: F401

pytestmark = pytest.mark.parametrize("backend", ["postgres"])

N = 2000
CONCURRENCY = 8


def _env(push, **extra) -> dict:
    s = push.settings
    env = dict(os.environ, DATABASE_URL=s.database_url, REDIS_URL=s.redis_url,
               REDIS_PREFIX=s.redis_prefix, WECHAT_API_BASE=push.fake.url,
               WECHAT_APPID=s.wechat_appid, WECHAT_TIMEOUT_SECONDS="3",
               PUSH_CONCURRENCY=str(CONCURRENCY), PUSH_BATCH_SIZE="50", PUSH_POLL_SECONDS="0.1",
               PUSH_INFLIGHT_STALE_SECONDS="4", PUSH_BACKOFF_SECONDS="0.5")
    env.update({k: str(v) for k, v in extra.items()})
    return env


async def _start(env: dict) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "main.py", "worker", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _residents_and_notices(n: int) -> list[str]:
    community = await Community.get(name="汇侨北社区")
    seen = utcnow() - timedelta(hours=1)
    openids = [f"o-kill-{i:05d}" for i in range(n)]
    await Resident.bulk_create([Resident(openid=o, community=community, registered=True,
                                         last_interaction_at=seen) for o in openids],
                               batch_size=1000)
    await enqueue(*[notice(o, "reminder", f"第{i}条提醒", f"kill:{i}")
                    for i, o in enumerate(openids)])
    return openids


async def _stop(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, err.decode()[-2000:]


@pytest.mark.parametrize("delivery_check", [True, False], ids=["delivery-check", "real-wechat"])
async def test_sigkill_mid_batch_then_restart_sends_each_notice_at_most_once(push, delivery_check):
    openids = await _residents_and_notices(N)
    push.fake.latency = 0.03  # about 8 requests on the wire at any moment
    env = _env(push, WECHAT_DELIVERY_CHECK=int(delivery_check))

    worker = await _start(env)
    await _until(lambda: _async(len(push.fake.sends()) >= 500), 60, "the first 500 sends")
    # Kill while rows are claimed and on the wire (not between two batches): the fake
    # holds its answers from now on, so the batch being sent cannot finish first.
    push.fake.latency = 5
    await _until(_in_flight, 30, "rows in flight")
    await asyncio.sleep(0.2)  # the rest of the batch reaches the wire too
    worker.send_signal(signal.SIGKILL)
    await worker.wait()
    assert worker.returncode == -signal.SIGKILL
    left = await Outbox.filter(status__in=[OutboxStatus.PENDING, OutboxStatus.IN_FLIGHT]).count()
    stuck = await Outbox.filter(status=OutboxStatus.IN_FLIGHT).count()
    assert 0 < left < N and stuck > 0  # killed in the middle, with rows in flight
    sent_before = len(push.fake.sends())

    push.fake.latency = 0.03
    worker = await _start(env)
    await _until(lambda: _done(), 90, "the batch to finish after the restart")
    code, err = await _stop(worker)
    assert code == 0, err  # SIGTERM: a clean stop

    counts = push.fake.per_openid()
    assert push.fake.duplicates == []
    assert max(counts.values()) == 1, [o for o, c in counts.items() if c > 1][:5]
    rows = {r.recipient: r for r in await Outbox.all()}
    unknown = [o for o, r in rows.items() if r.status == OutboxStatus.UNKNOWN]
    if delivery_check:
        # The server can say what it got: every resident gets the notice exactly once.
        assert sorted(counts) == openids
        assert {r.status for r in rows.values()} == {OutboxStatus.SENT}
    else:
        # Real WeChat cannot say: the few rows on the wire at the kill are left alone.
        assert len(unknown) <= CONCURRENCY
        sent = [o for o, r in rows.items() if r.status == OutboxStatus.SENT]
        assert len(sent) + len(unknown) == N
        assert all(counts.get(o) == 1 for o in sent)
        assert set(counts) - set(sent) <= set(unknown)
    print(f"\nkilled after {sent_before} sends; in flight at the kill {stuck}; "
          f"unknown after restart {len(unknown)}; delivered {len(counts)}/{N}")


async def _async(value):
    return value


async def _in_flight() -> bool:
    return await Outbox.filter(status=OutboxStatus.IN_FLIGHT).exists()


async def _done() -> bool:
    return not await Outbox.filter(status__in=[OutboxStatus.PENDING,
                                               OutboxStatus.IN_FLIGHT]).exists()


async def test_worker_runs_periodic_jobs_through_saq_and_sends_them(push):
    from models.activities import Signup, SignupStatus
    from tests import helpers as h
    act = await h.activity("明天的义诊", start_in=timedelta(hours=18))
    r = await push.resident("o-saq", seen_hours_ago=1)
    await Signup.create(activity=act, resident=r, participant_key="self",
                        participant_name="测试居民", status=SignupStatus.CONFIRMED)
    worker = await _start(_env(push))
    try:
        from bot.jobs import saq_queue
        queue = saq_queue(push.settings)
        job = await queue.enqueue("periodic_activity_reminders", timeout=60)
        await job.refresh(until_complete=30)
        assert job.status == "complete", job.error
        await _until(lambda: _async(bool(push.fake.sends())), 30, "the reminder")
        [got] = push.fake.sends()
        assert got.openid == "o-saq" and "明天的义诊" in got.text
        await queue.disconnect()
    finally:
        code, err = await _stop(worker)
    assert code == 0, err
