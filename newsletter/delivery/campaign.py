"""Campaigns and the delivery log: create, lock, resume, send, retry.

A campaign and one `deliveries` row per recipient are written in one
transaction before anything is sent. A row then moves
queued → sending → sent | failed | uncertain | skipped:

- a worker claims a batch (at most `provider.max_batch` rows) by marking it
  `sending` in a short transaction, re-checking that each subscriber is still
  active (else `skipped`), builds the messages, waits for the shared rate
  limiter, calls `provider.send`, and records the results in the same
  transaction that claims its next batch (one commit per batch);
- RETRY results and TransientBatchError go back to `queued` with attempts+1
  and an exponential backoff kept in memory (a resumed run retries them at
  once); after `max_attempts` they are `failed` with the last reason;
- ProviderError stops the send: the rows of the batch go back to `queued`;
- an unexpected exception inside `provider.send`, or an UNCERTAIN result,
  leaves the batch `uncertain`: it may or may not have gone out.

Only one process sends a campaign at a time: it holds an exclusive `flock` on
a lock file next to the database. The kernel drops the lock when the process
dies (even by kill -9), so a campaign whose status is `sending` but whose lock
is free was interrupted; its rows still in `sending` are then marked
`uncertain` (or re-queued when the provider is idempotent, or the user asks
with --retry-uncertain).

Nothing here knows about SMTP, HTTP or drafts: the caller passes a provider
factory and a function that turns a delivery row into a Message.
"""

from __future__ import annotations

import errno
import fcntl
import heapq
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils

from newsletter.audience import store
from newsletter.delivery.providers.base import (
    DeliveryResult,
    Outcome,
    Provider,
    TransientBatchError,
)
from newsletter.errors import DeliveryError, ProviderError, SubscriberError

if TYPE_CHECKING:
    from newsletter.compose.message import Message

STATES = ("queued", "sending", "sent", "failed", "uncertain", "skipped")
MAX_BACKOFF = 300.0  # seconds: the longest pause between two attempts we choose ourselves


