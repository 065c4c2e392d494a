"""The points ledger: append-only entries, a balance that always equals their sum.

Every entry has a unique idempotency key (for example `checkin:<signup id>`): a second
attempt with the same key returns the first entry and changes nothing. The balance changes
in the same transaction as the entry and never goes below zero. A correction is a new entry.
"""
from __future__ import annotations

from tortoise import fields
from tortoise.expressions import F
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.db import locked
from models.outbox import enqueue, notice
from models.residents import Resident


class Source:
    ACTIVITY = "activity"
    STAFF_AWARD = "staff_award"
    REDEMPTION = "redemption"
    REFUND = "refund"
    EXPIRY = "expiry"
    CORRECTION = "correction"
    SURVEY = "survey"
    SUGGESTION = "suggestion"


class PointsEntry(Model):
    id = fields.BigIntField(primary_key=True)
    resident = fields.ForeignKeyField("models.Resident", related_name="points_entries")
    amount = fields.IntField()
    balance_after = fields.IntField()
    reason = fields.CharField(max_length=120)
    source = fields.CharField(max_length=20)
    key = fields.CharField(max_length=120, unique=True)
    actor = fields.ForeignKeyField("models.Resident", related_name="points_awarded", null=True)
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)

    class Meta:
        table = "points_entry"
        # A resident's entries, newest first: every 积分 question reads the latest one.
        indexes = (("resident", "id"),)


class PointsRule(Model):
    """What earns how much in a community (null community = the district default)."""

    id = fields.IntField(primary_key=True)
    community = fields.ForeignKeyField("models.Community", related_name="points_rules", null=True)
    code = fields.CharField(max_length=32)
    name = fields.CharField(max_length=60)
    points = fields.IntField()
    daily_cap = fields.IntField(default=1)  # awards per resident per day under this rule

    class Meta:
        table = "points_rule"
        unique_together = (("community", "code"),)


# The seed article's values; communities may override them.
DEFAULT_RULES = [
    ("volunteer", "志愿服务(如新春文艺汇演志愿者)", 100),
    ("meeting", "参加居民议事会", 50),
    ("neighbour_help", "邻里互助", 30),
    ("facility", "设施维护", 30),
    ("suggestion", "合理化建议被采纳", 20),
]


class InsufficientPoints(Exception):
    def __init__(self, balance: int, needed: int) -> None:
        super().__init__(f"balance {balance} < {needed}")
        self.balance, self.needed = balance, needed


async def post_entry(resident_id: int, amount: int, *, reason: str, source: str, key: str,
                     actor_id: int | None = None, notify: bool = False) -> tuple[PointsEntry, bool]:
    """Append one entry and move the balance, atomically. Returns (entry, created).

    Must be called inside a transaction when combined with other writes; it opens its own
    (nested transactions join the outer one).
    """
    async with in_transaction():
        existing = await PointsEntry.get_or_none(key=key)
        if existing is not None:
            return existing, False
        resident = await locked(Resident.filter(id=resident_id)).get()
        existing = await PointsEntry.get_or_none(key=key)  # re-read under the row lock
        if existing is not None:
            return existing, False
        balance = resident.points + amount
        if balance < 0:
            raise InsufficientPoints(resident.points, -amount)
        await Resident.filter(id=resident_id).update(points=F("points") + amount,
                                                     last_points_reason=reason,
                                                     last_points_amount=amount)
        entry = await PointsEntry.create(resident_id=resident_id, amount=amount,
                                         balance_after=balance, reason=reason, source=source,
                                         key=key, actor_id=actor_id)
        if notify and amount > 0:
            await enqueue(notice(resident.openid, "points", f"您获得{amount}积分:{reason}。当前积分{balance}。",
                                 f"points:{key}"))
    return entry, True


async def balance_of(resident_id: int) -> int:
    return (await Resident.get(id=resident_id)).points


async def history(resident_id: int, page: int = 1, size: int = 10) -> list[PointsEntry]:
    return await (PointsEntry.filter(resident_id=resident_id).order_by("-id")
                  .offset((page - 1) * size).limit(size))


async def rules_for(community_id: int | None) -> list[tuple[str, str, int]]:
    """(code, name, points) with the community's overrides over the defaults."""
    rules = {code: (code, name, pts) for code, name, pts in DEFAULT_RULES}
    for rule in await PointsRule.filter(community_id=None):
        rules[rule.code] = (rule.code, rule.name, rule.points)
    if community_id:
        for rule in await PointsRule.filter(community_id=community_id):
            rules[rule.code] = (rule.code, rule.name, rule.points)
    return list(rules.values())


async def ledger_mismatches() -> list[tuple[int, str]]:
    """Residents whose balance differs from the sum of their entries, or whose remembered
    last entry is not their newest one: (id, what is wrong)."""
    out = []
    for r in await Resident.all().only("id", "points", "last_points_reason", "last_points_amount"):
        entries = await PointsEntry.filter(resident_id=r.id).order_by("-id").values_list(
            "amount", "reason")
        total = sum(amount for amount, _ in entries)
        if total != r.points:
            out.append((r.id, f"balance {r.points}, entries sum to {total}"))
        newest = entries[0] if entries else (None, "")
        if (r.last_points_amount, r.last_points_reason) != newest:
            out.append((r.id, f"last entry remembered as {r.last_points_amount} {r.last_points_reason!r}, "
                              f"newest is {newest[0]} {newest[1]!r}"))
    return out
