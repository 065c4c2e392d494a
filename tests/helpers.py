"""Test data builders shared by the domain tests."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from models.activities import create_activity
from models.places import Community, Organisation
from models.residents import add_staff, register_resident


def now() -> datetime:
    return datetime.now(timezone.utc)


async def resident(openid: str, community: str = "汇侨北社区", name: str | None = None,
                   phone: str | None = None):
    c = await Community.get(name=community)
    digits = f"{abs(hash(openid)) % 10 ** 8:08d}"
    return await register_resident(openid, c, name or f"居民{openid[-4:]}", phone or f"139{digits}")


async def staff(openid: str, org: str = "汇侨北社区居委会", name: str = "社工小王"):
    return await add_staff(openid, name, await Organisation.get(name=org))


async def activity(title: str = "寒假作业辅导班", community: str = "汇侨北社区", *,
                   start_in: timedelta = timedelta(days=2), hours: float = 2, capacity: int = 30,
                   points: int = 20, code: str | None = None, audience: str = "everyone",
                   kind: str = "class", **extra):
    c = await Community.get(name=community)
    org = await Organisation.get(name=f"{community}居委会")
    start = now() + start_in
    return await create_activity(title=title, community=c, organisation=org, start_at=start,
                                 end_at=start + timedelta(hours=hours), capacity=capacity,
                                 points_participant=points, code=code, audience=audience,
                                 kind=kind, place="社区党群服务中心", contact=org.contact, **extra)