def now_iso() -> str:
    """The current UTC time as ISO 8601 (what every timestamp column holds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- audiences ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Audience:
    """Who a send goes to: the list, a tag of it, or explicit addresses (a test send)."""

    spec: str  # as stored in campaigns.audience: 'subscribers', 'tag:NAME' or 'a@x.org,b@y.org'
    kind: str  # 'list' or 'test'
    tag: str | None = None
    addresses: tuple[str, ...] = ()


def parse_audience(text: str) -> Audience:
    """`subscribers`, `tag:NAME` or `a@x.org,b@y.org` → Audience (SubscriberError if bad)."""
    text = text.strip()
    if text in ("subscribers", "list", "all"):
        return Audience("subscribers", "list")
    if text.startswith("tag:"):
        tag = text[4:].strip()
        if not tag:
            raise SubscriberError("--to tag: needs a tag name, like --to tag:friends")
        return Audience(f"tag:{tag}", "list", tag=tag)
    addresses: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        address = _normalize_address(part)
        if address.lower() not in {a.lower() for a in addresses}:
            addresses.append(address)
    if not addresses:
        raise SubscriberError(
            "--to needs `subscribers`, `tag:NAME` or email addresses separated by commas"
        )
    return Audience(",".join(addresses), "test", addresses=tuple(addresses))


def _normalize_address(text: str) -> str:
    try:  # the subscribers module validates properly when it is there
        from newsletter.audience.subscribers import normalize_email
    except ImportError:
        normalize_email = None
    if normalize_email is not None:
        return normalize_email(text)
    local, at, domain = text.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in text):
        raise SubscriberError(
            f'"{text}" is not an email address: use --to subscribers, tag:NAME or a@x.org,b@y.org'
        )
    return f"{local}@{domain.lower()}"


def _audience_where(audience: Audience) -> tuple[str, list[Any]]:
    if audience.tag is not None:
        return (
            "status = 'active' AND EXISTS (SELECT 1 FROM json_each(subscribers.tags) "
            "WHERE json_each.value = ?)",
            [audience.tag],
        )
    return "status = 'active'", []


def count_audience(db: sqlite_utils.Database, audience: Audience) -> int:
    """How many recipients a send to `audience` would have right now."""
    if audience.kind == "test":
        return len(audience.addresses)
    where, params = _audience_where(audience)
    return db.execute(f"SELECT count(*) FROM subscribers WHERE {where}", params).fetchone()[0]


# --- delivery rows -----------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryRow:
    """One claimed delivery, with what personalization needs about its subscriber."""

    id: int
    email: str
    name: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # the subscriber's identity for unsubscribe tokens (email_key)
    attempts: int = 0


_ROW_SELECT = (
    "SELECT d.id, d.email, s.name, s.attributes, s.email_key, d.attempts, s.status "
    "FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id "
)


def _row(values: Sequence[Any]) -> DeliveryRow:
    did, email, name, attributes, key, attempts, _status = values
    try:
        attrs = json.loads(attributes) if attributes else {}
    except ValueError:
        attrs = {}
    return DeliveryRow(
        id=did,
        email=email,
        name=name or "",
        attributes=attrs if isinstance(attrs, dict) else {},
        key=key or email.lower(),
        attempts=attempts,
    )


def iter_audience_rows(db: sqlite_utils.Database, audience: Audience) -> Iterator[DeliveryRow]:
    """Stream the recipients of `audience` as (unsaved) rows, for a dry run; ids count from 1."""
    if audience.kind == "test":
        for n, address in enumerate(audience.addresses, 1):
            found = db.execute(
                "SELECT name, attributes, email_key FROM subscribers WHERE email_key = ?",
                [address.lower()],
            ).fetchone()
            name, attributes, key = found or ("", "{}", None)
            yield _row((n, address, name, attributes, key, 0, None))
        return
    where, params = _audience_where(audience)
    cursor = db.execute(
        f"SELECT id, email, name, attributes, email_key, 0, status FROM subscribers "
        f"WHERE {where} ORDER BY id",
        params,
    )
    n = 0
    while chunk := cursor.fetchmany(500):
        for values in chunk:
            n += 1
            yield _row((n, *values[1:]))


# --- campaigns ---------------------------------------------------------------------------


@dataclass
class Counts:
    """Delivery rows per state."""

    queued: int = 0
    sending: int = 0
    sent: int = 0
    failed: int = 0
    uncertain: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, s) for s in STATES)

    @property
    def finished(self) -> int:
        """Rows that reached a final state (sent, failed, skipped)."""
        return self.sent + self.failed + self.skipped

    def as_dict(self) -> dict[str, int]:
        return {s: getattr(self, s) for s in STATES}


@dataclass
class Campaign:
    id: int
    slug: str
    draft_path: str
    subject: str
    audience: str
    kind: str
    provider: str
    created_at: str
    finished_at: str | None
    status: str
    counts: Counts = field(default_factory=Counts)

    @property
    def label(self) -> str:
        """A folder-safe name: the outbox writes this campaign under outbox/<label>/."""
        return f"{self.id}-{self.slug}"


def count_states(db: sqlite_utils.Database, campaign_id: int) -> Counts:
    """Delivery rows of one campaign per state."""
    counts = Counts()
    for state, n in db.execute(
        "SELECT state, count(*) FROM deliveries WHERE campaign_id = ? GROUP BY state",
        [campaign_id],
    ).fetchall():
        setattr(counts, state, n)
    return counts


_CAMPAIGN_COLUMNS = (
    "id, slug, draft_path, subject, audience, kind, provider, created_at, finished_at, status"
)


def get_campaign(db: sqlite_utils.Database, campaign_id: int) -> Campaign:
    """One campaign with its counts; DeliveryError when there is no such campaign."""
    row = db.execute(
        f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?", [campaign_id]
    ).fetchone()
    if row is None:
        raise DeliveryError(
            f"there is no campaign {campaign_id}: `newsletter campaigns` lists them"
        )
    campaign = Campaign(*row)
    campaign.counts = count_states(db, campaign_id)
    return campaign


def list_campaigns(db: sqlite_utils.Database, limit: int | None = None) -> list[Campaign]:
    """Campaigns, newest first, each with its counts per state."""
    sql = f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns ORDER BY id DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    campaigns = [Campaign(*row) for row in db.execute(sql).fetchall()]
    counts: dict[int, Counts] = {c.id: Counts() for c in campaigns}
    if campaigns:
        for cid, state, n in db.execute(
            "SELECT campaign_id, state, count(*) FROM deliveries GROUP BY campaign_id, state"
        ).fetchall():
            if cid in counts:
                setattr(counts[cid], state, n)
    for c in campaigns:
        c.counts = counts[c.id]
    return campaigns


@dataclass(frozen=True)
class Problem:
    """A delivery that did not go out cleanly: failed, uncertain or skipped."""

    email: str
    state: str
    attempts: int
    error: str | None


def campaign_problems(
    db: sqlite_utils.Database, campaign_id: int, states: Sequence[str] = ("failed", "uncertain")
) -> list[Problem]:
    """The deliveries of a campaign in `states`, with their reasons."""
    marks = ",".join("?" for _ in states)
    return [
        Problem(*row)
        for row in db.execute(
            f"SELECT email, state, attempts, error FROM deliveries "
            f"WHERE campaign_id = ? AND state IN ({marks}) ORDER BY id",
            [campaign_id, *states],
        ).fetchall()
    ]


def latest_campaign(
    db: sqlite_utils.Database, slug: str, kind: str, audience: str | None = None
) -> Campaign | None:
    """The newest campaign of this draft (and audience, when given)."""
    sql = f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE slug = ? AND kind = ?"
    params: list[Any] = [slug, kind]
    if audience is not None:
        sql += " AND audience = ?"
        params.append(audience)
    row = db.execute(sql + " ORDER BY id DESC LIMIT 1", params).fetchone()
    if row is None:
        return None
    campaign = Campaign(*row)
    campaign.counts = count_states(db, campaign.id)
    return campaign


def find_or_create_campaign(
    db: sqlite_utils.Database,
    *,
    slug: str,
    draft_path: str,
    subject: str,
    audience: Audience,
    provider: str,
    resend: bool = False,
) -> tuple[Campaign, bool]:
    """Resume the unfinished campaign of this draft and audience, or create a new one.

    Returns (campaign, created). A new campaign gets all its delivery rows in the
    same transaction. A list send of a draft already sent to the list is refused
    unless `resend`. Raises DeliveryError when there is nobody to send to.
    """
    with db.conn:
        db.execute("BEGIN IMMEDIATE")  # two sends starting at once are serialized here
        same = latest_campaign(db, slug, audience.kind, audience.spec)
        if same is not None and same.status != "done":
            return same, False
        if audience.kind == "list" and not resend:
            earlier = latest_campaign(db, slug, "list")
            if earlier is not None:
                what = "was sent" if earlier.status == "done" else "is being sent"
                retry = (
                    f", or --retry-failed {earlier.id} for its {earlier.counts.failed} failed"
                    if earlier.counts.failed else ""
                )
                raise DeliveryError(
                    f"{slug} {what} to the list already (campaign {earlier.id} to "
                    f"{earlier.audience}, {earlier.counts.sent} sent): pass --resend to send "
                    f"it again{retry}"
                )
        created = now_iso()
        cursor = db.execute(
            "INSERT INTO campaigns (slug, draft_path, subject, audience, kind, provider, "
            "created_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'sending')",
            [slug, draft_path, subject, audience.spec, audience.kind, provider, created],
        )
        campaign_id = cursor.lastrowid
        if audience.kind == "test":
            for address in audience.addresses:
                db.execute(
                    "INSERT OR IGNORE INTO deliveries (campaign_id, subscriber_id, email, "
                    "updated_at) VALUES (?, (SELECT id FROM subscribers WHERE email_key = ?), "
                    "?, ?)",
                    [campaign_id, address.lower(), address, created],
                )
        else:
            where, params = _audience_where(audience)
            db.execute(
                "INSERT OR IGNORE INTO deliveries (campaign_id, subscriber_id, email, updated_at) "
                f"SELECT ?, id, email, ? FROM subscribers WHERE {where} ORDER BY id",
                [campaign_id, created, *params],
            )
        total = db.execute(
            "SELECT count(*) FROM deliveries WHERE campaign_id = ?", [campaign_id]
        ).fetchone()[0]
        if total == 0:
            db.conn.rollback()
            where_text = f"tagged {audience.tag}" if audience.tag else ""
            raise DeliveryError(
                f"there are no active subscribers {where_text} to send to: add some with "
                "`newsletter subscribers add EMAIL` or import a list".replace("  ", " ")
            )
    return get_campaign(db, campaign_id), True


def requeue(db: sqlite_utils.Database, campaign_id: int, states: Sequence[str]) -> int:
    """Put the rows of a campaign in `states` back to `queued`; returns how many."""
    marks = ",".join("?" for _ in states)
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        n = db.execute(
            f"UPDATE deliveries SET state = 'queued', updated_at = ? "
            f"WHERE campaign_id = ? AND state IN ({marks})",
            [now_iso(), campaign_id, *states],
        ).rowcount
        if n:
            db.execute(
                "UPDATE campaigns SET status = 'stopped', finished_at = NULL WHERE id = ?",
                [campaign_id],
            )
    return n


def recover_interrupted(db: sqlite_utils.Database, campaign_id: int, *, requeue_them: bool) -> int:
    """Rows left in `sending` by a dead process: re-queue them or mark them uncertain.

    Call only while holding the campaign's lock. Returns how many rows were found.
    """
    state = "queued" if requeue_them else "uncertain"
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        return db.execute(
            "UPDATE deliveries SET state = ?, updated_at = ?, error = coalesce(error, ?) "
            "WHERE campaign_id = ? AND state = 'sending'",
            [state, now_iso(), "the sending process stopped while this message was in flight",
             campaign_id],
        ).rowcount


def finish_campaign(db: sqlite_utils.Database, campaign_id: int) -> Campaign:
    """Set the campaign's status from its rows: done when none is left to send or decide."""
    counts = count_states(db, campaign_id)
    done = counts.queued == 0 and counts.sending == 0 and counts.uncertain == 0
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "UPDATE campaigns SET status = ?, finished_at = ? WHERE id = ?",
            ["done" if done else "stopped", now_iso() if done else None, campaign_id],
        )
    return get_campaign(db, campaign_id)


