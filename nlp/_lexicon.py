"""Weighted keyword lexicons matched as substrings, longest first, with consumed spans.

Shared by the intent classifier and the appeal categoriser. A lexicon maps keyword ->
(label weights, concept tags). Matching finds every occurrence of every keyword, then
accepts them longest first (earlier position on ties); an occurrence overlapping an
already accepted one is dropped, so 取消报名 consumes its 报名.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import ahocorasick

from .normalize import compact, fold_typos, mandarinize, normalize

__all__ = ["Entry", "Lexicon", "prepare"]

# Voice-input fillers and politeness that carry no intent.
_FILLER_RE = re.compile(r"嗯+|呃+|那个|就是|然后|请问|麻烦你|麻烦|一下子")


def prepare(text: str) -> str:
    """normalize -> mandarinize -> compact -> fold typos -> drop fillers."""
    t = mandarinize(normalize(text)).replace(" ", "")
    t = fold_typos(t)
    return _FILLER_RE.sub("", t)


@dataclass
class Entry:
    weights: dict[str, float] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)


class Lexicon:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self._automaton = None  # built by freeze()

    def add(self, keyword: str, label: str | None = None, weight: float = 0.0,
            tag: str | None = None) -> None:
        # Keywords are stored in the same form the text is prepared into.
        kw = fold_typos(mandarinize(compact(str(keyword))))
        if not kw:
            return
        e = self.entries.get(kw)
        if e is None:
            e = self.entries[kw] = Entry()
        if label is not None:
            # Max, not sum: Cantonese and Traditional spellings can fold onto one key.
            e.weights[label] = max(e.weights.get(label, float("-inf")), float(weight))
        if tag is not None:
            e.tags.add(tag)

    def freeze(self) -> None:
        # A keyword carries the concept tags of every multi-character keyword inside it
        # (积分规则 is also about 积分), so consuming a span never hides a concept.
        # Single characters (报, 换) are too ambiguous to pass on.
        tagged = [(kw, e.tags) for kw, e in self.entries.items() if e.tags and len(kw) >= 2]
        for kw, e in self.entries.items():
            for sub, tags in tagged:
                if sub != kw and sub in kw:
                    e.tags = e.tags | tags
        # Every occurrence of every keyword in one pass (Aho-Corasick, in C): a message is
        # matched against ~2,000 keywords twice (intents and appeal categories).
        if not self.entries:  # an automaton without words cannot be searched
            self._automaton = None
            return
        automaton = ahocorasick.Automaton()
        for kw in self.entries:
            automaton.add_word(kw, (len(kw), kw))
        automaton.make_automaton()
        self._automaton = automaton

    def match(self, text: str) -> tuple[list[tuple[int, int, str]], bytearray]:
        """Accepted (start, end, keyword) triples and the consumed-character mask."""
        found = [(end + 1 - n, end + 1, kw) for end, (n, kw) in self._automaton.iter(text)] \
            if text and self._automaton is not None else []
        used = bytearray(len(text))
        if not found:
            return [], used
        # Longest first; among equals, a keyword that scores beats a bare concept word
        # (报名 over 我报 in 我报名); then leftmost.
        found.sort(key=lambda m: (m[0] - m[1], not self.entries[m[2]].weights, m[0]))
        accepted = []
        for s, e, kw in found:
            if any(used[s:e]):
                continue
            used[s:e] = b"\x01" * (e - s)
            accepted.append((s, e, kw))
        return accepted, used


@dataclass
class Rule:
    all: frozenset[str]
    any: frozenset[str]
    none: frozenset[str]
    label: str
    weight: float

    def applies(self, tags: set[str]) -> bool:
        # Set operations, not all()/any() over generators: every message checks every rule.
        return self.all <= tags and (not self.any or not self.any.isdisjoint(tags)) \
            and self.none.isdisjoint(tags)


# What changes meaning when a pattern is joined with others: group references, conditionals.
_UNJOINABLE_RE = re.compile(r"\\[1-9]|\(\?\(|\(\?P=")


def _combined(patterns: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One regex that matches where any of `patterns` does (most messages match none of them,
    and one search rules them all out), or None where joining could change a meaning."""
    if not patterns or any(_UNJOINABLE_RE.search(rx.pattern) for rx in patterns):
        return None
    try:  # a global inline flag or a repeated group name cannot be joined
        return re.compile("|".join(f"(?:{rx.pattern})" for rx in patterns))
    except re.error:
        return None


