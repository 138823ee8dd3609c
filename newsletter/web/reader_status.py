"""How the web changes readers' status, without HTTP: subscribe, confirm, unsubscribe, manage.

web/reader_pages.py calls these. Every status change goes through audience.events
(change_status or, for a new pending row, record() in the same transaction) with an
Origin carrying its source ("web" for a page, "one-click" for a mail client's RFC 8058
POST), the IP, the user agent and, for consent events only (a sign-up, a confirmation),
the consent text the reader was shown. A stopped reader (unsubscribed, bounced,
complained) who asks to come back stays stopped until they confirm: the request is an
event, and confirming it is what changes the status. Transactions are short (one BEGIN
IMMEDIATE each, nothing slow inside), so a running send or import never makes a request
fail: SQLite's busy timeout waits for the other writer's few milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import sqlite_utils

from newsletter.audience import events
from newsletter.audience.events import STOPPED, Origin, now_iso
from newsletter.audience.subscribers import (
    Subscriber,
    TopicChoice,
    check_name,
    email_key,
    normalize_email,
    set_topic_choice,
    topic_choice,
)
from newsletter.compose import tokens
from newsletter.settings import Settings, WebConfig
from newsletter.web import limits

_SELECT = (
    "SELECT id, email, name, status, tags, attributes, source, created_at, updated_at, "
    "confirmed_at, unsubscribed_at, optin_ip FROM subscribers"
)

# The event a sign-up is recorded as: a new pending row, or a stopped reader asking to
# come back (then status_before = status_after: nothing changes until they confirm).
SIGNUP = "subscribed"
# Events written while a reader is stopped that are not a stop: they neither cancel nor
# make a request to come back.
_NOT_A_STOP = ("updated", "renamed", "welcome_requested")

# --- subscribe and confirm ----------------------------------------------------------------


def _row(db: sqlite_utils.Database, where: str, args: list[Any]) -> Subscriber | None:
    row = db.execute(f"{_SELECT} WHERE {where}", args).fetchone()
    return Subscriber.from_row(row) if row else None


def _with_topics(tags: Iterable[str], chosen: Iterable[str], config: WebConfig) -> list[str]:
    """The reader's tags with the writer's topics set to exactly `chosen` (others kept)."""
    chosen_set = {t for t in chosen if t in config.topics}
    kept = [t for t in tags if t not in config.topics]
    return kept + [t for t in config.topics if t in chosen_set]


def subscribe(
    db: sqlite_utils.Database,
    config: WebConfig,
    email: str,
    name: str,
    topics: Iterable[str],
    origin: Origin,
    choice: TopicChoice | None = None,
) -> Subscriber | None:
    """Record a sign-up; the pending reader to send a confirmation to, or None.

    New address: a pending row. Pending: name and topics updated. Stopped (unsubscribed,
    bounced, complained): the request is recorded and they stay stopped until they
    confirm. Active: nothing changes (a stranger cannot edit them) and no email is sent.
    None also when this address had its confirmation emails for today. Raises
    SubscriberError for an address that is not one, or a name over MAX_NAME.
    """
    address = normalize_email(email)
    key = email_key(address)
    name = check_name(name)
    topics = list(topics)
    now = now_iso()
    with events.transaction(db):
        found = _row(db, "email_key = ?", [key])
        if found is None:
            tags = _with_topics([], topics, config)
            cursor = db.execute(
                "INSERT INTO subscribers (email, email_key, name, status, tags, attributes, "
                "source, created_at, updated_at, optin_ip) "
                "VALUES (?, ?, ?, 'pending', ?, '{}', 'web', ?, ?, ?)",
                [address, key, name, json.dumps(tags), now, now, origin.ip],
            )
            assert cursor.lastrowid is not None  # an INSERT's cursor always has it
            if choice is not None:  # none: everything
                set_topic_choice(db, cursor.lastrowid, choice)
            events.record(db, subscriber_id=cursor.lastrowid, email=address, kind=SIGNUP,
                          origin=origin, after="pending", detail="subscribe form")
        elif found.status == "active":
            return None
        else:
            tags = _with_topics(found.tags, topics, config)
            db.execute(
                "UPDATE subscribers SET name = ?, tags = ?, optin_ip = ?, updated_at = ? "
                "WHERE id = ?",
                [name or found.name, json.dumps(tags), origin.ip, now, found.id],
            )
            if choice is not None:
                set_topic_choice(db, found.id, choice)
            if found.status in STOPPED:
                _ask_to_return(db, found, origin, "subscribe form")
        reader = _row(db, "email_key = ?", [key])
    assert reader is not None
    if not limits.confirmation_allowed(db, key, config.confirmations_per_day):
        return None
    return reader


def _ask_to_return(db: sqlite_utils.Database, reader: Subscriber, origin: Origin,
                   where: str) -> None:
    # Recorded, not applied: the status changes only when the confirmation link is used.
    events.record(db, subscriber_id=reader.id, email=reader.email, kind=SIGNUP, origin=origin,
                  before=reader.status, after=reader.status,
                  detail=f"asked to subscribe again ({where}); {reader.status} until confirmed")


def request_return(db: sqlite_utils.Database, config: WebConfig, reader: Subscriber,
                   origin: Origin) -> Subscriber | None:
    """A stopped reader asks to come back from /manage or the unsubscribe page.

    Recorded like a sign-up; they stay stopped until they confirm. The reader to send a
    confirmation to, or None (not stopped, or this address had its emails for today).
    """
    if reader.status not in STOPPED:
        return None
    with events.transaction(db):
        _ask_to_return(db, reader, origin, "manage page")
    if not limits.confirmation_allowed(db, reader.key, config.confirmations_per_day):
        return None
    return reader


def asked_to_return(db: sqlite_utils.Database, reader: Subscriber) -> bool:
    """True when a stopped reader's last word is a request to come back (none stop since)."""
    if reader.status not in STOPPED:
        return False
    marks = ", ".join("?" * len(STOPPED))
    rows = db.execute(
        f"SELECT kind FROM events WHERE subscriber_id = ? AND status_after IN ({marks}) "
        "ORDER BY id DESC", [reader.id, *sorted(STOPPED)])
    for (kind,) in rows:
        if kind in _NOT_A_STOP:
            continue
        return bool(kind == SIGNUP)
    return False


