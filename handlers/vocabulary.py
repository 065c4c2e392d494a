"""Community vocabulary for the tokenizer: names that live in the database."""
from __future__ import annotations

from models.places import Community, Organisation, Street


async def catalog_words() -> list[str]:
    words: list[str] = []
    for model in (Street, Community, Organisation):
        words += await model.all().values_list("name", flat=True)
    return words
