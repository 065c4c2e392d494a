"""Entities in short answers: numbers, choices, yes/no, phones, codes, dates and times."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

import cn2an

from .normalize import _T2S, compact, mandarinize

__all__ = [
    "parse_int", "parse_choice", "parse_choices", "parse_yes_no", "find_phone",
    "is_valid_mobile", "find_code", "When", "parse_when",
]

_CN_DIGIT = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "俩": 2, "三": 3, "四": 4, "五": 5,
             "六": 6, "七": 7, "八": 8, "九": 9}
_CN_NUM = "零〇一二两俩三四五六七八九十百千万"
_NUM_RE = re.compile(rf"\d+|[{_CN_NUM}]+")
# 一下/一点/一些 are not quantities.
_NOT_NUMBER_RE = re.compile(r"一(下|点儿?|些|起|样|直|般|定|切|旦|共)")


def _light(text: str) -> str:
    """Simplified, half-width, lowercase, Mandarinised; keeps punctuation like ':'."""
    t = unicodedata.normalize("NFKC", _T2S.convert(text or "")).lower()
    return mandarinize(t)


def _cn_to_int(s: str) -> int | None:
    if not s:
        return None
    if s.isdigit():
        return int(s)
    s = s.replace("两", "二").replace("俩", "二").replace("〇", "零")
    if all(ch in _CN_DIGIT for ch in s) and len(s) > 1:
        # Digit by digit (一三 is read as choices elsewhere; here 二零 -> 20).
        return int("".join(str(_CN_DIGIT[ch]) for ch in s))
    try:
        return int(cn2an.cn2an(s, "smart"))
    except (ValueError, KeyError, TypeError):
        return None


def parse_int(text: str) -> int | None:
    """First whole number in text: 3, ３, 三, 两个, 十二, 二十五, 一百."""
    t = _NOT_NUMBER_RE.sub("", compact(_light(text)))
    m = _NUM_RE.search(t)
    return _cn_to_int(m.group(0)) if m else None


_CHOICE_RE = re.compile(
    rf"^(?:我)?(?:就)?(?:选|要|选择|报|订|换|是)?(?:第)?(\d+|[{_CN_NUM}]+)"
    r"(?:个|号|项|条|位|种|样)?(?:吧|了|啊|呀|的|先)?$")
_FIRST_RE = re.compile(r"^(?:我)?(?:选|要|选择)?(?:第一|头一|首个|最前面|第一个|头一个)(?:个)?(?:吧|了)?$")
_LAST_RE = re.compile(r"^(?:我)?(?:选|要|选择)?(?:最后|最尾|最后面|尾)(?:一|那)?(?:个|项|条)?(?:吧|了)?$")


def parse_choice(text: str, n: int) -> int | None:
    """1-based choice among n numbered options, or None."""
    t = compact(_light(text))
    if not t or n <= 0:
        return None
    if _LAST_RE.match(t):
        return n
    if _FIRST_RE.match(t):
        return 1
    m = _CHOICE_RE.match(t)
    if not m:
        return None
    k = _cn_to_int(m.group(1))
    return k if k is not None and 1 <= k <= n else None


_SPLIT_RE = re.compile(r"[\s,，、;；/和跟与及还有同]+|and")


def parse_choices(text: str, n: int) -> list[int] | None:
    """Several choices: '1 3', '1,3', '1、3', '1和3', '一三'; deduplicated, in order."""
    t = unicodedata.normalize("NFKC", _T2S.convert(text or "")).lower().strip()
    if not t:
        return None
    parts = [p for p in _SPLIT_RE.split(t) if p]
    if len(parts) == 1:
        single = parts[0].removeprefix("第").removesuffix("个")
        one = parse_choice(single, n)
        if one is not None:
            return [one]
        # 一三 / 13 with fewer than 13 options: one digit per choice.
        digits = [_CN_DIGIT.get(ch, int(ch) if ch.isdigit() else None) for ch in single]
        if len(digits) > 1 and all(d is not None and 1 <= d <= n for d in digits):
            parts = [str(d) for d in digits]
        else:
            return None
    out: list[int] = []
    for p in parts:
        c = parse_choice(p, n)
        if c is None:
            return None
        if c not in out:
            out.append(c)
    return out or None


_YES = {"是", "是的", "是啊", "好", "好的", "好啊", "好吧", "确认", "确定", "对", "对的", "对啊",
        "可以", "可以的", "行", "行的", "ok", "okay", "yes", "y", "嗯", "嗯嗯", "恩", "系", "得",
        "没问题", "没有问题", "要", "要的", "需要", "同意", "没错", "当然", "好好", "好呀", "确认报名",
        "确认兑换", "确认提交", "提交", "就这样", "行吧", "中", "啱", "啱啊"}
_NO = {"不", "不是", "否", "不要", "不用", "算了", "不行", "不对", "不好", "不需要", "不了",
       "取消", "no", "n", "不确认", "不同意", "别", "不可以", "错了", "不用了", "不要了", "先不要",
       "暂时不", "先不", "不办了", "没有", "没"}
_TRAIL = "啊呀吧啦哦喔咯嘛了呢哈~!?"


def parse_yes_no(text: str) -> bool | None:
    t = compact(_light(text))
    if not t:
        return None
    if t in _NO:
        return False
    t = t.rstrip(_TRAIL) or t
    if t in _YES:
        return True
    if t in _NO:
        return False
    # Repeated answers (好好好, 是是是) and answers followed by more words (好的确认).
    if len(set(t)) == 1 and t[0] in _YES:
        return True
    for word in sorted(_NO, key=len, reverse=True):
        if len(word) >= 2 and t.startswith(word):
            return False
    if t.startswith(("没问题", "没有问题", "好的", "确认", "可以", "是的", "对的", "确定")):
        return True
    return None


_SEP_BETWEEN_DIGITS = re.compile(r"(?<=\d)[\s\-－—.()（）]+(?=\d)")
_MOBILE_RE = re.compile(r"(?<!\d)(?:\+?86)?(1[3-9]\d{9})(?!\d)")
_VALID_MOBILE = re.compile(r"^1[3-9]\d{9}$")


def find_phone(text: str) -> str | None:
    """An 11-digit mainland mobile in text; spaces, dashes, +86 and full width tolerated."""
    t = unicodedata.normalize("NFKC", text or "")
    t = _SEP_BETWEEN_DIGITS.sub("", t)
    t = re.sub(r"\+?86(?=1[3-9]\d{9}(?!\d))", "", t)
    m = _MOBILE_RE.search(t)
    return m.group(1) if m else None


def is_valid_mobile(s: str) -> bool:
    return bool(_VALID_MOBILE.match(unicodedata.normalize("NFKC", s or "").strip()))


_CODE_RE = re.compile(r"(?<!\d)(\d{4,6})(?!\d)(?!\s*(?:年|月|号|日|点|:|元|块|分钟|岁))")


def find_code(text: str) -> str | None:
    """A 4-6 digit code not part of a longer digit run (dates and sums excluded)."""
    m = _CODE_RE.search(unicodedata.normalize("NFKC", text or ""))
    return m.group(1) if m else None


# ---------------------------------------------------------------- dates and times

@dataclass(frozen=True)
class When:
    start: datetime
    end: datetime
    has_time: bool
    label: str


_WEEKDAY = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6, "末": 5,
            "1": 0, "2": 1, "3": 2, "4": 3, "5": 4, "6": 5, "7": 6}
_WD_NAMES = "一二三四五六日"
# Part of day -> (start hour, end hour). 下周六上午 = 08:00-12:00.
_PARTS = {"凌晨": (0, 6), "早上": (6, 10), "早晨": (6, 10), "清早": (6, 9), "上午": (8, 12),
          "中午": (11, 14), "晌午": (11, 14), "下午": (12, 18), "傍晚": (17, 19),
          "晚上": (18, 22), "夜晚": (18, 22), "夜里": (18, 23), "今晚": (18, 22), "明晚": (18, 22)}
_N = r"(\d{1,2}|[零一二两三四五六七八九十]{1,3})"

_REL_DAY_RE = re.compile(r"大后天|后天|明天|今天|今晚|明晚|今早|明早|聽日")
_WEEK_RE = re.compile(r"(下下|下个|下|这个|这|本|上)?(?:周|星期|礼拜)([一二三四五六日天末1-7])")
_WEEK_RANGE_RE = re.compile(r"(下个|下|这个|这|本)(?:周|星期|礼拜)(?![一二三四五六日天末1-7])")
_MONTH_RANGE_RE = re.compile(r"(这个|本|下个|下)月(?![\d一二三四五六七八九十]+[号日])")
_DATE_RE = re.compile(rf"(?:(\d{{4}})年)?{_N}月{_N}[号日]?|{_N}[号日]")
_PART_RE = re.compile("|".join(sorted(_PARTS, key=len, reverse=True)))
_CLOCK_RE = re.compile(r"(\d{1,2})[:：](\d{2})")
_HOUR_RE = re.compile(rf"{_N}[点时](?:(半)|(一刻)|(三刻)|{_N}分?)?")


def _day_start(d: datetime) -> datetime:
    return d.replace(hour=0, minute=0, second=0, microsecond=0)


def _fmt_day(d: datetime) -> str:
    return f"{d.month}月{d.day}日(周{_WD_NAMES[d.weekday()]})"


def _small(s: str) -> int | None:
    return _cn_to_int(s)


def parse_when(text: str, now: datetime) -> When | None:
    """Dates, day ranges, parts of day and clock times, relative to now (its timezone)."""
    t = re.sub(r"\s+", "", _light(text))
    if not t:
        return None
    today = _day_start(now)
    day: datetime | None = None       # a single day
    rng: tuple[datetime, datetime, str] | None = None  # a multi-day range
    explicit_date = False

    m = _REL_DAY_RE.search(t)
    if m:
        w = m.group(0)
        offset = {"今天": 0, "今晚": 0, "今早": 0, "明天": 1, "明晚": 1, "明早": 1,
                  "后天": 2, "大后天": 3}[w]
        day = today + timedelta(days=offset)
        explicit_date = True
    # A weekday is never the first digit of a number: 周六十点 is 周六 + 十点 (not 六十),
    # 周二十点 is Tuesday 10:00 (not 20:00). Dates and hours are read with weekdays masked.
    t_no_wd = _WEEK_RE.sub("|", t)
    if day is None:
        m = _DATE_RE.search(t_no_wd)
        if m:
            year, mon, dd, dd_only = m.group(1), m.group(2), m.group(3), m.group(4)
            if dd_only is not None:
                d = _small(dd_only)
                if d and 1 <= d <= 31:
                    cand = _safe_date(today, today.year, today.month, d)
                    if cand is not None and cand < today:
                        y, mo = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
                        cand = _safe_date(today, y, mo, d)
                    day = cand
            else:
                mo, d = _small(mon), _small(dd)
                if mo and d and 1 <= mo <= 12 and 1 <= d <= 31:
                    y = int(year) if year else today.year
                    cand = _safe_date(today, y, mo, d)
                    if cand is not None and not year and cand < today:
                        cand = _safe_date(today, y + 1, mo, d)
                    day = cand
            explicit_date = day is not None
    if day is None:
        m = _WEEK_RE.search(t)
        if m:
            prefix, wd = m.group(1) or "", m.group(2)
            monday = today - timedelta(days=today.weekday())
            if prefix.startswith("下下"):
                monday += timedelta(days=14)
            elif prefix.startswith("下"):
                monday += timedelta(days=7)
            elif prefix == "上":
                monday -= timedelta(days=7)
            if wd == "末":
                # Saturday of the named week; on a Sat/Sun 周末 is therefore this weekend.
                sat = monday + timedelta(days=5)
                label = {"": "本周末", "这": "本周末", "本": "本周末", "这个": "本周末"}.get(prefix, prefix + "周末")
                rng = (sat, sat + timedelta(days=2), label)
            else:
                target = monday + timedelta(days=_WEEKDAY[wd])
                if not prefix and target < today:
                    target += timedelta(days=7)  # bare 周一 on a Thursday: the coming one
                day = target
            explicit_date = True
    if day is None and rng is None:
        m = _WEEK_RANGE_RE.search(t)
        if m:
            monday = today - timedelta(days=today.weekday())
            if m.group(1).startswith("下"):
                start = monday + timedelta(days=7)
                rng = (start, start + timedelta(days=7), "下周")
            else:
                rng = (today, monday + timedelta(days=7), "本周")
        else:
            m = _MONTH_RANGE_RE.search(t)
            if m:
                first_next = _first_of_next_month(today)
                if m.group(1).startswith("下"):
                    rng = (first_next, _first_of_next_month(first_next), f"{first_next.month}月")
                else:
                    rng = (today, first_next, "本月")

    part = None
    pm = _PART_RE.search(t)
    if pm:
        part = pm.group(0)
    hour = minute = None
    cm = _CLOCK_RE.search(t_no_wd)
    if cm:
        hour, minute = int(cm.group(1)), int(cm.group(2))
    else:
        hm = _HOUR_RE.search(t_no_wd)
        if hm:
            hour = _small(hm.group(1))
            minute = 0
            if hm.group(2):
                minute = 30
            elif hm.group(3):
                minute = 15
            elif hm.group(4):
                minute = 45
            elif hm.group(5):
                minute = _small(hm.group(5)) or 0
    if hour is not None and not (0 <= hour <= 24 and 0 <= (minute or 0) < 60):
        hour = minute = None

    if day is None and rng is None and part is None and hour is None:
        return None

    if hour is not None:
        if part in ("下午", "傍晚", "晚上", "夜晚", "夜里", "今晚", "明晚") and hour < 12:
            hour += 12
        elif part in ("中午", "晌午") and 1 <= hour <= 3:
            hour += 12
        elif part is None and 1 <= hour <= 6:
            hour += 12  # bare 三点: afternoon is the natural reading for community services
        if hour == 24:
            hour = 0
        base = day if day is not None else (rng[0] if rng else today)
        point = base.replace(hour=hour, minute=minute or 0)
        if day is None and rng is None and not explicit_date and point < now:
            point += timedelta(days=1)
        return When(point, point, True, f"{_fmt_day(point)} {point:%H:%M}")

    if part is not None:
        h0, h1 = _PARTS[part]
        if day is None and rng is not None:
            start = rng[0].replace(hour=h0)
            end = (rng[1] - timedelta(days=1)).replace(hour=h1)
            return When(start, end, False, f"{rng[2]}{part}")
        base = day if day is not None else today
        return When(base.replace(hour=h0), base.replace(hour=h1), False, f"{_fmt_day(base)}{part}")

    if rng is not None:
        return When(rng[0], rng[1], False, rng[2])
    assert day is not None
    return When(day, day + timedelta(days=1), False, _fmt_day(day))


def _safe_date(ref: datetime, y: int, mo: int, d: int) -> datetime | None:
    try:
        return ref.replace(year=y, month=mo, day=d, hour=0, minute=0, second=0, microsecond=0)
    except ValueError:
        return None


def _first_of_next_month(d: datetime) -> datetime:
    y, mo = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return d.replace(year=y, month=mo, day=1, hour=0, minute=0, second=0, microsecond=0)
