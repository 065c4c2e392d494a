"""How long the appeal periodic job and the staff figures take with many open tickets.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/yfl_bench_appeals .venv/bin/python bench/appeals_bench.py 3000

The database is emptied first: point it at a scratch database.
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import db  # noqa: E402
from models.appeals import NewAppeal, file_appeal, run_appeal_deadlines  # noqa: E402
from models.appeals_admin import appeal_figures  # noqa: E402
from models.clock import utcnow  # noqa: E402
from models.demo import seed_places  # noqa: E402
from models.residents import register_resident  # noqa: E402


async def main(n: int) -> None:
    url = os.environ.get("DATABASE_URL", "sqlite:///tmp/yfl_bench_appeals.sqlite3")
    if url.startswith("postgres"):
        await db.recreate_database(url)
    await db.init_db(url)
    await db.truncate_all()
    communities = await seed_places()
    now = utcnow()
    residents = [await register_resident(f"o-bench-{i}", communities[name], f"居民{i}", f"139{i:08d}")
                 for i, name in enumerate(list(communities) * 25)]
    cats = ["facility", "environment", "safety", "dispute", "policy", "living", "suggestion", "other"]
    t = time.perf_counter()
    for i in range(n):
        await file_appeal(residents[i % len(residents)],
                          NewAppeal(f"测试诉求{i}:楼道灯坏了", cats[i % len(cats)], []),
                          now - timedelta(hours=i % 30))
    filed = time.perf_counter() - t
    t = time.perf_counter()
    first = await run_appeal_deadlines(now)
    run1 = time.perf_counter() - t
    t = time.perf_counter()
    second = await run_appeal_deadlines(now)
    run2 = time.perf_counter() - t
    t = time.perf_counter()
    await appeal_figures(now - timedelta(days=30), now + timedelta(days=1))
    figures = time.perf_counter() - t
    print(f"{url.split('://')[0]}: {n} appeals filed in {filed:.1f} s ({filed / n * 1000:.1f} ms each)")
    print(f"run_appeal_deadlines first run {run1:.2f} s {first}; second run {run2:.2f} s {second}")
    print(f"appeal_figures over {n} appeals: {figures:.2f} s")
    await db.close_db()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
