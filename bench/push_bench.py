"""Broadcast to 15,000 residents: time to queue, then the send rate against the fake server.

Needs PostgreSQL and Redis (`make services`). Usage:
    .venv/bin/python bench/push_bench.py [--residents 15000] [--procs 4] [--latency 0.005]
--procs 0 sends with one dispatcher in this process; N > 0 starts N `main.py worker`
processes (the production shape) and times them until the outbox is empty.
Half the residents wrote within 48 h (customer-service message), half did not (template).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config import Settings  # noqa: E402
from bot.dispatcher import Dispatcher  # noqa: E402
from bot.store import make_store  # noqa: E402
from bot.wechat_api import WeChatAPI  # noqa: E402
from models import db  # noqa: E402
from models.activities import create_activity  # noqa: E402
from models.broadcasts import broadcast_activity, broadcast_reach  # noqa: E402
from models.clock import utcnow  # noqa: E402
from models.demo import seed_places  # noqa: E402
from models.outbox import Outbox, OutboxStatus  # noqa: E402
from models.places import Community, Organisation  # noqa: E402
from models.residents import Resident, add_staff  # noqa: E402
from tests.fake_wechat import FakeWeChat  # noqa: E402

PG = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/yfl_bench_push")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
TEMPLATES = {"*": "TPL-ACTIVITY"}


async def setup(n: int):
    await db.truncate_all()
    await seed_places()
    community = await Community.get(name="汇侨北社区")
    recent, old = utcnow() - timedelta(hours=3), utcnow() - timedelta(days=5)
    await Resident.bulk_create([
        Resident(openid=f"o-bench-{i:06d}", community=community, registered=True, name="居民",
                 last_interaction_at=recent if i % 2 else old) for i in range(n)], batch_size=2000)
    staff = await add_staff("s-bench", "社工小王", await Organisation.get(name="汇侨北社区居委会"))
    activity = await create_activity(title="社区运动会", start_at=utcnow() + timedelta(days=3),
                                     capacity=500, community_id=community.id, place="社区广场")
    return staff, activity


async def wait_empty(timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while await Outbox.filter(status__in=[OutboxStatus.PENDING, OutboxStatus.IN_FLIGHT]).exists():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the outbox to empty")
        await asyncio.sleep(0.1)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--residents", type=int, default=15000)
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--latency", type=float, default=0.005, help="fake server seconds per send")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--batch", type=int, default=200)
    args = p.parse_args()

    await db.recreate_database(PG)
    await db.init_db(PG)
    staff, activity = await setup(args.residents)
    fake = FakeWeChat(latency=args.latency)
    await fake.start()
    prefix = f"yflbench:{uuid.uuid4().hex[:6]}:"

    t0 = time.perf_counter()
    b = await broadcast_activity(activity.id, staff)
    queue_s = time.perf_counter() - t0
    print(f"queued {b.queued} notices in {queue_s:.2f} s "
          f"({b.queued / queue_s:,.0f}/s) — floor: under 10 s")

    t1 = time.perf_counter()
    if args.procs <= 0:
        settings = Settings(database_url=PG, redis_url=REDIS, redis_prefix=prefix,
                            wechat_api_base=fake.url, push_templates=TEMPLATES,
                            push_batch_size=args.batch, push_concurrency=args.concurrency)
        store = make_store(REDIS, prefix)
        api = WeChatAPI(settings, store)
        await Dispatcher(settings, store, api).drain()
        await api.close()
        await store.close()
        shape = "1 dispatcher in this process"
    else:
        import json
        env = dict(os.environ, DATABASE_URL=PG, REDIS_URL=REDIS, REDIS_PREFIX=prefix,
                   WECHAT_API_BASE=fake.url, WECHAT_TEMPLATES=json.dumps(TEMPLATES),
                   PUSH_BATCH_SIZE=str(args.batch), PUSH_CONCURRENCY=str(args.concurrency),
                   PUSH_POLL_SECONDS="0.05")
        logs = [open(f"/tmp/yfl-push-bench-worker-{i}.log", "w") for i in range(args.procs)]
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "main.py", "worker", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=log) for log in logs]
        await wait_empty()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await proc.wait()
        for log in logs:
            log.close()
        shape = f"{args.procs} `main.py worker` processes"
    send_s = time.perf_counter() - t1

    counts = fake.per_openid()
    reach = await broadcast_reach(b.id)
    print(f"sent {len(fake.sends())} in {send_s:.2f} s = {len(fake.sends()) / send_s:,.0f} "
          f"notices/s ({shape}, concurrency {args.concurrency}, fake latency "
          f"{args.latency * 1000:.0f} ms)")
    print(f"by channel: {reach.by_channel}; waiting {reach.waiting}; failed {reach.failed}; "
          f"token requests {fake.token_requests}")
    print(f"residents reached twice: {sum(1 for c in counts.values() if c > 1)}; "
          f"not reached: {args.residents - len(counts)}")
    await fake.stop()
    await db.close_db()


if __name__ == "__main__":
    asyncio.run(main())
