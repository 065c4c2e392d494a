"""One place for 'now' and for local time (Asia/Shanghai), so tests can inject a clock."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

LOCAL_TZ = ZoneInfo(os.environ.get("TZ_NAME", "Asia/Shanghai"))
WEEKDAYS = "一二三四五六日"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def local(dt: datetime) -> datetime:
    return dt.astimezone(LOCAL_TZ)


def local_text(dt: datetime, with_weekday: bool = True) -> str:
    """12月20日(周六)15:00 — how times are shown to residents."""
    d = local(dt)
    weekday = f"(周{WEEKDAYS[d.weekday()]})" if with_weekday else ""
    return f"{d.month}月{d.day}日{weekday}{d:%H:%M}"
