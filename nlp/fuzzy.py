"""Fuzzy matching of names (communities, activities, rewards) against a catalog.

Two views of every name are precomputed once: its normalised characters and its
toneless pinyin syllables. A query scores the better of a character score (rapidfuzz,
partial so 汇侨北 finds 汇侨北社区, plus an in-order abbreviation check for 南医大) and a
syllable score (homophone typos: 回侨北, 书发班). Generic words (社区, 活动, 班 ...) are
removed first so that they alone never make a match.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from rapidfuzz import fuzz

from .normalize import _pinyin, compact, mandarinize

__all__ = ["Match", "Catalog", "best_match"]

# Generic words that say what kind of thing a name is, not which one.
_GENERIC_RE = re.compile(
    r"社区|居委会|小区|街道|街|活动|兴趣班|培训班|班|课程|课堂|课|服务|项目|礼品|兑换|"
    r"一次|一个|一份|一支|一盒|一包|报名|我要|我想|参加|预约|的|了|吧|吗")
# Southern accents blur these; folding them lets 京/精/金 or 南/蓝 still agree.
_PY_FOLD = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("ing", "in"), ("eng", "en"), ("ang", "an"))


@dataclass(frozen=True)
class Match:
    index: int
    choice: str
    score: float


def _fold_syllable(py: str) -> str:
    for a, b in _PY_FOLD:
        py = py.replace(a, b)
    if py.startswith("l"):
        py = "n" + py[1:]
    return py


def _syllables(text: str) -> tuple[str, ...]:
    out = []
    for ch in text:
        py = _pinyin(ch)
        out.append(_fold_syllable(py) if py else ch)
    return tuple(out)


def _core(text: str) -> str:
    core = _GENERIC_RE.sub("", text)
    return core or text


def _prepare(text: str) -> str:
    return mandarinize(compact(text))


def _is_subsequence(short: str, long: str) -> bool:
    it = iter(long)
    return all(ch in it for ch in short)


def _syllable_score(q: tuple[str, ...], n: tuple[str, ...]) -> float:
    """Best fraction of equal syllables when sliding the shorter over the longer."""
    if len(q) < 2 or len(n) < 2:
        return 100.0 if q == n and q else 0.0
    short, long_ = (q, n) if len(q) <= len(n) else (n, q)
    k = len(short)
    best = 0
    for i in range(len(long_) - k + 1):
        hits = sum(1 for a, b in zip(short, long_[i:i + k]) if a == b)
        if hits > best:
            best = hits
            if best == k:
                break
    frac = best / k
    # A near miss on a two-syllable word is too weak to trust.
    if k == 2 and best < 2:
        return 0.0
    return 100.0 * frac


class Catalog:
    def __init__(self, names: Sequence[str]) -> None:
        self.names: list[str] = list(names)
        self._cores: list[str] = []
        self._py: list[tuple[str, ...]] = []
        for name in self.names:
            core = _core(_prepare(name))
            self._cores.append(core)
            self._py.append(_syllables(core))

    def __len__(self) -> int:
        return len(self.names)

    def _score(self, q: str, qpy: tuple[str, ...], i: int) -> float:
        core = self._cores[i]
        if not core:
            return 0.0
        if q == core:
            return 100.0
        char = fuzz.ratio(q, core)
        if len(q) >= 2 and len(core) >= 2 and (min(len(q), len(core)) >= 3 or q in core or core in q):
            # Partial alignment: a fragment or a sentence containing the name. Two
            # characters sharing one (抽纸/卷纸) is not enough evidence.
            char = max(char, fuzz.partial_ratio(q, core))
            if len(q) >= 3 and len(q) < len(core) and q[0] == core[0] and _is_subsequence(q, core):
                char = max(char, 90.0)  # abbreviation such as 南医大
        syl = _syllable_score(qpy, self._py[i]) * 0.95
        score = max(char, syl)
        # Prefer names whose length is close to the query among equals.
        return score - 0.01 * abs(len(core) - len(q))

    def match(self, query: str, limit: int = 5, cutoff: float = 60.0) -> list[Match]:
        q = _prepare(query)
        q = _core(q) if q else q
        if not q or not self.names:
            return []
        qpy = _syllables(q)
        scored = []
        for i in range(len(self.names)):
            s = self._score(q, qpy, i)
            if s >= cutoff:
                scored.append(Match(i, self.names[i], round(max(0.0, min(100.0, s)), 2)))
        scored.sort(key=lambda m: (-m.score, m.index))
        return scored[:limit]


def best_match(query: str, names: Sequence[str], cutoff: float = 60.0) -> Match | None:
    found = Catalog(names).match(query, limit=1, cutoff=cutoff)
    return found[0] if found else None
