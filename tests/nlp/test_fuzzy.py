import pytest

from nlp.fuzzy import Catalog, Match, best_match

PLACES = ["汇侨北社区", "南方医科大学社区", "江夏第一社区", "江夏第二社区", "新市街", "京溪街", "黄石街"]
REWARDS = ["洗剪吹", "人气头疗", "购物袋", "牙膏", "卷纸", "抽纸"]
ACTIVITIES = ["书法班", "舞蹈公益课堂", "寒假作业辅导班", "马上送福指尖传暖手工活动", "新春文艺汇演"]


def top(catalog, q):
    found = catalog.match(q)
    return found[0] if found else None


@pytest.mark.parametrize("query,expected,floor", [
    ("汇侨北", "汇侨北社区", 95),
    ("汇侨北社区", "汇侨北社区", 100),
    ("回侨北", "汇侨北社区", 85),
    ("南医大", "南方医科大学社区", 80),
    ("南方医科", "南方医科大学社区", 90),
    ("江夏第二", "江夏第二社区", 95),
    ("京溪", "京溪街", 95),
    ("黃石街", "黄石街", 100),
])
def test_places(query, expected, floor):
    m = top(Catalog(PLACES), query)
    assert m is not None and m.choice == expected and m.score >= floor, m


def test_unrelated_words_do_not_match():
    places = Catalog(PLACES)
    assert all(m.choice != "江夏第一社区" for m in places.match("京溪"))
    assert places.match("社区") == []
    assert places.match("你好") == []
    rewards = Catalog(REWARDS)
    assert all(m.choice != "抽纸" for m in rewards.match("洗剪吹"))
    assert rewards.match("纸巾") == [] or rewards.match("纸巾")[0].score < 80
    assert Catalog(ACTIVITIES).match("活动") == []
    assert Catalog(ACTIVITIES).match("班") == []


def test_homophones_and_sentences():
    acts = Catalog(ACTIVITIES)
    assert top(acts, "书发班").choice == "书法班"
    assert top(acts, "我想报名书法班").choice == "书法班"
    assert top(acts, "作业辅导").choice == "寒假作业辅导班"
    assert top(Catalog(REWARDS), "头疗").choice == "人气头疗"
    assert top(Catalog(REWARDS), "牙高").choice == "牙膏"


def test_match_shape_limit_cutoff_and_best_match():
    cat = Catalog(PLACES)
    res = cat.match("江夏", limit=5)
    assert [m.choice for m in res][:2] == ["江夏第一社区", "江夏第二社区"] or \
        {m.choice for m in res[:2]} == {"江夏第一社区", "江夏第二社区"}
    assert all(isinstance(m, Match) and 0 <= m.score <= 100 for m in res)
    assert res == sorted(res, key=lambda m: -m.score)
    assert len(cat.match("江夏", limit=1)) == 1
    assert cat.match("江夏", cutoff=101) == []
    assert PLACES[res[0].index] == res[0].choice
    assert best_match("京溪", PLACES).choice == "京溪街"
    assert best_match("飞机场", PLACES) is None
    assert Catalog([]).match("京溪") == []
    assert cat.match("") == []
