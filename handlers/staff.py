"""Staff commands in the chat: publish activities, live signup numbers, names, check-in codes."""
from __future__ import annotations

import re
from datetime import datetime

from tortoise.expressions import Q

from handlers.engine import (Ctx, EndFlow, Flow, Invalid, Step, confirm_step, flow, int_between,
                             numbered, staff_command, start_flow, text_between)
from models.activities import (Activity, ActivityStatus, Kind, Signup, SignupStatus, counts_for,
                               create_activity)
from models.clock import local_text
from models.places import Organisation
from nlp.entities import parse_choice, parse_int, parse_when
from nlp import tokenizer
from nlp.fuzzy import Catalog
from nlp.normalize import compact, mask_phone

STAFF_HELP = """工作人员命令(直接发送):
【活动】发布活动 | 报名统计 | 名单 编号 | 签到码 编号 | 通知 编号(向居民推送活动)| 通知结果
【积分】奖励积分 姓名 规则 备注(也可用“加分”)
【诉求】诉求 | 诉求 全部 | 诉求 工单号 | 受理 工单号 | 回复 工单号 内容 | 转派 工单号 组织 |
 上报街道 工单号 说明 | 办结 工单号 结果 | 退回 工单号 原因 | 采纳 工单号 | 统计
【转人工】值班 | 下班 | 会话 | #1 内容 | #1 结束
【服务与问卷】新建服务 | 预约名单 | 爽约 序号 | 问卷结果 | 问卷邀请"""


async def _organisation(ctx: Ctx) -> Organisation:
    return await Organisation.get(id=ctx.resident.organisation_id)


async def _scope(ctx: Ctx) -> Q:
    """Staff see their community's activities; sub-district staff their street's."""
    org = await _organisation(ctx)
    if org.community_id:
        return Q(community_id=org.community_id)
    return Q(street_id=org.street_id) | Q(community__street_id=org.street_id)


async def _staff_activities(ctx: Ctx) -> list[Activity]:
    return await (Activity.filter(await _scope(ctx), status=ActivityStatus.PUBLISHED,
                                  end_at__gt=ctx.now).order_by("start_at", "id").limit(20))


@staff_command("工作台", "工作人员", "staff")
async def staff_help(ctx: Ctx) -> str:
    return STAFF_HELP


@staff_command("报名统计", "活动统计")
async def live_counts(ctx: Ctx) -> str:
    activities = await _staff_activities(ctx)
    if not activities:
        return "本社区暂无进行中的活动。回复“发布活动”发布一个。"
    counts = await counts_for([a.id for a in activities], ctx.now)
    ctx.remember_choices("staff_activity", [a.id for a in activities])
    lines = [f"{a.title}(编号{a.id})| {local_text(a.start_at)}\n"
             f"   报名{counts[a.id].confirmed}/{a.capacity} 候补{counts[a.id].waiting} "
             f"签到{counts[a.id].checked_in}" for a in activities]
    return "实时报名情况:\n" + numbered(lines) + "\n发送“名单 1”看名单,“签到码 1”看签到码。"


async def _pick(ctx: Ctx, rest: str) -> Activity | None:
    activities = await _staff_activities(ctx)
    ids = (ctx.state.get("choices") or {}).get("ids") if (ctx.state.get("choices") or {}).get(
        "kind") == "staff_activity" else None
    number = parse_int(rest) if rest else None
    if number is not None:
        if ids and 1 <= number <= len(ids):
            return next((a for a in activities if a.id == ids[number - 1]), None)
        return next((a for a in activities if a.id == number), None)
    if rest:
        match = Catalog([a.title for a in activities]).match(rest, limit=1, cutoff=70)
        return activities[match[0].index] if match else None
    return activities[0] if len(activities) == 1 else None


def _rest(ctx: Ctx, keyword: str) -> str:
    return compact(ctx.text)[len(keyword):]


@staff_command("名单")
async def roster(ctx: Ctx) -> str:
    activity = await _pick(ctx, _rest(ctx, "名单"))
    if activity is None:
        return "请说明是哪个活动,例如“名单 1”(先发“报名统计”看编号)。"
    signups = await (Signup.filter(activity_id=activity.id,
                                   status__in=(SignupStatus.CONFIRMED, SignupStatus.CHECKED_IN,
                                               SignupStatus.WAITING))
                     .order_by("status", "confirmed_at", "waitlisted_at", "id")
                     .prefetch_related("resident"))
    if not signups:
        return f"“{activity.title}”还没有人报名。"
    lines = [f"{s.participant_name}({s.resident.name} {mask_phone(s.resident.phone)})"
             f" {SignupStatus.LABELS[s.status]}" for s in signups]
    return (f"“{activity.title}”名单({len(signups)}人):\n" + numbered(lines)
            + "\n完整手机号请用导出功能:python main.py export signups --activity "
            + str(activity.id))


