"""Partner merchants, their rewards, redemption codes, and staff awards of points.

Data rules (DESIGN.md): points are taken when a code is issued, by a ledger entry in the same
transaction that takes one from stock; the code is single-use and expires; expiry and
cancellation give the points back by a new ledger entry and return the stock. Stock and
balances never go below zero.

Lock order, to keep PostgreSQL free of deadlocks: reward row → redemption row → resident row
(post_entry locks the resident). Every operation here takes them in that order.

Jobs for the scheduler (idempotent, safe to run as often as wanted):
`expire_codes(now)` and `write_expiry_reminders(now, ahead)`.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.functions import Count
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.clock import local, local_text
from models.db import locked
from models.outbox import enqueue, notice
from models.points import (DEFAULT_RULES, InsufficientPoints, PointsEntry, PointsRule, Source,
                           post_entry)
from models.residents import Resident


class RewardKind:
    GOODS = "goods"
    SERVICE = "service"
    VOUCHER = "voucher"  # N points off a bill (积分抵扣)
    ALL = (GOODS, SERVICE, VOUCHER)
    LABELS = {GOODS: "实物", SERVICE: "服务", VOUCHER: "积分抵扣"}


class RedemptionStatus:
    ISSUED = "issued"
    REDEEMED = "redeemed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    LABELS = {ISSUED: "待使用", REDEEMED: "已核销", EXPIRED: "已过期", CANCELLED: "已取消"}


class Merchant(Model):
    """A community partner (社区合伙人). Serves a community, a whole street, or (neither) the district."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=60, unique=True)
    address = fields.CharField(max_length=120, default="")
    contact = fields.CharField(max_length=60, default="")
    community = fields.ForeignKeyField("models.Community", related_name="merchants", null=True)
    street = fields.ForeignKeyField("models.Street", related_name="merchants", null=True)
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "merchant"


class MerchantStaff(Model):
    """Links a person with role `merchant` to the merchant whose codes they verify."""

    id = fields.IntField(primary_key=True)
    resident = fields.OneToOneField("models.Resident", related_name="merchant_link")
    merchant = fields.ForeignKeyField("models.Merchant", related_name="staff")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "merchant_staff"


class Reward(Model):
    id = fields.IntField(primary_key=True)
    merchant = fields.ForeignKeyField("models.Merchant", related_name="rewards")
    name = fields.CharField(max_length=60)
    kind = fields.CharField(max_length=16, default=RewardKind.GOODS)
    points = fields.IntField()
    stock = fields.IntField(default=0)  # never below zero
    monthly_limit = fields.IntField(default=0)  # per resident per calendar month; 0 = no limit
    valid_days = fields.IntField(default=30)  # how long an issued code can be used
    # Vouchers: ¥deduct_yuan off a bill of at least ¥min_spend_yuan.
    deduct_yuan = fields.IntField(default=0)
    min_spend_yuan = fields.IntField(default=0)
    description = fields.CharField(max_length=200, default="")
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "reward"
        unique_together = (("merchant", "name"),)

    @property
    def summary(self) -> str:
        """What the resident gets, in a few words."""
        if self.kind == RewardKind.VOUCHER:
            floor = f"(满{self.min_spend_yuan}元可用)" if self.min_spend_yuan else ""
            return f"{self.name}:结账抵扣{self.deduct_yuan}元{floor}"
        return self.name


