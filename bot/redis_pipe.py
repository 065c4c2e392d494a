"""One Redis connection shared by every turn, for the two scripts each message runs.

Every message takes its resident's lock (and reads the dialogue state) in one script and
writes the state and releases the lock in another. Sent through redis-py's client, each of
those costs about 150 µs of CPU (retries, metrics hooks, a pool checkout under a condition
variable, a system call each way); here the scripts of all concurrent turns share one
connection: what is asked in the same event-loop tick leaves in one write, and the replies,
which Redis sends in the order it was asked on a connection, are read back together and
handed out in that order. About 8 µs a call with 50 concurrent callers (measured), and far
fewer system calls on both sides.

The protocol work is hiredis's (`pack_command`, `Reader`); this module only keeps the order.

Each connection (a `_Link`) owns the callers waiting on it, so a reply can only ever reach a
caller that asked on the same connection. Failure: connecting, and every call, take at most
`timeout` seconds. A watchdog looks at the oldest unanswered command a few times a second;
when it is overdue the link is taken as stuck, closed, and its callers get TimeoutError. A
lost link fails its callers with ConnectionError; the next call connects afresh. A cancelled
caller's reply is read and dropped, so the order is never lost.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque

import hiredis
from redis.asyncio.connection import RedisSSLContext, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

log = logging.getLogger(__name__)

_names = itertools.count(1)

# parse_url's names for TLS options -> RedisSSLContext's.
_SSL_OPTIONS = {"ssl_keyfile": "keyfile", "ssl_certfile": "certfile", "ssl_cert_reqs": "cert_reqs",
                "ssl_ca_certs": "ca_certs", "ssl_ca_data": "ca_data", "ssl_ca_path": "ca_path",
                "ssl_check_hostname": "check_hostname", "ssl_password": "password"}


class _Link:
    """One connection and the callers waiting on it, in the order they asked."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.waiting: deque[tuple[asyncio.Future, float]] = deque()
        self.outgoing: list[bytes] = []
        self.read_task: asyncio.Task | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        self.dead = False

    @property
    def usable(self) -> bool:
        return not self.dead and not self.writer.is_closing()


class RedisPipe:
    def __init__(self, url: str, timeout: float = 5.0, name: str = "yfl-pipe") -> None:
        self.params = parse_url(url)
        self.timeout = timeout
        self.name = f"{name}-{next(_names)}"  # CLIENT LIST shows it; tests find it there
        self._link: _Link | None = None
        self._connecting: asyncio.Task | None = None
        self._flush_soon = False
        self._closed = False

    # ------------------------------------------------------------------ calls

    async def script(self, script, keys: list, args: list):
        """Run a redis-py `Script` (registered with register_script) by its SHA; if Redis
        has forgotten it (a restart, SCRIPT FLUSH), send its text once."""
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.call("EVAL", script.script, len(keys), *keys, *args)

    async def call(self, *command):
        link = self._link
        if link is None or not link.usable:
            if link is not None:  # closed under us (the peer hung up): its callers are told
                self._fail(link, RedisConnectionError("Redis closed the connection"))
            link = await self._connect()
            if not link.usable:  # lost again before this caller resumed
                raise RedisConnectionError("Redis closed the connection")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        link.outgoing.append(hiredis.pack_command(command))
        link.waiting.append((future, loop.time() + self.timeout))
        if not self._flush_soon:
            self._flush_soon = True
            loop.call_soon(self._flush)
        reply = await future
        if isinstance(reply, hiredis.ReplyError):
            message = str(reply)
            raise (NoScriptError if message.startswith("NOSCRIPT") else ResponseError)(message)
        return reply

    def _flush(self) -> None:
        self._flush_soon = False
        link = self._link
        if link is not None and link.outgoing and link.usable:
            data = b"".join(link.outgoing)
            link.outgoing.clear()
            link.writer.write(data)

    # ------------------------------------------------------------------ the connection

    async def _connect(self) -> _Link:
        if self._closed:
            raise RedisConnectionError("the Redis pipe is closed")
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
            # Its callers may all have given up: the failure is theirs, not an orphan's log.
            self._connecting.add_done_callback(lambda t: t.cancelled() or t.exception())
        # shield: one caller's cancellation must not abort the others' connection attempt
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _Link:
        """Connect and set the connection up, all within the timeout."""
        p = self.params
        writer = None
        try:
            async with asyncio.timeout(self.timeout):
                if "path" in p:
                    reader, writer = await asyncio.open_unix_connection(p["path"])
                else:
                    tls = None
                    if "SSL" in getattr(p.get("connection_class"), "__name__", ""):
                        tls = RedisSSLContext(**{ours: p[theirs] for theirs, ours
                                                 in _SSL_OPTIONS.items() if theirs in p}).get()
                    reader, writer = await asyncio.open_connection(
                        p.get("host", "localhost"), p.get("port", 6379), ssl=tls)
                parser = hiredis.Reader(encoding="utf-8")
                setup = [("CLIENT", "SETNAME", self.name)]
                if p.get("password"):
                    setup.insert(0, ("AUTH", *([p["username"]] if p.get("username") else []),
                                     p["password"]))
                if p.get("db"):
                    setup.append(("SELECT", p["db"]))
                writer.write(b"".join(hiredis.pack_command(c) for c in setup))
                replies = []
                while len(replies) < len(setup):
                    data = await reader.read(65536)
                    if not data:
                        raise RedisConnectionError("Redis closed the connection while it was set up")
                    parser.feed(data)
                    while (reply := parser.gets()) is not False:
                        replies.append(reply)
            for reply in replies:
                if isinstance(reply, hiredis.ReplyError):
                    raise RedisConnectionError(f"Redis refused the set-up: {reply}")
        except BaseException:
            if writer is not None:
                writer.close()
            raise
        link = _Link(reader, writer)
        link.read_task = asyncio.ensure_future(self._read(link, parser))
        self._arm_watchdog(link)
        self._link = link
        return link

    async def _read(self, link: _Link, parser) -> None:
        error: Exception = RedisConnectionError("Redis closed the connection")
        try:
            while True:
                data = await link.reader.read(65536)
                if not data:
                    break
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    future, _ = link.waiting.popleft()
                    if not future.done():  # its caller may have given up: drop the reply
                        future.set_result(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every waiting caller hears of it
            error = RedisConnectionError(f"Redis connection lost: {exc!r}")
        self._fail(link, error)

    def _arm_watchdog(self, link: _Link) -> None:
        link.watchdog = asyncio.get_running_loop().call_later(
            min(0.25, self.timeout / 4), self._check, link)

    def _check(self, link: _Link) -> None:
        if link.waiting and link.waiting[0][1] <= asyncio.get_running_loop().time():
            log.warning("Redis did not answer within %.1f s: closing %s", self.timeout, self.name)
            self._fail(link, TimeoutError(f"Redis did not answer within {self.timeout} s"))
        elif not link.dead:
            self._arm_watchdog(link)

    def _fail(self, link: _Link, error: Exception) -> None:
        """Close this link and fail every caller still waiting on it."""
        if link.dead:
            return
        link.dead = True
        if link.watchdog is not None:
            link.watchdog.cancel()
        link.writer.close()
        if link.read_task is not None and link.read_task is not asyncio.current_task():
            link.read_task.cancel()
        link.outgoing.clear()
        while link.waiting:
            future, _ = link.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self._link is link:
            self._link = None

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        link = self._link
        if link is not None:
            task = link.read_task
            self._fail(link, RedisConnectionError("the Redis pipe is closed"))
            if task is not None:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
