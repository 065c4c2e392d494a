"""The outbox: notices to send, written in the same transaction as the change that caused them.

Sending is at least once; the unique `dedupe_key` is the guard that keeps a resident from
getting the same notice twice (a second write of the same key is ignored).
"""
from __future__ import annotations

from datetime import datetime

from tortoise import fields
from tortoise.models import Model

from models.clock import utcnow


class OutboxStatus:
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SENT = "sent"
    FAILED = "failed"
    # No channel could reach the resident: shown the next time they write.
    INBOX = "inbox"


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
