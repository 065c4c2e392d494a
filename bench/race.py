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
import tempfile
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
    """A server in its own process group: `python main.py serve --workers N` by default."""

    def __init__(self, env: dict, workers: int = 1, cmd: list[str] | None = None) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        self.cmd = cmd or [sys.executable, "main.py", "serve", "--workers", str(workers)]
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # The log goes to a file: a pipe nobody reads fills up and then stalls the server.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=self.log)

    async def wait_ready(self) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(240):
                try:
                    async with session.get(self.base + "/healthz") as resp:
                        if resp.status == 200:
                            # with several workers, give the others a moment to bind too
                            await asyncio.sleep(1.0)
                            return
                except aiohttp.ClientError:
                    pass
                if self.proc.poll() is not None:
                    self.log.seek(0)
                    raise RuntimeError(self.log.read().decode()[-2000:])
                await asyncio.sleep(0.25)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def __aenter__(self) -> "Server":
        self.start()
        try:
            await self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop()