class Redemption(Model):
    id = fields.IntField(primary_key=True)
    reward = fields.ForeignKeyField("models.Reward", related_name="redemptions")
    merchant = fields.ForeignKeyField("models.Merchant", related_name="redemptions")
    resident = fields.ForeignKeyField("models.Resident", related_name="redemptions")
    code = fields.CharField(max_length=6, db_index=True)
    # The code while it can still be used, NULL afterwards: unique among live codes only.
    live_code = fields.CharField(max_length=6, unique=True, null=True)
    points = fields.IntField()  # what was paid (the price may change later)
    status = fields.CharField(max_length=12, default=RedemptionStatus.ISSUED, db_index=True)
    key = fields.CharField(max_length=80, unique=True)  # idempotency of the confirmation
    issued_at = fields.DatetimeField(db_index=True)
    expires_at = fields.DatetimeField(db_index=True)
    redeemed_at = fields.DatetimeField(null=True)
    redeemed_by = fields.ForeignKeyField("models.Resident", related_name="verified_redemptions",
                                         null=True)
    cancelled_at = fields.DatetimeField(null=True)
    expired_at = fields.DatetimeField(null=True)
    reminded_at = fields.DatetimeField(null=True)

    class Meta:
        table = "redemption"
        indexes = (("resident", "status"),)  # 我的兑换


# ---------------------------------------------------------------------------- reading

def visible_to(community_id: int | None, street_id: int | None) -> Q:
    """Rewards a resident can see: their community's merchants, their street's, the district's."""
    q = Q(merchant__community_id=None, merchant__street_id=None)
    if community_id:
        q |= Q(merchant__community_id=community_id)
    if street_id:
        q |= Q(merchant__community_id=None, merchant__street_id=street_id)
    return q


async def rewards_for(resident: Resident) -> list[Reward]:
    street_id = None
    if resident.community_id:
        community = await resident.community
        street_id = community.street_id
    return await (Reward.filter(visible_to(resident.community_id, street_id), active=True,
                                merchant__active=True)
                  .order_by("points", "merchant_id", "id").prefetch_related("merchant"))


# Boundaries are local (Asia/Shanghai) but returned in UTC: SQLite compares datetimes as text.
def month_start(now: datetime) -> datetime:
    d = local(now)
    return d.replace(day=1, hour=0, minute=0, second=0, microsecond=0).astimezone(timezone.utc)


def day_start(now: datetime) -> datetime:
    return local(now).replace(hour=0, minute=0, second=0, microsecond=0).astimezone(timezone.utc)


async def used_this_month(resident_id: int, reward_id: int, now: datetime) -> int:
    """Codes issued to the resident this (local) month that still count: live or used."""
    return await Redemption.filter(
        resident_id=resident_id, reward_id=reward_id, issued_at__gte=month_start(now),
        status__in=(RedemptionStatus.ISSUED, RedemptionStatus.REDEEMED)).count()


class RedeemError(Exception):
    """Why a redemption cannot be made or changed (the message is for the resident)."""


async def availability_problem(resident_id: int, reward: Reward, now: datetime) -> str | None:
    """Why the reward cannot be had by this resident now, points aside (None: it can)."""
    if not reward.active:
        return f"“{reward.name}”已下架,暂时不能兑换。"
    if reward.stock <= 0:
        return f"“{reward.name}”已经兑完了,补货后再来吧。"
    if reward.monthly_limit and await used_this_month(resident_id, reward.id, now) >= reward.monthly_limit:
        return f"“{reward.name}”每人每月限兑{reward.monthly_limit}次,您本月已兑满,下个月再来吧。"
    return None


def points_problem(balance: int, reward: Reward) -> str | None:
    if balance < reward.points:
        return (f"积分不够:兑换“{reward.name}”需要{reward.points}积分,您现在有{balance}积分,"
                f"还差{reward.points - balance}积分。")
    return None


async def redeem_problem(resident: Resident, reward: Reward, now: datetime) -> str | None:
    """The first reason this resident cannot redeem this reward now, or None (a preview, no locks)."""
    return (await availability_problem(resident.id, reward, now)
            or points_problem(resident.points, reward))


# ---------------------------------------------------------------------------- redeeming

CODE_DIGITS = 6


def new_code() -> str:
    """6 digits from the OS's secure random source: unguessable, not derived from anything."""
    return f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


