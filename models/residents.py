"""Residents, the people who talk to the bot, and the operations that change them."""
from __future__ import annotations

from datetime import datetime, timedelta

from tortoise import connections, fields
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.clock import utcnow
from models.db import RowBatcher, add_missing_columns, db_value, raw_execute, raw_models
from models.places import Community, Organisation, RosterEntry


class Role:
    RESIDENT = "resident"
    STAFF = "staff"
    MERCHANT = "merchant"


class Resident(Model):
    id = fields.IntField(primary_key=True)
    openid = fields.CharField(max_length=64, unique=True)
    name = fields.CharField(max_length=50, default="")
    phone = fields.CharField(max_length=11, default="")
    community = fields.ForeignKeyField("models.Community", related_name="residents", null=True)
    # Comma-separated roles; every registered person is at least a resident.
    roles = fields.CharField(max_length=64, default=Role.RESIDENT)
    # Staff belong to an organisation (committee, social, volunteer, sub-district).
    organisation = fields.ForeignKeyField("models.Organisation", related_name="staff", null=True)
    registered = fields.BooleanField(default=False)
    verified = fields.BooleanField(default=False)
    consented_at = fields.DatetimeField(null=True)
    active = fields.BooleanField(default=True)
    notices_enabled = fields.BooleanField(default=True)
    # Kept equal to the sum of the resident's ledger entries (models.points), never below 0.
    points = fields.IntField(default=0)
    # The newest entry's reason and amount, written with it (models.points.post_entry): the
    # balance reply shows them without a second query.
    last_points_reason = fields.CharField(max_length=120, default="")
    last_points_amount = fields.IntField(null=True)
    # Something may be waiting for this resident's next message (an open 转人工, a staff
    # question or a rating request on an appeal, notices held in the inbox). Set in the same
    # transaction as what caused it; cleared before those are checked (see bot/conversation).
    # Without it every message would pay for those look-ups.
    attention = fields.BooleanField(default=False)
    last_interaction_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "resident"

    def has_role(self, role: str) -> bool:
        return role in self.roles.split(",")

    @property
    def is_staff(self) -> bool:
        return self.has_role(Role.STAFF)

    def __str__(self) -> str:  # never the phone: this ends up in logs
        return f"Resident({self.id}, {self.name or '-'})"


async def _by_openid(openid: str) -> Resident | None:
    rows = await raw_models(Resident, 'SELECT * FROM {table} WHERE "openid" = $1 LIMIT 1', openid)
    return rows[0] if rows else None


async def get_or_create_resident(openid: str) -> Resident:
    resident = await _by_openid(openid)
    if resident is None:
        resident, _ = await Resident.get_or_create(openid=openid)
    return resident


# Every message loads its sender; under load many turns ask at once (see RowBatcher).
_SENDERS = RowBatcher(Resident, "openid")


async def sender(openid: str) -> Resident:
    """The sender of a message, read at the start of their turn: get_or_create_resident,
    with the look-ups of concurrent turns batched. Not for use inside a transaction."""
    resident = await _SENDERS.get(openid)
    if resident is None:
        resident, _ = await Resident.get_or_create(openid=openid)
    return resident


# What profile changes write. Never the whole row: the object may have been loaded at the
# start of the turn, and points, the remembered last entry and the attention flag are moved
# meanwhile by other writers (the ledger, staff, the push worker) that a full save would undo.
_PROFILE_FIELDS = ["community_id", "name", "phone", "registered", "active", "consented_at",
                   "verified", "updated_at"]


async def upgrade() -> None:
    """Run at start-up by models.db.upgrade_schema(): the remembered last ledger entry came
    after the table; a database from before gets the columns, filled from the ledger."""
    added = await add_missing_columns("resident", {
        "last_points_reason": ("VARCHAR(120) NOT NULL DEFAULT ''", "VARCHAR(120) NOT NULL DEFAULT ''"),
        "last_points_amount": ("INT", "INT")})
    if "last_points_amount" in added:
        newest = ('(SELECT e."{col}" FROM "points_entry" e WHERE e."resident_id" = "resident"."id" '
                  'ORDER BY e."id" DESC LIMIT 1)')
        await connections.get("default").execute_script(
            f'UPDATE "resident" SET "last_points_amount" = {newest.format(col="amount")}, '
            f'"last_points_reason" = {newest.format(col="reason")} '
            'WHERE EXISTS (SELECT 1 FROM "points_entry" e WHERE e."resident_id" = "resident"."id")')


async def _on_roster(community: Community, phone: str) -> bool:
    return await RosterEntry.filter(community=community, phone=phone).exists()


async def register_resident(openid: str, community: Community, name: str, phone: str) -> Resident:
    """Register (or re-register) a resident in one transaction."""
    async with in_transaction():
        resident = await get_or_create_resident(openid)
        resident.community = community
        resident.name = name
        resident.phone = phone
        resident.registered = True
        resident.active = True
        resident.consented_at = resident.consented_at or utcnow()
        resident.verified = await _on_roster(community, phone)
        await resident.save(update_fields=_PROFILE_FIELDS)
    return resident


async def update_profile(resident: Resident, *, community: Community | None = None,
                         name: str | None = None, phone: str | None = None) -> Resident:
    if community is not None:
        resident.community = community
    if name is not None:
        resident.name = name
    if phone is not None:
        resident.phone = phone
    if resident.community_id and resident.phone:
        community = community or await resident.community
        resident.verified = await _on_roster(community, resident.phone)
    await resident.save(update_fields=_PROFILE_FIELDS)
    return resident


async def set_subscribed(openid: str, subscribed: bool) -> Resident:
    resident = await get_or_create_resident(openid)
    resident.active = subscribed
    await resident.save(update_fields=["active", "updated_at"])
    return resident


async def flag_attention(*, ids: list[int] = (), openids: list[str] = ()) -> None:
    if ids:
        await Resident.filter(id__in=list(ids)).update(attention=True)
    if openids:
        await Resident.filter(openid__in=list(openids)).update(attention=True)


async def take_attention(resident: Resident) -> bool:
    """Clear the flag before looking (so a flag set meanwhile is never lost); True if it was set."""
    if not resident.attention:
        return False
    await Resident.filter(id=resident.id).update(attention=False)
    resident.attention = False
    return True


async def touch_interaction(resident: Resident, now: datetime, min_interval: timedelta) -> None:
    """Record the last interaction (it opens WeChat's customer-service window); throttled."""
    last = resident.last_interaction_at
    if last is None or now - last >= min_interval:
        resident.last_interaction_at = now
        # Nearly every message does this: plain SQL (see models.db.raw_models).
        await raw_execute(Resident, 'UPDATE {table} SET "last_interaction_at" = $1 WHERE "id" = $2',
                          db_value(Resident, "last_interaction_at", now), resident.id)


async def add_staff(openid: str, name: str, organisation: Organisation, phone: str = "") -> Resident:
    async with in_transaction():
        resident = await get_or_create_resident(openid)
        roles = set(resident.roles.split(",")) | {Role.RESIDENT, Role.STAFF}
        resident.roles = ",".join(sorted(roles))
        resident.organisation = organisation
        resident.name = resident.name or name
        resident.phone = resident.phone or phone
        if organisation.community_id and not resident.community_id:
            resident.community_id = organisation.community_id
        resident.registered = True
        await resident.save(update_fields=_PROFILE_FIELDS + ["roles", "organisation_id"])
    return resident
