"""Database set-up: one Tortoise configuration for SQLite (embedded) and PostgreSQL."""
from __future__ import annotations

import asyncio
import functools
import importlib
import os
import re
from pathlib import Path

import asyncpg
from tortoise import Tortoise, connections
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.backends.base.client import TransactionalDBClient

# Every module holding models; later domains add theirs here.
MODEL_MODULES = [
    "models.places",
    "models.residents",
    "models.outbox",
    "models.points",
    "models.activities",
    "models.broadcasts",
    "models.appeals",
    "models.handover",
    "models.services",
    "models.surveys",
    "models.rewards",
]


class _NoResetConnection(asyncpg.connection.Connection):
    """asyncpg resets session state (advisory locks, LISTEN, SET) each time a connection goes
    back to the pool: one more round trip for every query. Nothing here uses session state,
    and an open transaction is still rolled back on release."""

    def get_reset_query(self) -> str:
        return ""


def _connection(url: str) -> str | dict:
    if not url.startswith(("postgres://", "asyncpg://")):
        return url
    config = expand_db_url(url)
    credentials = config["credentials"]
    # asyncpg's pool defaults to 5 connections: too few for 50 concurrent webhook requests.
    credentials.setdefault("maxsize", int(os.environ.get("DB_POOL_SIZE", "20")))
    credentials.setdefault("minsize", 1)
    credentials["connection_class"] = _NoResetConnection
    # asyncpg closes connections idle for 300 s by arming a timer on every release and
    # cancelling it on every acquire: ~35 us of CPU a query under load (measured). A pool of
    # 20 idle connections costs PostgreSQL next to nothing, so they stay open.
    credentials.setdefault("max_inactive_connection_lifetime", 0)
    return config


def tortoise_config(url: str) -> dict:
    return {
        "connections": {"default": _connection(url)},
        "apps": {"models": {"models": MODEL_MODULES, "default_connection": "default"}},
        "use_tz": True,
        "timezone": "UTC",
    }


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite://") and ":memory:" not in url:
        Path(url[len("sqlite://"):].split("?")[0]).parent.mkdir(parents=True, exist_ok=True)


async def init_db(url: str, *, create_schema: bool = True) -> None:
    _ensure_sqlite_dir(url)
    # Tortoise caches SQL per connection name, not per backend: a process that switches
    # between SQLite and PostgreSQL (the test suite does) must start from a clean cache.
    EXECUTOR_CACHE.clear()
    # The app's start-up runs in another task than its requests: a global context is needed.
    await Tortoise.init(config=tortoise_config(url), _enable_global_fallback=True)
    if create_schema:
        await Tortoise.generate_schemas(safe=True)
        await upgrade_schema()


# ---------------------------------------------------------------------------- upgrades
# generate_schemas(safe=True) creates missing tables only. Until there are migrations, what
# was added to an existing table after its first release is added here at start-up: each
# model module may define `async def upgrade()` (columns, backfills), and every index
# declared in a Meta is created if missing, under the name Tortoise would give it.

async def add_missing_columns(table: str, columns: dict[str, tuple[str, str]]) -> list[str]:
    """Add the columns `table` lacks ({name: (PostgreSQL type, SQLite type)}); returns the
    names added."""
    conn = connections.get("default")
    postgres = conn.capabilities.dialect == "postgres"
    if postgres:
        rows = await conn.execute_query_dict(
            "SELECT column_name AS name FROM information_schema.columns "
            "WHERE table_name = $1 AND table_schema = current_schema()", [table])
    else:
        rows = await conn.execute_query_dict(f'PRAGMA table_info("{table}")')
    have = {r["name"] for r in rows}
    added = []
    for name, (pg_type, sqlite_type) in columns.items():
        if name not in have:
            await conn.execute_script(
                f'ALTER TABLE "{table}" ADD COLUMN "{name}" {pg_type if postgres else sqlite_type}')
            added.append(name)
    return added


async def upgrade_schema() -> None:
    for name in MODEL_MODULES:
        upgrade = getattr(importlib.import_module(name), "upgrade", None)
        if upgrade is not None:
            await upgrade()
    conn = connections.get("default")
    generator = conn.schema_generator(conn)
    for model in Tortoise.apps.get_models_iterable():
        # Meta.indexes only (no db_index fields): CREATE INDEX IF NOT EXISTS, Tortoise's names.
        for sql in generator._get_field_indexes_sqls(model, [], safe=True):
            await conn.execute_script(sql)


async def close_db() -> None:
    await Tortoise.close_connections()


def is_postgres() -> bool:
    return connections.get("default").capabilities.dialect == "postgres"


