"""The keyword lexicon and score model shared by both classifiers."""
from __future__ import annotations

import re

from nlp._lexicon import Lexicon, ScoreModel, _combined


def test_every_occurrence_is_found_and_the_longest_wins():
    lex = Lexicon()
    for kw in ("报名", "取消报名", "名额", "取消"):
        lex.add(kw, label="x", weight=1.0)
    lex.freeze()
    accepted, used = lex.match("我要取消报名额")
    assert accepted == [(2, 6, "取消报名")]  # 名额 overlaps it, 报名 and 取消 are inside it
    assert list(used) == [0, 0, 1, 1, 1, 1, 0]


def test_an_empty_lexicon_matches_nothing():
    lex = Lexicon()
    lex.freeze()
    assert lex.match("你好") == ([], bytearray(2))
    assert ScoreModel({}, "intents").score("你好") == ({}, set(), bytearray(2))


def test_patterns_are_joined_only_where_joining_keeps_their_meaning():
    joined = _combined([re.compile(r"几点.*开"), re.compile(r"a|b")])
    assert joined is not None and joined.search("几点钟开门") and joined.search("b")
    assert _combined([re.compile(r"(b)\1")]) is None  # a group reference would shift
    assert _combined([re.compile(r"(?i)ab"), re.compile("c")]) is None  # global flag
    assert _combined([re.compile(r"(?P<n>a)"), re.compile(r"(?P<n>b)")]) is None  # same name
    model = ScoreModel({"intents": {"x": {"patterns": {r"(b)\1": 1.0}}}}, "intents")
    assert model.score("abba")[0] == {"x": 1.0}  # still scored, one pattern at a time
