"""Operator commands for merchants, rewards and points rules (behind `main.py`), and demo data."""
from __future__ import annotations

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from models.admin import AdminError, community_by_name
from models.db import locked
from models.places import Community, Street
from models.residents import Resident, Role, get_or_create_resident
from models.rewards import Merchant, MerchantStaff, Reward, RewardKind, rule_table, set_rule


async def _place(community: str | None, street: str | None) -> dict:
    if community:
        c = await community_by_name(community)
        return {"community_id": c.id, "street_id": c.street_id}
    if street:
        s = await Street.get_or_none(name=street)
        if s is None:
            known = "、".join(await Street.all().values_list("name", flat=True))
            raise AdminError(f"没有名为“{street}”的街道。现有:{known or '无(先运行 seed-demo)'}")
        return {"community_id": None, "street_id": s.id}
    return {"community_id": None, "street_id": None}


async def merchant_by_name(name: str) -> Merchant:
    merchant = await Merchant.get_or_none(name=name)
    if merchant is None and name.isdigit():
        merchant = await Merchant.get_or_none(id=int(name))
    if merchant is None:
        known = "、".join(await Merchant.all().values_list("name", flat=True))
        raise AdminError(f"没有名为“{name}”的商家。现有:{known or '无'}"
                         "(用 merchant create 新建商家)")
    return merchant


async def create_merchant(name: str, *, address: str = "", contact: str = "",
                          community: str | None = None, street: str | None = None) -> Merchant:
    """Create a partner merchant, or update its details when it exists (idempotent)."""
    if not 2 <= len(name.strip()) <= 60:
        raise AdminError("商家名称请用2到60个字")
    merchant, _ = await Merchant.update_or_create(
        name=name.strip(), defaults={"address": address, "contact": contact,
                                     **await _place(community, street)})
    return merchant


async def add_merchant_staff(openid: str, name: str, merchant: str) -> Resident:
    """Give a person the merchant role and link them to the merchant whose codes they verify."""
    target = await merchant_by_name(merchant)
    async with in_transaction():
        person = await get_or_create_resident(openid)
        roles = set(person.roles.split(",")) | {Role.RESIDENT, Role.MERCHANT}
        person.roles = ",".join(sorted(roles))
        person.name = person.name or name
        await person.save(update_fields=["roles", "name", "updated_at"])  # never the balance
        await MerchantStaff.update_or_create(resident_id=person.id,
                                             defaults={"merchant_id": target.id})
    return person


# What a new reward gets for each setting the operator leaves out.
REWARD_DEFAULTS = {"kind": RewardKind.GOODS, "monthly_limit": 0, "valid_days": 30,
                   "deduct_yuan": 0, "min_spend_yuan": 0, "description": ""}


def _check_reward(v: dict) -> None:
    if v["kind"] not in RewardKind.ALL:
        raise AdminError(f"类型只能是 {'/'.join(RewardKind.ALL)}")
    if v["points"] <= 0:
        raise AdminError("所需积分必须大于0")
    if v["stock"] < 0 or v["monthly_limit"] < 0:
        raise AdminError("库存和每月限兑次数不能小于0")
    if v["valid_days"] <= 0:
        raise AdminError("有效天数必须大于0")
    if v["kind"] == RewardKind.VOUCHER and v["deduct_yuan"] <= 0:
        raise AdminError("积分抵扣券要写明抵扣金额 --deduct-yuan")


