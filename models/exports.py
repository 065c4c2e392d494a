"""Rosters and reports written as .xlsx (openpyxl) and .csv for staff."""
from __future__ import annotations

import csv
from pathlib import Path

from openpyxl import Workbook

from models.activities import Activity, Signup, SignupStatus
from models.clock import local


def write_table(path: Path, headers: list[str], rows: list[list]) -> list[Path]:
    """Write the same table as `path`.xlsx and `path`.csv; returns both paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    xlsx, csv_path = path.with_suffix(".xlsx"), path.with_suffix(".csv")
    book = Workbook()
    sheet = book.active
    sheet.append(headers)
    for row in rows:
        sheet.append(row)
    book.save(xlsx)
    with csv_path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(headers)
        writer.writerows(rows)
    return [xlsx, csv_path]


async def export_signups(activity_id: int, path: Path) -> list[Path]:
    """The roster with full phone numbers (for staff only), in signup order."""
    activity = await Activity.get(id=activity_id)
    signups = await (Signup.filter(activity_id=activity.id)
                     .exclude(status=SignupStatus.RELEASED)
                     .order_by("id").prefetch_related("resident"))
    rows = [[s.participant_name, s.resident.name, s.resident.phone,
             SignupStatus.LABELS[s.status],
             local(s.checked_in_at).strftime("%Y-%m-%d %H:%M") if s.checked_in_at else ""]
            for s in signups]
    return write_table(path, ["参加人", "报名居民", "手机号", "状态", "签到时间"], rows)
