"""Demo data for `make run` and `python main.py seed-demo`: the places of the pilot.

Idempotent: running it twice changes nothing. Later domains add their demo data here.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from tortoise.transactions import in_transaction

from models.activities import Activity, create_activity
from models.clock import LOCAL_TZ

from models.places import Community, Organisation, OrgKind, RosterEntry, Street
from models.residents import add_staff

STREETS = {
    "新市街": [("汇侨北社区", "hqb")],
    "京溪街": [("南方医科大学社区", "nfyd")],
    "黄石街": [("江夏第一社区", "jx1"), ("江夏第二社区", "jx2")],
}

# Demo people: a staff member of 汇侨北社区 and a roster line that verifies a resident.
DEMO_STAFF_OPENID = "demo-staff"
DEMO_ROSTER = [("汇侨北社区", "李敏", "13800138000")]


async def seed_places() -> dict[str, Community]:
    communities: dict[str, Community] = {}
    async with in_transaction():
        for street_name, members in STREETS.items():
            street, _ = await Street.get_or_create(name=street_name)
            await Organisation.get_or_create(
                name=f"{street_name.rstrip('街')}街道办事处",
                defaults={"kind": OrgKind.SUBDISTRICT, "street": street, "contact": "020-86000000"})
            for name, code in members:
                community, _ = await Community.get_or_create(
                    name=name, defaults={"code": code, "street": street})
                communities[name] = community
                for suffix, kind in (("居委会", OrgKind.COMMITTEE), ("社工服务站", OrgKind.SOCIAL),
                                     ("志愿服务队", OrgKind.VOLUNTEER)):
                    await Organisation.get_or_create(
                        name=f"{name}{suffix}",
                        defaults={"kind": kind, "community": community, "street": street,
                                  "contact": "020-86001234"})
        for community_name, person, phone in DEMO_ROSTER:
            await RosterEntry.get_or_create(community=communities[community_name], phone=phone,
                                            defaults={"name": person})
    return communities


async def seed_demo() -> None:
    communities = await seed_places()
    await seed_activities(communities)
    committee = await Organisation.get(name="汇侨北社区居委会")
    await add_staff(DEMO_STAFF_OPENID, "社工小王", committee)
    from models.rewards_admin import seed_rewards
    await seed_rewards()
    from models.services import seed_demo_services
    from models.surveys import seed_demo_survey
    await seed_demo_services()
    await seed_demo_survey(datetime.now(LOCAL_TZ))
    from models.appeals_admin import seed_demo_appeals
    await seed_demo_appeals(datetime.now(LOCAL_TZ))


# The seed article's activities, placed in the coming weeks so the demo always has some.
DEMO_ACTIVITIES = [
    # title, community, kind, audience, days ahead, hour, hours long, capacity, points, volunteer pts, place
    ("寒假作业辅导班", "汇侨北社区", "class", "children", 7, 9, 3, 30, 20, 0, "汇侨北社区党群服务中心二楼"),
    ("舞蹈公益课堂", "汇侨北社区", "class", "children", 8, 15, 2, 20, 10, 0, "汇侨北社区文体活动室"),
    ("马上送福,指尖传暖手工活动", "江夏第二社区", "culture", "everyone", 3, 14, 2, 15, 20, 0,
     "江夏第二社区居委会活动室"),
    ("新春文艺汇演志愿者", "南方医科大学社区", "volunteer", "everyone", 10, 18, 3, 20, 100, 100,
     "南方医科大学社区广场"),
    ("一月居民议事会", "南方医科大学社区", "meeting", "everyone", 14, 19, 2, 40, 50, 0,
     "南方医科大学社区居委会会议室"),
]


async def seed_activities(communities: dict[str, Community]) -> None:
    today = datetime.now(LOCAL_TZ).replace(minute=0, second=0, microsecond=0)
    for (title, community_name, kind, audience, days, hour, hours, capacity, points, vpoints,
         place) in DEMO_ACTIVITIES:
        community = communities[community_name]
        if await Activity.filter(title=title, community=community).exists():
            continue
        start = (today + timedelta(days=days)).replace(hour=hour)
        committee = await Organisation.get(name=f"{community_name}居委会")
        await create_activity(title=title, community=community, organisation=committee,
                              kind=kind, audience=audience, start_at=start,
                              end_at=start + timedelta(hours=hours), capacity=capacity,
                              points_participant=points, points_volunteer=vpoints, place=place,
                              contact=committee.contact, cancel_deadline=start - timedelta(hours=12))
