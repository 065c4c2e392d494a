"""Configuration from environment variables, with defaults that run on one machine.

Every platform limit lives here (see WECHAT.md: numbers can change on Tencent's side).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


def _float(name: str, default: float) -> float:
    return float(_env(name, str(default)))


@dataclass(frozen=True)
class Settings:
    database_url: str = f"sqlite://{ROOT / 'data' / 'yunfanglin.sqlite3'}"
    redis_url: str | None = None
    redis_prefix: str = "yfl:"
    wechat_token: str = "yunfanglin-dev-token"
    wechat_appid: str = "wx0000000000000000"
    wechat_appsecret: str = ""
    wechat_aes_key: str | None = None
    wechat_api_base: str = "https://api.weixin.qq.com"
    host: str = "127.0.0.1"
    port: int = 8080
    timezone: str = "Asia/Shanghai"
    # Webhook protocol
    replay_window_seconds: int = 300
    max_body_bytes: int = 64 * 1024
    reply_budget_seconds: float = 4.0
    dedupe_ttl_seconds: int = 600
    lock_timeout_seconds: float = 30.0
    reply_max_bytes: int = 2000
    # Conversation
    state_idle_seconds: int = 1800
    max_misses: int = 3
    # Seconds between writes of a resident's last-interaction time (one write per message is waste).
    touch_interval_seconds: int = 60
    # A place kept for a resident between "还剩1个" and "是".
    signup_hold_seconds: int = 120
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        values = dict(
            database_url=_env("DATABASE_URL", cls.database_url),
            redis_url=_env("REDIS_URL"),
            redis_prefix=_env("REDIS_PREFIX", cls.redis_prefix),
            wechat_token=_env("WECHAT_TOKEN", cls.wechat_token),
            wechat_appid=_env("WECHAT_APPID", cls.wechat_appid),
            wechat_appsecret=_env("WECHAT_APPSECRET", cls.wechat_appsecret),
            wechat_aes_key=_env("WECHAT_AES_KEY"),
            wechat_api_base=_env("WECHAT_API_BASE", cls.wechat_api_base),
            host=_env("HOST", cls.host),
            port=_int("PORT", cls.port),
            timezone=_env("TZ_NAME", cls.timezone),
            replay_window_seconds=_int("REPLAY_WINDOW_SECONDS", cls.replay_window_seconds),
            reply_budget_seconds=_float("REPLY_BUDGET_SECONDS", cls.reply_budget_seconds),
            dedupe_ttl_seconds=_int("DEDUPE_TTL_SECONDS", cls.dedupe_ttl_seconds),
            state_idle_seconds=_int("STATE_IDLE_SECONDS", cls.state_idle_seconds),
            signup_hold_seconds=_int("SIGNUP_HOLD_SECONDS", cls.signup_hold_seconds),
        )
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)
