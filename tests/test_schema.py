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
