"""Intent classifier: weighted keyword lexicons matched longest first.

Pipeline per message: normalize -> mandarinize -> compact -> typo fold -> fillers out,
then substring keywords from data/intents.yaml (a matched span is consumed, so 取消报名
never also counts as 报名), concept rules (cancel word + activity word -> activity_cancel),
regex patterns, exact bare-message words, and the appeal categoriser's problem signal
(broken lamps, noise, rubbish -> appeal_file). jieba tokens left unexplained by any
keyword lower the confidence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import yaml

from . import tokenizer
from ._lexicon import ScoreModel, prepare
from .appeals import category_scores
from .normalize import DATA_DIR

__all__ = ["INTENTS", "IntentResult", "classify", "explain"]

INTENTS: tuple[str, ...] = (
    "greeting", "help", "register", "activity_list", "activity_signup", "activity_cancel",
    "my_activities", "checkin", "points_balance", "points_history", "points_rules",
    "reward_list", "reward_redeem", "service_booking", "appeal_file", "appeal_status",
    "appeal_rate", "survey", "human", "cancel", "unknown",
)


@dataclass(frozen=True)
class IntentResult:
    intent: str
    confidence: float
    runner_up: str | None
    runner_up_confidence: float


def _load() -> tuple[ScoreModel, float, frozenset[str]]:
    with open(DATA_DIR / "intents.yaml", encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    model = ScoreModel(data, "intents")
    extra = set(model.labels) - set(INTENTS)
    if extra:
        raise ValueError(f"intents.yaml has intents outside the contract: {extra}")
    return model, float(data.get("min_score", 2.0)), frozenset(data.get("stopwords") or ())


_MODEL, _MIN_SCORE, _STOPWORDS = _load()

# How much of the appeal categoriser's score counts towards appeal_file. 'living'
# (meals, care) overlaps service booking and counts less; 'other' does not count.
_APPEAL_FACTOR = {"facility": 0.8, "environment": 0.8, "safety": 0.8, "dispute": 0.8,
                  "policy": 0.7, "suggestion": 0.7, "living": 0.35}
_APPEAL_CAP = 5.0


def _strength(score: float) -> float:
    return 1.0 - math.exp(-max(score, 0.0) / 2.5)


def _unexplained(text: str, used: bytearray) -> int:
    """Content tokens (jieba) that no keyword touched: evidence we missed the point."""
    if not text or not used.count(0):  # every character explained: nothing to cut
        return 0
    n, pos = 0, 0
    for tok in tokenizer.cut(text):
        end = pos + len(tok)
        if not any(used[pos:end]) and tok not in _STOPWORDS and not tok.isdigit():
            n += 1
        pos = end
    return n


def _scores(text: str) -> tuple[dict[str, float], bytearray, str]:
    t = prepare(text)
    scores, _tags, used = _MODEL.score(t)
    if t:
        cat = category_scores(text, prepared=t)
        signal = max((s * _APPEAL_FACTOR.get(c, 0.0) for c, s in cat.items()), default=0.0)
        if signal > 0:
            scores["appeal_file"] = scores.get("appeal_file", 0.0) + min(signal, _APPEAL_CAP)
    return scores, used, t


def classify(text: str) -> IntentResult:
    scores, used, t = _scores(text)
    ranked = sorted(((s, i) for i, s in scores.items() if s > 0 and i != "unknown"), reverse=True)
    unknown_score = scores.get("unknown", 0.0)
    if not ranked:
        return IntentResult("unknown", 0.1 if unknown_score == 0 else 0.2, None, 0.0)
    rivals = ranked
    requests = [r for r in ranked if r[1] != "greeting"]
    if requests and requests[0][0] >= _MIN_SCORE:
        # 你好,帮我查下积分谢谢: the greeting opens the message and is no rival to the
        # request that follows (it may still be reported as the runner-up).
        rivals = requests
        ranked = requests + [r for r in ranked if r[1] == "greeting"]
    s1, best = ranked[0]
    if s1 < _MIN_SCORE or unknown_score > s1:
        # Out of scope (or too weak to act on): low confidence, best guess as runner-up.
        return IntentResult("unknown", 0.2, best, round(0.5 * _strength(s1), 3))
    penalty = 1.0 / (1.0 + 0.12 * _unexplained(t, used))
    if unknown_score > 0:
        penalty *= 1.0 - 0.5 * unknown_score / s1
    s2 = rivals[1][0] if len(rivals) > 1 else 0.0
    margin = (s1 - max(s2, unknown_score)) / s1
    conf = _strength(s1) * (0.55 + 0.45 * margin) * penalty
    runner = ranked[1][1] if len(ranked) > 1 else None
    r_conf = _strength(ranked[1][0]) * 0.55 * penalty if runner else 0.0
    return IntentResult(best, round(min(conf, 1.0), 3), runner, round(min(r_conf, conf), 3))


def explain(text: str) -> dict[str, float]:
    """Raw scores per intent, for debugging and the `classify` CLI."""
    scores, _used, _t = _scores(text)
    return dict(sorted(scores.items(), key=lambda kv: -kv[1]))