async def redeem(resident_id: int, reward_id: int, *, now: datetime, key: str) -> tuple[Redemption, bool]:
    """Issue a code: stock −1, points debited, code created, in one transaction.

    Idempotent by `key` (a second call returns the first redemption, created=False).
    Raises RedeemError with the reason for the resident; nothing changes then.
    """
    if existing := await Redemption.get_or_none(key=key):
        return existing, False
    try:
        async with in_transaction():
            reward = await locked(Reward.filter(id=reward_id)).get()
            if existing := await Redemption.get_or_none(key=key):  # re-read under the lock
                return existing, False
            # Under the reward lock the stock and the month's count are exact; the balance
            # is checked by the ledger under the resident's lock.
            if problem := await availability_problem(resident_id, reward, now):
                raise RedeemError(problem)
            # The conditional update is the last word on stock, whatever the backend.
            taken = await Reward.filter(id=reward_id, stock__gt=0).update(stock=F("stock") - 1)
            if not taken:
                raise RedeemError(f"“{reward.name}”已经兑完了,补货后再来吧。")
            merchant = await reward.merchant
            await post_entry(resident_id, -reward.points, reason=f"兑换“{reward.name}”({merchant.name})",
                             source=Source.REDEMPTION, key=f"redeem:{key}")
            redemption = await _create_with_code(
                reward_id=reward.id, merchant_id=reward.merchant_id, resident_id=resident_id,
                points=reward.points, key=key, issued_at=now,
                expires_at=now + timedelta(days=reward.valid_days))
    except InsufficientPoints as short:
        raise RedeemError(points_problem(short.balance, await Reward.get(id=reward_id))) from None
    return redemption, True


async def _create_with_code(**values) -> Redemption:
    """Insert with a fresh live code; a clash with a live code (rare) retries with another."""
    for _ in range(20):
        code = new_code()
        if await Redemption.filter(live_code=code).exists():
            continue
        try:
            async with in_transaction():  # a savepoint: a clash must not abort the outer transaction
                return await Redemption.create(code=code, live_code=code, **values)
        except IntegrityError:
            if await Redemption.filter(key=values["key"]).exists():
                raise
            continue
    raise RuntimeError("no free redemption code after 20 tries")


async def _refund(redemption: Redemption, reward: Reward, *, status: str, now: datetime,
                  source: str, reason: str) -> None:
    """Inside a transaction holding the reward and redemption locks: close, restock, refund."""
    stamp = {RedemptionStatus.CANCELLED: "cancelled_at", RedemptionStatus.EXPIRED: "expired_at"}[status]
    await Redemption.filter(id=redemption.id).update(status=status, live_code=None, **{stamp: now})
    await Reward.filter(id=reward.id).update(stock=F("stock") + 1)
    await post_entry(redemption.resident_id, redemption.points, reason=reason, source=source,
                     key=f"{source}:redemption:{redemption.id}")


async def cancel_redemption(redemption_id: int, resident_id: int, *, now: datetime) -> Redemption:
    """Cancel an unused code: points back (new ledger entry), stock back. Idempotent."""
    first = await Redemption.get_or_none(id=redemption_id, resident_id=resident_id)
    if first is None:
        raise RedeemError("没有找到这个兑换记录。")
    async with in_transaction():
        reward = await locked(Reward.filter(id=first.reward_id)).get()
        redemption = await locked(Redemption.filter(id=redemption_id)).get()
        if redemption.status == RedemptionStatus.CANCELLED:
            return redemption
        if redemption.status != RedemptionStatus.ISSUED:
            raise RedeemError(_closed_text(redemption, reward.name))
        await _refund(redemption, reward, status=RedemptionStatus.CANCELLED, now=now,
                      source=Source.REFUND, reason=f"取消兑换“{reward.name}”退回")
    return await Redemption.get(id=redemption_id)


