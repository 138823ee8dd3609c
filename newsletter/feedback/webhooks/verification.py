"""Whether a webhook request may be believed: refusals, freshness, replays.

Each provider's module checks its own signature; what they share is here.
"""

from __future__ import annotations

import time
from typing import Any

import sqlite_utils


class Refused(Exception):
    """The request is unsigned, badly signed, stale or replayed: answer 401/403, change nothing.

    The reason is logged on the server, never sent back to the caller.
    """

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.status = status


class Verified:
    """A request whose signature holds: its parsed body and what to remember about it."""

    def __init__(
        self, payload: Any, nonce: str | None = None, confirm_url: str | None = None
    ) -> None:
        self.payload = payload
        self.nonce = nonce  # refused if seen again (Mailgun token, Svix message id)
        self.confirm_url = confirm_url  # SNS SubscriptionConfirmation: GET it to subscribe


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
