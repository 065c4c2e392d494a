from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from nlp.entities import (
    When, find_code, find_phone, is_valid_mobile, parse_choice, parse_choices, parse_int,
    parse_when, parse_yes_no,
)

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 12, 3, 10, 0, tzinfo=TZ)  # a Thursday


def dt(m, d, h=0, mi=0, y=2026):
    return datetime(y, m, d, h, mi, tzinfo=TZ)


@pytest.mark.parametrize("text,value", [
    ("3", 3), ("３", 3), ("三", 3), ("两个", 2), ("十二", 12), ("二十五", 25), ("一百", 100),
    ("我要3个", 3), ("两位", 2), ("0", 0),
])
def test_parse_int(text, value):
    assert parse_int(text) == value


@pytest.mark.parametrize("text", ["", "没有", "看一下", "好的"])
def test_parse_int_none(text):
    assert parse_int(text) is None


@pytest.mark.parametrize("text,value", [
    ("2", 2), ("２", 2), ("第二个", 2), ("第2个", 2), ("二", 2), ("选2", 2), ("2号", 2),
    ("最后一个", 4), ("第一个", 1), ("头一个", 1), ("第四个吧", 4), (" 3 ", 3), ("選三", 3),
])
def test_parse_choice(text, value):
    assert parse_choice(text, 4) == value


@pytest.mark.parametrize("text", ["5", "0", "第五个", "我想报名", "", "明天", "20号", "2个人报名"])
def test_parse_choice_none(text):
    assert parse_choice(text, 4) is None


@pytest.mark.parametrize("text,value", [
    ("1 3", [1, 3]), ("1,3", [1, 3]), ("1，3", [1, 3]), ("1、3", [1, 3]), ("1和3", [1, 3]),
    ("一三", [1, 3]), ("3 1 3", [3, 1]), ("2", [2]), ("第一个和第三个", [1, 3]),
])
def test_parse_choices(text, value):
    assert parse_choices(text, 4) == value


@pytest.mark.parametrize("text", ["1 9", "", "我都要", "一九"])
def test_parse_choices_none(text):
    assert parse_choices(text, 4) is None


@pytest.mark.parametrize("text", ["是", "是的", "好", "好的", "确认", "对", "可以", "行", "ok", "OK",
                                  "嗯", "係", "得", "冇问题", "要", "没问题", "确定", "好的，确认", "好好好"])
def test_yes(text):
    assert parse_yes_no(text) is True


@pytest.mark.parametrize("text", ["不", "不是", "否", "不要", "唔要", "唔係", "算了", "不用", "取消",
                                  "不用了谢谢"])
def test_no(text):
    assert parse_yes_no(text) is False


@pytest.mark.parametrize("text", ["", "我想想", "明天", "书法班", "什么意思"])
def test_yes_no_unclear(text):
    assert parse_yes_no(text) is None


@pytest.mark.parametrize("text,phone", [
    ("13812345678", "13812345678"),
    ("我的电话是138 1234 5678", "13812345678"),
    ("+86 139-1234-5678", "13912345678"),
    ("+8615012345678", "15012345678"),
    ("１３９１２３４５６７８", "13912345678"),
])
def test_find_phone(text, phone):
    assert find_phone(text) == phone


@pytest.mark.parametrize("text", ["12345678901", "1381234567", "138123456789", "签到4521", ""])
def test_find_phone_none(text):
    assert find_phone(text) is None


def test_is_valid_mobile():
    assert is_valid_mobile("13812345678")
    assert is_valid_mobile("１９９１２３４５６７８")
    assert not is_valid_mobile("12812345678")
    assert not is_valid_mobile("1381234567")
    assert not is_valid_mobile("138123456789")
    assert not is_valid_mobile("")


@pytest.mark.parametrize("text,code", [
    ("签到 4521", "4521"), ("签到４５２１", "4521"), ("码是889123", "889123"), ("5566", "5566"),
])
def test_find_code(text, code):
    assert find_code(text) == code


@pytest.mark.parametrize("text", ["13812345678", "123", "1234567", "2026年", "签到", ""])
def test_find_code_none(text):
    assert find_code(text) is None


def test_when_point_tomorrow_afternoon():
    w = parse_when("明天下午三点", NOW)
    assert isinstance(w, When)
    assert w.start == w.end == dt(12, 4, 15)
    assert w.has_time is True
    assert w.start.tzinfo is not None and w.start.utcoffset().total_seconds() == 8 * 3600


def test_when_next_saturday_morning_window():
    w = parse_when("下周六上午", NOW)
    assert (w.start, w.end, w.has_time) == (dt(12, 12, 8), dt(12, 12, 12), False)