async def add_reward(merchant: str, name: str, points: int | None = None,
                     stock: int | None = None, **settings) -> Reward:
    """Add a reward and put it on offer, or update one (same merchant and name).

    An update writes only what is given: a setting left out (None) keeps its value, and the
    stock in particular has been moved by redemptions since it was set. A new reward needs
    points and stock; its other settings default to REWARD_DEFAULTS."""
    unknown = set(settings) - set(REWARD_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown reward settings: {sorted(unknown)}")
    target = await merchant_by_name(merchant)
    name = name.strip()
    given = {k: v for k, v in dict(settings, points=points, stock=stock).items() if v is not None}
    async with in_transaction():
        current = await locked(Reward.filter(merchant_id=target.id, name=name)).first()
        if current is None:
            if points is None or stock is None:
                raise AdminError("新的兑换项目要写明所需积分和库存 --points --stock")
            values = {**REWARD_DEFAULTS, **given}
            _check_reward(values)
            try:
                return await Reward.create(merchant_id=target.id, name=name, **values)
            except IntegrityError:  # the same name added at the same moment elsewhere
                raise AdminError(f"“{name}”刚刚被同时添加了,请再运行一次(会按更新处理)") from None
        _check_reward({**{k: getattr(current, k) for k in (*REWARD_DEFAULTS, "points", "stock")},
                       **given})
        # A plain UPDATE of the given columns: a concurrent restock's increment is kept.
        await Reward.filter(id=current.id).update(**given, active=True)
    return await Reward.get(id=current.id)


async def withdraw_reward(merchant: str, name: str) -> Reward:
    """Take a reward off offer (codes already issued stay valid); `reward add` puts it back."""
    target, name = await merchant_by_name(merchant), name.strip()
    if not await Reward.filter(merchant_id=target.id, name=name).update(active=False):
        raise AdminError(f"“{target.name}”没有名为“{name}”的兑换项目")
    return await Reward.get(merchant_id=target.id, name=name)


async def restock(merchant: str, name: str, add: int) -> Reward:
    """Add `add` to a reward's stock (a delivery came in): one conditional update, so it never
    undoes a redemption made meanwhile; a negative `add` takes off at most what is there."""
    target = await merchant_by_name(merchant)
    reward = await Reward.get_or_none(merchant_id=target.id, name=name.strip())
    if reward is None:
        raise AdminError(f"“{target.name}”没有名为“{name}”的兑换项目")
    if add == 0:
        raise AdminError("请写明增加的数量,例如 --add 20(减少用负数)")
    changed = await Reward.filter(id=reward.id, stock__gte=max(0, -add)).update(
        stock=F("stock") + add)
    if not changed:
        raise AdminError(f"库存不够减:现有{(await Reward.get(id=reward.id)).stock}")
    return await Reward.get(id=reward.id)


async def list_rewards() -> list[Reward]:
    return await Reward.all().order_by("merchant_id", "points", "id").prefetch_related("merchant")


async def set_points_rule(community: str | None, code: str, points: int, name: str | None = None,
                          daily_cap: int | None = None) -> list:
    """Set a rule's points (and optionally name and daily cap) for a community or the district."""
    if points < 0:
        raise AdminError("积分不能小于0(设为0即停用该项目)")
    if daily_cap is not None and daily_cap < 1:
        raise AdminError("每日上限至少为1次")
    target: Community | None = await community_by_name(community) if community else None
    await set_rule(target.id if target else None, code, points, name=name, daily_cap=daily_cap)
    return await rule_table(target.id if target else None)


# ---------------------------------------------------------------------------- demo data

# The seed article: a wash-cut-dry or a head spa 100, a shopping bag or toothpaste 100,
# toilet rolls or tissues 50, and 积分抵扣 on a bill.
DEMO_MERCHANTS = [
    # name, address, contact, community, street
    ("悦丝美发", "京溪街南方医科大学社区商业街12号", "020-61230001", None, "京溪街"),
    ("南医大社区惠民超市", "南方医科大学社区东门旁", "020-61230002", "南方医科大学社区", None),
    ("汇侨北邻里便利店", "汇侨北社区汇侨路8号", "020-86230003", "汇侨北社区", None),
]
DEMO_REWARDS = [
    # merchant, name, kind, points, stock, monthly limit, valid days, deduct ¥, min spend ¥
    ("悦丝美发", "洗剪吹", RewardKind.SERVICE, 100, 30, 1, 30, 0, 0),
    ("悦丝美发", "人气头疗", RewardKind.SERVICE, 100, 20, 1, 30, 0, 0),
    ("悦丝美发", "理发积分抵扣", RewardKind.VOUCHER, 100, 50, 2, 30, 10, 30),
    ("南医大社区惠民超市", "购物袋", RewardKind.GOODS, 100, 50, 2, 14, 0, 0),
    ("南医大社区惠民超市", "牙膏", RewardKind.GOODS, 100, 50, 2, 14, 0, 0),
    ("南医大社区惠民超市", "卷纸", RewardKind.GOODS, 50, 100, 4, 14, 0, 0),
    ("南医大社区惠民超市", "抽纸", RewardKind.GOODS, 50, 100, 4, 14, 0, 0),
    ("汇侨北邻里便利店", "购物袋", RewardKind.GOODS, 100, 30, 2, 14, 0, 0),
    ("汇侨北邻里便利店", "牙膏", RewardKind.GOODS, 100, 30, 2, 14, 0, 0),
    ("汇侨北邻里便利店", "卷纸", RewardKind.GOODS, 50, 60, 4, 14, 0, 0),
    ("汇侨北邻里便利店", "抽纸", RewardKind.GOODS, 50, 60, 4, 14, 0, 0),
    ("汇侨北邻里便利店", "购物积分抵扣", RewardKind.VOUCHER, 50, 100, 4, 30, 5, 20),
]
DEMO_MERCHANT_OPENID = "demo-merchant"


async def seed_rewards() -> None:
    """Idempotent: merchants and rewards are created once, stock is never reset."""
    for name, address, contact, community, street in DEMO_MERCHANTS:
        if not await Merchant.filter(name=name).exists():
            await create_merchant(name, address=address, contact=contact, community=community,
                                  street=street)
    for merchant, name, kind, points, stock, limit, days, deduct, floor in DEMO_REWARDS:
        m = await Merchant.get(name=merchant)
        if not await Reward.filter(merchant_id=m.id, name=name).exists():
            await add_reward(merchant, name, points, stock, kind=kind, monthly_limit=limit,
                             valid_days=days, deduct_yuan=deduct, min_spend_yuan=floor)
    await add_merchant_staff(DEMO_MERCHANT_OPENID, "便利店店员小陈", "汇侨北邻里便利店")
