"""Every message reads its sender's row; concurrent turns on PostgreSQL share one query."""
from __future__ import annotations

import asyncio

import pytest
from tortoise.transactions import in_transaction

from models import db
from models.db import RowBatcher
from models.residents import Resident, sender


@pytest.fixture
async def pg_db(postgres_url):
    """An empty PostgreSQL database (the batching path), closed after the test."""
    await db.init_db(postgres_url)
    await db.truncate_all()
    yield
    await db.close_db()


async def test_concurrent_senders_are_read_together_each_with_its_own_row(cli_database_url,
                                                                         monkeypatch):
    await db.init_db(cli_database_url)
    try:
        await Resident.bulk_create([Resident(openid=f"o-{i}", name=f"街坊{i}", points=i)
                                    for i in range(40)])
        batches = []
        real_fetch = RowBatcher._fetch

        async def counted(self, batch):
            batches.append(sorted(batch))
            await real_fetch(self, batch)

        monkeypatch.setattr(RowBatcher, "_fetch", counted)
        asked = [f"o-{i}" for i in range(40)] + ["o-new-1", "o-new-2", "o-3"]
        got = await asyncio.gather(*(sender(o) for o in asked))

        assert [r.openid for r in got] == asked
        assert all(r.name == f"街坊{r.points}" for r in got[:40])
        assert got[3] is not got[-1] and got[3].id == got[-1].id  # one instance per caller
        assert {r.openid for r in await Resident.filter(openid__startswith="o-new")} == \
            {"o-new-1", "o-new-2"}  # unknown senders are created, as before
        if db.is_postgres():
            assert len(batches) == 1 and len(batches[0]) == 42  # one query, duplicates asked once
        else:
            assert batches == []  # SQLite: one query each, nothing to batch

        # A turn that starts later gets what was committed since, not an earlier read.
        await Resident.filter(openid="o-5").update(points=500)
        assert (await sender("o-5")).points == 500
    finally:
        await db.close_db()


async def test_a_failed_batch_fails_every_caller_and_the_next_batch_works(pg_db, monkeypatch):
    await Resident.bulk_create([Resident(openid=f"o-{i}") for i in range(5)])
    real = RowBatcher._fetch

    async def broken(self, batch):
        monkeypatch.setattr(RowBatcher, "_fetch", real)  # only this once
        monkeypatch.setattr(self, "column", "no_such_column")
        try:
            await real(self, batch)
        finally:
            monkeypatch.setattr(self, "column", "openid")

    monkeypatch.setattr(RowBatcher, "_fetch", broken)
    results = await asyncio.gather(*(sender(f"o-{i}") for i in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results)
    assert [r.openid for r in await asyncio.gather(*(sender(f"o-{i}") for i in range(5)))] == \
        [f"o-{i}" for i in range(5)]


async def test_a_caller_in_a_transaction_reads_on_its_own_connection(pg_db):
    await Resident.create(openid="o-tx", points=1)
    rows = RowBatcher(Resident, "openid")
    gate = asyncio.Event()

    async def outside() -> int:  # a turn outside any transaction, asking in the same tick
        await gate.wait()
        return (await rows.get("o-tx")).points

    other = asyncio.create_task(outside())
    async with in_transaction():
        await Resident.filter(openid="o-tx").update(points=77)
        gate.set()
        assert (await rows.get("o-tx")).points == 77  # its own uncommitted write
        assert await other == 1  # never the transaction's uncommitted write
    assert (await rows.get("o-tx")).points == 77


async def test_one_row_that_cannot_be_built_fails_only_its_caller(pg_db, monkeypatch):
    await Resident.bulk_create([Resident(openid=f"o-{i}") for i in range(4)])
    real = Resident._init_from_db.__func__

    def fussy(cls, **row):
        if row["openid"] == "o-2":
            raise ValueError("bad row")
        return real(cls, **row)

    monkeypatch.setattr(Resident, "_init_from_db", classmethod(fussy))
    rows = RowBatcher(Resident, "openid")
    results = await asyncio.wait_for(asyncio.gather(
        *(rows.get(f"o-{i}") for i in range(4)), return_exceptions=True), 5)
    assert [type(r).__name__ for r in results] == ["Resident", "Resident", "ValueError",
                                                   "Resident"]


async def test_keys_left_by_a_finished_event_loop_do_not_stall_the_next(pg_db):
    await Resident.create(openid="o-1")
    rows = RowBatcher(Resident, "openid")
    rows._loop, rows._pending = object(), {"o-old": [object()]}  # as a closed loop left it
    assert (await asyncio.wait_for(rows.get("o-1"), 5)).openid == "o-1"