@pytest.mark.parametrize("text,start,end", [
    ("12月20号", dt(12, 20), dt(12, 21)),
    ("12月20日", dt(12, 20), dt(12, 21)),
    ("20号", dt(12, 20), dt(12, 21)),
    ("今天", dt(12, 3), dt(12, 4)),
    ("明天", dt(12, 4), dt(12, 5)),
    ("后天", dt(12, 5), dt(12, 6)),
    ("大后天", dt(12, 6), dt(12, 7)),
    ("周六", dt(12, 5), dt(12, 6)),
    ("星期六", dt(12, 5), dt(12, 6)),
    ("礼拜六", dt(12, 5), dt(12, 6)),
    ("这周六", dt(12, 5), dt(12, 6)),
    ("本周六", dt(12, 5), dt(12, 6)),
    ("下周六", dt(12, 12), dt(12, 13)),
    ("周一", dt(12, 7), dt(12, 8)),
    ("周末", dt(12, 5), dt(12, 7)),
    ("这周末", dt(12, 5), dt(12, 7)),
    ("下周末", dt(12, 12), dt(12, 14)),
    ("下周", dt(12, 7), dt(12, 14)),
    ("下个月", dt(1, 1, y=2027), dt(2, 1, y=2027)),
    ("本月", dt(12, 3), dt(1, 1, y=2027)),
    ("这个月", dt(12, 3), dt(1, 1, y=2027)),
    ("11月5号", dt(11, 5, y=2027), dt(11, 6, y=2027)),  # past date rolls to next year
    ("今晚", dt(12, 3, 18), dt(12, 3, 22)),
    ("下午", dt(12, 3, 12), dt(12, 3, 18)),
])
def test_when_days_and_ranges(text, start, end):
    w = parse_when(text, NOW)
    assert w is not None, text
    assert (w.start, w.end) == (start, end), (text, w)
    assert w.has_time is False
    assert w.label


@pytest.mark.parametrize("text,start", [
    ("三点", dt(12, 3, 15)),
    ("3点", dt(12, 3, 15)),
    ("十点半", dt(12, 3, 10, 30)),
    ("3:30", dt(12, 3, 15, 30)),
    ("15:00", dt(12, 3, 15)),
    ("两点一刻", dt(12, 3, 14, 15)),
    ("晚上七点", dt(12, 3, 19)),
    ("上午十点半", dt(12, 3, 10, 30)),
    ("下周六下午两点", dt(12, 12, 14)),
    ("12月20号上午9点", dt(12, 20, 9)),
    ("聽日下晝三點", dt(12, 4, 15)),
    ("中午12点", dt(12, 3, 12)),
])
def test_when_points(text, start):
    w = parse_when(text, NOW)
    assert w is not None and w.has_time and w.start == w.end == start, (text, w)


def test_weekend_on_a_saturday_is_this_weekend():
    sat = datetime(2026, 12, 5, 9, 0, tzinfo=TZ)
    w = parse_when("周末", sat)
    assert (w.start, w.end) == (dt(12, 5), dt(12, 7))


@pytest.mark.parametrize("text", ["", "我想报名", "书法班", "好的", "123"])
def test_when_none(text):
    assert parse_when(text, NOW) is None


# A weekday followed by a Chinese-numeral hour: the weekday is never the first digit of the
# hour (周六十点 is Saturday 10:00, not "六十" = 60; 周二十点 is Tuesday 10:00, not 20:00).
@pytest.mark.parametrize("text,start", [
    ("周六十点", dt(12, 5, 10)),
    ("周六九点半", dt(12, 5, 9, 30)),
    ("周六十点半", dt(12, 5, 10, 30)),
    ("周六十二点", dt(12, 5, 12)),
    ("周一十点", dt(12, 7, 10)),
    ("周二十点", dt(12, 8, 10)),
    ("周二十一点", dt(12, 8, 11)),
    ("星期三十一点", dt(12, 9, 11)),
    ("周四十点半", dt(12, 3, 10, 30)),  # bare 周四 on a Thursday is today
    ("周五十点", dt(12, 4, 10)),
    ("礼拜六十点半", dt(12, 5, 10, 30)),
    ("下周六十点", dt(12, 12, 10)),
    ("下礼拜三十点", dt(12, 9, 10)),
    ("周日九点", dt(12, 6, 9)),
    ("星期天十点", dt(12, 6, 10)),
    ("周6十点", dt(12, 5, 10)),
    ("周六10点", dt(12, 5, 10)),
    ("周一一点", dt(12, 7, 13)),
    ("周六下午三点", dt(12, 5, 15)),
    ("周六十点约磨刀", dt(12, 5, 10)),
    ("下周六十点半约磨刀", dt(12, 12, 10, 30)),
    # Dates and relative days followed by an hour.
    ("12月20号十点", dt(12, 20, 10)),
    ("十二月二十号十点", dt(12, 20, 10)),
    ("三十号十点", dt(12, 30, 10)),
    ("20号下午三点", dt(12, 20, 15)),
    ("今天十点", dt(12, 3, 10)),
    ("明天十一点半", dt(12, 4, 11, 30)),
    # 点 after a numeral is o'clock, not the Cantonese 点约 ("how to book").
    ("十点约磨刀", dt(12, 3, 10)),
    ("10点约磨刀", dt(12, 3, 10)),
    ("明天十点约磨刀", dt(12, 4, 10)),
])
def test_when_weekday_and_date_with_hour(text, start):
    w = parse_when(text, NOW)
    assert w is not None and w.has_time and w.start == w.end == start, (text, w)
    assert w.label.endswith(f"{start:%H:%M}")


@pytest.mark.parametrize("text,start,end", [
    ("十二月二十号", dt(12, 20), dt(12, 21)),
    ("三十号", dt(12, 30), dt(12, 31)),
    ("二十号", dt(12, 20), dt(12, 21)),
    ("周六", dt(12, 5), dt(12, 6)),
    ("周日", dt(12, 6), dt(12, 7)),
])
def test_when_real_numbers_still_read_whole(text, start, end):
    w = parse_when(text, NOW)
    assert w is not None and not w.has_time and (w.start, w.end) == (start, end), (text, w)


def test_numbers_elsewhere_unchanged():
    assert parse_int("六十岁") == 60
    assert parse_int("三十号") == 30
    assert parse_when("六十岁", NOW) is None
    assert parse_when("点约磨刀", NOW) is None  # Cantonese "how to book": no time in it
