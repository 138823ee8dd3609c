"""Rate limits for the reader pages, in SQLite so they hold across worker processes."""

from __future__ import annotations

import hashlib
import time

import sqlite_utils

from newsletter.audience import events


def _scope(kind: str, value: str) -> str:
    # Hashed: the limits table holds no readable address or IP.
    return f"{kind}:{hashlib.sha256(value.encode('utf-8')).hexdigest()[:24]}"


def hit(db: sqlite_utils.Database, scope: str, window: int, limit: int) -> bool:
    """Count one event in `scope`'s current window; True while the count is within `limit`."""
    start = int(time.time()) // window * window
    with events.transaction(db):
        db.execute(
            "INSERT INTO web_limits (scope, window_start, count) VALUES (?, ?, 1) "
            "ON CONFLICT (scope, window_start) DO UPDATE SET count = count + 1",
            [scope, start],
        )
        (count,) = db.execute(
            "SELECT count FROM web_limits WHERE scope = ? AND window_start = ?", [scope, start]
        ).fetchone()
        if count == 1:  # a new window: forget windows older than a day
            db.execute("DELETE FROM web_limits WHERE window_start < ?", [start - 2 * 86400])
    return count <= limit


def ip_allowed(db: sqlite_utils.Database, ip: str | None, per_hour: int) -> bool:
    """False once this IP posted more than `per_hour` sign-ups this hour."""
    return hit(db, _scope("ip", ip or "unknown"), 3600, per_hour)


def confirmation_allowed(db: sqlite_utils.Database, email_key: str, per_day: int) -> bool:
    """False once this address was sent `per_day` confirmation emails today."""
    return hit(db, _scope("confirm", email_key), 86400, per_day)


def link_requests_allowed(db: sqlite_utils.Database, ip: str | None, per_hour: int) -> bool:
    """False once this IP asked for more than `per_hour` manage links this hour."""
    return hit(db, _scope("link-ip", ip or "unknown"), 3600, per_hour)


def link_email_allowed(db: sqlite_utils.Database, email_key: str, per_day: int) -> bool:
    """False once this address was sent `per_day` manage links today (counted for any
    address asked about, on the list or not: the answer is the same)."""
    return hit(db, _scope("link", email_key), 86400, per_day)
