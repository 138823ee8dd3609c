"""The last backup's age, as `newsletter backup` records it in the database's `meta` table."""

from __future__ import annotations

import datetime as dt

from newsletter import store
from newsletter.doctor.report import Report
from newsletter.errors import NewsletterError
from newsletter.settings import Settings

LAST_BACKUP_AT = "last_backup_at"  # ISO-8601 UTC, written by `newsletter backup`
LAST_BACKUP_FILE = "last_backup_file"
MAX_AGE = dt.timedelta(days=2)
FIX = "run `newsletter backup` (daily, from cron or a systemd timer) and keep the file elsewhere"


def check_backup(settings: Settings, report: Report, now: dt.datetime | None = None) -> None:
    now = now or dt.datetime.now(dt.UTC)
    try:
        # A database made before the meta table (not migrated yet) has no backup recorded.
        has_meta = store.read_only_rows(
            settings.database, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
            "name = 'meta'")
        rows = dict(store.read_only_rows(
            settings.database, "SELECT key, value FROM meta WHERE key IN (?, ?)",
            (LAST_BACKUP_AT, LAST_BACKUP_FILE))) if has_meta else {}
    except NewsletterError as exc:
        report.add("backup", "error", str(exc))
        return
    when_text = rows.get(LAST_BACKUP_AT)
    if not when_text:
        report.add("backup", "warning", f"no backup yet: {FIX}")
        return
    try:
        when = dt.datetime.fromisoformat(str(when_text).replace("Z", "+00:00"))
    except ValueError:
        report.add("backup", "warning", f"the last backup's time ({when_text!r}) cannot be "
                   f"read: {FIX}")
        return
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    age = now - when
    file = rows.get(LAST_BACKUP_FILE)
    shown = f"{age.days} day{'s' * (age.days != 1)}" if age.days else \
        f"{int(age.total_seconds() // 3600)} h"
    if age > MAX_AGE:
        report.add("backup", "warning", f"the last backup is {shown} old ({when_text}): {FIX}")
    else:
        report.add("backup", "ok", f"last backup {shown} ago" + (f" ({file})" if file else ""))

