"""The command line, run as a newcomer or an operator would: real processes, real databases."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from openpyxl import load_workbook

from tests.conftest import run_cli


@pytest.fixture
def database_url(cli_database_url) -> str:
    return cli_database_url


run = run_cli


def test_admin_commands(database_url, tmp_path):
    run(database_url, "init-db")
    assert "演示数据已写入" in run(database_url, "seed-demo").stdout
    run(database_url, "seed-demo")  # idempotent

    out = run(database_url, "resident", "add", "--openid", "o-cli", "--name", "李敏",
              "--phone", "13800138000", "--community", "汇侨北社区").stdout
    assert "已登记居民" in out and "已核对名册" in out  # the demo roster has this phone

    bad = run(database_url, "resident", "add", "--openid", "o-x", "--name", "某人", "--phone",
              "13800000000", "--community", "火星社区", ok=False)
    assert bad.returncode != 0 and "没有名为“火星社区”的社区" in bad.stderr

    roster = tmp_path / "roster.csv"
    roster.write_text("name,phone,community\n陈美玲,13800138111,汇侨北社区\n坏行,123,汇侨北社区\n"
                      "黄姨,13900139222,江夏第二社区\n", encoding="utf-8")
    imported = run(database_url, "residents", "import", str(roster))
    assert "名册导入 2 行" in imported.stdout and "第3行" in imported.stderr

    assert "已添加工作人员" in run(database_url, "staff", "add", "--openid", "o-s", "--name", "小王",
                               "--org", "江夏第一社区居委会").stdout
    missing = run(database_url, "staff", "add", "--openid", "o-s", "--name", "小王", "--org",
                  "不存在的组织", ok=False)
    assert "没有名为“不存在的组织”的组织" in missing.stderr

    activity_id = run(database_url, "activity", "add", "--community", "汇侨北社区", "--title",
                      "测试活动", "--start", "2030-01-05T15:00", "--capacity", "12", "--points",
                      "30", "--code", "2468").stdout.strip()
    assert activity_id.isdigit()
    bad_time = run(database_url, "activity", "add", "--community", "汇侨北社区", "--title", "x",
                   "--start", "明天", "--capacity", "3", ok=False)
    assert "时间格式不对" in bad_time.stderr

    out_base = tmp_path / "roster-export"
    paths = run(database_url, "export", "signups", "--activity", activity_id, "--out",
                str(out_base)).stdout.split()
    assert [Path(p).suffix for p in paths] == [".xlsx", ".csv"]
    sheet = load_workbook(paths[0]).active
    assert [c.value for c in sheet[1]] == ["参加人", "报名居民", "手机号", "状态", "签到时间"]


def test_classify_reads_stdin_and_prints_json_lines():
    proc = run("sqlite://:memory:", "classify", stdin="我想报名书法班\n积分还有多少\n帮我订机票\n")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["我想报名书法班", "积分还有多少", "帮我订机票"]
    assert [r["intent"] for r in rows] == ["activity_signup", "points_balance", "unknown"]
    assert all(0 <= r["confidence"] <= 1 for r in rows)


def test_classify_appeals():
    proc = run("sqlite://:memory:", "classify", "--appeal", stdin="楼道灯坏了好几天\n低保怎么申请\n")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["category"] for r in rows] == ["facility", "policy"]
