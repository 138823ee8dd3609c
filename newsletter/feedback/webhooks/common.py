"""What every verifier shares: refusing a request, the replay table, reading JSON and times."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import sqlite_utils


class Refused(Exception):
    """The request is unsigned, badly signed, stale or replayed: answer 401/403, change nothing.

    The reason is logged on the server, never sent back to the caller.
    """

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.status = status


class BadPayload(Exception):
    """Signed correctly but not the JSON the provider documents (answered 400)."""


def load_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadPayload(f"the body is not JSON: {exc}") from None


def text_or_none(value: Any) -> str | None:
    """An id field of a provider's event as text; None when missing, empty or not text."""
    if isinstance(value, str) and value.strip():
        return value.strip()[:500]
    return None


def check_fresh(timestamp: str | int | float, tolerance: int, now: float | None = None) -> None:
    """Refuse a signed unix timestamp further than `tolerance` seconds from now."""
    try:
        ts = float(timestamp)
    except (TypeError, ValueError):
        raise Refused("the timestamp is not a number") from None
    now = time.time() if now is None else now
    if abs(now - ts) > tolerance:
        raise Refused(f"stale timestamp ({int(now - ts)} s old, the limit is {tolerance} s)")


def remember_token(db: sqlite_utils.Database, provider: str, token: str, window: int) -> None:
    """Record a nonce inside the caller's transaction; refuse one seen before.

    Rows older than twice the freshness window are pruned: a request that old is stale anyway.
    """
    now = time.time()
    db.execute(
        "DELETE FROM webhook_tokens WHERE provider = ? AND seen_at < ?",
        [provider, now - 2 * window],
    )
    inserted = db.execute(
        "INSERT OR IGNORE INTO webhook_tokens (provider, token, seen_at) VALUES (?, ?, ?)",
        [provider, token, now],
    ).rowcount
    if inserted == 0:
        raise Refused("replayed request (its token was seen already)")


def iso_from_unix(value: Any) -> str | None:
    """A unix time as ISO 8601 UTC (None when missing or not a number)."""
    try:
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def iso(value: Any) -> str | None:
    """A provider's ISO 8601 time normalized to UTC `…Z` (None when it is not one)."""
    if not isinstance(value, str) or not value:
        return None
    # Postmark writes seven fractional digits (and may give an offset): keep microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip().replace("Z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Verified:
    """A request whose signature holds: its parsed body and what to remember about it."""

    def __init__(
        self, payload: Any, nonce: str | None = None, confirm_url: str | None = None
    ) -> None:
        self.payload = payload
        self.nonce = nonce  # refused if seen again (Mailgun token, Svix message id)
        self.confirm_url = confirm_url  # SNS SubscriptionConfirmation: GET it to subscribe


def recipients_ids(prefix: str, event_id: str, emails: list[str]) -> list[tuple[str, str]]:
    """(email, external_id) pairs: one event naming several readers gives each its own id."""
    if len(emails) == 1:
        return [(emails[0], f"{prefix}:{event_id}")]
    return [(email, f"{prefix}:{event_id}:{email.lower()}") for email in emails]
