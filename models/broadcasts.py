"""Broadcasts: staff announce an activity to the residents of a community (or a street).

A broadcast is one row here plus one outbox row per resident reached, written in bulk in
one transaction. The dedupe key `bc:<activity>:<resident>` means announcing the same activity
twice never notifies anyone twice. Residents who turned notices off (退订通知), who are not
registered or who stopped following are left out.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tortoise import fields
from tortoise.functions import Count
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.activities import Activity, ActivityStatus
from models.clock import local_text, utcnow
from models.outbox import Outbox, enqueue, notice
from models.places import Organisation
from models.residents import Resident

KIND = "broadcast"
BATCH = 2000


class BroadcastError(Exception):
    """Why the broadcast cannot go out, in words for staff."""


class Broadcast(Model):
    id = fields.IntField(primary_key=True)
    activity = fields.ForeignKeyField("models.Activity", related_name="broadcasts", null=True)
    community = fields.ForeignKeyField("models.Community", related_name="broadcasts", null=True)
    street = fields.ForeignKeyField("models.Street", related_name="broadcasts", null=True)
    created_by = fields.ForeignKeyField("models.Resident", related_name="broadcasts", null=True)
    text = fields.TextField()
    audience = fields.IntField(default=0)  # residents in scope with notices on
    queued = fields.IntField(default=0)  # new outbox rows (the rest had been told already)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "broadcast"


def activity_text(activity: Activity) -> str:
    place = f"\n地点:{activity.place}" if activity.place else ""
    return (f"【社区活动】{activity.title}\n时间:{local_text(activity.start_at)}{place}\n"
            f"名额{activity.capacity}人,回复“报名{activity.title}”即可报名。\n"
            "(回复“退订通知”不再接收活动通知)")


def _audience(community_id: int | None, street_id: int | None, sender: Resident | None = None):
    q = Resident.filter(registered=True, active=True, notices_enabled=True)
    if sender is not None:  # the staff member announcing it knows already
        q = q.exclude(id=sender.id)
    if community_id:
        return q.filter(community_id=community_id)
    return q.filter(community__street_id=street_id)


async def _activity_scope(activity: Activity) -> tuple[int | None, int | None]:
    if activity.community_id:
        return activity.community_id, None
    return None, activity.street_id


async def may_announce(staff: Resident, activity: Activity) -> bool:
    """Committee staff announce their community's activities; sub-district staff their street's."""
    if not staff.organisation_id:
        return False
    org = await Organisation.get(id=staff.organisation_id)
    if org.community_id:
        return activity.community_id == org.community_id
    if activity.street_id == org.street_id and activity.street_id:
        return True
    if activity.community_id:
        community = await activity.community
        return community.street_id == org.street_id
    return False


async def audience_size(activity: Activity, sender: Resident | None = None) -> int:
    community_id, street_id = await _activity_scope(activity)
    return await _audience(community_id, street_id, sender).count()


async def broadcast_activity(activity_id: int, staff: Resident | None,
                             now: datetime | None = None) -> Broadcast:
    """Queue the announcement of an activity for every resident in its scope, in one go."""
    now = now or utcnow()
    activity = await Activity.get_or_none(id=activity_id)
    if activity is None:
        raise BroadcastError(f"没有编号为{activity_id}的活动。")
    if activity.status != ActivityStatus.PUBLISHED or activity.start_at <= now:
        raise BroadcastError("这个活动已结束或未发布,不能再发通知。")
    if staff is not None and not await may_announce(staff, activity):
        raise BroadcastError("只能通知本社区(或本街道)的活动。")
    community_id, street_id = await _activity_scope(activity)
    text = activity_text(activity)
    prefix = f"bc:{activity.id}:"
    async with in_transaction():
        told = set(await Outbox.filter(dedupe_key__startswith=prefix)
                   .values_list("dedupe_key", flat=True))
        people = await (_audience(community_id, street_id, staff).order_by("id")
                        .values_list("id", "openid"))
        b = await Broadcast.create(activity_id=activity.id, community_id=community_id,
                                   street_id=street_id, created_by=staff, text=text,
                                   audience=len(people))
        rows = []
        for resident_id, openid in people:
            key = f"{prefix}{resident_id}"
            if key not in told:
                row = notice(openid, KIND, text, key, due_at=now,
                             data={"activity": activity.id})
                row.broadcast_id = b.id
                rows.append(row)
        for i in range(0, len(rows), BATCH):
            await enqueue(*rows[i:i + BATCH])
        b.queued = len(rows)
        await b.save(update_fields=["queued"])
    return b


@dataclass
class Reach:
    queued: int
    by_channel: dict[str, int]  # sent: customer service / template / subscription / inbox read
    waiting: int  # pending or in flight
    inbox: int  # waiting for the resident to write
    failed: int  # failed or outcome unknown


async def broadcast_reach(broadcast_id: int) -> Reach:
    rows = await (Outbox.filter(broadcast_id=broadcast_id).group_by("status", "channel")
                  .annotate(n=Count("id")).values("status", "channel", "n"))
    by_channel: dict[str, int] = {}
    waiting = inbox = failed = queued = 0
    for r in rows:
        queued += r["n"]
        if r["status"] == "sent":
            by_channel[r["channel"]] = by_channel.get(r["channel"], 0) + r["n"]
        elif r["status"] in ("pending", "in_flight"):
            waiting += r["n"]
        elif r["status"] == "inbox":
            inbox += r["n"]
        else:
            failed += r["n"]
    return Reach(queued, by_channel, waiting, inbox, failed)


async def set_notices(resident: Resident, enabled: bool) -> bool:
    """Turn activity announcements on or off; returns whether anything changed."""
    if resident.notices_enabled == enabled:
        return False
    resident.notices_enabled = enabled
    await Resident.filter(id=resident.id).update(notices_enabled=enabled)
    return True
