"""How the web changes readers' status, without HTTP: subscribe, confirm, unsubscribe, manage.

web/reader_pages.py calls these. Every status change goes through audience.events
(change_status or, for a new pending row, record() in the same transaction) with an
Origin carrying its source ("web" for a page, "one-click" for a mail client's RFC 8058
POST), the IP, the user agent and, for consent events only (a sign-up, a confirmation),
the consent text the reader was shown. A stopped reader (unsubscribed, bounced,
complained) who asks to come back stays stopped until they confirm: the request is an
event, and confirming it is what changes the status. Transactions are short (one BEGIN
IMMEDIATE each, nothing slow inside), so a running send never makes a request fail:
SQLite's busy timeout waits for the other writer's few milliseconds. An unsubscribe waits
at most LOCK_WAIT: past that (a long import's merge), it is journaled and applied later
(`Deferred`), so it is never refused and never lost.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlite_utils

from newsletter import changes
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
from newsletter.store import connect
from newsletter.web import limits

log = logging.getLogger("newsletter.web")

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
    db: sqlite_utils.Database, settings: Settings, token: str,
    maker: tokens.TokenMaker | None = None,
) -> Subscriber | None:
    """The reader an issue's unsubscribe token names; None when forged, altered or foreign.

    `maker`: a TokenMaker for settings' key and base_url, made once (its key derivation
    costs more than reading a token), as `serve` keeps one."""
    if maker is None:
        maker = tokens.TokenMaker(settings.secret_key(), settings.base_url)
    key = maker.verify(token or "")
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
    if reader.status in STOPPED and not asked_to_return(db, reader):
        return reader
    if not _stop(db, {reader.id: (reader, origin, detail, _received(db, reader, campaign))}):
        return replace(reader, status="unsubscribed")
    found = _row(db, "id = ?", [reader.id])
    assert found is not None
    return found


def _stop(db: sqlite_utils.Database,
          todo: dict[int, tuple[Subscriber, Origin, str, int | None]]) -> bool:
    """Unsubscribe each reader of `todo` (id → reader, origin, detail, campaign) in one
    transaction whose journal lines share one fsync: True. Or, behind requests already
    waiting for the lock, or the lock not had within LOCK_WAIT (an import's merge, a
    backup), journal them as requests, applied when the lock is free: False."""
    later = deferred(db)
    if later.waiting() or not _begin_soon(db):
        later.add(db, [(reader, "unsubscribed", origin, detail, campaign_id)
                       for reader, origin, detail, campaign_id in todo.values()])
        return False
    with db.conn, changes.one_fsync(db.conn):  # commits the BEGIN _begin_soon made
        for reader, origin, detail, campaign_id in todo.values():
            if db.execute("SELECT 1 FROM subscribers WHERE id = ?",
                          [reader.id]).fetchone() is None:
                continue  # forgotten meanwhile (subscribers remove)
            events.change_status(db, reader.id, "unsubscribed", origin,
                                 detail=detail, campaign_id=campaign_id)
    return True


# --- serve's unsubscribes, committed in groups (issue 21) --------------------------------


class Unsubscribes:
    """The one writer of a `serve` process's unsubscribes: group commit.

    Each request is queued (`submit`); one thread takes every request waiting, applies
    them in ONE transaction whose journal lines are written with ONE fsync
    (changes.one_fsync), and only after that commit answers each (the Future). An fsync
    is milliseconds; one per request held serve near 200 unsubscribes a second during a
    send. An answered unsubscribe is committed and journaled, so it survives kill -9 and a
    running send's check sees it. When the write lock does not come within LOCK_WAIT (an
    import's merge), the group is journaled as requests (`Deferred`) and answered.
    """

    MAX_GROUP = 500  # requests in one transaction (a few ms of writes)
    IDLE = 2.0  # seconds the thread waits for more work, then ends (started again on demand)

    def __init__(self, settings: Settings, maker: tokens.TokenMaker, writing: threading.Lock):
        self.settings = settings
        self.maker = maker
        self.writing = writing  # the process's one-writer lock (context.Web.writing)
        self.cond = threading.Condition()
        self.queue: list[tuple[Future[Subscriber | None], str, Origin, str, int | None]] = []
        self.thread: threading.Thread | None = None

    def submit(self, token: str, origin: Origin, detail: str,
               campaign: int | None) -> Future[Subscriber | None]:
        """Queue an unsubscribe by `token`; its Future gets the reader once the change is
        durable (None: the token is not valid), or the error that stopped it."""
        future: Future[Subscriber | None] = Future()
        with self.cond:
            self.queue.append((future, token, origin, detail, campaign))
            if self.thread is None:
                self._start()
            self.cond.notify()
        return future

    def _start(self) -> None:  # with self.cond held
        self.thread = threading.Thread(target=self._run, name="newsletter-unsubscribes",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        db: sqlite_utils.Database | None = None
        try:
            while True:
                with self.cond:
                    if not self.queue:
                        self.cond.wait(self.IDLE)
                    if not self.queue:
                        self.thread = None  # under the lock: a submit now starts a new one
                        return
                    group = self.queue[:self.MAX_GROUP]
                    del self.queue[:self.MAX_GROUP]
                try:
                    if db is None:
                        db = connect(self.settings.database)
                    results = self.apply(db, [item[1:] for item in group])
                except Exception as exc:  # noqa: BLE001 — each request's page reports it
                    if db is not None and db.conn.in_transaction:
                        db.conn.rollback()
                    for item in group:
                        item[0].set_exception(exc)
                    continue
                for item, result in zip(group, results, strict=True):
                    item[0].set_result(result)
        finally:
            if db is not None:
                db.conn.close()
            with self.cond:
                if self.thread is threading.current_thread():  # ended by an error
                    self.thread = None
                    if self.queue:
                        self._start()

    def apply(self, db: sqlite_utils.Database,
              group: list[tuple[str, Origin, str, int | None]]) -> list[Subscriber | None]:
        """Unsubscribe each (token, origin, detail, campaign) as `unsubscribe` does, all in
        one transaction; the readers (None for a bad token), once durable."""
        results: list[Subscriber | None] = []
        todo: dict[int, tuple[Subscriber, Origin, str, int | None]] = {}
        for token, origin, detail, campaign in group:
            reader = reader_for_unsubscribe(db, self.settings, token, self.maker)
            results.append(reader)
            if reader is None or reader.id in todo:  # asked twice at once: once is enough
                continue
            if reader.status in STOPPED and not asked_to_return(db, reader):
                continue
            todo[reader.id] = (reader, origin, detail, _received(db, reader, campaign))
        if not todo:
            return results
        with self.writing:
            applied = _stop(db, todo)
        if not applied:  # journaled: answered now, applied when the lock is free
            return [replace(r, status="unsubscribed") if r is not None and r.id in todo
                    else r for r in results]
        now = {r.id: r for rid in todo if (r := _row(db, "id = ?", [rid])) is not None}
        return [now.get(r.id, r) if r is not None else None for r in results]


# --- a reader's request while the database is busy (issue 21) -----------------------------

LOCK_WAIT = 0.2  # seconds a reader's request waits for the write lock, then is journaled
BUSY_TIMEOUT_MS = 30000  # store.connect's, put back after a short wait


def _begin_soon(db: sqlite_utils.Database, wait: float = LOCK_WAIT) -> bool:
    """BEGIN IMMEDIATE within `wait` seconds (True), or False: another writer holds the
    lock (an import's merge). Any other failure raises."""
    db.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
    try:
        db.execute("BEGIN IMMEDIATE")
        return True
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise
        return False
    finally:
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


class Deferred:
    """The status changes of one database journaled while it was busy, until applied.

    `add` makes requests durable (changes.append_requests: one fsync) and queues them; a
    thread applies the queue in one short transaction as soon as the lock is had, through
    events.change_status with the request's id as `external_id` (applied once, whoever
    gets there first: this process, another worker, a restart). `recover` queues the
    journaled requests a crashed server never applied.
    """

    def __init__(self, database: Path):
        self.database = database
        self.lock = threading.Lock()
        self.queue: list[dict[str, Any]] = []
        self.thread: threading.Thread | None = None
        self.error: str | None = None  # the last failure to apply, for the log

    def waiting(self) -> bool:
        with self.lock:
            return bool(self.queue)

    def add(self, db: sqlite_utils.Database,
            asked: list[tuple[Subscriber, str, Origin, str, int | None]]) -> None:
        """Journal each (reader, status, origin, detail, campaign), one fsync for all (during
        a big import an fsync waits behind its writes), and queue it to be applied."""
        at = now_iso()
        with self.lock:  # in journal order
            queued = {(q["subscriber_id"], q["after"]) for q in self.queue}
            ops = []
            for reader, status, origin, detail, campaign_id in asked:
                if (reader.id, status) in queued:
                    continue  # asked twice while busy: once is enough
                queued.add((reader.id, status))
                ops.append(changes.request_op(
                    subscriber_id=reader.id, email=reader.email, before=reader.status,
                    after=status, kind=status, source=origin.source, detail=detail,
                    ip=origin.ip, user_agent=origin.user_agent, campaign_id=campaign_id,
                    request_id=f"request:{uuid.uuid4()}", at=at))
            if not ops:
                return
            changes.append_requests(db.conn, ops)
            self.queue += ops
        self._start()

    def recover(self) -> int:
        """Queue the journaled requests not applied yet (a server killed before it could);
        how many. Called when serve starts."""
        db = connect(self.database)
        try:
            found = [op for op in changes.requests(self.database)
                     if (rid := changes.request_id(op)) and not events.seen(db, rid)]
        finally:
            db.conn.close()
        with self.lock:
            known = {changes.request_id(op) for op in self.queue}
            self.queue += [op for op in found if changes.request_id(op) not in known]
        if found:
            self._start()
        return len(found)

    def _start(self) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="newsletter-deferred",
                                               daemon=True)
                self.thread.start()

    def _run(self) -> None:
        db = connect(self.database)
        try:
            while not self.apply_once(db):
                with self.lock:
                    if not self.queue:  # applied by another worker, or nothing left
                        self.thread = None
                        return
                time.sleep(0.05)  # the lock was busy: apply_once waited LOCK_WAIT already
            with self.lock:
                more = bool(self.queue)
                self.thread = None
        finally:
            db.conn.close()
        if more:
            self._start()

    def apply_once(self, db: sqlite_utils.Database) -> bool:
        """Apply what is queued in one transaction if the lock comes within LOCK_WAIT;
        False when nothing is left, or the lock did not come (tried again soon)."""
        with self.lock:
            batch = list(self.queue)
        if not batch or not _begin_soon(db):
            return False
        try:
            with db.conn:
                for op in batch:
                    _apply_request(db, op)
        except Exception as exc:  # noqa: BLE001 — kept queued and journaled: tried again
            self.error = str(exc)
            log.warning("Could not apply a journaled reader request yet (tried again): %s", exc)
            time.sleep(1.0)  # not a busy lock: do not spin on it
            return False
        with self.lock:
            del self.queue[:len(batch)]
        return True


def _apply_request(db: sqlite_utils.Database, op: dict[str, Any]) -> None:
    event = (op.get("events") or [{}])[0]
    rid = changes.request_id(op)
    if rid is None or events.seen(db, rid):
        return
    if db.execute("SELECT 1 FROM subscribers WHERE id = ?", [op["subscriber_id"]]).fetchone() \
            is None:
        return  # forgotten meanwhile (subscribers remove): nobody is left to stop
    events.change_status(
        db, int(op["subscriber_id"]), str(op["after"]),
        Origin(str(op.get("source") or "web"), event.get("ip"), event.get("user_agent")),
        kind=event.get("kind"), detail=str(event.get("detail") or ""),
        campaign_id=event.get("campaign_id"), external_id=rid, at=op.get("at"))


_deferred: dict[Path, Deferred] = {}
_deferred_lock = threading.Lock()


def deferred(db: sqlite_utils.Database) -> Deferred:
    """The one Deferred of `db`'s database in this process."""
    database = changes.database_path(db.conn)
    assert database is not None  # serve's database is a file
    with _deferred_lock:
        found = _deferred.get(database.resolve())
        if found is None:
            found = _deferred[database.resolve()] = Deferred(database)
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
