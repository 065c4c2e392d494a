"""300 residents race for 30 places through the webhook.

On PostgreSQL + Redis the app runs as two real processes sharing one port; on SQLite it is
the single embedded process. Exactly 30 confirmed, the rest waiting in arrival order, nobody
twice, every reply in-band before WeChat's deadline; then 10 cancel at once and exactly 10
are promoted, each told once.
"""
from __future__ import annotations

import uuid

import aiohttp
import pytest

from bench.race import Remote, Server, cancel_all, race
from models import db
from models.activities import Signup, SignupStatus
from models.demo import seed_places
from models.outbox import Outbox
from models.places import Community
from models.residents import Resident
from tests import helpers as h
from tests.conftest import TOKEN
from tests.wx import WeChat

N, PLACES = 300, 30


async def _residents(n: int) -> list[str]:
    community = await Community.get(name="汇侨北社区")
    openids = [f"o-race-{i:03d}" for i in range(n)]
    await Resident.bulk_create([Resident(openid=o, name=f"街坊{i}", phone=f"137{i:08d}",
                                         community=community, registered=True)
                                for i, o in enumerate(openids)])
    return openids


async def _check(openids: list[str], stats, activity_id: int) -> None:
    assert stats.silent == 0, "some replies missed the deadline and went to the outbox"
    assert max(stats.latencies) < 4.0
    signups = await Signup.filter(activity_id=activity_id).order_by("waitlisted_at", "id")
    by_status = {}
    for s in signups:
        by_status.setdefault(s.status, []).append(s)
    assert len(by_status[SignupStatus.CONFIRMED]) == PLACES
    waiting = by_status[SignupStatus.WAITING]
    assert len(waiting) == N - PLACES and len(signups) == N  # nobody twice, nobody lost
    # Arrival order: everyone whose 是 came in an earlier wave waits ahead of later waves.
    wave_of = {o: i for i, wave in enumerate(stats.waves) for o in wave}
    resident_openid = dict(await Resident.filter(openid__in=openids).values_list("id", "openid"))
    waves_in_line = [wave_of[resident_openid[s.resident_id]] for s in waiting]
    assert waves_in_line == sorted(waves_in_line)


async def _cancel_ten(wx, activity_id: int) -> None:
    confirmed = await (Signup.filter(activity_id=activity_id, status=SignupStatus.CONFIRMED)
                       .limit(10).prefetch_related("resident"))
    first_waiting = await (Signup.filter(activity_id=activity_id, status=SignupStatus.WAITING)
                           .order_by("waitlisted_at", "id").limit(10).prefetch_related("resident"))
    stats = await cancel_all(wx, [s.resident.openid for s in confirmed])
    assert stats.silent == 0
    assert await Signup.filter(activity_id=activity_id, status=SignupStatus.CONFIRMED).count() == PLACES
    promoted = await Outbox.filter(kind="promotion").values_list("recipient", flat=True)
    assert sorted(promoted) == sorted(s.resident.openid for s in first_waiting)  # each once


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_race_single_process_sqlite(client, backend):
    openids = await _residents(N)
    act = await h.activity("寒假作业辅导班", capacity=PLACES)
    wx = WeChat(client, TOKEN)
    stats = await race(wx, openids, act.title)
    await _check(openids, stats, act.id)
    await _cancel_ten(wx, act.id)


async def test_race_two_processes_postgres_redis(postgres_url, redis_url):
    await db.init_db(postgres_url)
    try:
        await db.truncate_all()
        await seed_places()
        openids = await _residents(N)
        act = await h.activity("寒假作业辅导班", capacity=PLACES)
        env = {"DATABASE_URL": postgres_url, "REDIS_URL": redis_url, "WECHAT_TOKEN": TOKEN,
               "REDIS_PREFIX": f"yflrace:{uuid.uuid4().hex[:8]}:"}
        async with Server(env, workers=2) as server:
            pids = set()
            for _ in range(40):  # new connections spread over both processes
                async with aiohttp.ClientSession() as probe:
                    async with probe.get(server.base + "/healthz") as resp:
                        pids.add((await resp.json())["pid"])
            assert len(pids) == 2
            async with aiohttp.ClientSession() as session:
                wx = WeChat(Remote(session, server.base), TOKEN)
                stats = await race(wx, openids, act.title)
                await _check(openids, stats, act.id)
                await _cancel_ten(wx, act.id)
    finally:
        await db.close_db()
