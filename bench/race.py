"""The last-place race, shared by tests/test_race.py and bench/race_bench.py.

Many residents sign up for one activity at once through the webhook ("报名<title>"), then
confirm ("是") in waves, so that arrival order on the waiting list can be checked.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RaceStats:
    latencies: list[float] = field(default_factory=list)
    silent: int = 0  # replies that were `success` (answered late, through the outbox)
    settle_seconds: float = 0.0
    waves: list[list[str]] = field(default_factory=list)

    def p(self, q: float) -> float:
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))] if data else 0.0


async def _timed(stats: RaceStats, coro):
    start = time.perf_counter()
    reply = await coro
    stats.latencies.append(time.perf_counter() - start)
    if reply is None:
        stats.silent += 1
    return reply


async def race(wx, openids: list[str], title: str, waves: int = 3) -> RaceStats:
    stats = RaceStats()
    started = time.perf_counter()
    await asyncio.gather(*(_timed(stats, wx.say(o, f"报名{title}")) for o in openids))
    size = -(-len(openids) // waves)
    for i in range(waves):  # each wave of confirmations arrives after the previous settled
        wave = openids[i * size:(i + 1) * size]
        stats.waves.append(wave)
        await asyncio.gather(*(_timed(stats, wx.say(o, "是")) for o in wave))
    stats.settle_seconds = time.perf_counter() - started
    return stats


async def cancel_all(wx, openids: list[str]) -> RaceStats:
    stats = RaceStats()
    started = time.perf_counter()
    await asyncio.gather(*(_timed(stats, wx.say(o, "取消报名")) for o in openids))
    await asyncio.gather(*(_timed(stats, wx.say(o, "是")) for o in openids))
    stats.settle_seconds = time.perf_counter() - started
    return stats


class Remote:
    """Lets tests/wx.WeChat post to a server in another process (it expects client.post)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    def post(self, path: str, **kwargs):
        return self.session.post(self.base + path, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python main.py serve --workers N` in its own process group."""

    def __init__(self, env: dict, workers: int) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        self.workers = workers
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> "Server":
        self.proc = subprocess.Popen([sys.executable, "main.py", "serve", "--workers",
                                      str(self.workers)], cwd=ROOT, env=self.env,
                                     start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        async with aiohttp.ClientSession() as session:
            for _ in range(120):
                try:
                    async with session.get(self.base + "/healthz") as resp:
                        if resp.status == 200:
                            # every worker answers once it is up; give the others a moment
                            await asyncio.sleep(1.0)
                            return self
                except aiohttp.ClientError:
                    pass
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stderr.read().decode()[-2000:])
                await asyncio.sleep(0.25)
        raise RuntimeError("server did not start")

    async def __aexit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
