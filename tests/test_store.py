"""One contract for both stores: the memory store and the Redis store behave alike."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from redis.exceptions import ConnectionError

from bot.redis_pipe import RedisPipe
from bot.store import LockTimeout, MemoryStore, RedisStore


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    if request.param == "memory":
        s = MemoryStore()
    else:
        s = RedisStore(request.getfixturevalue("redis_url"), prefix=f"yflstore:{uuid.uuid4().hex[:8]}:")
    yield s
    if isinstance(s, RedisStore):
        keys = [k async for k in s.redis.scan_iter(match=s.prefix + "*")]
        if keys:
            await s.redis.delete(*keys)
    await s.close()


async def test_get_set_delete(store):
    assert await store.get("a") is None
    await store.set("a", "1", 10)
    assert await store.get("a") == "1"
    await store.delete("a")
    assert await store.get("a") is None


async def test_ttl_expires(store):
    await store.set("t", "x", 0.1)
    assert await store.get("t") == "x"
    await asyncio.sleep(0.25)
    assert await store.get("t") is None


async def test_set_nx_claims_once(store):
    results = await asyncio.gather(*(store.set_nx("claim", str(i), 10) for i in range(20)))
    assert results.count(True) == 1
    assert await store.get("claim") == str(results.index(True))


async def test_set_nx_after_expiry(store):
    assert await store.set_nx("n", "1", 0.1)
    await asyncio.sleep(0.25)
    assert await store.set_nx("n", "2", 10)


async def test_incr_counts_and_expires(store):
    assert [await store.incr("c", 0.3) for _ in range(3)] == [1, 2, 3]
    await asyncio.sleep(0.45)
    assert await store.incr("c", 10) == 1


async def test_wait_for_sees_a_later_value(store):
    async def later():
        await asyncio.sleep(0.1)
        await store.set("w", "done", 10)

    task = asyncio.create_task(later())
    assert await store.wait_for("w", 2) == "done"
    await task
    assert await store.wait_for("missing", 0.1) is None


async def test_lock_is_exclusive_and_fifo(store):
    order, inside = [], []

    async def worker(i):
        async with store.lock("L", timeout=5, wait=5):
            inside.append(i)
            assert len(inside) == 1
            await asyncio.sleep(0.01)
            order.append(i)
            inside.remove(i)

    tasks = []
    for i in range(8):
        tasks.append(asyncio.create_task(worker(i)))
        await asyncio.sleep(0)  # arrival order
    await asyncio.gather(*tasks)
    assert order == list(range(8))


async def test_lock_wait_times_out(store):
    async with store.lock("busy", timeout=5, wait=1):
        with pytest.raises(LockTimeout):
            async with store.lock("busy", timeout=5, wait=0.1):
                pass
    async with store.lock("busy", timeout=5, wait=0.1):  # free again
        pass


async def test_ping(store):
    assert await store.ping()


async def test_guard_reads_under_the_lock_and_saves_on_release(store):
    await store.set("g", "0", 10)

    async def bump():
        async with store.guard("G", "g", timeout=5, wait=5) as guarded:
            value = int(guarded.value)
            await asyncio.sleep(0.005)  # a lost update would show here
            guarded.save(str(value + 1), 10)

    await asyncio.gather(*(bump() for _ in range(20)))
    assert await store.get("g") == "20"


async def test_guard_without_save_keeps_the_value(store):
    async with store.guard("G2", "missing", timeout=5, wait=5) as guarded:
        assert guarded.value is None
    assert await store.get("missing") is None
    with pytest.raises(RuntimeError):
        async with store.guard("G2", "kept", timeout=5, wait=5) as guarded:
            guarded.save("x", 10)
            raise RuntimeError("a failing turn")
    async with store.lock("G2", timeout=5, wait=0.5):  # released despite the error
        pass


async def test_redis_lock_is_exclusive_across_clients(redis_url):
    """Two RedisStores stand for two processes: one holder at a time, no lost update."""
    prefix = f"yflstore:{uuid.uuid4().hex[:8]}:"
    a, b = RedisStore(redis_url, prefix), RedisStore(redis_url, prefix)
    try:
        await a.set("n", "0", 10)

        async def bump(store):
            async with store.guard("X", "n", timeout=5, wait=10) as guarded:
                await asyncio.sleep(0.002)
                guarded.save(str(int(guarded.value) + 1), 10)

        await asyncio.gather(*(bump(a if i % 2 else b) for i in range(30)))
        assert await a.get("n") == "30"
    finally:
        keys = [k async for k in a.redis.scan_iter(match=prefix + "*")]
        if keys:
            await a.redis.delete(*keys)
        await a.close()
        await b.close()


async def test_guard_claims_once(store):
    async def take(i):
        async with store.guard(f"C{i % 3}", "s", timeout=5, wait=5, claim=("claimed", 10)) as g:
            return g.claimed

    results = await asyncio.gather(*(take(i) for i in range(12)))
    assert results.count(True) == 1
    async with store.guard("C", "s", timeout=5, wait=5) as g:  # no claim asked: always claimed
        assert g.claimed


async def test_guard_writes_more_keys_with_the_release(store):
    async with store.guard("W", "w-state", timeout=5, wait=5) as guarded:
        guarded.save("state", 10)
        guarded.also("w-reply", "reply", 10)
        assert await store.get("w-reply") is None  # nothing written before the release
    assert (await store.get("w-state"), await store.get("w-reply")) == ("state", "reply")


async def test_redis_scripts_survive_a_flushed_script_cache(redis_url):
    """After a Redis restart its script cache is empty: EVALSHA fails and the text is sent."""
    store = RedisStore(redis_url, prefix=f"yflstore:{uuid.uuid4().hex[:8]}:")
    try:
        async with store.guard("F", "f", timeout=5, wait=5) as guarded:
            guarded.save("1", 10)
        await store.redis.script_flush()
        async with store.guard("F", "f", timeout=5, wait=5) as guarded:
            assert guarded.value == "1"
            guarded.save("2", 10)
        assert await store.get("f") == "2"
    finally:
        await store.delete("f")
        await store.close()


async def test_redis_that_stops_answering_fails_the_operation_in_time():
    """A Redis that accepts and never answers: every operation gives up after op_timeout
    instead of hanging the resident's turn, and each new call tries a new connection (a stuck
    attempt must not wedge the store)."""
    accepted = []

    async def silent(reader, writer):
        accepted.append(writer)
        await reader.read()  # read whatever comes, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0", op_timeout=0.3)
    try:
        loop = asyncio.get_running_loop()
        for attempt in (lambda: store.get("x"),
                        lambda: store.guard("S", "s", timeout=5, wait=5).__aenter__(),
                        lambda: store.guard("S", "s", timeout=5, wait=5).__aenter__()):
            started = loop.time()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(attempt(), 3)  # a hang fails the test, not the run
            assert loop.time() - started < 2
        pipe_connections = len(accepted) - 1  # one is redis-py's, for the get
        assert pipe_connections >= 2, accepted
    finally:
        await store.close()
        for w in accepted:
            w.close()
        server.close()


async def test_redis_pipe_watchdog_fails_callers_when_answers_stop():
    """Connected and set up, then Redis stops answering: the watchdog fails the waiting
    callers in time and closes the link; the next call connects afresh."""
    connections = []

    async def answers_setup_then_silence(reader, writer):
        connections.append(writer)
        await reader.readuntil(b"SETNAME\r\n")
        await reader.readline(), await reader.readline()  # the name's length and the name
        writer.write(b"+OK\r\n")
        await reader.read()

    server = await asyncio.start_server(answers_setup_then_silence, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pipe = RedisPipe(f"redis://127.0.0.1:{port}/0", timeout=0.4)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.wait_for(asyncio.gather(
            *(pipe.call("GET", f"k{i}") for i in range(5)), return_exceptions=True), 3)
        assert all(isinstance(r, TimeoutError) for r in results), results
        assert loop.time() - started < 2
        assert len(connections) == 1
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pipe.call("GET", "again"), 3)
        assert len(connections) == 2  # the stuck link was dropped, a new one made
    finally:
        await pipe.close()
        for w in connections:
            w.close()
        server.close()


async def test_redis_pipe_keeps_replies_in_order_under_concurrency(redis_url):
    """Hundreds of concurrent turns share the pipelined connection: each gets its own reply
    (a reply handed to the wrong caller would show as a wrong value), also when some callers
    give up half-way."""
    store = RedisStore(redis_url, prefix=f"yflstore:{uuid.uuid4().hex[:8]}:")
    try:
        for i in range(200):
            await store.set(f"v{i}", str(i), 30)
        await store._pipe.call("PING")  # connected: the abandoned calls reach the queue

        async def read(i):
            async with store.guard(f"L{i}", f"v{i}", timeout=5, wait=5) as guarded:
                assert guarded.value == str(i)
                guarded.save(str(i * 2), 30)

        async def abandoned(i):  # cancelled while its script is in flight
            task = asyncio.ensure_future(store._pipe.call("GET", store.k(f"v{i}")))
            await asyncio.sleep(0)
            task.cancel()

        await asyncio.gather(*(read(i) if i % 3 else abandoned(i) for i in range(200)))
        for i in range(200):
            assert await store.get(f"v{i}") == str(i * 2 if i % 3 else i)
    finally:
        keys = [k async for k in store.redis.scan_iter(match=store.prefix + "*")]
        if keys:
            await store.redis.delete(*keys)
        await store.close()


async def test_redis_pipe_reconnects_after_the_connection_is_killed(redis_url):
    store = RedisStore(redis_url, prefix=f"yflstore:{uuid.uuid4().hex[:8]}:")
    try:
        async with store.guard("K", "k", timeout=5, wait=5) as guarded:
            guarded.save("1", 10)
        clients = await store.redis.client_list()
        ours = [c["id"] for c in clients if c.get("name") == store._pipe.name]
        assert len(ours) == 1
        await store.redis.client_kill_filter(_id=ours[0])
        await asyncio.sleep(0.05)
        for _ in range(3):  # the first call after the loss may fail; then it reconnects
            try:
                async with store.guard("K", "k", timeout=5, wait=5) as guarded:
                    assert guarded.value == "1"
                    guarded.save("2", 10)
                break
            except ConnectionError:
                continue
        assert await store.get("k") == "2"
    finally:
        await store.delete("k")
        await store.close()


async def test_memory_lock_keeps_its_wait_limit_right_after_a_release():
    """Just after a release the woken waiter is queued but holds nothing yet: a newcomer
    must still give up after its own wait, not wait out the queue."""
    store = MemoryStore()

    async def hold(seconds):
        async with store.lock("R", timeout=5, wait=5):
            await asyncio.sleep(seconds)

    async with store.lock("R", timeout=5, wait=5):
        queued = asyncio.ensure_future(hold(1.0))
        await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(LockTimeout):
        async with store.lock("R", timeout=5, wait=0.2):
            pass
    assert loop.time() - started < 0.8
    await queued
