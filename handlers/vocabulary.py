"""Community vocabulary for the tokenizer: names that live in the database.

Loaded into jieba once at start-up (bot/app.py); names created later in the chat are added
as they are created (tokenizer.add_words), and everything is read again at the next start.
"""
from __future__ import annotations

from models.activities import Activity
from models.places import Community, Organisation, Street
from models.rewards import Merchant, Reward
from models.services import Service

_NAMED = ((Street, "name"), (Community, "name"), (Organisation, "name"), (Activity, "title"),
          (Merchant, "name"), (Reward, "name"), (Service, "name"))


async def catalog_words() -> list[str]:
    words: list[str] = []
    for model, column in _NAMED:
        words += await model.all().values_list(column, flat=True)
    return sorted(set(words))