def _closed_text(r: Redemption, name: str) -> str:
    if r.status == RedemptionStatus.REDEEMED:
        return f"兑换码 {r.code}(“{name}”)已于{local_text(r.redeemed_at)}核销,不能再取消。"
    if r.status == RedemptionStatus.EXPIRED:
        return f"兑换码 {r.code}(“{name}”)已过期,积分已经退回。"
    return f"兑换码 {r.code}(“{name}”)已取消。"


# ---------------------------------------------------------------------------- expiry (jobs)

async def _expire_one(redemption_id: int, now: datetime) -> bool:
    first = await Redemption.get(id=redemption_id)
    async with in_transaction():
        reward = await locked(Reward.filter(id=first.reward_id)).get()
        redemption = await locked(Redemption.filter(id=redemption_id)).get()
        if redemption.status != RedemptionStatus.ISSUED or redemption.expires_at > now:
            return False
        await _refund(redemption, reward, status=RedemptionStatus.EXPIRED, now=now,
                      source=Source.EXPIRY, reason=f"兑换码过期退回“{reward.name}”")
        resident = await Resident.get(id=redemption.resident_id)
        await enqueue(notice(
            resident.openid, "redemption_expired",
            f"您兑换的“{reward.name}”(兑换码 {redemption.code})已过期未使用,"
            f"{redemption.points}积分已退回。当前积分{resident.points}。",
            f"redemption_expired:{redemption.id}"))
    return True


async def expire_codes(now: datetime) -> int:
    """Job: expire every overdue unused code, refund its points and stock, tell the resident.

    Idempotent and safe to run concurrently with itself; returns how many codes it expired.
    """
    now = now.astimezone(timezone.utc)  # SQLite compares datetimes as text
    overdue = await Redemption.filter(status=RedemptionStatus.ISSUED, expires_at__lte=now
                                      ).order_by("id").values_list("id", flat=True)
    return sum([await _expire_one(rid, now) for rid in overdue])


async def write_expiry_reminders(now: datetime, ahead: timedelta = timedelta(days=1)) -> int:
    """Job: a notice to residents whose unused code expires within `ahead`; once per code."""
    now = now.astimezone(timezone.utc)  # SQLite compares datetimes as text
    due = await (Redemption.filter(status=RedemptionStatus.ISSUED, reminded_at=None,
                                   expires_at__gt=now, expires_at__lte=now + ahead)
                 .prefetch_related("reward", "merchant", "resident"))
    written = 0
    for r in due:
        async with in_transaction():
            marked = await Redemption.filter(id=r.id, reminded_at=None).update(reminded_at=now)
            written += marked
            if marked:
                await enqueue(notice(
                    r.resident.openid, "redemption_reminder",
                    f"提醒:您兑换的“{r.reward.name}”(兑换码 {r.code})将于{local_text(r.expires_at)}过期,"
                    f"请尽快到{r.merchant.name}({r.merchant.address or '见兑换详情'})使用。"
                    "不需要了可以回复“取消兑换”退回积分。",
                    f"redemption_reminder:{r.id}"))
    return written


# ---------------------------------------------------------------------------- merchants verify

class VerifyError(Exception):
    """Why a code cannot be verified (the message is for the merchant's staff)."""


async def merchant_of(resident: Resident | None) -> Merchant | None:
    """The merchant a person verifies codes for, or None."""
    if resident is None or not resident.has_role("merchant"):
        return None
    link = await MerchantStaff.get_or_none(resident_id=resident.id).prefetch_related("merchant")
    return link.merchant if link and link.merchant.active else None