def reader_for_confirm(
    db: sqlite_utils.Database, settings: Settings, token: str
) -> Subscriber | None:
    """The reader a confirmation token is for (None: forged, expired or foreign)."""
    value = tokens.read_token(settings, tokens.CONFIRM, token)
    if value is None:
        return None
    reader = _row(db, "id = ?", [value[0]])
    if reader is None or tokens.address_hash(reader.key) != value[1]:
        return None
    return reader


def confirm(
    db: sqlite_utils.Database, settings: Settings, token: str, origin: Origin
) -> Subscriber | None:
    """Make the token's pending reader active (idempotent); None for a bad token.

    A pending reader is activated, and a stopped one whose last word was asking to come
    back: an old confirmation link does not undo a later unsubscribe.
    """
    reader = reader_for_confirm(db, settings, token)
    if reader is None:
        return None
    returning = asked_to_return(db, reader)
    if reader.status == "pending" or returning:
        with events.transaction(db):
            db.execute("UPDATE subscribers SET optin_ip = ? WHERE id = ?", [origin.ip, reader.id])
            events.change_status(db, reader.id, "active", origin, kind="confirmed",
                                 detail="confirmation link" + (
                                     f" (was {reader.status})" if returning else ""))
            # A reader who joins through the form is owed the welcome email, if there is
            # one (`trigger: welcome`; `newsletter run` sends it).
            events.record(db, subscriber_id=reader.id, email=reader.email,
                          kind="welcome_requested", origin=replace(origin, consent=None),
                          detail="confirmed")
        reader = _row(db, "id = ?", [reader.id])
    return reader


