"""jieba, initialised once per process with the community user dictionary."""
from __future__ import annotations

import logging
import threading
from typing import Iterable

import jieba

from .normalize import DATA_DIR

__all__ = ["load", "add_words", "cut", "is_loaded", "USER_DICT"]

USER_DICT = DATA_DIR / "userdict.txt"

_lock = threading.Lock()
_loaded = False
# jieba's default Tokenizer is process-global; we only ever touch that one.
jieba.setLogLevel(logging.WARNING)


def load(user_words: Iterable[str] = ()) -> None:
    """Build jieba's prefix dictionary and user dictionary once; later calls only add words."""
    global _loaded
    with _lock:
        if not _loaded:
            jieba.initialize()
            jieba.load_userdict(str(USER_DICT))
            _loaded = True
    add_words(user_words)


def add_words(words: Iterable[str]) -> None:
    """Add runtime vocabulary (activity and reward names) so cut() keeps them whole."""
    for w in words:
        w = (w or "").strip()
        if w:
            jieba.add_word(w)


def cut(text: str) -> list[str]:
    """Precise-mode tokens without whitespace tokens; loads jieba lazily."""
    if not _loaded:
        load()
    return [t for t in jieba.lcut(text, HMM=True) if t.strip()]


def is_loaded() -> bool:
    return _loaded