async def find_code(code: str, merchant_id: int, now: datetime) -> Redemption:
    """The redemption a merchant means by `code`, or VerifyError saying clearly why not."""
    live = await Redemption.get_or_none(live_code=code).prefetch_related("reward", "merchant")
    if live is not None and live.merchant_id != merchant_id:
        raise VerifyError(f"兑换码 {code} 不是本店的兑换码,是“{live.merchant.name}”的,"
                          "请让居民到对应商家使用。")
    if live is not None and live.expires_at <= now:
        await _expire_one(live.id, now)  # overdue but the job has not run yet
        raise VerifyError(f"兑换码 {code} 已于{local_text(live.expires_at)}过期,不能使用"
                          "(积分已退回给居民)。")
    if live is not None:
        return live
    past = await (Redemption.filter(code=code, merchant_id=merchant_id).order_by("-issued_at")
                  .first().prefetch_related("reward"))
    if past is None:
        other = await Redemption.filter(code=code).exclude(merchant_id=merchant_id).exists()
        raise VerifyError(f"兑换码 {code} 不是本店的兑换码,请核对。" if other else
                          f"没有找到兑换码 {code},请核对居民出示的6位数字。")
    raise VerifyError(_verify_closed_text(past))


def _verify_closed_text(r: Redemption) -> str:
    if r.status == RedemptionStatus.REDEEMED:
        return (f"兑换码 {r.code}(“{r.reward.name}”)已于{local_text(r.redeemed_at)}核销过了,"
                "不能重复使用。")
    if r.status == RedemptionStatus.EXPIRED:
        return f"兑换码 {r.code}(“{r.reward.name}”)已于{local_text(r.expires_at)}过期,不能使用。"
    return f"兑换码 {r.code}(“{r.reward.name}”)已被居民取消,不能使用。"


async def verify_redemption(redemption_id: int, *, merchant_id: int, staff_id: int,
                            now: datetime) -> Redemption:
    """Mark a code used. Exactly one of any number of concurrent verifications succeeds."""
    first = await Redemption.get(id=redemption_id)
    if first.status == RedemptionStatus.ISSUED and first.expires_at <= now:
        await _expire_one(first.id, now)
    async with in_transaction():
        r = await locked(Redemption.filter(id=redemption_id)).get()
        await r.fetch_related("reward")
        if r.merchant_id != merchant_id:
            raise VerifyError(f"兑换码 {r.code} 不是本店的兑换码。")
        if r.status != RedemptionStatus.ISSUED:
            raise VerifyError(_verify_closed_text(r))
        if r.expires_at <= now:
            raise VerifyError(f"兑换码 {r.code} 已过期,不能使用。")
        done = await Redemption.filter(id=r.id, status=RedemptionStatus.ISSUED).update(
            status=RedemptionStatus.REDEEMED, redeemed_at=now, redeemed_by_id=staff_id,
            live_code=None)
        if not done:
            raise VerifyError(f"兑换码 {r.code} 刚刚已被核销。")
        resident = await Resident.get(id=r.resident_id)
        merchant = await Merchant.get(id=merchant_id)
        await enqueue(notice(resident.openid, "redemption_used",
                             f"您的兑换码 {r.code}(“{r.reward.name}”)已于{local_text(now)}在"
                             f"{merchant.name}核销。感谢您参与社区事务!",
                             f"redemption_used:{r.id}"))
    return await Redemption.get(id=redemption_id).prefetch_related("reward", "resident")


@dataclass
class MerchantStats:
    today: list[Redemption]
    month: list[tuple[str, int, int]]  # reward name, codes, points


async def merchant_stats(merchant_id: int, now: datetime) -> MerchantStats:
    today = await (Redemption.filter(merchant_id=merchant_id, status=RedemptionStatus.REDEEMED,
                                     redeemed_at__gte=day_start(now))
                   .order_by("redeemed_at").prefetch_related("reward", "resident"))
    rows = await (Redemption.filter(merchant_id=merchant_id, status=RedemptionStatus.REDEEMED,
                                    redeemed_at__gte=month_start(now))
                  .annotate(n=Count("id")).group_by("reward_id").values("reward_id", "n"))
    names = dict(await Reward.filter(id__in=[r["reward_id"] for r in rows]).values_list("id", "name"))
    points = {}
    for rid, pts in await Redemption.filter(merchant_id=merchant_id, status=RedemptionStatus.REDEEMED,
                                            redeemed_at__gte=month_start(now)
                                            ).values_list("reward_id", "points"):
        points[rid] = points.get(rid, 0) + pts
    month = sorted(((names[r["reward_id"]], r["n"], points[r["reward_id"]]) for r in rows),
                   key=lambda t: -t[1])
    return MerchantStats(today, month)


