"""A small key-value store with TTLs and locks: in memory (one process) or on Redis (many).

The webhook builds dedupe, reply caching, per-openid ordering and dialogue state on these
few primitives; one set of contract tests runs against both implementations.
"""
from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from typing import AsyncIterator

from redis.asyncio import BlockingConnectionPool, Redis

from bot.redis_pipe import RedisPipe


def _px(seconds: float) -> int:
    """A TTL in Redis's milliseconds, never 0 (PX 0 is an error)."""
    return max(1, int(seconds * 1000))


class LockTimeout(Exception):
    """The lock could not be taken in time."""


class Guarded:
    def __init__(self, key: str, value: str | None, claimed: bool = True) -> None:
        self.key = key
        self.value = value
        self.claimed = claimed  # False: the claim key was already taken
        self.writes: list[tuple[str, str, float]] = []

    def save(self, value: str, ttl: float) -> None:
        """Write the guarded key when the lock is released."""
        self.writes.append((self.key, value, ttl))

    def also(self, key: str, value: str, ttl: float) -> None:
        """Write another key in the same round trip as the release."""
        self.writes.append((key, value, ttl))


class Store:
    """Interface; values are strings, ttl in seconds."""

    async def get(self, key: str) -> str | None: ...
    async def set(self, key: str, value: str, ttl: float) -> None: ...
    async def set_nx(self, key: str, value: str, ttl: float) -> bool: ...
    async def delete(self, key: str) -> None: ...
    async def incr(self, key: str, ttl: float) -> int: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...

    def lock(self, name: str, *, timeout: float, wait: float) -> "AsyncIterator[None]":
        """Held for at most `timeout` s; LockTimeout if not taken within `wait` s."""
        raise NotImplementedError

    def guard(self, name: str, key: str, *, timeout: float, wait: float,
              claim: tuple[str, float] | None = None) -> "AsyncIterator[Guarded]":
        """`lock(name)` plus the value of `key` read once the lock is held, and optionally
        `claim` = (key, ttl) SET NX under the lock (`Guarded.claimed`); values given to
        `Guarded.save` / `Guarded.also` are written when the lock is released. On Redis that is one round trip
        in and one out (every message pays for this, so it matters)."""
        raise NotImplementedError

    async def wait_for(self, key: str, timeout: float, interval: float = 0.05) -> str | None:
        """Poll until `key` has a value or the time is up (retries come seconds apart)."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.get(key)
            if value is not None or time.monotonic() >= deadline:
                return value
            await asyncio.sleep(interval)


class MemoryStore(Store):
    kind = "memory"

    def __init__(self, max_keys: int = 100_000) -> None:
        self._data: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._max_keys = max_keys

    def _alive(self, key: str) -> tuple[str, float] | None:
        item = self._data.get(key)
        if item is not None and item[1] <= time.monotonic():
            del self._data[key]
            return None
        return item

    def _put(self, key: str, value: str, ttl: float) -> None:
        self._data[key] = (value, time.monotonic() + ttl)
        self._data.move_to_end(key)
        while len(self._data) > self._max_keys:  # bounded: evict the oldest writes
            self._data.popitem(last=False)

    async def get(self, key: str) -> str | None:
        item = self._alive(key)
        return item[0] if item else None

    async def set(self, key: str, value: str, ttl: float) -> None:
        self._put(key, value, ttl)

    async def set_nx(self, key: str, value: str, ttl: float) -> bool:
        if self._alive(key) is not None:
            return False
        self._put(key, value, ttl)
        return True

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def incr(self, key: str, ttl: float) -> int:
        item = self._alive(key)
        value = int(item[0]) + 1 if item else 1
        self._put(key, str(value), ttl if item is None else item[1] - time.monotonic())
        return value

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()

    @asynccontextmanager
    async def lock(self, name: str, *, timeout: float, wait: float) -> AsyncIterator[None]:
        lock = self._locks.setdefault(name, asyncio.Lock())  # FIFO: keeps a burst in order
        # wait_for costs a task and a timer: only when someone holds it or is queued for it
        # (just after a release the woken waiter is still queued, the lock not yet taken).
        if lock.locked() or getattr(lock, "_waiters", None):
            try:
                await asyncio.wait_for(lock.acquire(), wait)
            except asyncio.TimeoutError as exc:
                raise LockTimeout(name) from exc
        else:
            await lock.acquire()
        try:
            yield
        finally:
            lock.release()
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._locks.pop(name, None)

    @asynccontextmanager
    async def guard(self, name: str, key: str, *, timeout: float, wait: float,
                    claim: tuple[str, float] | None = None) -> AsyncIterator[Guarded]:
        async with self.lock(name, timeout=timeout, wait=wait):
            claimed = await self.set_nx(claim[0], "1", claim[1]) if claim else True
            guarded = Guarded(key, await self.get(key), claimed)
            yield guarded
            for write in guarded.writes:
                await self.set(*write)


class RedisStore(Store):
    kind = "redis"

    def __init__(self, url: str, prefix: str = "yfl:", max_connections: int = 64,
                 op_timeout: float = 5.0) -> None:
        # redis-py's asyncio ConnectionPool raises past its cap; the blocking pool waits.
        # Its socket timeout costs a task per command (asyncio.wait_for around every write):
        # instead each operation here runs under one asyncio.timeout; a command cut short
        # drops its connection (redis-py disconnects on cancellation mid-read).
        pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=10,
                                               decode_responses=True, socket_timeout=None,
                                               socket_connect_timeout=op_timeout,
                                               socket_keepalive=True)
        self.op_timeout = op_timeout
        self.redis = Redis(connection_pool=pool)
        self._acquire_script = self.redis.register_script(self._ACQUIRE)
        self._release_script = self.redis.register_script(self._RELEASE_WRITING)
        # The two scripts every message runs share one pipelined connection (bot/redis_pipe.py).
        self._pipe = RedisPipe(url, timeout=op_timeout)
        # A lock's token only has to be unique among holders: this store's id and a counter.
        self._token_prefix = uuid.uuid4().hex[:12] + ":"
        self._tokens = itertools.count(1)
        self.prefix = prefix
        # Within one process a FIFO lock orders a burst; Redis orders across processes.
        self._local = MemoryStore()

    def _token(self) -> str:
        return self._token_prefix + str(next(self._tokens))

    def k(self, key: str) -> str:
        return self.prefix + key

    async def get(self, key: str) -> str | None:
        async with asyncio.timeout(self.op_timeout):
            return await self.redis.get(self.k(key))

    async def set(self, key: str, value: str, ttl: float) -> None:
        async with asyncio.timeout(self.op_timeout):
            await self.redis.set(self.k(key), value, px=_px(ttl))

    async def set_nx(self, key: str, value: str, ttl: float) -> bool:
        async with asyncio.timeout(self.op_timeout):
            return bool(await self.redis.set(self.k(key), value, nx=True,
                                             px=_px(ttl)))

    async def delete(self, key: str) -> None:
        async with asyncio.timeout(self.op_timeout):
            await self.redis.delete(self.k(key))

    async def incr(self, key: str, ttl: float) -> int:
        async with asyncio.timeout(self.op_timeout), self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(self.k(key))
            pipe.pexpire(self.k(key), _px(ttl), nx=True)
            value, _ = await pipe.execute()
        return int(value)

    async def ping(self) -> bool:
        async with asyncio.timeout(self.op_timeout):
            return bool(await self.redis.ping())

    async def close(self) -> None:
        await self._pipe.close()
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()

    # Write the turn's keys (KEYS[2..], each value and PX in ARGV), then delete the lock only
    # if it is still ours (it may have expired and been taken since): one command, one trip.
    _RELEASE_WRITING = """
