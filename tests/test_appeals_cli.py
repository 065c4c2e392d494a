"""Appeal commands for operators, run as real processes on SQLite and PostgreSQL:
route set, deadline set, report appeals (.xlsx), and the seed story in the demo data."""
from __future__ import annotations

from datetime import date

from openpyxl import load_workbook

from tests.test_cli import database_url, run  # noqa: F401  (fixture)


def test_route_deadline_and_report_commands(database_url, tmp_path):  # noqa: F811
    run(database_url, "init-db")
    run(database_url, "seed-demo")
    run(database_url, "seed-demo")  # idempotent: the demo appeal is written once

    out = run(database_url, "route", "set", "--community", "汇侨北社区", "--category", "living",
              "--org", "汇侨北社区居委会").stdout
    assert "汇侨北社区:生活服务 → 汇侨北社区居委会" in out
    bad = run(database_url, "route", "set", "--community", "汇侨北社区", "--category", "living",
              "--org", "江夏第一社区居委会", ok=False)
    assert bad.returncode != 0 and "不属于汇侨北社区" in bad.stderr
    bad = run(database_url, "route", "set", "--community", "汇侨北社区", "--category", "noise",
              "--org", "汇侨北社区居委会", ok=False)
    assert "没有这个类别" in bad.stderr

    out = run(database_url, "deadline", "set", "--category", "policy", "--accept-hours", "12").stdout
    assert "受理12小时,办结3个工作日" in out

    today = date.today()
    start = date.fromordinal(today.toordinal() - 30)
    out = run(database_url, "report", "appeals", "--from", str(start), "--to", str(today),
              "--out", str(tmp_path / "appeals")).stdout
    xlsx = tmp_path / "appeals.xlsx"
    assert str(xlsx) in out and (tmp_path / "appeals.csv").exists()
    rows = [[c.value for c in r] for r in load_workbook(xlsx).active.iter_rows()]
    assert rows[0] == ["范围", "名称", "诉求数", "及时响应数", "响应率", "办结数", "按时办结数",
                       "按时办结率", "评价数", "平均满意度"]
    jx1 = next(r for r in rows if r[1] == "江夏第一社区")
    assert jx1 == ["社区", "江夏第一社区", 1, 1, 1.0, 1, 1, 1.0, 1, 5.0]
    street = next(r for r in rows if r[1] == "黄石街道办事处")  # it handled the demo appeal last
    assert street[2] == 1
