"""Webhook load benchmark: the full bot path against a bare wechatpy server.

Posts signed, encrypted (safe-mode) messages with 50 concurrent connections and reports
req/s, p50, p99 and the server's CPU per request for:
  * bare: an aiohttp server that only verifies, decrypts, parses, replies and encrypts;
  * full / 帮助: the real app on PostgreSQL + Redis, menu reply;
  * full / 积分查询: the real app, the points balance read path (classifier + database);
each with 1 and with 2 server processes (the bare server runs the same way as the bot:
uvloop, SO_REUSEPORT). Also reports the time from starting `main.py serve` to its first answer.

    .venv/bin/python bench/webhook_bench.py [--requests 4000] [--connections 50] [--workers 1,2]

Needs PostgreSQL and Redis (make services). Uses its own database, yunfanglin_bench.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
from wechatpy.crypto import WeChatCrypto

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.race import Server  # noqa: E402
from bot.chat import sign  # noqa: E402

TOKEN = "benchtoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx2c2769f8efd9abc2"
PG = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/yunfanglin_bench")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
RESIDENTS = 1000


def bodies(n: int, content: str) -> list[tuple[dict, bytes]]:
    """Distinct messages (unique MsgIds, so dedupe never short-cuts), encrypted up front."""
    crypto = WeChatCrypto(TOKEN, AES_KEY, APPID)
    out = []
    base = int(time.time() * 1000)
    for i in range(n):
        openid = f"o-bench-{i % RESIDENTS:04d}"
        xml = (f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
               f"</FromUserName><CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]>"
               f"</MsgType><Content><![CDATA[{content}]]></Content><MsgId>{base + i}</MsgId></xml>")
        ts, nonce = str(int(time.time())), str(1000000 + i)
        enc = crypto.encrypt_message(xml, nonce, ts)
        root = ET.fromstring(enc)
        query = {"signature": sign(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce,
                 "openid": openid, "encrypt_type": "aes", "msg_signature": root.findtext("MsgSignature")}
        out.append((query, enc.encode()))
    return out


async def load(url: str, messages: list[tuple[dict, bytes]], connections: int) -> dict:
    queue: asyncio.Queue = asyncio.Queue()
    for m in messages:
        queue.put_nowait(m)
    latencies: list[float] = []
    errors = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while not queue.empty():
            query, body = queue.get_nowait()
            start = time.perf_counter()
            async with session.post(url, params=query, data=body) as resp:
                text = await resp.text()
            latencies.append(time.perf_counter() - start)
            if resp.status != 200 or "<Encrypt>" not in text:
                errors += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(0.99 * len(latencies)) - 1] * 1000, "errors": errors}


async def prepare_database() -> None:
    from models.db import recreate_database
    await recreate_database(PG)
    from models import db
    from models.demo import seed_places
    from models.places import Community
    from models.points import Source, post_entry
    from models.residents import Resident
    await db.init_db(PG)
    try:
        await seed_places()
        community = await Community.get(name="汇侨北社区")
        await Resident.bulk_create([Resident(openid=f"o-bench-{i:04d}", name=f"街坊{i}",
                                             phone=f"136{i:08d}", community=community,
                                             registered=True) for i in range(RESIDENTS)])
        for r in await Resident.all().limit(RESIDENTS):
            await post_entry(r.id, 100, reason="志愿服务", source=Source.STAFF_AWARD,
                             key=f"bench:{r.id}")
    finally:
        await db.close_db()


async def first_answer(env: dict) -> float:
    """Seconds from starting `main.py serve` to the first answered message."""
    started = time.perf_counter()
    server = Server(env)
    server.start()
    (query, body), = bodies(1, "帮助")
    try:
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.post(server.base + "/wechat", params=query, data=body) as resp:
                        if resp.status == 200:
                            return time.perf_counter() - started
                except aiohttp.ClientError:
                    await asyncio.sleep(0.02)
    finally:
        server.stop()


def group_cpu_seconds(pgid: int) -> float:
    """CPU time used so far by every live process in the server's process group."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields[2] is the process group (stat field 5)
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", default="1,2", help="server processes to compare, e.g. 1,2")
    args = parser.parse_args()

    print(f"preparing {RESIDENTS} residents on {PG.rsplit('@', 1)[-1]} ...", flush=True)
    await prepare_database()
    env = {"DATABASE_URL": PG, "REDIS_URL": REDIS, "WECHAT_TOKEN": TOKEN, "WECHAT_AES_KEY": AES_KEY,
           "WECHAT_APPID": APPID, "REDIS_PREFIX": f"yflbench:{uuid.uuid4().hex[:6]}:",
           # the webhook alone: in production the push worker is its own process
           "PUSH_IN_PROCESS": "0"}
    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        runs = [("bare (wechatpy only)", [sys.executable, "bench/bare_server.py",
                                          "--workers", str(workers)], "帮助"),
                ("full: 帮助 (menu)", None, "帮助"),
                ("full: 我有多少积分 (read path)", None, "我有多少积分")]
        base = None
        for name, cmd, content in runs:
            async with Server(env, workers=workers, cmd=cmd) as server:
                await load(server.base + "/wechat", bodies(300, content), args.connections)  # warm-up
                cpu = group_cpu_seconds(server.proc.pid)
                result = await load(server.base + "/wechat", bodies(args.requests, content),
                                    args.connections)
                result["cpu_ms"] = (group_cpu_seconds(server.proc.pid) - cpu) * 1000 / args.requests
            base = base or result["rps"]
            rows.append((workers, name, result, result["rps"] / base))
    startup = await first_answer(env)

    print(f"\n{args.requests} requests per run, {args.connections} connections, PostgreSQL + Redis, "
          "safe mode (AES); load generator on the same machine\n")
    print(f"{'workers':>7} {'path':32} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'cpu ms/req':>10} "
          f"{'vs bare':>8} {'floor':>6} errors")
    for workers, name, r, ratio in rows:
        floor = "-" if name.startswith("bare") else (
            "met" if ratio >= 0.40 and r["p99"] < 100 else "MISSED")
        print(f"{workers:>7} {name:32} {r['rps']:7.0f} {r['p50']:7.1f} {r['p99']:7.1f} "
              f"{r['cpu_ms']:10.2f} {ratio:8.0%} {floor:>6} {r['errors']}")
    print("\nfloor: at least 40% of the bare server's req/s, p99 under 100 ms (same workers)")
    print("cpu ms/req: the server's processes only (not PostgreSQL, Redis or the load generator)")
    print(f"start to first answer: {startup:.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
