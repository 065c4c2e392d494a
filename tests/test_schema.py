"""The schema serves the questions residents ask most: each 'my ...' lookup is an index scan."""
from __future__ import annotations

import re

from tortoise import connections

from models import db

# Tables read by resident on a resident's own questions (我的报名, 积分明细, 我的兑换 ...).
BY_RESIDENT = ["points_entry", "signup", "redemption", "booking", "survey_response", "appeal"]


async def test_every_lookup_by_resident_has_an_index(postgres_url):
    await db.init_db(postgres_url)
    try:
        rows = await connections.get("default").execute_query_dict(
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'")
    finally:
        await db.close_db()
    for table in BY_RESIDENT:
        leading = [r["indexdef"] for r in rows if r["tablename"] == table
                   and re.search(r'\(\s*"?resident_id"?\s*[,)]', r["indexdef"])]
        assert leading, f"{table}: no index leads with resident_id"
    # The balance reply reads the newest entry: (resident_id, id) serves it without sorting.
    assert any(r["tablename"] == "points_entry" and re.search(r'resident_id"?\s*,\s*"?id"?\s*\)',
                                                             r["indexdef"]) for r in rows)


async def test_a_database_from_before_is_upgraded_at_start_up(cli_database_url):
    """A database created before the remembered last entry and the resident indexes: start-up
    adds the columns, fills them from the ledger, and creates the indexes."""
    from models.demo import seed_places
    from models.points import Source, ledger_mismatches, post_entry
    from models.residents import Resident, get_or_create_resident

    url = cli_database_url
    await db.init_db(url)
    try:
        await seed_places()
        r = await get_or_create_resident("o-old")
        await post_entry(r.id, 30, reason="开会", source=Source.STAFF_AWARD, key="old:1")
        await post_entry(r.id, -10, reason="兑换纸巾", source=Source.CORRECTION, key="old:2")
        conn = connections.get("default")
        for name in ("last_points_reason", "last_points_amount"):  # as it was before
            await conn.execute_script(f'ALTER TABLE "resident" DROP COLUMN "{name}"')
        index = ("SELECT indexname AS name FROM pg_indexes WHERE tablename = 'points_entry'"
                 if db.is_postgres() else
                 "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'points_entry'")
        ours = [row["name"] for row in await conn.execute_query_dict(index) if "residen" in row["name"]]
        assert ours
        for name in ours:
            await conn.execute_script(f'DROP INDEX "{name}"')
    finally:
        await db.close_db()

    await db.init_db(url)  # start-up on the old database
    try:
        again = await Resident.get(openid="o-old")
        assert (again.points, again.last_points_amount, again.last_points_reason) == (20, -10, "兑换纸巾")
        assert await ledger_mismatches() == []
        names = [row["name"] for row in await connections.get("default").execute_query_dict(index)]
        assert set(ours) <= set(names)
    finally:
        await db.close_db()