# --- one sender per campaign ---------------------------------------------------------------


def lock_path(database: Path, campaign_id: int) -> Path:
    """The lock file that marks campaign `campaign_id` as being sent by a live process."""
    return database.with_name(f".{database.name}.campaign-{campaign_id}.lock")


class CampaignLock:
    """An exclusive, non-blocking flock: one live sender per campaign.

    The kernel releases it when the holder dies, so a held lock means a live
    process and a free one with status `sending` means an interrupted send.
    """

    def __init__(self, database: Path, campaign_id: int):
        self.path = lock_path(database, campaign_id)
        self.campaign_id = campaign_id
        self.fd: int | None = None

    def acquire(self) -> CampaignLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise DeliveryError(
                        f"campaign {self.campaign_id} is being sent right now by {holder}: wait "
                        "for it to finish (`newsletter campaigns` shows its progress)"
                    ) from None
                raise
            # The holder before us may have unlinked the file after we opened it:
            # only a lock on the file that is still at `path` counts.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # unlink while still holding it (see acquire)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> CampaignLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_being_sent(database: Path, campaign_id: int) -> bool:
    """True when a live process holds the campaign's lock."""
    path = lock_path(database, campaign_id)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


# --- pacing ----------------------------------------------------------------------------


class RateLimiter:
    """Shared by all workers: `rate` units per second (None or 0: no limit), plus pauses.

    Each caller reserves the next free slot, so N workers together keep the rate.
    """

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self.lock = threading.Lock()
        self.next_free = 0.0
        self.paused_until = 0.0

    def reserve(self, units: int = 1) -> float:
        """Reserve `units` and return how long to wait before using them."""
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_free, self.paused_until)
            if self.interval:
                self.next_free = start + units * self.interval
            return start - now

    def pause(self, seconds: float) -> None:
        """Nobody starts a request for `seconds` (the provider said: slow down)."""
        with self.lock:
            self.paused_until = max(self.paused_until, time.monotonic() + seconds)


