from nlp import tokenizer


def test_lazy_load_and_user_dict():
    toks = tokenizer.cut("我想报名汇侨北社区的书法班")
    assert tokenizer.is_loaded()
    assert "汇侨北社区" in toks
    assert "书法班" in toks
    assert "报名" in toks


def test_community_vocabulary_kept_whole():
    for word in ("有事找居委", "南方医科大学社区", "江夏第一社区", "洗剪吹", "头疗", "签到"):
        assert word in tokenizer.cut(f"我要{word}了"), word


def test_load_is_idempotent_and_adds_words():
    tokenizer.load()
    tokenizer.load(["马上送福指尖传暖"])
    assert "马上送福指尖传暖" in tokenizer.cut("报名马上送福指尖传暖活动")
    tokenizer.add_words(["云上粤剧欣赏会", "", "  "])
    assert "云上粤剧欣赏会" in tokenizer.cut("我想去云上粤剧欣赏会")
    assert tokenizer.cut("") == []
    assert " " not in tokenizer.cut("报名 书法班")
