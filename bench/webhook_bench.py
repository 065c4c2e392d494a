"""Webhook load benchmark: the full bot path against a bare wechatpy server.

Posts signed, encrypted (safe-mode) messages with 50 concurrent connections and reports
req/s, p50, p99 and the server's CPU per request for:
  * bare: an aiohttp server that only verifies, decrypts, parses, replies and encrypts;
  * full / 帮助: the real app on PostgreSQL + Redis, menu reply;
  * full / 积分: the real app, the points balance read path (classifier + database);
each asked in 1,000 phrasings, every one checked to reach its path before the timed run,
each with 1 and with 2 server processes (the bare server runs the same way as the bot:
uvloop, SO_REUSEPORT). Both servers stay up; each round loads the three back to back and the
ratio is taken within the round; the table gives medians over the rounds. Also reports the
time from starting `main.py serve` to its first answer.

    .venv/bin/python bench/webhook_bench.py [--rounds 5] [--requests 4000] [--connections 50]
                                            [--workers 1,2]

Needs PostgreSQL and Redis (make services). Uses its own database, yunfanglin_bench.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
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


# Each path is asked in many ways (openers x phrasings x endings, 1,000 texts), as residents
# do: no cache can answer a run from a handful of repeated texts.
OPENERS = ["", "请问", "你好,", "麻烦问下", "想问问", "阿姨想问", "喂,", "小助手,", "同志你好,", "我想知道"]
ENDINGS = ["", "?", "呀", "啊", "。", "谢谢", "呢", "哦", "!", "啦"]
PATHS = {
    "帮助": (["帮助", "菜单", "功能介绍", "不会用", "点样用", "有什么功能", "你可以做什么", "使用说明",
              "怎么用这个", "有乜嘢功能"], "我可以帮您办这些事"),
    "积分": (["我有多少积分", "积分还有多少", "查下我的积分", "我嘅积分有几多", "我现在有几多分", "积分余额",
              "帮我查积分", "我的积分是多少", "积分剩多少", "查一下积分"], "您现在有"),
}


def phrasings(path: str) -> list[str]:
    cores, _ = PATHS[path]
    texts = [o + c + e for o in OPENERS for c in cores for e in ENDINGS]
    random.Random(7).shuffle(texts)
    return texts


def bodies(n: int, texts: list[str], offset: int = 0) -> list[tuple[dict, bytes]]:
    """Distinct messages (unique MsgIds, so dedupe never short-cuts), encrypted up front."""
    crypto = WeChatCrypto(TOKEN, AES_KEY, APPID)
    out = []
    base = int(time.time() * 1000) + offset
    for i in range(n):
        openid = f"o-bench-{i % RESIDENTS:04d}"
        content = texts[(offset + i) % len(texts)]
        xml = (f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
               f"</FromUserName><CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]>"
               f"</MsgType><Content><![CDATA[{content}]]></Content><MsgId>{base + i}</MsgId></xml>")
        ts, nonce = str(int(time.time())), str(1000000 + offset + i)
        enc = crypto.encrypt_message(xml, nonce, ts)
        root = ET.fromstring(enc)
        query = {"signature": sign(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce,
                 "openid": openid, "encrypt_type": "aes", "msg_signature": root.findtext("MsgSignature")}
        out.append((query, enc.encode()))
    return out


async def check_answers(url: str, messages: list[tuple[dict, bytes]], marker: str) -> None:
    """Before timing: every phrasing must really reach the path being measured."""
    crypto = WeChatCrypto(TOKEN, AES_KEY, APPID)
    async with aiohttp.ClientSession() as session:
        for query, body in messages:
            async with session.post(url, params=query, data=body) as resp:
                enc = await resp.text()
            root = ET.fromstring(enc)
            reply = crypto.decrypt_message(enc, root.findtext("MsgSignature"),
                                           root.findtext("TimeStamp"), root.findtext("Nonce"))
            if marker not in reply:
                raise SystemExit(f"a {marker!r} message was answered otherwise:\n{reply[:200]}")


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
    (query, body), = bodies(1, ["帮助"])
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


def median(values: list[float]) -> float:
    return statistics.median(values)


async def measure(server: Server, messages: list[tuple[dict, bytes]], connections: int) -> dict:
    url = server.base + "/wechat"
    cpu = group_cpu_seconds(server.proc.pid)
    result = await load(url, messages, connections)
    result["cpu_ms"] = (group_cpu_seconds(server.proc.pid) - cpu) * 1000 / len(messages)
    return result


async def compare(env: dict, workers: int, rounds: int, requests: int, connections: int) -> dict:
    """`rounds` rounds; each runs the bare server and both full paths back to back (the order
    turning each round), so a ratio is taken between runs seconds apart: this machine's speed
    drifts by a third over minutes, which would otherwise decide the verdict."""
    names = ["bare", "帮助", "积分"]
    results: dict[str, list[dict]] = {name: [] for name in names}
    bare_cmd = [sys.executable, "bench/bare_server.py", "--workers", str(workers)]
    async with Server(env, workers=workers, cmd=bare_cmd) as bare, \
            Server(env, workers=workers) as full:
        servers = {"bare": bare, "帮助": full, "积分": full}
        texts = {"bare": phrasings("帮助"), "帮助": phrasings("帮助"), "积分": phrasings("积分")}
        for path in ("帮助", "积分"):
            await check_answers(full.base + "/wechat", bodies(len(texts[path]), texts[path],
                                                              offset=10**6), PATHS[path][1])
        for i, name in enumerate(names):  # warm-up
            await load(servers[name].base + "/wechat",
                       bodies(300, texts[name], offset=(2 + i) * 10**6), connections)
        for r in range(rounds):
            order = names[r % 3:] + names[:r % 3]
            for name in order:
                messages = bodies(requests, texts[name], offset=(10 + r * 3 + names.index(name)) * 10**6)
                results[name].append(await measure(servers[name], messages, connections))
            print(f"  workers={workers} round {r + 1}/{rounds}: " + ", ".join(
                f"{n} {results[n][-1]['rps']:.0f} req/s" for n in names), flush=True)
    return results


def floor_met(ratio: float, p99: float) -> bool:
    return ratio >= 0.40 and p99 < 100


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", default="1,2", help="server processes to compare, e.g. 1,2")
    args = parser.parse_args()

    print(f"preparing {RESIDENTS} residents on {PG.rsplit('@', 1)[-1]} ...", flush=True)
    await prepare_database()
    env = {"DATABASE_URL": PG, "REDIS_URL": REDIS, "WECHAT_TOKEN": TOKEN, "WECHAT_AES_KEY": AES_KEY,
           "WECHAT_APPID": APPID, "REDIS_PREFIX": f"yflbench:{uuid.uuid4().hex[:6]}:",
           # the webhook alone: in production the push worker is its own process
           "PUSH_IN_PROCESS": "0"}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    table = {}
    for workers in (int(w) for w in args.workers.split(",")):
        table[workers] = await compare(env, workers, args.rounds, args.requests, args.connections)
    startup = await first_answer(env)

    print(f"\n{started}: {args.rounds} rounds of {args.requests} requests per path, "
          f"{args.connections} connections, PostgreSQL + Redis, safe mode (AES); "
          "load generator on the same machine. Medians over the rounds [lowest-highest].\n")
    print(f"{'workers':>7} {'path':6} {'req/s':>18} {'p50 ms':>7} {'p99 ms':>7} {'cpu ms/req':>10} "
          f"{'vs bare':>15} {'rounds met':>10} errors")
    verdict = True
    for workers, results in table.items():
        bare = [r["rps"] for r in results["bare"]]
        for name, runs in results.items():
            rps = [r["rps"] for r in runs]
            ratios = [x / b for x, b in zip(rps, bare)]
            p99 = median([r["p99"] for r in runs])
            met = "-" if name == "bare" else \
                f"{sum(floor_met(q, r['p99']) for q, r in zip(ratios, runs))} of {len(runs)}"
            if name != "bare":
                verdict &= floor_met(median(ratios), p99)
            print(f"{workers:>7} {name:6} {median(rps):6.0f} [{min(rps):4.0f}-{max(rps):4.0f}] "
                  f"{median([r['p50'] for r in runs]):7.1f} {p99:7.1f} "
                  f"{median([r['cpu_ms'] for r in runs]):10.2f} "
                  f"{median(ratios):5.0%} [{min(ratios):3.0%}-{max(ratios):3.0%}] {met:>10} "
                  f"{sum(r['errors'] for r in runs)}")
    print("\nfloor: the full path at least 40% of the bare server's req/s (same round, same "
          "workers), p99 under 100 ms")
    print(f"floor on the medians: {'met' if verdict else 'MISSED'}")
    print("cpu ms/req: the server's processes only (not PostgreSQL, Redis or the load generator)")
    print(f"start to first answer: {startup:.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
