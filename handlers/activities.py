"""Activities for residents: list, details, sign up (self or family), my signups, cancel, check in."""
from __future__ import annotations

import re
from datetime import timedelta

from tortoise.expressions import Q

from handlers.engine import (REGISTRY, Ctx, EndFlow, Flow, Invalid, Step, duration_text, flow,
                             intent, numbered, parse_listed, scene, start_flow, yes_or_keep)
from models.activities import (Activity, ActivityStatus, Audience, CancelError, CheckinError,
                               FamilyMember, Participant, Signup, SignupError, SignupStatus,
                               cancel_signup, check_in, confirm_signup, counts_for, hold_place,
                               position_in_waitlist, release_hold)
from models.clock import local, local_text
from nlp.entities import find_code, parse_choice, parse_int, parse_when, parse_yes_no
from nlp.fuzzy import Catalog
from nlp.normalize import compact

LIST_LIMIT = 8

# Words that say what the resident wants rather than which activity (stripped before matching).
_VERBS = re.compile(r"(我想|我要|想|要|帮我|帮|给|替|报名|报个名|报|参加|参与|取消|退出|退|活动|一下|个|的|"
                    r"我|女儿|儿子|孩子|小朋友|孙女|孙子|老公|老婆|妈妈|爸爸|签到)")
_FAMILY_WORDS = ("女儿", "儿子", "孩子", "小朋友", "孙女", "孙子", "外孙", "囡", "仔", "家人", "小孩",
                 "宝宝", "细路")


# ---------------------------------------------------------------------------- finding activities

def _visible(ctx: Ctx) -> Q:
    r = ctx.resident
    community = r.community_id if r else None
    street = getattr(getattr(r, "community", None), "street_id", None)
    q = Q(community_id=community) if community else Q(id__gte=0)
    if street:
        q |= Q(community_id=None, street_id=street)
    return q


async def upcoming(ctx: Ctx) -> list[Activity]:
    if ctx.resident and ctx.resident.community_id:
        await ctx.resident.fetch_related("community")
    return await (Activity.filter(_visible(ctx), status=ActivityStatus.PUBLISHED,
                                  end_at__gt=ctx.now).order_by("start_at", "id").limit(50))


def _filter(ctx: Ctx, activities: list[Activity]) -> tuple[list[Activity], str]:
    words = compact(ctx.text)
    label = ""
    if any(w in words for w in ("孩子", "小朋友", "儿童", "亲子", "小孩", "学生", "细路", "仔女")):
        activities, label = [a for a in activities if a.audience == "children"], "适合孩子的"
    elif any(w in words for w in ("老人", "长者", "老年", "长辈", "老友记")):
        activities, label = [a for a in activities if a.audience == "elderly"], "适合长者的"
    if "志愿" in words or "义工" in words:
        activities, label = [a for a in activities if a.kind == "volunteer"], label + "志愿"
    when = parse_when(ctx.text, ctx.local_now)
    if when:
        activities = [a for a in activities
                      if a.start_at < when.end and a.end_at > when.start]
        label = when.label + label
    return activities, label


async def find_activity(ctx: Ctx, activities: list[Activity]) -> list[Activity]:
    """The activities the message names: a number from the last list, or fuzzy by title."""
    chosen = ctx.chosen("activity")
    if chosen:
        return [a for a in activities if a.id == chosen]
    query = _VERBS.sub("", compact(ctx.text))
    if len(query) < 2 or not activities:
        return []
    matches = Catalog([a.title for a in activities]).match(query, limit=3, cutoff=70)
    if not matches:
        return []
    best = matches[0].score
    return [activities[m.index] for m in matches if m.score >= best - 5]


def _line(a: Activity, counts) -> str:
    left = counts.places_left(a.capacity)
    status = f"剩余 {left}/{a.capacity}" if left else f"已满(候补{counts.waiting}人)"
    return f"{a.title} | {local_text(a.start_at)} | {status}"


# ---------------------------------------------------------------------------- listing and details

