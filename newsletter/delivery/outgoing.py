"""Mail a reader's request asks for (a confirmation, a manage link), sent from a durable queue.

A request only writes a row in `outgoing` and wakes the workers: it never waits on a
provider, so a flood of sign-ups against a slow or silent mail server cannot hold up an
unsubscribe. A few worker threads (`Workers`, started by `newsletter serve`) send the rows;
`newsletter run` sends what is left (`send_queued`), so a row queued when the server
stopped goes out after a restart or at the next run. Each row is the record of its
message: state (queued → sending → sent | failed), attempts, the provider's id or
reason. These are not issues: `newsletter campaigns` never counts them.

A transient failure (a timeout, a 4xx, a refused connection) is retried with a growing
pause; a permanent refusal marks the row failed with the provider's reason. A row left
in `sending` by a process that died is taken up again after `STALE_SECONDS`: a reader may
then get a confirmation email twice, never none.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlite_utils

from newsletter import store
from newsletter.audience.events import now_iso
from newsletter.audience.subscribers import Subscriber
from newsletter.compose import tokens
from newsletter.compose.message import Message
from newsletter.errors import NewsletterError
from newsletter.settings import Settings

log = logging.getLogger("newsletter.web")

CONFIRM = "confirm"
MANAGE = "manage"  # a fresh manage link, asked for on the invalid-link page
KINDS = (CONFIRM, MANAGE)
WORKERS = 2  # threads per server process: bounded, whatever the number of requests
BACKOFF = (2, 5, 15, 30, 60)  # seconds before retry n (then 60 s)
GIVE_UP = timedelta(days=1)  # a confirmation not accepted in a day is failed
STALE_SECONDS = 600  # a row `sending` this long belongs to a process that died
_ADDRESS = re.compile(r"[^\s<>\"'@]+@[^\s<>\"']+")


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def enqueue(db: sqlite_utils.Database, kind: str, reader: Subscriber, url: str) -> int:
    """Queue one email of `kind` for `reader` (committed at once); the row's id."""
    if kind not in KINDS:
        raise NewsletterError(f"unknown outgoing email kind {kind!r} (known: {', '.join(KINDS)})")
    now = now_iso()
    with db.conn:
        cursor = db.execute(
            "INSERT INTO outgoing (kind, subscriber_id, email, url, next_at, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [kind, reader.id, reader.email, url, now, now, now])
    assert cursor.lastrowid is not None  # an INSERT's cursor always has it
    _wake_running()
    return cursor.lastrowid


# --- the messages -------------------------------------------------------------------------


# Each kind: its layout (layouts/<layout>.html + .txt), subject and template values.
_LAYOUTS = {CONFIRM: "confirm", MANAGE: "manage_link"}


def outgoing_message(settings: Settings, kind: str, reader: Subscriber, url: str) -> Message:
    """The email of `kind` for `reader`, carrying `url`: a confirmation (layouts/confirm.*)
    or a fresh manage link (layouts/manage_link.*)."""
    from newsletter.compose.inline import inline_css
    from newsletter.compose.issue import Issue
    from newsletter.compose.layout import load_layout, make_environment, render_template
    from newsletter.compose.message import personalize

    if kind == CONFIRM:
        subject = f"Confirm your subscription to {settings.name}"
        values: dict[str, object] = {"confirm_url": url,
                                     "days": tokens.CONFIRM_MAX_AGE // 86400}
    else:
        subject = f"Your subscription to {settings.name}"
        values = {"manage_url": url, "status": reader.status}
    layout = _LAYOUTS[kind]
    env = make_environment(settings.layouts_dir)
    context = {"newsletter": {"name": settings.name, "base_url": settings.base_url,
                              "address": settings.address},
               "subscriber": {"name": reader.name, "email": reader.email}, **values}
    where = f"layouts/{layout}"
    html = render_template(load_layout(env, f"{layout}.html"), context, where=f"{where}.html")
    text = render_template(load_layout(env, f"{layout}.txt"), context, where=f"{where}.txt")
    issue = Issue(source=Path(f"{where}.html"), slug=layout, title=subject,
                  subject=subject, preheader="", date=datetime.now(UTC).date(),
                  html=inline_css(html, where=f"{where}.html"), text=text)
    return personalize(issue, reader.recipient(),
                       key=f"{reader.id}-{secrets.token_hex(4)}", settings=settings)


def _reader(db: sqlite_utils.Database, subscriber_id: int | None, email: str) -> Subscriber:
    from newsletter.audience.subscribers import get

    found = get(db, email)
    if found is None or (subscriber_id is not None and found.id != subscriber_id):
        raise NewsletterError("the reader was removed from the list before it was sent")
    return found


# --- sending --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    id: int
    kind: str
    subscriber_id: int | None
    email: str
    url: str
    attempts: int  # this one included
    created_at: str


def claim(db: sqlite_utils.Database) -> Claimed | None:
    """Take the oldest row that is due (and any a dead process left `sending`), or None."""
    now = datetime.now(UTC)
    # Looked for first without the write lock: polled every second, an empty queue must
    # not wait on another writer (a long import's merge) nor log "database is locked".
    if db.execute("SELECT 1 FROM outgoing WHERE (state = 'queued' AND next_at <= ?) OR "
                  "(state = 'sending' AND updated_at < ?) LIMIT 1",
                  [_iso(now), _iso(now - timedelta(seconds=STALE_SECONDS))]).fetchone() is None:
        return None
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE outgoing SET state = 'queued' WHERE state = 'sending' AND "
                   "updated_at < ?", [_iso(now - timedelta(seconds=STALE_SECONDS))])
        row = db.execute(
            "SELECT id, kind, subscriber_id, email, url, attempts, created_at FROM outgoing "
            "WHERE state = 'queued' AND next_at <= ? ORDER BY next_at, id LIMIT 1",
            [_iso(now)]).fetchone()
        if row is None:
            return None
        db.execute("UPDATE outgoing SET state = 'sending', attempts = attempts + 1, "
                   "updated_at = ? WHERE id = ?", [_iso(now), row[0]])
    return Claimed(row[0], row[1], row[2], row[3], row[4], row[5] + 1, row[6])


def _finish(db: sqlite_utils.Database, row: Claimed, state: str, *, error: str | None = None,
            provider: str | None = None, message_id: str | None = None) -> None:
    now = datetime.now(UTC)
    next_at = now + timedelta(seconds=BACKOFF[min(row.attempts, len(BACKOFF)) - 1])
    if state == "queued" and now - datetime.fromisoformat(row.created_at) > GIVE_UP:
        state, error = "failed", f"not accepted within a day: {error}"
    with db.conn:
        db.execute("UPDATE outgoing SET state = ?, error = ?, provider = ?, "
                   "provider_message_id = ?, next_at = ?, updated_at = ? WHERE id = ?",
                   [state, error, provider, message_id, _iso(next_at), _iso(now), row.id])


def send_one(settings: Settings, db: sqlite_utils.Database, row: Claimed) -> str:
    """Build and send one claimed row; its new state ('sent', 'queued' to retry, 'failed')."""
    from newsletter.delivery.providers.base import Outcome, TransientBatchError
    from newsletter.delivery.providers.registry import provider_class

    ps = dataclasses.replace(settings.provider,
                             options={**settings.provider.options, "campaign": row.kind})
    try:
        message = outgoing_message(settings, row.kind,
                                   _reader(db, row.subscriber_id, row.email), row.url)
    except NewsletterError as exc:  # a broken layout or a removed reader: not worth retrying
        _finish(db, row, "failed", error=str(exc), provider=ps.name)
        return "failed"
    try:
        provider = provider_class(ps.name)(settings, ps)
        try:
            provider.open()
            results = provider.send([message])
        finally:
            provider.close()
    except (NewsletterError, TransientBatchError, OSError) as exc:
        # The provider is down, slow or refused the connection: try again later.
        reason = _ADDRESS.sub("<address>", str(exc))
        log.error("confirmation email failed (will retry): %s", reason)
        _finish(db, row, "queued", error=reason, provider=ps.name)
        return "queued"
    result = results[0] if results else None
    if result is not None and result.outcome == Outcome.SENT:
        _finish(db, row, "sent", provider=ps.name, message_id=result.provider_id)
        return "sent"
    reason = _ADDRESS.sub("<address>", (result.error if result else None) or "no answer")
    permanent = result is not None and result.outcome == Outcome.FAILED
    log.error("confirmation email failed%s: %s", "" if permanent else " (will retry)", reason)
    state = "failed" if permanent else "queued"
    _finish(db, row, state, error=reason, provider=ps.name)
    return state


@dataclass
class OutgoingReport:
    """What `send_queued` did: counts of rows, for `newsletter run`'s line."""

    sent: int = 0
    failed: int = 0
    retrying: int = 0  # failed for now; queued again for later

    @property
    def tried(self) -> int:
        return self.sent + self.failed + self.retrying

    @property
    def text(self) -> str:
        return (f"confirmation emails: {self.sent} sent, {self.failed} failed"
                + (f", {self.retrying} to retry" if self.retrying else ""))


def send_queued(settings: Settings) -> OutgoingReport:
    """Send every queued row that is due, once each, in this thread (`newsletter run`).

    A row that fails for now is queued again for later (not due in this pass).
    """
    report = OutgoingReport()
    db = store.connect(settings.database)
    try:
        while (row := claim(db)) is not None:
            state = send_one(settings, db, row)
            if state == "sent":
                report.sent += 1
            elif state == "failed":
                report.failed += 1
            else:
                report.retrying += 1
    finally:
        db.conn.close()
    return report


def pending(settings: Settings) -> int:
    """Rows not yet sent (queued or sending): what a test or `run` may wait on."""
    db = store.connect(settings.database)
    try:
        return db.execute("SELECT count(*) FROM outgoing WHERE state IN ('queued', 'sending')"
                          ).fetchone()[0]
    finally:
        db.conn.close()


# --- the workers inside `newsletter serve` --------------------------------------------------

_running: list[Workers] = []  # this process's workers, woken when a request queues a row


def _wake_running() -> None:
    for workers in list(_running):
        workers.wake()


class Workers:
    """A few threads sending queued rows until `stop()`; rows queued by another process are
    found by polling every `poll` seconds."""

    def __init__(self, settings: Settings, count: int = WORKERS, poll: float = 1.0,
                 on_error: Callable[[Exception], None] | None = None):
        self.settings = settings
        self.count = count
        self.poll = poll
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._claimed: set[int] = set()
        self._lock = threading.Lock()
        self._on_error = on_error

    def start(self) -> Workers:
        for n in range(self.count):
            thread = threading.Thread(target=self._loop, name=f"outgoing-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        _running.append(self)
        self.wake()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, wait: float = 2.0) -> None:
        """Stop taking rows; a row still in a provider's hands goes back to the queue (sent
        after a restart or by `newsletter run`): twice rather than never."""
        if self in _running:
            _running.remove(self)
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(wait / max(1, len(self._threads)))
        with self._lock:
            stuck = sorted(self._claimed)
        if stuck:
            db = store.connect(self.settings.database)
            try:
                with db.conn:
                    db.execute(f"UPDATE outgoing SET state = 'queued', next_at = ? WHERE state = "
                               f"'sending' AND id IN ({','.join('?' * len(stuck))})",
                               [now_iso(), *stuck])
            finally:
                db.conn.close()

    def _loop(self) -> None:
        db = store.connect(self.settings.database)
        try:
            while not self._stop.is_set():
                try:
                    row = claim(db)
                    if row is None:
                        self._wake.wait(self.poll)
                        self._wake.clear()
                        continue
                    with self._lock:
                        self._claimed.add(row.id)
                    try:
                        send_one(self.settings, db, row)
                    finally:
                        with self._lock:
                            self._claimed.discard(row.id)
                except Exception as exc:  # noqa: BLE001 - said in the log; the thread lives on
                    log.error("outgoing email worker: %s", _ADDRESS.sub("<address>", str(exc)))
                    if self._on_error is not None:
                        self._on_error(exc)
                    self._stop.wait(self.poll)
        finally:
            db.conn.close()