# --- the runner --------------------------------------------------------------------------


@dataclass
class RunResult:
    """What one run of a campaign did."""

    counts: Counts  # the campaign's rows per state at the end
    sent: int = 0  # sent during this run
    failed: int = 0
    skipped: int = 0
    uncertain: int = 0
    retried: int = 0  # transient results put back in the queue
    seconds: float = 0.0
    error: Exception | None = None  # the ProviderError that stopped the run
    interrupted: bool = False  # Ctrl-C


ProgressCallback = Callable[[Counts], None]


class CampaignRunner:
    """Send the queued rows of one campaign with `concurrency` provider instances.

    `make_provider()` returns a new unopened Provider (one per worker thread);
    `make_message(row)` returns the Message for a delivery row, with
    `key == str(row.id)`. The caller holds the campaign lock.
    """

    def __init__(
        self,
        database: Path,
        campaign_id: int,
        make_provider: Callable[[], Provider],
        make_message: Callable[[DeliveryRow], Message],
        *,
        concurrency: int = 1,
        rate: float | None = None,
        retry_delay: float = 1.0,
        max_attempts: int = 5,
        check_subscribers: bool = True,
        on_progress: ProgressCallback | None = None,
    ):
        self.database = database
        self.campaign_id = campaign_id
        self.make_provider = make_provider
        self.make_message = make_message
        self.concurrency = max(1, concurrency)
        self.rate = rate
        self.retry_delay = retry_delay
        self.max_attempts = max(1, max_attempts)
        self.check_subscribers = check_subscribers
        self.on_progress = on_progress

        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.retry_heap: list[tuple[float, int]] = []  # (due monotonic time, delivery id)
        self.cursor = 0  # highest delivery id handed out from the queue in this run
        self.cursor_done = False
        self.in_flight = 0
        self.errors: list[Exception] = []
        self.result = RunResult(Counts())

    # -- database ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        store.connect(self.database).conn.close()  # create + migrate with the shared code
        conn = sqlite3.connect(
            str(self.database), timeout=30, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _claim(self, limit: int) -> list[DeliveryRow]:
        """Within the open transaction: mark up to `limit` due rows `sending` and return them."""
        claimed: list[DeliveryRow] = []
        now = time.monotonic()
        ids: list[int] = []
        while self.retry_heap and self.retry_heap[0][0] <= now and len(ids) < limit:
            ids.append(heapq.heappop(self.retry_heap)[1])
        candidates: list[Sequence[Any]] = []
        if ids:
            marks = ",".join("?" * len(ids))
            candidates += self._usable(self.conn.execute(
                _ROW_SELECT + f"WHERE d.id IN ({marks}) AND d.state = 'queued'", ids
            ).fetchall())
        while len(candidates) < limit and not self.cursor_done:
            want = limit - len(candidates)
            fresh = self.conn.execute(
                _ROW_SELECT + "WHERE d.campaign_id = ? AND d.state = 'queued' AND d.id > ? "
                "ORDER BY d.id LIMIT ?",
                [self.campaign_id, self.cursor, want],
            ).fetchall()
            if len(fresh) < want:
                self.cursor_done = True
            if fresh:
                self.cursor = fresh[-1][0]
            candidates += self._usable(fresh)
        if candidates:
            self.conn.executemany(
                "UPDATE deliveries SET state = 'sending', updated_at = ? WHERE id = ?",
                [(now_iso(), c[0]) for c in candidates],
            )
            claimed = [_row(c) for c in candidates]
            self.counts.queued -= len(claimed)
            self.counts.sending += len(claimed)
        return claimed

    def _usable(self, candidates: list[Sequence[Any]]) -> list[Sequence[Any]]:
        """Skip rows whose subscriber unsubscribed (or was removed) since the campaign began."""
        if not self.check_subscribers:
            return candidates
        gone = [c for c in candidates if c[6] != "active"]
        if gone:
            self.conn.executemany(
                "UPDATE deliveries SET state = 'skipped', error = ?, updated_at = ? WHERE id = ?",
                [(f"subscriber {c[6] or 'removed'} before sending", now_iso(), c[0])
                 for c in gone],
            )
            self.result.skipped += len(gone)
            self.counts.queued -= len(gone)
            self.counts.skipped += len(gone)
        return [c for c in candidates if c[6] == "active"]

    def _record(self, outcome: _Outcome) -> None:
        """Within the open transaction: write one batch's results."""
        stamp = now_iso()
        sent, failed, uncertain, queued = [], [], [], []
        for row, result in outcome.results:
            match result.outcome:
                case Outcome.SENT:
                    sent.append((result.provider_id, stamp, stamp, row.id))
                case Outcome.FAILED:
                    failed.append((_reason(result.error), stamp, row.id))
                case Outcome.UNCERTAIN:
                    uncertain.append((_reason(result.error), stamp, row.id))
                case Outcome.RETRY if row.attempts + 1 >= self.max_attempts:
                    reason = f"gave up after {row.attempts + 1} attempts: {_reason(result.error)}"
                    failed.append((reason, stamp, row.id))
                case _:  # RETRY
                    delay = min(self.retry_delay * 2**row.attempts, MAX_BACKOFF)
                    delay = max(delay, result.retry_after or 0.0)
                    heapq.heappush(self.retry_heap, (time.monotonic() + delay, row.id))
                    queued.append((_reason(result.error), stamp, row.id))
        self.conn.executemany(
            "UPDATE deliveries SET state = 'sent', provider_message_id = ?, sent_at = ?, "
            "updated_at = ?, error = NULL, attempts = attempts + 1 WHERE id = ?",
            sent,
        )
        self.conn.executemany(
            "UPDATE deliveries SET state = 'failed', error = ?, updated_at = ?, "
            "attempts = attempts + 1 WHERE id = ?",
            failed,
        )
        self.conn.executemany(
            "UPDATE deliveries SET state = 'uncertain', error = ?, updated_at = ?, "
            "attempts = attempts + 1 WHERE id = ?",
            uncertain,
        )
        self.conn.executemany(
            "UPDATE deliveries SET state = 'queued', error = ?, updated_at = ?, "
            "attempts = attempts + 1 WHERE id = ?",
            queued,
        )
        # Not attempted at all (the send stopped first): back to the queue, unchanged.
        self.conn.executemany(
            "UPDATE deliveries SET state = 'queued', updated_at = ? WHERE id = ?",
            [(stamp, row.id) for row in outcome.untouched],
        )
        n = len(outcome.results) + len(outcome.untouched)
        self.counts.sending -= n
        self.counts.sent += len(sent)
        self.counts.failed += len(failed)
        self.counts.uncertain += len(uncertain)
        self.counts.queued += len(queued) + len(outcome.untouched)
        self.result.sent += len(sent)
        self.result.failed += len(failed)
        self.result.uncertain += len(uncertain)
        self.result.retried += len(queued)
        self.in_flight -= n

    def _next_batch(self, done: _Outcome | None, limit: int) -> list[DeliveryRow] | None:
        """Record `done` and claim the next batch, waiting for due retries; None: stop."""
        with self.cond:
            while True:
                take = not self.stopping.is_set()
                with self.conn:
                    self.conn.execute("BEGIN IMMEDIATE")
                    if done is not None:
                        self._record(done)
                    rows = self._claim(limit) if take else []
                    self.in_flight += len(rows)
                if done is not None:
                    done = None
                    self.cond.notify_all()
                    self._progress()
                if rows:
                    return rows
                if not take:
                    return None
                if self.cursor_done and not self.retry_heap and self.in_flight == 0:
                    self.cond.notify_all()
                    return None
                wait = 1.0
                if self.retry_heap:
                    wait = max(0.0, min(wait, self.retry_heap[0][0] - time.monotonic()))
                self.cond.wait(wait)

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(Counts(**self.counts.as_dict()))

    # -- workers ------------------------------------------------------------------------

    def _send_batch(self, provider: Provider, rows: list[DeliveryRow]) -> _Outcome:
        outcome = _Outcome()
        messages: list[Message] = []
        by_key: dict[str, DeliveryRow] = {}
        for row in rows:
            try:
                message = self.make_message(row)
            except Exception as exc:  # one bad recipient must not stop the campaign
                outcome.results.append(
                    (row, DeliveryResult(str(row.id), Outcome.FAILED, error=_describe(exc)))
                )
                continue
            messages.append(message)
            by_key[message.key] = row
        if not messages:
            return outcome
        units = len(messages) if provider.rate_unit == "message" else 1
        wait = self.limiter.reserve(units)
        if wait > 0 and self.stopping.wait(wait):
            outcome.untouched = [by_key[m.key] for m in messages]
            return outcome
        try:
            results = provider.send(messages)
        except TransientBatchError as exc:
            if exc.retry_after:
                self.limiter.pause(exc.retry_after)
            for m in messages:
                outcome.results.append(
                    (by_key[m.key], DeliveryResult(m.key, Outcome.RETRY, error=exc.reason,
                                                   retry_after=exc.retry_after))
                )
            return outcome
        except ProviderError as exc:
            # The provider says nothing of this batch went out: back to the queue.
            self._fail(exc)
            outcome.untouched = [by_key[m.key] for m in messages]
            return outcome
        except Exception as exc:  # we cannot know what went out
            self._fail(exc)
            for m in messages:
                outcome.results.append(
                    (by_key[m.key], DeliveryResult(m.key, Outcome.UNCERTAIN, error=_describe(exc)))
                )
            return outcome
        answered = set()
        for result in results:
            row = by_key.get(result.key)
            if row is None or result.key in answered:
                continue
            answered.add(result.key)
            outcome.results.append((row, result))
        for m in messages:
            if m.key not in answered:  # a provider bug; do not guess
                outcome.results.append(
                    (by_key[m.key], DeliveryResult(
                        m.key, Outcome.UNCERTAIN, error=f"{provider.name} gave no result for it"))
                )
        return outcome

    def _fail(self, exc: Exception) -> None:
        self.stopping.set()
        with self.cond:
            self.errors.append(exc)
            self.cond.notify_all()

    def _worker(self, provider: Provider) -> None:
        done: _Outcome | None = None
        limit = max(1, provider.max_batch)
        try:
            while True:
                rows = self._next_batch(done, limit)
                done = None
                if rows is None:
                    return
                done = _Outcome(untouched=list(rows))  # if anything below blows up
                done = self._send_batch(provider, rows)
        except BaseException as exc:  # noqa: B036 — record, then let run() report it
            self._fail(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            if done is not None:
                with self.cond, self.conn:
                    self.conn.execute("BEGIN IMMEDIATE")
                    self._record(done)

    def run(self) -> RunResult:
        """Send every queued row; returns when all are settled, on ProviderError or Ctrl-C."""
        started = time.monotonic()
        self.conn = self._connect()
        self.counts = Counts()
        for state, n in self.conn.execute(
            "SELECT state, count(*) FROM deliveries WHERE campaign_id = ? GROUP BY state",
            [self.campaign_id],
        ).fetchall():
            setattr(self.counts, state, n)
        providers: list[Provider] = []
        try:
            try:
                for _ in range(self.concurrency):
                    provider = self.make_provider()
                    providers.append(provider)
                    provider.open()
            except ProviderError as exc:  # nothing was claimed yet: every row stays queued
                self.errors.append(exc)
                return self._finish(started)
            first = providers[0]
            rate = self.rate if self.rate is not None else first.default_rate
            self.limiter = RateLimiter(rate)
            self._progress()
            threads = [
                threading.Thread(target=self._worker, args=(p,), daemon=True,
                                 name=f"send-{self.campaign_id}-{i}")
                for i, p in enumerate(providers)
            ]
            for t in threads:
                t.start()
            try:
                for t in threads:
                    while t.is_alive():
                        t.join(0.2)  # a short join keeps Ctrl-C responsive
            except KeyboardInterrupt:
                self.result.interrupted = True
                self.stopping.set()
                with self.cond:
                    self.cond.notify_all()
                for t in threads:
                    t.join()
        finally:
            for provider in providers:
                try:
                    provider.close()
                except Exception:  # closing must not hide what happened
                    pass
            self.conn.close()
        return self._finish(started)

    def _finish(self, started: float) -> RunResult:
        self.result.counts = self.counts
        self.result.seconds = time.monotonic() - started
        if self.errors:
            self.result.error = self.errors[0]
        return self.result


@dataclass
class _Outcome:
    results: list[tuple[DeliveryRow, DeliveryResult]] = field(default_factory=list)
    untouched: list[DeliveryRow] = field(default_factory=list)


def _describe(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ").strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _reason(error: str | None) -> str:
    return (error or "no reason given").replace("\r", " ").replace("\n", " ")[:1000]