@staff_command("签到码")
async def checkin_code(ctx: Ctx) -> str:
    activity = await _pick(ctx, _rest(ctx, "签到码"))
    if activity is None:
        return "请说明是哪个活动,例如“签到码 1”(先发“报名统计”看编号)。"
    return (f"“{activity.title}”的签到码是 {activity.checkin_code}。请在现场公布,"
            f"居民发送“签到 {activity.checkin_code}”即可签到;扫码签到场景值:checkin_{activity.id}。")


# ---------------------------------------------------------------------------- publishing

async def _parse_time(ctx: Ctx, slots: dict):
    when = parse_when(ctx.text, ctx.local_now)
    if when is None or not when.has_time:
        raise Invalid("没看懂时间,请写明日期和几点。")
    if when.start <= ctx.now:
        raise Invalid("这个时间已经过去了。")
    return when.start.isoformat()


async def _parse_points(ctx: Ctx, slots: dict) -> int:
    n = 0 if compact(ctx.text) in ("没有", "无", "不给", "0", "冇") else parse_int(ctx.text)
    if n is None or not 0 <= n <= 1000:
        raise Invalid("积分请回复0到1000之间的数字。")
    return n


KINDS = list(Kind.LABELS.items())


async def _parse_kind(ctx: Ctx, slots: dict) -> str:
    index = parse_choice(ctx.text, len(KINDS))
    if not index:
        raise Invalid("请回复类型前面的数字。")
    return KINDS[index - 1][0]


async def _publish_confirm(ctx: Ctx, slots: dict) -> str:
    start = datetime.fromisoformat(slots["start"])
    return (f"请确认发布:\n名称:{slots['title']}\n时间:{local_text(start)}\n地点:{slots['place']}\n"
            f"类型:{Kind.LABELS[slots['kind']]}\n名额:{slots['capacity']}\n签到积分:{slots['points']}\n"
            "确认请回复“是”。")


async def _finish_publish(ctx: Ctx, slots: dict) -> str:
    org = await _organisation(ctx)
    if not org.community_id and not org.street_id:
        raise EndFlow("您的组织没有关联社区,不能发布。")
    activity = await create_activity(
        title=slots["title"], start_at=datetime.fromisoformat(slots["start"]),
        capacity=slots["capacity"], place=slots["place"], kind=slots["kind"],
        points_participant=slots["points"],
        points_volunteer=slots["points"] if slots["kind"] == "volunteer" else 0,
        community_id=org.community_id, street_id=org.street_id if not org.community_id else None,
        organisation_id=org.id, contact=org.contact, created_by_id=ctx.resident.id)
    tokenizer.add_words([activity.title])  # so the new name segments as one word from now on
    return (f"已发布“{activity.title}”,编号{activity.id},签到码 {activity.checkin_code}。"
            "居民现在就可以报名了。发送“报名统计”看实时人数。")


flow(Flow("publish", "发布活动", [
    Step("title", "请回复活动名称。", text_between(2, 40, "活动名称"), example="例如:寒假作业辅导班"),
    Step("start", "活动什么时候开始?", _parse_time, example="例如:12月20号下午三点"),
    Step("place", "在哪里举办?", text_between(2, 60, "地点"), example="例如:汇侨北社区党群服务中心"),
    Step("kind", "活动类型?回复数字:\n" + numbered(label for _, label in KINDS), _parse_kind,
         example="例如:1"),
    Step("capacity", "有多少个名额?", int_between(1, 5000, "名额数"), example="例如:30"),
    Step("points", "签到可得多少积分?没有请回复0。", _parse_points, example="例如:50"),
    confirm_step(_publish_confirm),
], _finish_publish))


@staff_command("发布活动", "新建活动")
async def publish(ctx: Ctx) -> str:
    title = re.sub(r"^(发布活动|新建活动)", "", ctx.text.strip()).strip(" ::")
    return await start_flow(ctx, "publish", {"title": title} if 2 <= len(title) <= 40 else {})
