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


def _bool(name: str, default: bool) -> bool:
    return _env(name, "1" if default else "0").lower() in ("1", "true", "yes", "on")


def _json(name: str) -> dict:
    import json  # noqa: PLC0415 - only when set
    raw = _env(name)
    return json.loads(raw) if raw else {}


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
    # Push (bot/wechat_api.py, bot/dispatcher.py, bot/jobs.py). Off unless asked for: a bare
    # Settings() (the tests) never sends; from_env() turns it on for `make run`.
    push_in_process: bool = False
    wechat_timeout_seconds: float = 10.0
    # WeChat's customer-service window after a resident's last message.
    push_window_seconds: int = 48 * 3600
    # Notice kind -> template id (template message) / subscription template id (bizsend);
    # "*" is the fallback for any kind. Without either, notices outside the window wait in
    # the resident's inbox.
    push_templates: dict = field(default_factory=dict)
    push_subscribe_templates: dict = field(default_factory=dict)
    push_batch_size: int = 100
    push_concurrency: int = 8
    push_poll_seconds: float = 1.0
    # Shared by every worker through the store; 0 = no limit of our own.
    push_rate_per_minute: int = 0
    push_rate_per_day: int = 0
    push_max_attempts: int = 6
    push_backoff_seconds: float = 30.0
    # An in-flight row older than this belongs to a dead worker (>> wechat_timeout_seconds).
    push_inflight_stale_seconds: int = 120
    # Pending rows older than this are flagged (logged, counted by `main.py outbox status`).
    push_stuck_seconds: int = 6 * 3600
    # Only a server that can say whether it received a message (the fake one can) lets the
    # reconciler resend a send whose outcome is unknown; real WeChat cannot.
    wechat_delivery_check: bool = False
    # Periodic jobs without Redis: seconds between runs.
    jobs_interval_seconds: int = 300
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
            push_in_process=_bool("PUSH_IN_PROCESS", True),
            wechat_timeout_seconds=_float("WECHAT_TIMEOUT_SECONDS", cls.wechat_timeout_seconds),
            push_window_seconds=_int("PUSH_WINDOW_SECONDS", cls.push_window_seconds),
            push_templates=_json("WECHAT_TEMPLATES"),
            push_subscribe_templates=_json("WECHAT_SUBSCRIBE_TEMPLATES"),
            push_batch_size=_int("PUSH_BATCH_SIZE", cls.push_batch_size),
            push_concurrency=_int("PUSH_CONCURRENCY", cls.push_concurrency),
            push_poll_seconds=_float("PUSH_POLL_SECONDS", cls.push_poll_seconds),
            push_rate_per_minute=_int("PUSH_RATE_PER_MINUTE", cls.push_rate_per_minute),
            push_rate_per_day=_int("PUSH_RATE_PER_DAY", cls.push_rate_per_day),
            push_max_attempts=_int("PUSH_MAX_ATTEMPTS", cls.push_max_attempts),
            push_backoff_seconds=_float("PUSH_BACKOFF_SECONDS", cls.push_backoff_seconds),
            push_inflight_stale_seconds=_int("PUSH_INFLIGHT_STALE_SECONDS",
                                             cls.push_inflight_stale_seconds),
            push_stuck_seconds=_int("PUSH_STUCK_SECONDS", cls.push_stuck_seconds),
            wechat_delivery_check=_bool("WECHAT_DELIVERY_CHECK", False),
            jobs_interval_seconds=_int("JOBS_INTERVAL_SECONDS", cls.jobs_interval_seconds),
        )
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)
