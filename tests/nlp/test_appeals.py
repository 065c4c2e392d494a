"""Appeal categoriser: golden-file accuracy floor and contract."""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from nlp.appeals import CATEGORIES, CATEGORY_LABELS, AppealCategory, categorise

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "appeals_golden.tsv"


def load_golden() -> list[tuple[str, str]]:
    rows = []
    for line in GOLDEN.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            text, label = line.rsplit("\t", 1)
            rows.append((text, label.strip()))
    return rows


def test_contract():
    assert CATEGORIES == ("facility", "environment", "safety", "dispute", "policy", "living",
                          "suggestion", "other")
    assert CATEGORY_LABELS == {"facility": "设施维护", "environment": "环境卫生", "safety": "安全隐患",
                               "dispute": "邻里纠纷", "policy": "政策咨询", "living": "生活服务",
                               "suggestion": "建议", "other": "其他"}


def test_golden_accuracy():
    rows = load_golden()
    assert len(rows) >= 200
    counts = Counter(c for _, c in rows)
    assert set(counts) == set(CATEGORIES) and min(counts.values()) >= 15
    predicted = [categorise(t).category for t, _ in rows]
    matrix: dict[str, Counter] = defaultdict(Counter)
    wrong = []
    for (text, gold), pred in zip(rows, predicted):
        matrix[gold][pred] += 1
        if pred != gold:
            wrong.append(f"  {text!r}: expected {gold}, got {pred}")
    accuracy = 1 - len(wrong) / len(rows)
    report = "\n".join(
        [f"  {g}: {dict(matrix[g])}" for g in CATEGORIES] + [f"misclassified ({len(wrong)}):"] + wrong)
    assert accuracy >= 0.85, f"accuracy {accuracy:.3f}\n{report}"


@pytest.mark.parametrize("text,category", [
    ("区人民医院门口道路封闭，自行车与电动车均挤在人行道上", "safety"),
    ("楼道灯坏了", "facility"),
    ("垃圾堆着没人收", "environment"),
    ("楼上半夜好吵", "dispute"),
    ("楼上漏水到我家", "dispute"),
    ("低保怎么申请", "policy"),
    ("老人家想要助餐", "living"),
    ("建议装路灯", "suggestion"),
    ("希望多搞点亲子活动", "suggestion"),
    ("想表扬一下网格员", "other"),
    ("", "other"),
    ("abc", "other"),
])
def test_examples(text, category):
    r = categorise(text)
    assert isinstance(r, AppealCategory)
    assert r.category == category
    assert 0.0 <= r.confidence <= 1.0
    assert r.runner_up is None or r.runner_up in CATEGORIES
