"""Typed application keys (aiohttp's AppKey instead of string keys)."""
from __future__ import annotations

import asyncio

from aiohttp import web

from bot.config import Settings
from bot.conversation import Conversation
from bot.protocol import Codec
from bot.store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
CODEC = web.AppKey("codec", Codec)
CONVERSATION = web.AppKey("conversation", Conversation)
BACKGROUND = web.AppKey("background", set[asyncio.Task])