def locked(queryset):
    """SELECT ... FOR UPDATE on PostgreSQL. SQLite needs nothing: Tortoise runs one SQLite
    transaction at a time per process (and SQLite is the single-process default)."""
    return queryset.select_for_update() if is_postgres() else queryset


async def recreate_database(url: str) -> None:
    """Drop and create the PostgreSQL database named in `url` (tests and benchmarks start
    from the schema the code declares)."""
    base, name = url.split("?")[0].rsplit("/", 1)
    conn = await asyncpg.connect(base + "/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@functools.lru_cache(maxsize=64)
def _dialect_sql(model, sql: str, dialect: str) -> str:
    sql = sql.replace("{table}", f'"{model._meta.db_table}"')
    return sql if dialect == "postgres" else re.sub(r"\$\d+", "?", sql)


async def raw_models(model, sql: str, *params) -> list:
    """`model` instances from plain SQL, for the few queries every message runs: building a
    query through the ORM costs more than running it (0.2-0.3 ms against 0.1 ms, measured).
    Placeholders are written $1, $2 ... each used once and in order (SQLite gets `?`);
    `{table}` stands for the model's table."""
    conn = connections.get("default")
    dialect = conn.capabilities.dialect
    text = _dialect_sql(model, sql, dialect)
    if dialect == "postgres":  # asyncpg's records map by column name; no dict copies
        async with conn.acquire_connection() as pg:
            rows = await pg.fetch(text, *params)
    else:
        rows = await conn.execute_query_dict(text, list(params))
    return [model._init_from_db(**row) for row in rows]


class RowBatcher:
    """Rows of `model` by a unique column, for many concurrent callers: on PostgreSQL the keys
    asked in one event-loop tick go as one `= ANY($1)` query (under load the turns of many
    residents resume together from the same Redis reply and all want their sender's row).
    Each caller gets its own instance, read after it asked: the same as a query of its own.
    A caller inside a transaction gets a query of its own on the transaction's connection."""

    def __init__(self, model, column: str) -> None:
        self.model = model
        self.column = column
        self._pending: dict[str, list[asyncio.Future]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()  # asyncio keeps only weak references

    async def get(self, key: str):
        conn = connections.get("default")
        # SQLite: one process, nothing to batch; a transaction: its own connection and snapshot.
        if conn.capabilities.dialect != "postgres" or isinstance(conn, TransactionalDBClient):
            rows = await raw_models(self.model, f'SELECT * FROM {{table}} WHERE "{self.column}" = $1 '
                                                'LIMIT 1', key)
            return rows[0] if rows else None
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (tests, scripts): what the old one left is dead
            self._loop, self._pending = loop, {}
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.setdefault(key, []).append(future)
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, {}
        task = asyncio.ensure_future(self._fetch(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, batch: dict[str, list[asyncio.Future]]) -> None:
        try:
            conn = connections.get("default")
            sql = _dialect_sql(self.model, f'SELECT * FROM {{table}} WHERE "{self.column}" = ANY($1)',
                               "postgres")
            async with conn.acquire_connection() as pg:
                records = await pg.fetch(sql, list(batch))
            found = {record[self.column]: record for record in records}
            for key, futures in batch.items():
                record = found.get(key)
                for f in futures:
                    if f.done():  # the caller gave up (cancelled)
                        continue
                    try:
                        f.set_result(None if record is None else self.model._init_from_db(**record))
                    except Exception as exc:  # noqa: BLE001 - this caller's row only
                        f.set_exception(exc)
        except BaseException as exc:  # every caller still waiting is told, none waits forever
            for futures in batch.values():
                for f in futures:
                    if not f.done():
                        f.set_exception(exc)
            if not isinstance(exc, Exception):
                raise


async def raw_execute(model, sql: str, *params) -> None:
    """Plain SQL that changes rows (same placeholder rules as raw_models)."""
    conn = connections.get("default")
    await conn.execute_query(_dialect_sql(model, sql, conn.capabilities.dialect), list(params))


def db_value(model, field: str, value):
    """`value` as the database stores `field` (datetimes differ between SQLite and PostgreSQL)."""
    return model._meta.fields_map[field].to_db_value(value, model)


async def ping() -> bool:
    await connections.get("default").execute_query("SELECT 1")
    return True


async def truncate_all() -> None:
    """Empty every table (tests on a shared PostgreSQL database)."""
    conn = connections.get("default")
    tables = [m._meta.db_table for m in Tortoise.apps.get_models_iterable()]
    if is_postgres():
        await conn.execute_script(
            "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
    else:
        for t in tables:
            await conn.execute_script(f'DELETE FROM "{t}"')
