from nlp.normalize import compact, mandarinize, mask_phone, normalize


def test_normalize_spec_example():
    assert normalize("點樣報名？？１２３😀") == "点样报名 123"


def test_normalize_width_case_whitespace():
    assert normalize("ＡＢＣ　ｄｅｆ") == "abc def"
    assert normalize("  Hello,,,World!!  ") == "hello world"
    assert normalize("嗯。。。我想，报名") == "嗯 我想 报名"
    assert normalize("") == ""
    assert normalize("😀👍🏻❤️") == ""
    assert normalize("签到：４５２１") == "签到 4521"


def test_normalize_keeps_chinese_and_digits():
    assert normalize("积分100分") == "积分100分"
    assert normalize("積分還有多少") == "积分还有多少"


def test_compact():
    assert compact("我 想 报名， 书法班！") == "我想报名书法班"


def test_mandarinize():
    m = lambda s: mandarinize(normalize(s))  # noqa: E731
    assert m("乜嘢活动") == "什么活动"
    assert m("点样报名") == "怎样报名"
    assert m("几多分") == "多少分"
    assert m("有冇活动") == "有没有活动"
    assert m("我报咗名未") == "我报了名未"
    assert m("搞掂未呀") == "搞定未"
    assert m("唔该帮我揾社工") == "谢谢帮我找社工"
    assert m("我係汇侨北嘅") == "我是汇侨北的"
    assert m("佢去边度") == "他去哪里"
    assert m("睇下啲嘢") == "看下些东西"
    assert m("好㗎喇") == "好"
    # Longest first: 唔该 is not 不该; plain Mandarin is untouched.
    assert "不该" not in m("唔该")
    assert m("我想报名书法班") == "我想报名书法班"
    assert m("关系很好") == "关系很好"


def test_mask_phone():
    assert mask_phone("电话13812345678") == "电话138****5678"
    assert mask_phone("a 13912345678 b 15000001111") == "a 139****5678 b 150****1111"
    assert mask_phone("１３９１２３４５６７８") == "１３９****５６７８"
    # Not a mobile: too long, wrong prefix, short.
    assert mask_phone("123138123456789") == "123138123456789"
    assert mask_phone("12345678901") == "12345678901"
    assert mask_phone("签到 4521") == "签到 4521"
    assert mask_phone("") == ""


def test_cantonese_dian_means_how_only_where_it_is_not_a_time():
    m = lambda s: mandarinize(normalize(s))  # noqa: E731
    # Cantonese 点 = 怎么 ("how") at the start or after a non-numeral.
    assert m("点约磨刀") == "怎么约磨刀"
    assert m("我想知点约磨刀") == "我想知怎么约磨刀"
    assert m("点去社区中心") == "怎么去社区中心"
    assert m("点报名") == "怎么报名"
    assert m("点样报名") == "怎样报名"
    assert m("点算好") == "怎么办好"
    assert m("点搞") == "怎么弄"
    assert m("点做") == "怎么做"
    assert m("点办") == "怎么办"
    # After a numeral (Chinese, Arabic, full width) 点 is o'clock and stays.
    assert m("十点约磨刀") == "十点约磨刀"
    assert m("10点约磨刀") == "10点约磨刀"
    assert m("１０点约磨刀") == "10点约磨刀"
    assert m("周六九点去") == "周六九点去"
    assert m("两点做") == "两点做"
    assert m("三点报名") == "三点报名"
    assert m("几点去") == "几点去"
    assert m("零点收") == "零点收"
    # Mandarin words ending in 点 are not "how" either.
    assert m("有点用") == "有点用"
    assert m("早点去") == "早点去"
    assert m("快点做") == "快点做"
    assert m("重点解决") == "重点解决"
    assert m("地点查询") == "地点查询"