class ScoreModel:
    """Labels scored from a YAML lexicon: keywords, regex patterns, exact messages, rules."""

    def __init__(self, data: dict, labels_key: str) -> None:
        self.lexicon = Lexicon()
        self.labels: list[str] = list((data.get(labels_key) or {}).keys())
        for tag, words in (data.get("concepts") or {}).items():
            for w in words or []:
                self.lexicon.add(str(w), tag=tag)
        self.patterns: list[tuple[re.Pattern[str], str, float]] = []
        self.tag_patterns = [(re.compile(str(p)), str(tag))
                             for tag, pats in (data.get("concept_patterns") or {}).items()
                             for p in pats or []]
        self.exact: dict[str, dict[str, float]] = {}
        for label, spec in (data.get(labels_key) or {}).items():
            spec = spec or {}
            for kw, w in (spec.get("keywords") or {}).items():
                self.lexicon.add(str(kw), label=label, weight=w)
            for pat, w in (spec.get("patterns") or {}).items():
                self.patterns.append((re.compile(str(pat)), label, float(w)))
            for word, w in (spec.get("exact") or {}).items():
                key = prepare(str(word)) or str(word).lower()
                self.exact.setdefault(key, {})[label] = float(w)
        self.rules = [
            Rule(frozenset(r.get("all") or ()), frozenset(r.get("any") or ()),
                 frozenset(r.get("none") or ()),
                 r["intent"] if "intent" in r else r["category"], float(r["weight"]))
            for r in data.get("rules") or []
        ]
        # A rule can only apply when one tag it requires is seen: each message checks the rules
        # filed under its tags (in declaration order, so the scores add up the same).
        self._rules_by_tag: dict[str, list[int]] = {}
        self._rules_always: set[int] = set()
        for i, r in enumerate(self.rules):
            keys = [min(r.all)] if r.all else sorted(r.any)
            for key in keys:
                self._rules_by_tag.setdefault(key, []).append(i)
            if not keys:
                self._rules_always.add(i)
        self._any_pattern = _combined([rx for rx, _l, _w in self.patterns])
        self.lexicon.freeze()

    def score(self, text: str) -> tuple[dict[str, float], set[str], bytearray]:
        """Scores per label for prepared text, the concept tags seen, the consumed mask."""
        scores: dict[str, float] = {}
        tags: set[str] = set()
        accepted, used = self.lexicon.match(text)
        entries = self.lexicon.entries
        for _s, _e, kw in accepted:
            e = entries[kw]
            for label, w in e.weights.items():
                scores[label] = scores.get(label, 0.0) + w
            if e.tags:
                tags |= e.tags
        for rx, tag in self.tag_patterns:
            if tag not in tags and rx.search(text):
                tags.add(tag)
        if self._any_pattern is None or self._any_pattern.search(text):
            for rx, label, w in self.patterns:
                if rx.search(text):
                    scores[label] = scores.get(label, 0.0) + w
        ex = self.exact.get(text)
        if ex:
            for label, w in ex.items():
                scores[label] = scores.get(label, 0.0) + w
        candidates = set(self._rules_always)
        by_tag = self._rules_by_tag
        for tag in tags:
            if tag in by_tag:
                candidates.update(by_tag[tag])
        rules = self.rules
        for i in sorted(candidates):
            r = rules[i]
            if r.applies(tags):
                scores[r.label] = scores.get(r.label, 0.0) + r.weight
        return scores, tags, used
