"""The one place a reader's status changes, and the append-only record of every change.

Every source — the CLI, an import, the web forms of `newsletter serve`, a provider's
webhook, `newsletter sync`, a bounce during a send — calls `change_status()` (or, for a
change that is not a status, `record()` inside its own transaction). Each writes one
`events` row: what happened, when, from where (source, IP, user agent) and, for a sign-up
or a confirmation, the consent text the reader was shown, so `newsletter subscribers show
EMAIL` can tell a reader's whole history (what they agreed to and when).

An event that carries the provider's own id (`external_id`) is applied once: the same
webhook delivered twice, or pulled again by a later sync, changes nothing the second time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlite_utils

from newsletter import changes
from newsletter.errors import SubscriberError

# Statuses nobody is sent to; the first stop's reason and date are kept (a bounce after an
# unsubscribe does not turn the reader into "bounced": they asked first).
STOPPED = frozenset({"unsubscribed", "bounced", "complained"})
STATUSES = ("active", "unsubscribed", "bounced", "complained", "pending")

# The event kind a plain status change is recorded as, when the caller names none.
_KIND_FOR_STATUS = {
    "active": "activated",
    "pending": "pending",
    "unsubscribed": "unsubscribed",
    "bounced": "bounced",
    "complained": "complained",
}


def now_iso() -> str:
    """The current time as stored in the database: ISO 8601 UTC, seconds, `Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Origin:
    """Where a change comes from: recorded with every event."""

    # cli | import | web (a page of `serve`) | one-click (a mail client's RFC 8058 POST) |
    # webhook:<provider> | sync:<provider> | mailbox | send
    source: str
    ip: str | None = None
    user_agent: str | None = None
    # The consent text shown to the reader, on consent events only (a sign-up, a
    # confirmation): never on an unsubscribe or an update.
    consent: str | None = None


CLI = Origin("cli")


@dataclass(frozen=True)
class Event:
    """One row of a reader's history."""

    id: int
    subscriber_id: int | None
    email: str
    kind: str
    status_before: str | None
    status_after: str | None
    source: str
    detail: str
    ip: str | None
    user_agent: str | None
    consent: str | None
    campaign_id: int | None
    external_id: str | None
    created_at: str


@dataclass(frozen=True)
class StatusChange:
    """What `change_status()` did."""

    subscriber_id: int
    email: str
    before: str
    after: str
    recorded: bool  # False: the provider's event id was seen before, nothing was done

    @property
    def changed(self) -> bool:
        return self.recorded and self.before != self.after


@contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """A write transaction, or the caller's when one is open already (then it commits)."""
    if db.conn.in_transaction:
        yield
        return
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        yield


def record(
    db: sqlite_utils.Database,
    *,
    subscriber_id: int | None,
    email: str,
    kind: str,
    origin: Origin,
    before: str | None = None,
    after: str | None = None,
    detail: str = "",
    campaign_id: int | None = None,
    external_id: str | None = None,
    at: str | None = None,
) -> bool:
    """Append one event inside the caller's transaction; False if `external_id` was seen."""
    try:
        cursor = db.execute(
            "INSERT INTO events (subscriber_id, email, kind, status_before, status_after, "
            "source, detail, ip, user_agent, consent, campaign_id, external_id, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [subscriber_id, email, kind, before, after, origin.source, detail[:2000],
             origin.ip, origin.user_agent, origin.consent, campaign_id, external_id,
             at or now_iso()],
        )
    except sqlite3.IntegrityError:
        if external_id is None:
            raise
        return False
    # The reader as they are now, with this event, goes to the change journal (one fsync,
    # before the caller's transaction commits): a restore replays it.
    assert cursor.lastrowid is not None  # an INSERT's cursor always has it
    if subscriber_id is None:
        changes.append(db.conn, changes.readers_since(db.conn, cursor.lastrowid - 1))
    else:
        changes.append(db.conn, [changes.reader_op(db.conn, subscriber_id, [cursor.lastrowid])])
    return True


def seen(db: sqlite_utils.Database, external_id: str) -> bool:
    """True when an event with this provider id was recorded already."""
    row = db.execute("SELECT 1 FROM events WHERE external_id = ?", [external_id]).fetchone()
    return row is not None


def change_status(
    db: sqlite_utils.Database,
    subscriber_id: int,
    status: str,
    origin: Origin,
    *,
    kind: str | None = None,
    detail: str = "",
    campaign_id: int | None = None,
    external_id: str | None = None,
    at: str | None = None,
) -> StatusChange:
    """Set a reader's status and record why, in one transaction.

    A reader who already stopped (unsubscribed, bounced, complained) keeps their first
    stop and its date when another stop arrives; the event is still recorded. Becoming
    active sets `confirmed_at` and clears `unsubscribed_at`. Callers decide whether a
    change to active is allowed (consent): this function records what they decided.
    """
    if status not in STATUSES:
        raise SubscriberError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    with transaction(db):
        row = db.execute(
            "SELECT email, status, unsubscribed_at FROM subscribers WHERE id = ?",
            [subscriber_id],
        ).fetchone()
        if row is None:
            raise SubscriberError(f"no subscriber with id {subscriber_id}")
        email, before, stopped_at = row
        after = status
        if before in STOPPED and status in STOPPED:
            after = before  # keep the first reason
        if external_id is not None and seen(db, external_id):
            return StatusChange(subscriber_id, email, before, before, recorded=False)
        now = at or now_iso()
        if after != before:
            if after == "active":
                db.execute(
                    "UPDATE subscribers SET status = 'active', confirmed_at = ?, "
                    "unsubscribed_at = NULL, updated_at = ? WHERE id = ?",
                    [now, now_iso(), subscriber_id],
                )
            else:
                if after in STOPPED:
                    stopped_at = stopped_at if before in STOPPED else now
                else:
                    stopped_at = None
                db.execute(
                    "UPDATE subscribers SET status = ?, unsubscribed_at = ?, updated_at = ? "
                    "WHERE id = ?",
                    [after, stopped_at, now_iso(), subscriber_id],
                )
        record(
            db, subscriber_id=subscriber_id, email=email,
            kind=kind or _KIND_FOR_STATUS[status], origin=origin, before=before, after=after,
            detail=detail, campaign_id=campaign_id, external_id=external_id, at=at,
        )
    return StatusChange(subscriber_id, email, before, after, recorded=True)


def history(db: sqlite_utils.Database, subscriber_id: int) -> list[Event]:
    """A reader's events, oldest first."""
    rows = db.execute(
        "SELECT id, subscriber_id, email, kind, status_before, status_after, source, detail, "
        "ip, user_agent, consent, campaign_id, external_id, created_at FROM events "
        "WHERE subscriber_id = ? ORDER BY id",
        [subscriber_id],
    ).fetchall()
    return [Event(*row) for row in rows]


def erase(db: sqlite_utils.Database, subscriber_id: int) -> int:
    """Delete a reader's events (inside the caller's transaction) when they are forgotten.

    The erasure itself is journaled by `subscribers.remove` (an `erase` op a restore
    replays), so a restore never brings the reader back.
    """
    return db.execute("DELETE FROM events WHERE subscriber_id = ?", [subscriber_id]).rowcount