# ---------------------------------------------------------------------------- staff awards

@dataclass(frozen=True)
class RuleInfo:
    code: str
    name: str
    points: int
    daily_cap: int


async def rule_table(community_id: int | None) -> list[RuleInfo]:
    """The rules in force: district defaults, overridden by the district's then the community's rows."""
    rules = {code: RuleInfo(code, name, pts, 1) for code, name, pts in DEFAULT_RULES}
    rows = list(await PointsRule.filter(community_id=None))
    if community_id:
        rows += list(await PointsRule.filter(community_id=community_id))
    for row in rows:
        rules[row.code] = RuleInfo(row.code, row.name, row.points, max(1, row.daily_cap))
    return [r for r in rules.values() if r.points > 0]


class AwardError(Exception):
    """Why staff cannot award these points (the message is for the staff member)."""


async def award_points(resident_id: int, rule_code: str, *, staff_id: int, community_id: int | None,
                       note: str = "", now: datetime, nonce: str) -> tuple[PointsEntry, bool]:
    """Staff award under a rule: capped per resident per rule per local day; idempotent by nonce.

    The resident is told in the same transaction (a notice with the reason).
    """
    rule = next((r for r in await rule_table(community_id) if r.code == rule_code), None)
    if rule is None:
        raise AwardError("没有这个积分项目。")
    prefix = f"award:{rule.code}:{resident_id}:{local(now):%Y%m%d}:"
    key = prefix + nonce
    if existing := await PointsEntry.get_or_none(key=key):
        return existing, False
    note = note.strip()[:40]
    reason = f"{rule.name}" + (f",{note}" if note else "")
    async with in_transaction():
        # The resident's row lock serialises awards to one person, so the count is exact.
        resident = await locked(Resident.filter(id=resident_id)).get()
        if existing := await PointsEntry.get_or_none(key=key):
            return existing, False
        if not resident.registered:
            raise AwardError("这位居民还没有登记,不能加积分。")
        given = await PointsEntry.filter(key__startswith=prefix).count()
        if given >= rule.daily_cap:
            raise AwardError(f"{resident.name or '这位居民'}今天已获得{given}次“{rule.name}”积分,"
                             f"每人每天最多{rule.daily_cap}次。")
        return await post_entry(resident_id, rule.points, reason=reason[:120],
                                source=Source.STAFF_AWARD, key=key, actor_id=staff_id, notify=True)


async def set_rule(community_id: int | None, code: str, points: int, *, name: str | None = None,
                   daily_cap: int | None = None) -> PointsRule:
    """Configure a rule for a community (or, with None, the district default)."""
    current = {r.code: r for r in await rule_table(community_id)}
    defaults = {"points": points,
                "name": name or (current[code].name if code in current else code),
                "daily_cap": daily_cap or (current[code].daily_cap if code in current else 1)}
    rule, _ = await PointsRule.update_or_create(community_id=community_id, code=code,
                                                defaults=defaults)
    return rule


__all__ = ["Merchant", "MerchantStaff", "Reward", "Redemption", "RewardKind", "RedemptionStatus",
           "RedeemError", "VerifyError", "AwardError", "redeem", "cancel_redemption",
           "verify_redemption", "find_code", "expire_codes", "write_expiry_reminders",
           "award_points", "rule_table", "set_rule", "rewards_for", "merchant_stats",
           "redeem_problem", "merchant_of"]
