"""Text normalisation: Traditional->Simplified, width folding, Cantonese->Mandarin.

Everything is built once at import time; the functions are called per message.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path

import opencc
import yaml

__all__ = ["normalize", "compact", "mandarinize", "mask_phone", "fold_typos", "DATA_DIR"]

DATA_DIR = Path(__file__).resolve().parent / "data"

# One converter per process: creating it reads OpenCC's dictionaries.
_T2S = opencc.OpenCC("t2s")


def _char_kind(ch: str) -> str:
    """'k'eep, 's'pace or 'd'rop for one character after NFKC."""
    if ch.isalnum():
        # isalnum() is true for CJK ideographs, digits and letters, but also for
        # some symbols in 'No' (circled numbers are folded by NFKC already).
        return "k"
    if ch.isspace():
        return "s"
    cat = unicodedata.category(ch)
    if cat[0] == "P":  # punctuation separates clauses in voice input
        return "s"
    return "d"  # emoji, symbols, marks, controls, variation selectors


_KIND_CACHE: dict[str, str] = {}


@functools.lru_cache(maxsize=256)  # one message's text is normalised by several hooks
def normalize(text: str) -> str:
    """Canonical form for matching: Simplified, half-width, lowercase, no emoji,
    punctuation runs turned into single spaces, whitespace collapsed."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", _T2S.convert(text)).lower()
    out = []
    cache = _KIND_CACHE
    for ch in text:
        kind = cache.get(ch)
        if kind is None:
            kind = cache[ch] = _char_kind(ch)
        if kind == "k":
            out.append(ch)
        elif kind == "s":
            out.append(" ")
    return " ".join("".join(out).split())


def compact(text: str) -> str:
    """normalize() without spaces: the form keyword substrings are matched in."""
    return normalize(text).replace(" ", "")


def _load_mapping(name: str, key: str) -> dict[str, str]:
    with open(DATA_DIR / name, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    return {str(k): ("" if v is None else str(v)) for k, v in (data.get(key) or {}).items()}


def _alternation(words) -> re.Pattern[str]:
    # Longest first so that 有冇 wins over 冇 and 唔该 over 唔.
    ordered = sorted(words, key=lambda w: (-len(w), w))
    return re.compile("|".join(re.escape(w) for w in ordered))


_CANTONESE = _load_mapping("cantonese.yaml", "mapping")
# Cantonese 点 = 怎么 (点约 "how to book"), but after a numeral 点 is o'clock (十点约磨刀,
# 几点去) and after these characters it ends a Mandarin word (有点用, 早点去, 地点查).
_NOT_HOW_AFTER = "0-9０-９零〇一二两俩三四五六七八九十百几" "有快早晚多少差重地钟整准特观优缺终起景网站"


def _cantonese_re(words) -> re.Pattern[str]:
    # One guarded group for the 点 words; the guard is in the pattern, not the callback,
    # so 十点攞 still maps 攞.
    how = sorted((w[1:] for w in words if w.startswith("点")), key=lambda w: (-len(w), w))
    others = sorted((w for w in words if not w.startswith("点")), key=lambda w: (-len(w), w))
    alts = [re.escape(w) for w in others]
    if how:
        # The lookbehind sits after the literal 点 so re keeps its first-character scan.
        alts.append(f"点(?<![{_NOT_HOW_AFTER}]点)(?:" + "|".join(re.escape(w) for w in how) + ")")
    return re.compile("|".join(alts))


_CANTONESE_RE = _cantonese_re(_CANTONESE)


def mandarinize(text: str) -> str:
    """Map common Guangzhou Cantonese words to Mandarin (input: normalized text)."""
    if not text:
        return ""
    mapping = _CANTONESE
    return _CANTONESE_RE.sub(lambda m: mapping[m.group(0)], text)


# Mainland mobile numbers: 1[3-9] + 9 digits, not inside a longer digit run.
_PHONE_RE = re.compile(r"(?<![0-9０-９])(1[3-9][0-9]{9})(?![0-9０-９])")
_PHONE_FW_RE = re.compile(r"(?<![0-9０-９])([1１][3-9３-９][0-9０-９]{9})(?![0-9０-９])")


def mask_phone(text: str) -> str:
    """Mask every 11-digit mainland mobile as 138****5678 (half- or full-width)."""
    if not text:
        return text
    return _PHONE_FW_RE.sub(lambda m: m.group(1)[:3] + "****" + m.group(1)[7:], text)


# --- typo folding and filler removal (used by the classifiers) -------------------

def _load_typos():
    with open(DATA_DIR / "typos.yaml", encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    table = {str(k): str(v) for k, v in (data.get("table") or {}).items()}
    words = [str(w) for w in data.get("pinyin_words") or []]
    exceptions = {str(w) for w in data.get("pinyin_exceptions") or []}
    return table, words, exceptions


_TYPO_TABLE, _PY_WORDS, _PY_EXCEPTIONS = _load_typos()
_TYPO_RE = _alternation(_TYPO_TABLE) if _TYPO_TABLE else None
_PINYIN_CACHE: dict[str, str] = {}


def _pinyin(ch: str) -> str:
    """Toneless pinyin of one character, cached: pypinyin costs ~10us per call."""
    py = _PINYIN_CACHE.get(ch)
    if py is None:
        if "\u4e00" <= ch <= "\u9fff":
            from pypinyin import lazy_pinyin  # imported lazily: pypinyin's dicts are large

            py = lazy_pinyin(ch)[0]
        else:
            py = ""
        _PINYIN_CACHE[ch] = py
    return py


_PY_INDEX: dict[tuple[str, str], str] = {}
_PY_FIRST: set[str] = set()  # the first syllables in the index: most characters are not one


def _py_index() -> dict[tuple[str, str], str]:
    if not _PY_INDEX:
        for w in _PY_WORDS:
            if len(w) == 2:
                _PY_INDEX[(_pinyin(w[0]), _pinyin(w[1]))] = w
        _PY_FIRST.update(first for first, _second in _PY_INDEX)
    return _PY_INDEX


def fold_typos(text: str) -> str:
    """Fold homophone typos (积份 -> 积分, 报铭 -> 报名) in compact Mandarinised text."""
    if not text:
        return text
    if _TYPO_RE is not None:
        text = _TYPO_RE.sub(lambda m: _TYPO_TABLE[m.group(0)], text)
    index = _py_index()
    if not index:
        return text
    chars = list(text)
    i, n, changed = 0, len(chars), False
    while i < n - 1:
        a, b = chars[i], chars[i + 1]
        pa = _pinyin(a)
        if pa in _PY_FIRST:
            word = index.get((pa, _pinyin(b)))
            if word is not None and (a + b) != word and (a + b) not in _PY_EXCEPTIONS:
                chars[i], chars[i + 1] = word[0], word[1]
                changed = True
                i += 2
                continue
        i += 1
    return "".join(chars) if changed else text