# --- unsubscribe and manage (the unsubscribe token from every issue) --------------------


def reader_for_unsubscribe(
    db: sqlite_utils.Database, settings: Settings, token: str
) -> Subscriber | None:
    """The reader an issue's unsubscribe token names; None when forged, altered or foreign."""
    key = tokens.verify_unsubscribe_token(settings.secret_key(), token or "", settings.base_url)
    if key is None:
        return None
    return _row(db, "email_key = ?", [key.lower()])


def reader_for_manage(
    db: sqlite_utils.Database, settings: Settings, token: str
) -> Subscriber | None:
    """The reader a manage link names: its manage token, or an issue's unsubscribe token."""
    link = tokens.TokenMaker(settings.secret_key(), settings.base_url).read(token or "")
    if link is None or link.kind not in (tokens.Kind.MANAGE, tokens.Kind.UNSUBSCRIBE):
        return None
    return _row(db, "email_key = ?", [link.reader.lower()])


def reader_for_address(db: sqlite_utils.Database, email: str) -> Subscriber | None:
    """The reader on the list with this address (any status), or None."""
    return _row(db, "email_key = ?", [email_key(normalize_email(email))])


def unsubscribe(db: sqlite_utils.Database, reader: Subscriber, origin: Origin,
                detail: str = "unsubscribe link", campaign: int | None = None) -> Subscriber:
    """Stop sending to `reader` at once; a second time changes nothing (idempotent).

    A stopped reader who asked to come back and now unsubscribes again has changed their
    mind: that is recorded, so the confirmation link they were sent no longer works.
    `campaign` is the issue the link came in: recorded with the change only when that
    campaign went to this reader (the number in a link is not signed, so it is checked).
    """
    if reader.status not in STOPPED or asked_to_return(db, reader):
        events.change_status(db, reader.id, "unsubscribed", origin, detail=detail,
                             campaign_id=_received(db, reader, campaign))
    found = _row(db, "id = ?", [reader.id])
    assert found is not None
    return found


def _received(db: sqlite_utils.Database, reader: Subscriber, campaign: int | None) -> int | None:
    """`campaign` when it was sent to `reader`, else None."""
    if campaign is None:
        return None
    row = db.execute("SELECT 1 FROM deliveries WHERE campaign_id = ? AND subscriber_id = ? "
                     "AND state = 'sent'", [campaign, reader.id]).fetchone()
    return campaign if row is not None else None


def update_preferences(
    db: sqlite_utils.Database, config: WebConfig, reader: Subscriber, name: str,
    topics: Iterable[str], origin: Origin, choice: TopicChoice | None = None,
) -> Subscriber:
    """Change a reader's name and chosen topics (not a status: a name change is recorded
    as 'renamed', a change of topics as 'updated'). SubscriberError for a name over
    MAX_NAME."""
    name = check_name(name)
    with events.transaction(db):
        current = _row(db, "id = ?", [reader.id])
        assert current is not None
        tags = _with_topics(current.tags, topics, config)
        before = topic_choice(db, reader.id, config.topics)
        after = before if choice is None else choice
        if name != current.name or tags != current.tags or after != before:
            db.execute("UPDATE subscribers SET name = ?, tags = ?, updated_at = ? WHERE id = ?",
                       [name, json.dumps(tags), now_iso(), reader.id])
            set_topic_choice(db, reader.id, after)
        if name != current.name:
            events.record(db, subscriber_id=reader.id, email=current.email, kind="renamed",
                          origin=origin, before=current.status, after=current.status,
                          detail=f"name: {current.name!r} -> {name!r}")
        if tags != current.tags or after != before:
            events.record(db, subscriber_id=reader.id, email=current.email, kind="updated",
                          origin=origin, before=current.status, after=current.status,
                          detail=f"topics: {after.describe()}")
        found = _row(db, "id = ?", [reader.id])
    assert found is not None
    return found