@intent("activity_list")
async def list_activities(ctx: Ctx) -> str:
    everything = await upcoming(ctx)
    activities, label = _filter(ctx, everything)
    if not activities:
        more = "\n回复“活动”看看全部近期活动。" if everything else ""
        return f"最近没有{label}社区活动。{more}"
    shown = activities[:LIST_LIMIT]
    counts = await counts_for([a.id for a in shown], ctx.now)
    ctx.remember_choices("activity", [a.id for a in shown])
    return (f"近期{label}社区活动:\n" + numbered(_line(a, counts[a.id]) for a in shown)
            + "\n回复数字看详情,或说“报名+活动名”。")


async def details(ctx: Ctx, activity: Activity) -> str:
    c = (await counts_for([activity.id], ctx.now))[activity.id]
    left = c.places_left(activity.capacity)
    ctx.state["focus"] = activity.id
    points = f"\n参加可得积分:{activity.points_participant}" if activity.points_participant else ""
    if activity.points_volunteer:
        points += f"(志愿者{activity.points_volunteer})"
    places = f"剩余名额:{left}/{activity.capacity}" if left else f"名额已满,候补{c.waiting}人"
    return (f"【{activity.title}】\n时间:{local_text(activity.start_at)} 至 "
            f"{local(activity.end_at):%H:%M}\n地点:{activity.place or '待定'}\n"
            f"对象:{Audience.LABELS.get(activity.audience, '所有居民')}\n{places}{points}\n"
            f"{activity.description}\n回复“报名”报名这个活动。").replace("\n\n", "\n")


async def activity_choice_hook(ctx: Ctx) -> str | None:
    """A number right after a list shows that activity's details."""
    chosen = ctx.chosen("activity")
    if chosen is None:
        return None
    activity = await Activity.get_or_none(id=chosen)
    return await details(ctx, activity) if activity else None


REGISTRY.hooks.append(activity_choice_hook)


# ---------------------------------------------------------------------------- signing up

def _wants_family(ctx: Ctx) -> bool:
    return any(w in compact(ctx.text) for w in _FAMILY_WORDS)


def _chose(slots: dict, activity: Activity) -> int:
    # Who the place is for is asked only for children's activities (or when said).
    slots["_kids"] = activity.audience == "children"
    return activity.id


async def _prefill_signup(ctx: Ctx, slots: dict) -> None:
    activities = await upcoming(ctx)
    found = await find_activity(ctx, activities)
    focus = next((a for a in activities if a.id == ctx.state.get("focus")), None)
    if len(found) == 1:
        slots["activity"] = _chose(slots, found[0])
    elif not found and focus and len(_VERBS.sub("", compact(ctx.text))) < 2:
        slots["activity"] = _chose(slots, focus)  # 报名 right after looking at the details
    elif len(found) > 1:
        slots["_choices"] = [a.id for a in found]
    if _wants_family(ctx):
        slots["who"] = await _for_family(ctx, slots)


async def _for_family(ctx: Ctx, slots: dict) -> str:
    """Family members already known are offered; with none, their name and age are asked."""
    slots["_family"] = [m.id for m in await FamilyMember.filter(resident_id=ctx.resident.id)
                        .order_by("id")]
    if not slots["_family"]:
        slots["member"] = "new"
    return "family"


async def _activity_prompt(ctx: Ctx, slots: dict) -> str:
    if slots.get("_choices"):
        activities = await Activity.filter(id__in=slots["_choices"]).order_by("start_at")
    else:
        activities = (await upcoming(ctx))[:LIST_LIMIT]
    if not activities:
        raise EndFlow("最近没有可以报名的社区活动,有新活动会通知您。")
    slots["_choices"] = [a.id for a in activities]
    counts = await counts_for(slots["_choices"], ctx.now)
    return "想报名哪个活动?回复数字:\n" + numbered(_line(a, counts[a.id]) for a in activities)


async def _parse_activity(ctx: Ctx, slots: dict) -> int:
    choices = slots.get("_choices") or []
    index = parse_choice(ctx.text, len(choices))
    if index:
        return _chose(slots, await Activity.get(id=choices[index - 1]))
    found = await find_activity(ctx, await Activity.filter(id__in=choices))
    if len(found) == 1:
        return _chose(slots, found[0])
    raise Invalid("没找到这个活动,请回复列表里的数字。")


async def _who_prompt(ctx: Ctx, slots: dict) -> str:
    return "给谁报名?\n1. 我自己\n2. 家人(例如孩子)"


