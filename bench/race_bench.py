"""The last-place race as a benchmark: 300 residents, 30 places, through the webhook.

Runs the app as `main.py serve --workers 2` on PostgreSQL + Redis (as tests/test_race.py
does) and prints the time for all 300 to settle (signup, then confirmations in three waves),
the p50 and p99 reply times, and the time for 10 concurrent cancellations with promotion.

    .venv/bin/python bench/race_bench.py [--residents 300] [--places 30] [--workers 2]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.race import Remote, Server, cancel_all, race  # noqa: E402
from models import db  # noqa: E402
from models.activities import Signup, SignupStatus, create_activity  # noqa: E402
from models.clock import utcnow  # noqa: E402
from models.demo import seed_places  # noqa: E402
from models.residents import Resident  # noqa: E402
from tests.wx import WeChat  # noqa: E402

PG = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/yunfanglin_bench")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
TOKEN = "benchtoken"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--residents", type=int, default=300)
    parser.add_argument("--places", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    await db.recreate_database(PG)
    await db.init_db(PG)
    try:
        communities = await seed_places()
        community = communities["汇侨北社区"]
        openids = [f"o-bench-race-{i:04d}" for i in range(args.residents)]
        await Resident.bulk_create([Resident(openid=o, name=f"街坊{i}", phone=f"135{i:08d}",
                                             community=community, registered=True)
                                    for i, o in enumerate(openids)])
        act = await create_activity(title="寒假作业辅导班", community=community,
                                    start_at=utcnow() + timedelta(days=3), capacity=args.places)
        env = {"DATABASE_URL": PG, "REDIS_URL": REDIS, "WECHAT_TOKEN": TOKEN,
               "REDIS_PREFIX": f"yflrace:{uuid.uuid4().hex[:6]}:", "PUSH_IN_PROCESS": "0"}
        async with Server(env, workers=args.workers) as server:
            async with aiohttp.ClientSession() as session:
                wx = WeChat(Remote(session, server.base), TOKEN)
                stats = await race(wx, openids, act.title)
                confirmed = await (Signup.filter(activity_id=act.id, status=SignupStatus.CONFIRMED)
                                   .limit(10).prefetch_related("resident"))
                cancel = await cancel_all(wx, [s.resident.openid for s in confirmed])
        counts = {s: await Signup.filter(activity_id=act.id, status=s).count()
                  for s in (SignupStatus.CONFIRMED, SignupStatus.WAITING)}
    finally:
        await db.close_db()
    print(f"{args.residents} residents, {args.places} places, {args.workers} processes, "
          f"PostgreSQL + Redis")
    print(f"settled in {stats.settle_seconds:.2f} s ({len(stats.latencies)} messages); "
          f"reply p50 {stats.p(0.5) * 1000:.0f} ms, p99 {stats.p(0.99) * 1000:.0f} ms, "
          f"max {max(stats.latencies) * 1000:.0f} ms; answered late: {stats.silent}")
    print(f"10 concurrent cancellations settled in {cancel.settle_seconds:.2f} s; "
          f"confirmed {counts[SignupStatus.CONFIRMED]}, waiting {counts[SignupStatus.WAITING]}")


if __name__ == "__main__":
    asyncio.run(main())
