"""Throughput of the NLU on one core.

Run: .venv/bin/python bench/classify_bench.py
Prints jieba load time, classify() and categorise() messages/second over the golden
texts (repeated, after warm-up) and Catalog.match() queries/second on a 50-name catalog.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FLOOR = 5000.0  # classify messages/second required


def _texts(name: str) -> list[str]:
    path = ROOT / "tests" / "data" / name
    return [line.rsplit("\t", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]


def _rate(fn, items: list[str], min_seconds: float = 1.5) -> tuple[float, int]:
    for t in items:  # warm-up: caches (pinyin, char kinds) and jieba
        fn(t)
    n, start = 0, time.perf_counter()
    while True:
        for t in items:
            fn(t)
        n += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return n / elapsed, n


def main() -> int:
    t0 = time.perf_counter()
    from nlp import tokenizer
    tokenizer.load()
    t1 = time.perf_counter()
    from nlp.appeals import categorise
    from nlp.fuzzy import Catalog
    from nlp.intents import classify
    t2 = time.perf_counter()
    print(f"jieba load (prefix dict + user dict): {t1 - t0:.3f} s")
    print(f"nlp import (lexicons, OpenCC):        {t2 - t1:.3f} s")

    intents = _texts("intents_golden.tsv")
    appeals = _texts("appeals_golden.tsv")
    rate, n = _rate(classify, intents)
    verdict = "OK" if rate >= FLOOR else f"BELOW FLOOR {FLOOR:.0f}"
    print(f"classify:   {rate:10.0f} msg/s  ({n} calls over {len(intents)} golden texts)  {verdict}")
    rate_a, n_a = _rate(categorise, appeals)
    print(f"categorise: {rate_a:10.0f} msg/s  ({n_a} calls over {len(appeals)} golden texts)")

    names = [
        "汇侨北社区", "南方医科大学社区", "江夏第一社区", "江夏第二社区", "新市街", "京溪街", "黄石街",
        "书法班", "舞蹈公益课堂", "寒假作业辅导班", "马上送福指尖传暖手工活动", "新春文艺汇演",
        "居民议事会", "专家义诊", "磨刀服务", "老人助餐", "儿童照护", "亲子阅读会", "太极拳晨练",
        "粤剧欣赏", "插花体验课", "烘焙亲子课", "防诈骗讲座", "消防演练", "垃圾分类宣讲",
        "健康讲座", "中医推拿", "上门理发", "量血压", "志愿者招募", "洗剪吹", "人气头疗", "购物袋",
        "牙膏", "卷纸", "抽纸", "毛巾", "洗衣液", "食用油", "大米", "鸡蛋", "理发优惠券",
        "超市代金券", "书法作品展", "广场舞比赛", "长者生日会", "暑期托管班", "四点半课堂",
        "智能手机课", "法律咨询",
    ]
    assert len(names) == 50
    catalog = Catalog(names)
    queries = ["汇侨北", "回侨北", "南医大", "书发班", "义诊", "头疗", "我想报名书法班", "洗剪吹",
               "京溪", "江夏二", "太极", "托管", "抽纸", "牙高", "不相关的话"]
    rate_f, n_f = _rate(lambda q: catalog.match(q), queries)
    print(f"Catalog.match (50 names): {rate_f:10.0f} queries/s  ({n_f} calls)")
    return 0 if rate >= FLOOR else 1


if __name__ == "__main__":
    raise SystemExit(main())
