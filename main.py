"""The command line. Thin: it parses arguments and calls into bot/, handlers/, nlp/, models/."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from bot.config import Settings


def _db(fn):
    """Run an async admin operation with the database open."""
    async def run(settings: Settings, *args):
        from models import db
        await db.init_db(settings.database_url)
        try:
            return await fn(*args)
        finally:
            await db.close_db()
    return run


def cmd_serve(settings: Settings, args) -> None:
    from bot.server import serve
    serve(settings.with_(host=args.host or settings.host, port=args.port or settings.port),
          workers=args.workers)


def cmd_init_db(settings: Settings, args) -> None:
    async def noop():
        return None
    asyncio.run(_db(noop)(settings))
    print(f"数据库已就绪:{settings.database_url.split('@')[-1]}")


def cmd_seed_demo(settings: Settings, args) -> None:
    from models.demo import seed_demo
    asyncio.run(_db(seed_demo)(settings))
    print("演示数据已写入:街道、社区、组织、活动、商家与礼品、服务、问卷、一件诉求;"
          "演示工作人员 demo-staff,演示商家 demo-merchant。")


def cmd_chat(settings: Settings, args) -> None:
    from bot.chat import chat
    openid = args.openid or ("demo-staff" if args.staff else "demo-resident")
    url = args.url or f"http://{settings.host}:{settings.port}/wechat"
    try:
        asyncio.run(chat(settings, openid, url))
    except KeyboardInterrupt:
        pass


def cmd_classify(settings: Settings, args) -> None:
    if args.appeal:
        from nlp.appeals import categorise
        for line in sys.stdin:
            if line.strip():
                r = categorise(line.strip())
                print(json.dumps({"text": line.strip(), "category": r.category,
                                  "confidence": round(r.confidence, 3)}, ensure_ascii=False))
        return
    from nlp import tokenizer
    from nlp.intents import classify
    tokenizer.load()
    for line in sys.stdin:
        if line.strip():
            r = classify(line.strip())
            print(json.dumps({"text": line.strip(), "intent": r.intent,
                              "confidence": round(r.confidence, 3)}, ensure_ascii=False),
                  flush=False)


def cmd_worker(settings: Settings, args) -> None:
    """The push dispatcher and the periodic jobs as their own process (several at once)."""
    from bot.jobs import run_worker
    asyncio.run(run_worker(settings.with_(push_in_process=False)))


def cmd_menu_push(settings: Settings, args) -> None:
    from bot.jobs import push_menu
    from bot.wechat_api import WeChatError
    try:
        asyncio.run(push_menu(settings, args.file))
    except (ValueError, WeChatError) as exc:
        raise SystemExit(f"错误:{exc}") from None
    print(f"自定义菜单已更新({args.file})")


def cmd_fake_wechat(settings: Settings, args) -> None:
    from tests.fake_wechat import serve
    serve(args.host, args.port)


def cmd_outbox_status(settings: Settings, args) -> None:
    from models.outbox import status_counts
    counts = asyncio.run(_db(status_counts)(settings))
    for status, n in sorted(counts.items()):
        print(f"{status:10} {n}")


def cmd_outbox_list(settings: Settings, args) -> None:
    from models.clock import local_text
    from models.outbox import rows_with_status
    from nlp.normalize import mask_phone
    for r in asyncio.run(_db(rows_with_status)(settings, args.status, args.limit)):
        text = mask_phone(r.text.replace("\n", " "))
        print(f"{r.id}\t{r.recipient}\t{r.kind}\t{local_text(r.created_at)}\t"
              f"{r.last_error or '-'}\t{text[:60]}")


def cmd_outbox_resend(settings: Settings, args) -> None:
    from models.outbox import resend
    requeued, refused = asyncio.run(_db(resend)(settings, args.ids))
    if requeued:
        print(f"已重新排队 {len(requeued)} 条:{' '.join(map(str, requeued))}")
    if refused:
        raise SystemExit(f"错误:这些编号不存在,或不是 unknown/failed 状态,没有改动:"
                         f"{' '.join(map(str, refused))}")


def _admin(settings: Settings, coro_fn, *args):
    from models.admin import AdminError
    try:
        return asyncio.run(_db(coro_fn)(settings, *args))
    except AdminError as exc:
        raise SystemExit(f"错误:{exc}") from None


def cmd_resident_add(settings: Settings, args) -> None:
    from models.admin import add_resident
    r = _admin(settings, add_resident, args.openid, args.name, args.phone, args.community)
    print(f"已登记居民 {r.id}{'(已核对名册)' if r.verified else ''}")


def cmd_residents_import(settings: Settings, args) -> None:
    from models.admin import import_roster
    count, problems = _admin(settings, import_roster, Path(args.file))
    for p in problems:
        print(p, file=sys.stderr)
    print(f"名册导入 {count} 行")


def cmd_staff_add(settings: Settings, args) -> None:
    from models.admin import add_staff_member
    r = _admin(settings, add_staff_member, args.openid, args.name, args.org)
    print(f"已添加工作人员 {r.id}")


def cmd_activity_add(settings: Settings, args) -> None:
    from models.admin import add_activity
    activity = _admin(settings, add_activity, args.community, args.title, args.start,
                      args.capacity, args.points, args.code, args.place)
    print(activity.id)


def cmd_export_signups(settings: Settings, args) -> None:
    from models.exports import export_signups
    out = Path(args.out or f"exports/signups-{args.activity}")
    paths = _admin(settings, export_signups, args.activity, out)
    print("\n".join(str(p) for p in paths))


def cmd_service_add(settings: Settings, args) -> None:
    from models.admin import add_service
    service, sessions, slots = _admin(settings, lambda: add_service(
        args.community, args.name, args.start, args.end, org=args.org, merchant=args.merchant,
        slot_minutes=args.slot_minutes, capacity=args.capacity, weeks=args.weeks,
        place=args.place, aliases=args.aliases))
    print(f"服务“{service.name}”编号{service.id}:{len(sessions)}场、{slots}个时段")


def cmd_survey_add(settings: Settings, args) -> None:
    from models.admin import add_survey
    survey, invited = _admin(settings, add_survey, Path(args.file), args.invite)
    print(f"问卷“{survey.title}”编号{survey.id}" + (f",已邀请{invited}位居民" if args.invite else ""))


def cmd_survey_invite(settings: Settings, args) -> None:
    from models.admin import invite_survey
    print(f"已邀请{_admin(settings, invite_survey, args.id)}位居民")


def cmd_export_survey(settings: Settings, args) -> None:
    from models.admin import export_survey
    paths = _admin(settings, export_survey, args.id, Path(args.out or f"exports/survey-{args.id}"))
    print("\n".join(str(p) for p in paths))


def cmd_merchant_create(settings: Settings, args) -> None:
    from models.rewards_admin import create_merchant
    m = _admin(settings, lambda: create_merchant(args.name, address=args.address, contact=args.contact,
                                                 community=args.community, street=args.street))
    print(f"商家“{m.name}”编号{m.id}")


def cmd_merchant_add(settings: Settings, args) -> None:
    from models.rewards_admin import add_merchant_staff
    r = _admin(settings, add_merchant_staff, args.openid, args.name, args.merchant)
    print(f"已添加商家店员 {r.id}({args.merchant}),发送“核销 兑换码”即可核销")


def cmd_merchant_list(settings: Settings, args) -> None:
    from models.rewards import Merchant

    async def rows():
        return await Merchant.all().order_by("id").prefetch_related("community", "street")
    for m in asyncio.run(_db(rows)(settings)):
        where = m.community.name if m.community else (m.street.name if m.street else "全区")
        print(f"{m.id}\t{m.name}\t{where}\t{m.address}\t{m.contact}")


def cmd_reward_add(settings: Settings, args) -> None:
    from models.rewards_admin import add_reward
    r = _admin(settings, lambda: add_reward(
        args.merchant, args.name, args.points, args.stock, kind=args.kind,
        monthly_limit=args.monthly_limit, valid_days=args.valid_days, deduct_yuan=args.deduct_yuan,
        min_spend_yuan=args.min_spend_yuan, description=args.description))
    limit = f"每月限{r.monthly_limit}次" if r.monthly_limit else "不限次"
    print(f"兑换项目“{r.name}”编号{r.id}:{r.points}积分,库存{r.stock},{limit},"
          f"兑换码{r.valid_days}天有效")


def cmd_reward_withdraw(settings: Settings, args) -> None:
    from models.rewards_admin import withdraw_reward
    r = _admin(settings, withdraw_reward, args.merchant, args.name)
    print(f"兑换项目“{r.name}”已下架(已发出的兑换码照常可用;reward add 可重新上架)")


def cmd_reward_restock(settings: Settings, args) -> None:
    from models.rewards_admin import restock
    r = _admin(settings, restock, args.merchant, args.name, args.add)
    print(f"兑换项目“{r.name}”库存现为{r.stock}")


def cmd_reward_list(settings: Settings, args) -> None:
    from models.rewards_admin import list_rewards
    for r in asyncio.run(_db(list_rewards)(settings)):
        limit = f"每月限{r.monthly_limit}次" if r.monthly_limit else "不限次"
        state = "" if r.active else "\t已下架"
        print(f"{r.id}\t{r.merchant.name}\t{r.summary}\t{r.points}积分\t库存{r.stock}\t{limit}\t"
              f"{r.valid_days}天有效{state}")


def cmd_rule_set(settings: Settings, args) -> None:
    from models.rewards_admin import set_points_rule
    rules = _admin(settings, set_points_rule, args.community, args.code, args.points, args.name,
                   args.cap)
    for r in rules:
        print(f"{r.code}\t{r.name}\t{r.points}分\t每天最多{r.daily_cap}次")


def cmd_rule_list(settings: Settings, args) -> None:
    from models.admin import community_by_name
    from models.rewards import rule_table

    async def rows():
        c = await community_by_name(args.community) if args.community else None
        return await rule_table(c.id if c else None)
    for r in _admin(settings, rows):
        print(f"{r.code}\t{r.name}\t{r.points}分\t每天最多{r.daily_cap}次")


def _add_reward_commands(sub) -> None:
    """merchant create/add/list, reward add/list, rule set/list."""
    merchant = sub.add_parser("merchant", help="partner merchants and their staff").add_subparsers(
        dest="action", required=True)
    s = merchant.add_parser("create", help="create (or update) a partner merchant")
    s.add_argument("--name", required=True)
    s.add_argument("--address", default="")
    s.add_argument("--contact", default="")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--community", help="serves this community")
    where.add_argument("--street", help="serves every community of this street")
    s.set_defaults(fn=cmd_merchant_create)
    s = merchant.add_parser("add", help="a merchant's staff member who verifies codes")
    for flag in ("--openid", "--name", "--merchant"):
        s.add_argument(flag, required=True)
    s.set_defaults(fn=cmd_merchant_add)
    merchant.add_parser("list").set_defaults(fn=cmd_merchant_list)

    reward = sub.add_parser("reward", help="what points buy").add_subparsers(dest="action",
                                                                              required=True)
    s = reward.add_parser("add", help="add a reward of a merchant and put it on offer, or "
                                      "update one: only the options given change")
    s.add_argument("--merchant", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--points", type=int, help="required for a new reward")
    s.add_argument("--stock", type=int,
                   help="required for a new reward; on an existing one it sets the stock "
                        "(left out: kept as redemptions left it; deliveries: reward restock)")
    s.add_argument("--kind", choices=("goods", "service", "voucher"), help="new: goods")
    s.add_argument("--monthly-limit", type=int, help="per resident per month; 0 = none (new: 0)")
    s.add_argument("--valid-days", type=int, help="how long a code can be used (new: 30)")
    s.add_argument("--deduct-yuan", type=int, help="voucher: yuan off the bill")
    s.add_argument("--min-spend-yuan", type=int, help="voucher: smallest bill (new: 0)")
    s.add_argument("--description")
    s.set_defaults(fn=cmd_reward_add)
    s = reward.add_parser("withdraw", help="take a reward off offer (issued codes stay valid)")
    s.add_argument("--merchant", required=True)
    s.add_argument("--name", required=True)
    s.set_defaults(fn=cmd_reward_withdraw)
    s = reward.add_parser("restock", help="add to (or, negative, take from) a reward's stock")
    s.add_argument("--merchant", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--add", type=int, required=True)
    s.set_defaults(fn=cmd_reward_restock)
    reward.add_parser("list").set_defaults(fn=cmd_reward_list)

    rule = sub.add_parser("rule", help="points rules for staff awards").add_subparsers(
        dest="action", required=True)
    s = rule.add_parser("set", help="points (and name, daily cap) of a rule")
    s.add_argument("--community", help="default: the district-wide rule")
    s.add_argument("--code", required=True,
                   help="volunteer, meeting, neighbour_help, facility, suggestion, or a new code")
    s.add_argument("--points", type=int, required=True, help="0 switches the rule off")
    s.add_argument("--name")
    s.add_argument("--cap", type=int, help="awards per resident per day")
    s.set_defaults(fn=cmd_rule_set)
    s = rule.add_parser("list")
    s.add_argument("--community")
    s.set_defaults(fn=cmd_rule_list)


def cmd_route_set(settings: Settings, args) -> None:
    from models.appeals_admin import route_set
    print(_admin(settings, route_set, args.community, args.category, args.org))


def cmd_deadline_set(settings: Settings, args) -> None:
    from models.appeals_admin import deadline_set
    d = _admin(settings, deadline_set, args.category, args.accept_hours, args.resolve_days,
               args.accept_warn_hours, args.resolve_warn_hours)
    print(f"{args.category}:受理{d.accept_hours}小时,办结{d.resolve_days}个工作日,"
          f"提前{d.accept_warn_hours}/{d.resolve_warn_hours}小时提醒")


def cmd_report_appeals(settings: Settings, args) -> None:
    from datetime import date, datetime, time, timedelta

    from models.appeals_admin import report_appeals
    from models.clock import LOCAL_TZ
    today = date.today()
    start = date.fromisoformat(args.from_) if args.from_ else today.replace(day=1)
    end = date.fromisoformat(args.to) if args.to else today
    begin = datetime.combine(start, time(), LOCAL_TZ)
    until = datetime.combine(end + timedelta(days=1), time(), LOCAL_TZ)  # --to is inclusive
    out = Path(args.out or f"exports/appeals-{start}-{end}")
    print("\n".join(str(p) for p in _admin(settings, report_appeals, begin, until, out)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="main.py", description="云芳邻社区服务号")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="start the webhook")
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.set_defaults(fn=cmd_serve)

    sub.add_parser("init-db", help="create the tables").set_defaults(fn=cmd_init_db)
    sub.add_parser("seed-demo", help="write demo data").set_defaults(fn=cmd_seed_demo)

    s = sub.add_parser("chat", help="talk to the running bot in the terminal")
    s.add_argument("--openid")
    s.add_argument("--staff", action="store_true", help="as the demo staff member")
    s.add_argument("--url")
    s.set_defaults(fn=cmd_chat)

    s = sub.add_parser("classify", help="classify stdin lines, one JSON object per line")
    s.add_argument("--appeal", action="store_true", help="categorise appeals instead")
    s.set_defaults(fn=cmd_classify)

    sub.add_parser("worker", help="send the outbox and run the periodic jobs (production)"
                   ).set_defaults(fn=cmd_worker)
    s = sub.add_parser("menu").add_subparsers(dest="action", required=True).add_parser(
        "push", help="create the custom menu from a JSON file")
    s.add_argument("--file", default="docs/menu.json")
    s.set_defaults(fn=cmd_menu_push)
    s = sub.add_parser("fake-wechat", help="a fake WeChat API on loopback that prints each push")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=9100)
    s.set_defaults(fn=cmd_fake_wechat)
    outbox = sub.add_parser("outbox", help="notices waiting, sent, or needing a look"
                            ).add_subparsers(dest="action", required=True)
    s = outbox.add_parser("status", help="count notices by status (unknown and flagged need a look)")
    s.set_defaults(fn=cmd_outbox_status)
    s = outbox.add_parser("list", help="the newest notices in one status")
    s.add_argument("--status", default="unknown")
    s.add_argument("--limit", type=int, default=50)
    s.set_defaults(fn=cmd_outbox_list)
    s = outbox.add_parser("resend", help="send unknown or failed notices again (by id)")
    s.add_argument("ids", type=int, nargs="+")
    s.set_defaults(fn=cmd_outbox_resend)

    s = sub.add_parser("resident").add_subparsers(dest="action", required=True).add_parser("add")
    for flag in ("--openid", "--name", "--phone", "--community"):
        s.add_argument(flag, required=True)
    s.set_defaults(fn=cmd_resident_add)

    s = sub.add_parser("residents").add_subparsers(dest="action", required=True).add_parser(
        "import", help="import a roster CSV with columns name,phone,community")
    s.add_argument("file")
    s.set_defaults(fn=cmd_residents_import)

    s = sub.add_parser("staff").add_subparsers(dest="action", required=True).add_parser("add")
    for flag in ("--openid", "--name", "--org"):
        s.add_argument(flag, required=True)
    s.set_defaults(fn=cmd_staff_add)

    s = sub.add_parser("activity").add_subparsers(dest="action", required=True).add_parser(
        "add", help="publish an activity; prints its id")
    s.add_argument("--community", required=True)
    s.add_argument("--title", required=True)
    s.add_argument("--start", required=True, help="local time, e.g. 2026-12-20T15:00")
    s.add_argument("--capacity", type=int, required=True)
    s.add_argument("--points", type=int, default=0)
    s.add_argument("--code", help="check-in code (default: random 4 digits)")
    s.add_argument("--place", default="")
    s.set_defaults(fn=cmd_activity_add)

    export = sub.add_parser("export").add_subparsers(dest="what", required=True)
    s = export.add_parser("signups", help="write an activity's roster as .xlsx and .csv")
    s.add_argument("--activity", type=int, required=True)
    s.add_argument("--out", help="path without extension (default exports/signups-ID)")
    s.set_defaults(fn=cmd_export_signups)

    s = export.add_parser("survey", help="write every response of a questionnaire as .xlsx and .csv")
    s.add_argument("--id", type=int, required=True)
    s.add_argument("--out", help="path without extension (default exports/survey-ID)")
    s.set_defaults(fn=cmd_export_survey)

    s = sub.add_parser("service").add_subparsers(dest="action", required=True).add_parser(
        "add", help="a bookable service with weekly sessions cut into slots")
    s.add_argument("--community", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--org", help="providing organisation")
    s.add_argument("--merchant", help="providing merchant's openid")
    s.add_argument("--start", required=True, help="first session, local time, e.g. 2026-12-19T09:00")
    s.add_argument("--end", required=True, help="end of the session: 11:00 or a full time")
    s.add_argument("--slot-minutes", type=int, default=30)
    s.add_argument("--capacity", type=int, default=5, help="places per slot")
    s.add_argument("--weeks", type=int, default=1, help="repeat weekly for this many weeks")
    s.add_argument("--place", default="")
    s.add_argument("--aliases", default="", help="other words for it, comma-separated")
    s.set_defaults(fn=cmd_service_add)

    survey = sub.add_parser("survey").add_subparsers(dest="action", required=True)
    s = survey.add_parser("add", help="add a questionnaire from a YAML or JSON file")
    s.add_argument("file")
    s.add_argument("--invite", action="store_true", help="invite the target residents now")
    s.set_defaults(fn=cmd_survey_add)
    s = survey.add_parser("invite", help="invite the target residents (each once)")
    s.add_argument("--id", type=int, required=True)
    s.set_defaults(fn=cmd_survey_invite)
    _add_reward_commands(sub)

    s = sub.add_parser("route").add_subparsers(dest="action", required=True).add_parser(
        "set", help="which organisation handles an appeal category in a community")
    s.add_argument("--community", required=True)
    s.add_argument("--category", required=True,
                   help="facility, environment, safety, dispute, policy, living, suggestion, "
                        "other, or help (volunteer-suited help)")
    s.add_argument("--org", required=True, help="organisation name")
    s.set_defaults(fn=cmd_route_set)

    s = sub.add_parser("deadline").add_subparsers(dest="action", required=True).add_parser(
        "set", help="appeal time limits for a category")
    s.add_argument("--category", required=True)
    s.add_argument("--accept-hours", type=int)
    s.add_argument("--resolve-days", type=int, help="working days")
    s.add_argument("--accept-warn-hours", type=int)
    s.add_argument("--resolve-warn-hours", type=int)
    s.set_defaults(fn=cmd_deadline_set)

    s = sub.add_parser("report").add_subparsers(dest="what", required=True).add_parser(
        "appeals", help="response, on-time and satisfaction figures as .xlsx and .csv")
    s.add_argument("--from", dest="from_", help="first day, e.g. 2026-01-01 (default: 1st of month)")
    s.add_argument("--to", help="last day, inclusive (default: today)")
    s.add_argument("--out", help="path without extension (default exports/appeals-FROM-TO)")
    s.set_defaults(fn=cmd_report_appeals)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from bot.logs import setup_logging
    setup_logging("WARNING" if args.command in ("classify", "chat") else "INFO")
    args.fn(Settings.from_env(), args)


if __name__ == "__main__":
    main()