async def _parse_who(ctx: Ctx, slots: dict) -> str:
    index = parse_choice(ctx.text, 2)
    if index == 1:
        return "self"
    if index == 2 or _wants_family(ctx):
        return await _for_family(ctx, slots)
    if compact(ctx.text) in ("我", "我自己", "自己", "本人", "我本人", "给我", "帮我自己"):
        return "self"
    raise Invalid("请回复1(自己)或2(家人)。")


async def _member_prompt(ctx: Ctx, slots: dict) -> str:
    family = await FamilyMember.filter(id__in=slots["_family"]).order_by("id")
    options = [f"{m.name}({m.age}岁)" if m.age else m.name for m in family] + ["其他家人"]
    return "给哪位家人报名?回复数字:\n" + numbered(options)


async def _parse_member(ctx: Ctx, slots: dict):
    family = slots.get("_family") or []
    index = parse_choice(ctx.text, len(family) + 1)
    if index:
        return family[index - 1] if index <= len(family) else "new"
    for member in await FamilyMember.filter(id__in=family):
        if member.name in ctx.text:
            return member.id
    raise Invalid("请回复列表里的数字。")


async def _parse_member_name(ctx: Ctx, slots: dict) -> str:
    name = re.sub(r"^(叫|佢叫|他叫|她叫|名字是|我女儿叫|我儿子叫)", "", ctx.text.strip())
    if not re.fullmatch(r"[\u4e00-\u9fa5A-Za-z·]{2,20}", name):
        raise Invalid("姓名请用2到20个汉字或字母。")
    return name


async def _parse_member_age(ctx: Ctx, slots: dict) -> int:
    age = parse_int(ctx.text)
    if age is None or not 0 < age < 120:
        raise Invalid("请回复年龄数字。")
    return age


def _new_member(slots: dict) -> bool:
    return slots.get("who") == "family" and slots.get("member") == "new"


async def _participant(ctx: Ctx, slots: dict) -> Participant:
    if slots.get("who") != "family":
        return Participant(ctx.resident.name or "本人")
    if _new_member(slots):
        member, _ = await FamilyMember.get_or_create(
            resident_id=ctx.resident.id, name=slots["member_name"],
            defaults={"age": slots.get("member_age")})
        slots["member"] = member.id
    member = await FamilyMember.get(id=slots["member"], resident_id=ctx.resident.id)
    return Participant(member.name, f"fm:{member.id}", member.id)


async def _confirm_signup_prompt(ctx: Ctx, slots: dict) -> str:
    activity = await Activity.get(id=slots["activity"])
    participant = await _participant(ctx, slots)
    try:
        signup = await hold_place(activity.id, ctx.resident.id, participant, now=ctx.now,
                                  hold_seconds=ctx.config.hold_seconds)
    except SignupError as exc:
        raise EndFlow(str(exc)) from None
    if signup.status in (SignupStatus.CONFIRMED, SignupStatus.CHECKED_IN):
        raise EndFlow(f"{participant.name}已经报名了“{activity.title}”,不用重复报名。")
    if signup.status == SignupStatus.WAITING:
        position = await position_in_waitlist(signup)
        raise EndFlow(f"{participant.name}已经在“{activity.title}”的候补名单上,排第{position}位。")
    slots["signup"] = signup.id
    head = f"报名“{activity.title}”\n时间:{local_text(activity.start_at)}\n参加人:{participant.name}\n"
    if signup.status == SignupStatus.HELD:
        left = (await counts_for([activity.id], ctx.now))[activity.id].places_left(activity.capacity)
        return (f"{head}已为您保留一个名额{duration_text(ctx.config.hold_seconds)}(保留后还剩{left}个)。"
                "确认报名请回复“是”。")
    slots["waitlist"] = True
    return f"{head}名额已经满了。要加入候补名单吗?有人退出会按顺序递补并通知您。加入请回复“是”。"


async def _parse_signup_confirm(ctx: Ctx, slots: dict) -> bool:
    answer = parse_yes_no(ctx.text)
    if answer is None:
        raise Invalid("请回复“是”确认,或回复“取消”放弃。")
    if not answer:
        await release_hold(slots["signup"])
        raise EndFlow("好的,没有报名,名额已经释放。")
    return True


