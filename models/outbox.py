"""The outbox: notices to send, written in the same transaction as the change that caused them.

Sending is at least once; the unique `dedupe_key` is the guard that keeps a resident from
getting the same notice twice (a second write of the same key is ignored).
"""
from __future__ import annotations

from datetime import datetime

from tortoise import fields
from tortoise.models import Model

from models.clock import utcnow
from models.residents import flag_attention


class OutboxStatus:
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SENT = "sent"
    FAILED = "failed"
    # No channel could reach the resident: shown the next time they write.
    INBOX = "inbox"
    # The send went out and its outcome was never learnt (worker died, timeout): WeChat may
    # have shown it, so it is not resent automatically (see bot/dispatcher.py).
    UNKNOWN = "unknown"


class Outbox(Model):
    id = fields.BigIntField(primary_key=True)
    recipient = fields.CharField(max_length=64, db_index=True)  # openid
    kind = fields.CharField(max_length=32)  # late_reply, promotion, reminder, appeal_update, ...
    text = fields.TextField()
    data = fields.JSONField(default=dict)
    dedupe_key = fields.CharField(max_length=160, unique=True)
    status = fields.CharField(max_length=16, default=OutboxStatus.PENDING, db_index=True)
    channel = fields.CharField(max_length=16, default="")
    attempts = fields.IntField(default=0)
    due_at = fields.DatetimeField(db_index=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    sent_at = fields.DatetimeField(null=True)
    last_error = fields.CharField(max_length=255, default="")
    # Dispatcher bookkeeping (bot/dispatcher.py): which worker claimed the row and when, and
    # when its request went on the wire (NULL = claimed but provably never sent).
    claim = fields.CharField(max_length=32, default="")
    claimed_at = fields.DatetimeField(null=True)
    wire_at = fields.DatetimeField(null=True)
    flagged_at = fields.DatetimeField(null=True)  # stuck past the limit: someone should look
    broadcast_id = fields.IntField(null=True)  # indexed by upgrade()

    class Meta:
        table = "outbox"


def notice(recipient: str, kind: str, text: str, key: str, *, due_at: datetime | None = None,
           data: dict | None = None) -> Outbox:
    return Outbox(recipient=recipient, kind=kind, text=text, dedupe_key=key,
                  due_at=due_at or utcnow(), data=data or {})


async def enqueue(*rows: Outbox) -> None:
    """Write notices; rows whose dedupe_key already exists are skipped, not duplicated.

    Call inside the transaction of the change that caused them.
    """
    if rows:
        await Outbox.bulk_create(list(rows), ignore_conflicts=True)


# Columns added after the first release: databases created before them get them on start-up
# (generate_schemas(safe=True) creates missing tables only, never missing columns).
_ADDED_COLUMNS = {
    "claim": ("VARCHAR(32) NOT NULL DEFAULT ''", "VARCHAR(32) NOT NULL DEFAULT ''"),
    "claimed_at": ("TIMESTAMPTZ", "TIMESTAMP"),
    "wire_at": ("TIMESTAMPTZ", "TIMESTAMP"),
    "flagged_at": ("TIMESTAMPTZ", "TIMESTAMP"),
    "broadcast_id": ("INT", "INT"),
}


async def upgrade() -> None:
    """Run at start-up by models.db.upgrade_schema()."""
    from tortoise import connections  # noqa: PLC0415

    from models.db import add_missing_columns  # noqa: PLC0415

    await add_missing_columns("outbox", _ADDED_COLUMNS)
    conn = connections.get("default")
    await conn.execute_script(
        'CREATE INDEX IF NOT EXISTS "idx_outbox_status_due" ON "outbox" ("status", "due_at")')
    await conn.execute_script(
        'CREATE INDEX IF NOT EXISTS "idx_outbox_broadcast" ON "outbox" ("broadcast_id")')


# ---------------------------------------------------------------------------- dispatcher side
# Every change below is conditional on the claim token, so a worker that lost its row to
# the reconciler (it was too slow, not dead) can neither send it nor overwrite its outcome.

async def claim_due(token: str, now: datetime, limit: int) -> list[Outbox]:
    """Mark up to `limit` due rows in flight for this worker and return them."""
    from tortoise import connections  # noqa: PLC0415

    conn = connections.get("default")
    if conn.capabilities.dialect == "postgres":
        # SKIP LOCKED: concurrent workers take disjoint batches without waiting on each other.
        await conn.execute_query(
            "UPDATE outbox SET status = 'in_flight', claim = $1, claimed_at = $2, wire_at = NULL "
            "WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' AND due_at <= $2 "
            "ORDER BY due_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)", [token, now, limit])
    else:
        ids = await (Outbox.filter(status=OutboxStatus.PENDING, due_at__lte=now)
                     .order_by("due_at", "id").limit(limit).values_list("id", flat=True))
        if ids:  # the status condition makes a concurrent claim of the same row a no-op
            await Outbox.filter(id__in=list(ids), status=OutboxStatus.PENDING).update(
                status=OutboxStatus.IN_FLIGHT, claim=token, claimed_at=now, wire_at=None)
    return await Outbox.filter(status=OutboxStatus.IN_FLIGHT, claim=token).order_by("due_at", "id")


def _mine(row_id: int, token: str):
    return Outbox.filter(id=row_id, claim=token, status=OutboxStatus.IN_FLIGHT)


def _pg():
    from tortoise import connections  # noqa: PLC0415
    conn = connections.get("default")
    return conn if conn.capabilities.dialect == "postgres" else None


# The two writes every send makes are plain SQL on PostgreSQL: building them through the ORM
# cost more CPU than the round trip (bench/push_bench.py).
async def mark_wire(row_id: int, token: str, now: datetime) -> bool:
    """Recorded just before the request leaves; False: the row is no longer ours, don't send."""
    conn = _pg()
    if conn is not None:
        count, _ = await conn.execute_query(
            "UPDATE outbox SET wire_at = $1, attempts = attempts + 1 "
            "WHERE id = $2 AND claim = $3 AND status = 'in_flight'", [now, row_id, token])
        return bool(count)
    from tortoise.expressions import F  # noqa: PLC0415
    return bool(await _mine(row_id, token).update(wire_at=now, attempts=F("attempts") + 1))


async def mark_sent(row_id: int, token: str, channel: str, now: datetime) -> None:
    conn = _pg()
    if conn is not None:
        await conn.execute_query(
            "UPDATE outbox SET status = 'sent', channel = $1, sent_at = $2, claim = '', "
            "last_error = '' WHERE id = $3 AND claim = $4 AND status = 'in_flight'",
            [channel, now, row_id, token])
        return
    await _mine(row_id, token).update(status=OutboxStatus.SENT, channel=channel, sent_at=now,
                                      claim="", last_error="")


async def mark_retry(row_id: int, token: str, due_at: datetime, error: str,
                     channel: str = "") -> None:
    """The request was refused or never left: sending again cannot make a duplicate."""
    await _mine(row_id, token).update(status=OutboxStatus.PENDING, due_at=due_at, claim="",
                                      wire_at=None, last_error=error[:255], channel=channel)


async def mark_final(row_id: int, token: str, status: str, error: str, channel: str = "") -> None:
    updated = await _mine(row_id, token).update(status=status, claim="", last_error=error[:255],
                                                channel=channel)
    if updated and status == OutboxStatus.INBOX:  # shown with the resident's next reply
        row = await Outbox.get(id=row_id)
        await flag_attention(openids=[row.recipient])


async def release(ids: list[int], token: str) -> None:
    """Give unsent claimed rows back untouched (rate limit or pause reached mid-batch)."""
    if ids:
        await Outbox.filter(id__in=ids, claim=token, status=OutboxStatus.IN_FLIGHT,
                            wire_at=None).update(status=OutboxStatus.PENDING, claim="")


async def stale_in_flight(before: datetime) -> list[Outbox]:
    return await Outbox.filter(status=OutboxStatus.IN_FLIGHT, claimed_at__lt=before)


async def reset_stale(row_id: int, claim: str) -> bool:
    """A dead worker's row that provably never left: back to pending."""
    return bool(await Outbox.filter(id=row_id, claim=claim, status=OutboxStatus.IN_FLIGHT,
                                    wire_at=None).update(status=OutboxStatus.PENDING, claim=""))


async def settle_stale(row_id: int, claim: str, status: str, error: str,
                       now: datetime | None = None) -> bool:
    """A dead worker's row that went on the wire: its outcome as learnt (or 'unknown')."""
    changes = dict(status=status, claim="", last_error=error[:255])
    if status == OutboxStatus.SENT:
        changes["sent_at"] = now or utcnow()
    elif status == OutboxStatus.PENDING:
        changes["wire_at"] = None
    return bool(await Outbox.filter(id=row_id, claim=claim, status=OutboxStatus.IN_FLIGHT)
                .update(**changes))


async def flag_stuck(now: datetime, older_than_seconds: float) -> int:
    """Rows waiting far too long get flagged once (they keep their status)."""
    from datetime import timedelta  # noqa: PLC0415
    return await Outbox.filter(status__in=[OutboxStatus.PENDING, OutboxStatus.IN_FLIGHT],
                               created_at__lt=now - timedelta(seconds=older_than_seconds),
                               flagged_at=None).update(flagged_at=now)


async def status_counts() -> dict[str, int]:
    from tortoise.functions import Count  # noqa: PLC0415
    rows = await Outbox.all().group_by("status").annotate(n=Count("id")).values("status", "n")
    counts = {r["status"]: r["n"] for r in rows}
    counts["flagged"] = await Outbox.filter(flagged_at__not_isnull=True,
                                            status__in=[OutboxStatus.PENDING,
                                                        OutboxStatus.IN_FLIGHT]).count()
    return counts


# ---------------------------------------------------------------------------- operators

# What an operator may send again: `unknown` once the resident says it never came (WeChat
# offers no way to ask), `failed` once its cause is fixed (a template configured, say).
RESENDABLE = (OutboxStatus.UNKNOWN, OutboxStatus.FAILED)


async def rows_with_status(status: str, limit: int = 50) -> list[Outbox]:
    return await Outbox.filter(status=status).order_by("-id").limit(limit)


async def resend(ids: list[int], now: datetime | None = None) -> tuple[list[int], list[int]]:
    """Rows back to pending, due now, with a fresh count of attempts: (requeued, refused).
    One conditional update each, so a row in any other status is never touched."""
    requeued, refused = [], []
    for row_id in ids:
        changed = await Outbox.filter(id=row_id, status__in=RESENDABLE).update(
            status=OutboxStatus.PENDING, claim="", wire_at=None, attempts=0,
            due_at=now or utcnow(), flagged_at=None)
        (requeued if changed else refused).append(row_id)
    return requeued, refused


# ---------------------------------------------------------------------------- the inbox

INBOX_SHOWN = 5


async def take_inbox(openid: str, now: datetime, limit: int = INBOX_SHOWN) -> tuple[list[Outbox], int]:
    """The oldest unread inbox notices (marked read: sent through channel 'inbox'), and how
    many stay unread."""
    rows = await (Outbox.filter(recipient=openid, status=OutboxStatus.INBOX)
                  .order_by("created_at", "id").limit(limit))
    if not rows:
        return [], 0
    await Outbox.filter(id__in=[r.id for r in rows], status=OutboxStatus.INBOX).update(
        status=OutboxStatus.SENT, channel="inbox", sent_at=now)
    left = await Outbox.filter(recipient=openid, status=OutboxStatus.INBOX).count()
    return rows, left
