"""Appeal (有事找居委) categoriser: which kind of problem a resident is reporting."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import yaml

from ._lexicon import ScoreModel, prepare
from .normalize import DATA_DIR

__all__ = ["CATEGORIES", "CATEGORY_LABELS", "AppealCategory", "categorise", "category_scores"]

CATEGORIES: tuple[str, ...] = (
    "facility", "environment", "safety", "dispute", "policy", "living", "suggestion", "other",
)
CATEGORY_LABELS: dict[str, str] = {
    "facility": "设施维护",
    "environment": "环境卫生",
    "safety": "安全隐患",
    "dispute": "邻里纠纷",
    "policy": "政策咨询",
    "living": "生活服务",
    "suggestion": "建议",
    "other": "其他",
}


@dataclass(frozen=True)
class AppealCategory:
    category: str
    confidence: float
    runner_up: str | None


def _load() -> tuple[ScoreModel, float]:
    with open(DATA_DIR / "appeals.yaml", encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    model = ScoreModel(data, "categories")
    unknown = set(model.labels) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"appeals.yaml has categories outside the contract: {unknown}")
    return model, float(data.get("min_score", 1.5))


_MODEL, _MIN_SCORE = _load()
# A message that opens with a proposal is a suggestion whatever it proposes
# (建议装路灯 names a lamp but asks for something new, not a repair).
_SUGGEST_LEAD = re.compile(r"^(我)?(建议|提议|提个建议|希望|想提个建议|可不可以|是否可以|能不能|能否|我觉得可以)")


def category_scores(text: str, prepared: str | None = None) -> dict[str, float]:
    """Raw per-category scores (used by the intent classifier as a 'problem' signal)."""
    t = prepare(text) if prepared is None else prepared
    scores, _tags, _used = _MODEL.score(t)
    if _SUGGEST_LEAD.match(t):
        scores["suggestion"] = scores.get("suggestion", 0.0) + 3.0
    return scores


def categorise(text: str) -> AppealCategory:
    scores = category_scores(text)
    ranked = sorted(((s, c) for c, s in scores.items() if s > 0 and c != "other"), reverse=True)
    other = scores.get("other", 0.0)
    if not ranked or (other > 0 and other >= ranked[0][0]) or ranked[0][0] < _MIN_SCORE:
        runner = ranked[0][1] if ranked else None
        conf = 0.5 if other >= _MIN_SCORE else 0.3
        return AppealCategory("other", conf, runner)
    s1, best = ranked[0]
    s2 = ranked[1][0] if len(ranked) > 1 else max(other, 0.0)
    runner = ranked[1][1] if len(ranked) > 1 else ("other" if other > 0 else None)
    strength = 1.0 - math.exp(-s1 / 3.0)
    margin = (s1 - s2) / s1
    return AppealCategory(best, round(min(1.0, strength * (0.55 + 0.45 * margin)), 3), runner)