for i = 2, #KEYS do redis.call('set', KEYS[i], ARGV[2 * i - 2], 'PX', ARGV[2 * i - 1]) end
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

    # Take the lock; once it is ours, SET NX the claim (if any) and read the value, all in
    # one atomic round trip. Returns {0} when the lock is taken by someone else.
    _ACQUIRE = """
if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
local claimed = 1
if ARGV[3] ~= '' then
  claimed = redis.call('set', KEYS[3], '1', 'NX', 'PX', ARGV[3]) and 1 or 0
end
local value = false
if KEYS[2] ~= '' then value = redis.call('get', KEYS[2]) end
return {1, claimed, value or false}
"""

    async def _acquire(self, lock_key: str, token: str, timeout: float, wait: float,
                       read: str | None, claim: tuple[str, float] | None = None
                       ) -> tuple[str | None, bool]:
        """Retry the acquire script until the lock is taken or `wait` ends."""
        deadline = time.monotonic() + wait
        keys = [lock_key, read or "", self.k(claim[0]) if claim else ""]
        args = [token, _px(timeout), _px(claim[1]) if claim else ""]
        while True:
            result = await self._pipe.script(self._acquire_script, keys, args)
            if result[0]:
                value = result[2] if len(result) > 2 else None
                return (value or None), bool(result[1])
            if time.monotonic() >= deadline:
                raise LockTimeout(lock_key)
            await asyncio.sleep(0.005)

    async def _release(self, lock_key: str, token: str, writes: list[tuple[str, str, float]]) -> None:
        keys, args = [lock_key], [token]
        for key, value, ttl in writes:
            keys.append(self.k(key))
            args += [value, _px(ttl)]
        await self._pipe.script(self._release_script, keys, args)

    @asynccontextmanager
    async def lock(self, name: str, *, timeout: float, wait: float) -> AsyncIterator[None]:
        async with self._local.lock(name, timeout=timeout, wait=wait):
            lock_key, token = self.k("lock:" + name), self._token()
            await self._acquire(lock_key, token, timeout, wait, None)
            try:
                yield
            finally:
                await self._release(lock_key, token, [])

    @asynccontextmanager
    async def guard(self, name: str, key: str, *, timeout: float, wait: float,
                    claim: tuple[str, float] | None = None) -> AsyncIterator[Guarded]:
        async with self._local.lock(name, timeout=timeout, wait=wait):
            lock_key, token = self.k("lock:" + name), self._token()
            value, claimed = await self._acquire(lock_key, token, timeout, wait, self.k(key), claim)
            guarded = Guarded(key, value, claimed)
            try:
                yield guarded
            finally:
                await self._release(lock_key, token, guarded.writes)


def make_store(redis_url: str | None, prefix: str = "yfl:") -> Store:
    return RedisStore(redis_url, prefix) if redis_url else MemoryStore()