async def _finish_signup(ctx: Ctx, slots: dict) -> str:
    try:
        signup = await confirm_signup(slots["signup"], now=ctx.now, waitlist=True)
    except SignupError as exc:
        return str(exc)
    activity = await Activity.get(id=signup.activity_id)
    if signup.status == SignupStatus.CONFIRMED:
        return (f"报名成功!{signup.participant_name}已报名“{activity.title}”,"
                f"{local_text(activity.start_at)}在{activity.place or '社区'}。"
                "活动前一天会提醒您,现场凭签到码签到可得积分。")
    position = await position_in_waitlist(signup)
    lapsed = "" if slots.get("waitlist") else "刚才保留的名额已过时,名额被抢完了,"
    return f"{lapsed}已加入“{activity.title}”候补名单,排第{position}位。有人退出会自动递补并通知您。"


async def _abort_signup(ctx: Ctx, slots: dict) -> None:
    if slots.get("signup"):
        await release_hold(slots["signup"])


flow(Flow("signup", "活动报名", [
    Step("activity", _activity_prompt, _parse_activity, example="例如:1"),
    Step("who", _who_prompt, _parse_who, example="例如:1", when=lambda s: s.get("_kids")),
    Step("member", _member_prompt, _parse_member, example="例如:1",
         when=lambda s: s.get("who") == "family"),
    Step("member_name", "请告诉我家人的姓名(例如孩子的名字),以后报名就不用再问了。",
         _parse_member_name, example="例如:李小明",
         when=_new_member),
    Step("member_age", "孩子几岁了?", _parse_member_age, example="例如:8", when=_new_member),
    Step("confirm", _confirm_signup_prompt, _parse_signup_confirm, example="例如:是"),
], _finish_signup, prefill=_prefill_signup, on_abort=_abort_signup))


@intent("activity_signup", needs_registration=True)
async def signup(ctx: Ctx) -> str:
    return await start_flow(ctx, "signup")


# ---------------------------------------------------------------------------- my signups

LIVE = (SignupStatus.CONFIRMED, SignupStatus.WAITING, SignupStatus.CHECKED_IN)


async def _status_text(signup: Signup) -> str:
    if signup.status == SignupStatus.WAITING:
        return f"候补第{await position_in_waitlist(signup)}位"
    return SignupStatus.LABELS[signup.status]


@intent("my_activities", needs_registration=True)
async def my_activities(ctx: Ctx) -> str:
    signups = await (Signup.filter(resident_id=ctx.resident.id,
                                   status__in=(*LIVE, SignupStatus.CANCELLED))
                     .order_by("-id").limit(10).prefetch_related("activity"))
    if not signups:
        return "您还没有报名任何活动。回复“活动”看看最近有什么。"
    lines = [f"{s.activity.title}({s.participant_name})| {local_text(s.activity.start_at)} | "
             f"{await _status_text(s)}" for s in signups]
    return "您的报名:\n" + numbered(lines) + "\n要取消请说“取消报名+活动名”。"


# ---------------------------------------------------------------------------- cancelling

async def _live_signups(ctx: Ctx) -> list[Signup]:
    return await (Signup.filter(resident_id=ctx.resident.id,
                                status__in=(SignupStatus.CONFIRMED, SignupStatus.WAITING),
                                activity__end_at__gt=ctx.now)
                  .order_by("activity__start_at").prefetch_related("activity"))


async def _prefill_cancel(ctx: Ctx, slots: dict) -> None:
    signups = await _live_signups(ctx)
    if not signups:
        raise EndFlow("您现在没有可以取消的报名。")
    if len(signups) == 1:
        slots["signup"] = signups[0].id
        return
    found = await find_activity(ctx, [s.activity for s in signups])
    matching = [s for s in signups if s.activity_id in {a.id for a in found}]
    if len(matching) == 1:
        slots["signup"] = matching[0].id


async def _cancel_choice_prompt(ctx: Ctx, slots: dict) -> str:
    signups = await _live_signups(ctx)
    slots["_choices"] = [s.id for s in signups]
    return "要取消哪个报名?回复数字:\n" + numbered(
        f"{s.activity.title}({s.participant_name})" for s in signups)


async def _cancel_confirm_prompt(ctx: Ctx, slots: dict) -> str:
    signup = await Signup.get(id=slots["signup"]).prefetch_related("activity")
    return (f"确定取消“{signup.activity.title}”({signup.participant_name})的报名吗?"
            "回复“是”确认取消。")


