"""Merchant, reward and points-rule commands, run as an operator would, on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest

from tests.conftest import run_cli


@pytest.fixture
def database_url(cli_database_url) -> str:
    return cli_database_url


run = run_cli


def test_merchant_reward_and_rule_commands(database_url):
    run(database_url, "init-db")
    run(database_url, "seed-demo")
    run(database_url, "seed-demo")  # idempotent: rewards once, stock untouched
    rewards = run(database_url, "reward", "list").stdout.splitlines()
    assert len(rewards) == 12
    assert any("悦丝美发\t人气头疗\t100积分" in line for line in rewards)
    assert any("抽纸\t50积分" in line for line in rewards)
    assert any("理发积分抵扣:结账抵扣10元(满30元可用)" in line for line in rewards)

    out = run(database_url, "merchant", "create", "--name", "街坊五金店", "--address", "汇侨路9号",
              "--contact", "020-1234", "--community", "汇侨北社区").stdout
    assert "商家“街坊五金店”编号" in out
    assert "已添加商家店员" in run(database_url, "merchant", "add", "--openid", "o-hw",
                                  "--name", "五金店老板", "--merchant", "街坊五金店").stdout
    bad = run(database_url, "merchant", "add", "--openid", "o-x", "--name", "某人",
              "--merchant", "火星店", ok=False)
    assert bad.returncode != 0 and "没有名为“火星店”的商家" in bad.stderr
    assert "街坊五金店\t汇侨北社区" in run(database_url, "merchant", "list").stdout

    out = run(database_url, "reward", "add", "--merchant", "街坊五金店", "--name", "磨刀",
              "--points", "30", "--stock", "20", "--kind", "service", "--monthly-limit", "1").stdout
    assert "兑换项目“磨刀”编号" in out and "30积分,库存20,每月限1次,兑换码30天有效" in out
    # An update writes only what it is given: the stock, the monthly limit, the kind and the
    # validity stay; restock adds to the stock and never takes it below 0.
    out = run(database_url, "reward", "add", "--merchant", "街坊五金店", "--name", "磨刀",
              "--points", "40").stdout
    assert "40积分,库存20,每月限1次,兑换码30天有效" in out
    assert "磨刀\t40积分\t库存20\t每月限1次\t30天有效" in run(database_url, "reward", "list").stdout
    out = run(database_url, "reward", "add", "--merchant", "街坊五金店", "--name", "磨刀",
              "--valid-days", "7", "--monthly-limit", "0").stdout
    assert "40积分,库存20,不限次,兑换码7天有效" in out
    assert "已下架" in run(database_url, "reward", "withdraw", "--merchant", "街坊五金店",
                          "--name", "磨刀").stdout
    assert "磨刀\t40积分\t库存20\t不限次\t7天有效\t已下架" in run(database_url, "reward",
                                                               "list").stdout
    run(database_url, "reward", "add", "--merchant", "街坊五金店", "--name", "磨刀")  # back on offer
    [line] = [x for x in run(database_url, "reward", "list").stdout.splitlines() if "磨刀" in x]
    assert line.endswith("磨刀\t40积分\t库存20\t不限次\t7天有效")
    bad = run(database_url, "reward", "add", "--merchant", "街坊五金店", "--name", "磨刀",
              "--kind", "voucher", ok=False)  # the merged settings are checked: no amount
    assert bad.returncode != 0 and "抵扣金额" in bad.stderr
    assert "库存现为25" in run(database_url, "reward", "restock", "--merchant", "街坊五金店",
                               "--name", "磨刀", "--add", "5").stdout
    bad = run(database_url, "reward", "restock", "--merchant", "街坊五金店", "--name", "磨刀",
              "--add", "-26", ok=False)
    assert bad.returncode != 0 and "库存不够减:现有25" in bad.stderr
    assert "库存现为0" in run(database_url, "reward", "restock", "--merchant", "街坊五金店",
                              "--name", "磨刀", "--add", "-25").stdout
    bad = run(database_url, "reward", "add", "--merchant", "街坊五金店", "--name", "新项目",
              "--points", "10", ok=False)
    assert "新的兑换项目要写明所需积分和库存" in bad.stderr
    bad = run(database_url, "reward", "withdraw", "--merchant", "街坊五金店", "--name", "没有这个",
              ok=False)
    assert bad.returncode != 0 and "没有名为“没有这个”的兑换项目" in bad.stderr
    bad = run(database_url, "reward", "restock", "--merchant", "街坊五金店", "--name", "没有这个",
              "--add", "3", ok=False)
    assert "没有名为“没有这个”的兑换项目" in bad.stderr
    bad = run(database_url, "reward", "add", "--merchant", "街坊五金店", "--name", "抵扣",
              "--points", "50", "--stock", "5", "--kind", "voucher", ok=False)
    assert "抵扣金额" in bad.stderr
    bad = run(database_url, "reward", "add", "--merchant", "街坊五金店", "--name", "坏",
              "--points", "0", "--stock", "5", ok=False)
    assert "所需积分必须大于0" in bad.stderr

    out = run(database_url, "rule", "set", "--community", "汇侨北社区", "--code", "meeting",
              "--points", "80", "--cap", "2").stdout
    assert "meeting\t参加居民议事会\t80分\t每天最多2次" in out
    assert "meeting\t参加居民议事会\t50分\t每天最多1次" in run(database_url, "rule", "list").stdout
    assert "80分" in run(database_url, "rule", "list", "--community", "汇侨北社区").stdout
    bad = run(database_url, "rule", "set", "--community", "火星社区", "--code", "meeting",
              "--points", "10", ok=False)
    assert "没有名为“火星社区”的社区" in bad.stderr