async def _finish_cancel(ctx: Ctx, slots: dict) -> str:
    signup = await Signup.get(id=slots["signup"]).prefetch_related("activity")
    activity = signup.activity
    try:
        await cancel_signup(signup.id, ctx.resident.id, now=ctx.now)
    except CancelError as exc:
        deadline = local_text(activity.cancel_deadline or activity.start_at)
        contact = activity.contact
        if not contact and activity.organisation_id:
            organisation = await activity.organisation
            contact = f"{organisation.name} {organisation.contact}"
        return (f"抱歉,{exc}({deadline})。如有特殊情况,请联系组织方:{contact or '所在社区居委会'}。")
    return f"已取消“{activity.title}”({signup.participant_name})的报名。名额会让给候补的街坊。"


flow(Flow("cancel_signup", "取消报名", [
    Step("signup", _cancel_choice_prompt, parse_listed, example="例如:1"),
    Step("confirm", _cancel_confirm_prompt, yes_or_keep("好的,报名保留不变。"), example="例如:是"),
], _finish_cancel, prefill=_prefill_cancel))


@intent("activity_cancel", needs_registration=True)
async def cancel(ctx: Ctx) -> str:
    return await start_flow(ctx, "cancel_signup")


# ---------------------------------------------------------------------------- check-in

async def _checkin_with(ctx: Ctx, activity: Activity) -> str:
    signups = await Signup.filter(activity_id=activity.id, resident_id=ctx.resident.id).order_by("id")
    if not signups:
        return f"您没有报名“{activity.title}”,不能签到。请联系现场工作人员。"
    lines, total = [], 0
    for signup in signups:
        if signup.status in (SignupStatus.RELEASED,):
            continue
        if signup.status == SignupStatus.CANCELLED:
            lines.append(f"{signup.participant_name}的报名已取消,不能签到。")
            continue
        try:
            result = await check_in(signup.id, now=ctx.now)
        except CheckinError as exc:
            lines.append(f"{signup.participant_name}:{exc}")
            continue
        if result.already:
            lines.append(f"{signup.participant_name}已签到,不用重复签到。")
        else:
            total += result.points
            lines.append(f"{signup.participant_name}签到成功!")
    if total:
        lines.append(f"获得{total}积分,回复“积分”查看余额。")
    return "\n".join(lines) or f"您没有报名“{activity.title}”,不能签到。"


async def _activity_by_code(code: str, ctx: Ctx) -> Activity | None:
    return await (Activity.filter(checkin_code=code, status__in=(ActivityStatus.PUBLISHED,
                                                                 ActivityStatus.CANCELLED),
                                  end_at__gt=ctx.now - timedelta(days=1))
                  .order_by("start_at").first())


async def _parse_code(ctx: Ctx, slots: dict) -> str:
    code = find_code(ctx.text)
    if not code:
        raise Invalid("签到码是现场公布的4位数字。")
    if await _activity_by_code(code, ctx) is None:
        raise Invalid("签到码不对,请核对现场公布的签到码。")
    return code


async def _finish_checkin(ctx: Ctx, slots: dict) -> str:
    return await _checkin_with(ctx, await _activity_by_code(slots["code"], ctx))


flow(Flow("checkin", "活动签到", [
    Step("code", "请回复现场公布的签到码。", _parse_code, example="例如:签到 4521"),
], _finish_checkin))


@intent("checkin", needs_registration=True)
async def checkin(ctx: Ctx) -> str:
    code = find_code(ctx.text)
    if code:
        activity = await _activity_by_code(code, ctx)
        if activity is None:
            return "签到码不对,请核对现场公布的签到码后再发“签到+签到码”。"
        return await _checkin_with(ctx, activity)
    return await start_flow(ctx, "checkin")


@scene("checkin_")
async def checkin_scene(ctx: Ctx, rest: str) -> str | None:
    """A scan of the activity's QR code: scene `checkin_<activity id>`."""
    activity = await Activity.get_or_none(id=int(rest)) if rest.isdigit() else None
    if activity is None:
        return "这个签到二维码已失效,请用现场公布的签到码签到。"
    if not ctx.registered:
        return await start_flow(ctx, "register", intro="签到前需要先登记所在社区。")
    return await _checkin_with(ctx, activity)

