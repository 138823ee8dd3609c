"""Campaigns and the delivery log: create, lock, resume, send, retry.

A campaign and one `deliveries` row per recipient are written in one
transaction before anything is sent. A row then moves
queued → sending → sent | failed | uncertain | skipped:

- a feeder thread reads queued rows and builds their messages ahead into a
  small bounded queue (memory stays flat; personalization overlaps the
  network wait);
- a worker (one per connection, each with its own provider instance) claims
  a chunk of prepared rows by marking them `sending` in a short transaction,
  re-checking that each subscriber is still active (else `skipped`), and in
  the same transaction records the results of its previous chunk (one commit
  per chunk). It hands the chunk to `provider.send` in batches of at most
  `provider.max_batch`, pacing by the shared rate limiter;
- around every `provider.send` the worker appends to its journal file "handed
  over: these rows" and then their results. Appends are cheap and survive
  kill -9 (no fsync: the kernel has them), so after a crash the journal says
  which `sending` rows were answered (their results are written to the log),
  which were in the provider's hands without an answer (`uncertain`) and
  which never left (queued again). Uncertain stays at most one provider
  batch per worker, while the log costs one commit per chunk, not per message;
- RETRY results and TransientBatchError go back to `queued` with attempts+1
  and an exponential backoff kept in memory (a resumed run retries them at
  once); after `max_attempts` they are `failed` with the last reason;
- ProviderError stops the send: the rows of the batch go back to `queued`;
- an unexpected exception inside `provider.send`, or an UNCERTAIN result,
  leaves the batch `uncertain`: it may or may not have gone out.

Ctrl-C, SIGTERM and SIGHUP stop a run cleanly: the messages in the providers'
hands get their answers and are recorded, the rest stay queued.

Only one process sends a campaign at a time: it holds an exclusive `flock` on
a lock file next to the database. The kernel drops the lock when the process
dies (even by kill -9), so a campaign whose status is `sending` but whose lock
is free was interrupted; its rows still in `sending` are then settled from
the journals (see `recover_interrupted`); the uncertain ones are re-queued
only when the provider is idempotent or the user asks with --retry-uncertain.

Nothing here knows about SMTP, HTTP or drafts: the caller passes a provider
factory and a function that turns a delivery row into a Message.
"""

from __future__ import annotations

import errno
import fcntl
import heapq
import json
import os
import queue
import signal
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

from newsletter import store
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
CLAIM_CHUNK = 32  # rows claimed per transaction (at least one provider batch)


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


_LIST_WORDS = ("subscribers", "list", "all")
_TO_FORMS = "--to takes `subscribers`, `tag:NAME`, or email addresses separated by commas"


def parse_audience(text: str) -> Audience:
    """`subscribers`, `tag:NAME` or `a@x.org,b@y.org` → Audience (SubscriberError if bad)."""
    from newsletter.audience.subscribers import normalize_email

    text = text.strip()
    if text.lower() in _LIST_WORDS:
        return Audience("subscribers", "list")
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if text.lower().startswith("tag:"):
        tag = text[4:].strip()
        if not tag:
            raise SubscriberError("--to tag: needs a tag name, like --to tag:friends")
        if len(parts) > 1 and any(p.lower().startswith("tag:") for p in parts[1:]):
            raise SubscriberError(f"{_TO_FORMS}: one tag per send, not {text!r}")
        return Audience(f"tag:{tag}", "list", tag=tag)
    if any(p.lower() in _LIST_WORDS or p.lower().startswith("tag:") for p in parts):
        raise SubscriberError(f"{_TO_FORMS}, not a mix of them ({text!r})")
    addresses: list[str] = []
    for part in parts:
        address = normalize_email(part)
        if address.lower() not in {a.lower() for a in addresses}:
            addresses.append(address)
    if not addresses:
        raise SubscriberError(_TO_FORMS)
    return Audience(",".join(addresses), "test", addresses=tuple(addresses))


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


def refuse_resend(
    db: sqlite_utils.Database, slug: str, audience: Audience, resend: bool
) -> None:
    """DeliveryError when a list send of `slug` would repeat an earlier one (unless `resend`).

    An unfinished campaign of the same audience is not a repeat: it is resumed.
    """
    if audience.kind != "list" or resend:
        return
    same = latest_campaign(db, slug, "list", audience.spec)
    if same is not None and same.status != "done":
        return
    earlier = latest_campaign(db, slug, "list")
    if earlier is None:
        return
    c = earlier.counts
    retry = (
        f", or --retry-failed {earlier.id} for its {c.failed} failed"
        if c.failed else ""
    )
    if earlier.status == "done":
        what = "was sent"
    elif c.queued or c.sending:
        # Unfinished, to another audience: say how to finish it rather than "being sent".
        retry += (
            f"; to finish that send instead, run `newsletter send {slug} --to "
            f"{earlier.audience}` ({c.queued + c.sending} not yet sent)"
        )
        what = "was partly sent"
    else:
        retry += (
            f"; its {c.uncertain} uncertain message(s) are settled with `newsletter send "
            f"{slug} --to {earlier.audience} --retry-uncertain`"
        )
        what = "was sent"
    raise DeliveryError(
        f"{slug} {what} to the list already (campaign {earlier.id} to "
        f"{earlier.audience}, {c.sent} sent): pass --resend to send "
        f"it again{retry}"
    )


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
        refuse_resend(db, slug, audience, resend)
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
            raise nobody_to_send_to(audience)
    return get_campaign(db, campaign_id), True


def nobody_to_send_to(audience: Audience) -> DeliveryError:
    """The error for a list send that would reach nobody."""
    where_text = f"tagged {audience.tag}" if audience.tag else ""
    return DeliveryError(
        f"there are no active subscribers {where_text} to send to: add some with "
        "`newsletter subscribers add EMAIL` or import a list".replace("  ", " ")
    )


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


@dataclass
class Recovery:
    """What a dead sender left behind, sorted out from its journals."""

    recorded: int = 0  # results found in the journals and written to the log
    never_sent: int = 0  # claimed but never handed to the provider: simply queued again
    in_flight: int = 0  # handed over with no answer: uncertain (re-queued if idempotent)


def recover_interrupted(
    db: sqlite_utils.Database,
    campaign_id: int,
    *,
    requeue_them: bool,
    journals: Sequence[Path] = (),
) -> Recovery:
    """Rows left in `sending` by a dead process: settle them from its journals.

    Each worker journals "handed over" before a message goes to the provider and
    the result right after (see `_Journal`). A row with a result gets it; a row
    handed over without one is in flight: `uncertain`, or `queued` when
    `requeue_them` (an idempotent provider); a row never handed over is queued
    again. Without any journal every such row counts as in flight. Call only
    while holding the campaign's lock; the journals are removed afterwards.
    """
    handed: set[int] = set()
    results: dict[int, tuple[str, str, str]] = {}
    for path in journals:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            parts = line.split("\t")
            if parts[0] == "H" and len(parts) >= 2 and parts[1].isdigit():
                handed.add(int(parts[1]))
            elif parts[0] == "R" and len(parts) >= 5 and parts[1].isdigit():
                results[int(parts[1])] = (parts[2], parts[3], parts[4])
    recovery = Recovery()
    stamp = now_iso()
    in_flight_state = "queued" if requeue_them else "uncertain"
    in_flight_error = "the sending process stopped while this message was in flight"
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        stuck = [r[0] for r in db.execute(
            "SELECT id FROM deliveries WHERE campaign_id = ? AND state = 'sending'", [campaign_id]
        ).fetchall()]
        for did in stuck:
            if did in results:
                outcome, provider_id, error = results[did]
                recovery.recorded += 1
                if outcome == Outcome.SENT:
                    db.execute(
                        "UPDATE deliveries SET state = 'sent', provider_message_id = ?, "
                        "sent_at = ?, updated_at = ?, error = NULL, attempts = attempts + 1 "
                        "WHERE id = ?", [provider_id or None, stamp, stamp, did])
                    continue
                state = {"failed": "failed", "uncertain": "uncertain"}.get(outcome, "queued")
                db.execute(
                    "UPDATE deliveries SET state = ?, error = ?, updated_at = ?, "
                    "attempts = attempts + 1 WHERE id = ?", [state, error or None, stamp, did])
            elif did in handed or not journals:
                recovery.in_flight += 1
                db.execute(
                    "UPDATE deliveries SET state = ?, updated_at = ?, error = coalesce(error, ?) "
                    "WHERE id = ?", [in_flight_state, stamp, in_flight_error, did])
            else:
                recovery.never_sent += 1
                db.execute(
                    "UPDATE deliveries SET state = 'queued', updated_at = ? WHERE id = ?",
                    [stamp, did])
    for path in journals:
        path.unlink(missing_ok=True)
    return recovery


def journal_paths(database: Path, campaign_id: int) -> list[Path]:
    """The worker journals a sender of this campaign left next to the database."""
    return sorted(database.parent.glob(f".{database.name}.campaign-{campaign_id}.w*.journal"))


class _Journal:
    """One worker's journal: "handed over" before the provider gets a message, its result after.

    Plain appends without fsync: they survive the process being killed (the
    kernel keeps them), which is what resume needs. Emptied each time its
    results are safely in the database, so it stays small.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)

    def handed(self, rows: Sequence[DeliveryRow]) -> None:
        os.write(self.fd, "".join(f"H\t{row.id}\n" for row in rows).encode())

    def results(self, outcome: _Outcome) -> None:
        lines = [
            f"R\t{row.id}\t{r.outcome!s}\t{_flat(r.provider_id)}\t{_flat(r.error)}\n"
            for row, r in outcome.results
        ]
        if lines:
            os.write(self.fd, "".join(lines).encode("utf-8", errors="replace"))

    def clear(self) -> None:
        os.ftruncate(self.fd, 0)

    def remove(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


def _flat(text: str | None) -> str:
    return (text or "").replace("\t", " ").replace("\r", " ").replace("\n", " ")[:1000]


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

    A feeder thread reads queued rows (read-only) and builds their messages
    ahead into a small bounded queue, so personalization overlaps the network
    wait. A worker marks a batch `sending` in the same short transaction that
    records its previous batch, just before handing it to its provider: at most
    one batch per worker is ever `sending`, which bounds what a crash can leave
    uncertain. Every database access goes through one connection under one lock.
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
        self.fed_all = threading.Event()
        self.retry_heap: list[tuple[float, int]] = []  # (due monotonic time, delivery id)
        self.cursor = 0  # highest delivery id read from the queue in this run
        self.cursor_done = False
        self.pending = 0  # rows read by the feeder whose outcome is not recorded yet
        self.errors: list[Exception] = []
        self.result = RunResult(Counts())
        self.chunk = 64

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

    def _read_rows(self) -> list[DeliveryRow] | None:
        """For the feeder: due retries first, then the next queued rows; None when all is done."""
        with self.cond:
            while not self.stopping.is_set():
                now = time.monotonic()
                ids: list[int] = []
                while self.retry_heap and self.retry_heap[0][0] <= now and len(ids) < self.chunk:
                    ids.append(heapq.heappop(self.retry_heap)[1])
                found: list[Sequence[Any]] = []
                if ids:
                    marks = ",".join("?" * len(ids))
                    found = self.conn.execute(
                        _ROW_SELECT + f"WHERE d.id IN ({marks}) AND d.state = 'queued' "
                        "ORDER BY d.id", ids,
                    ).fetchall()
                if not found and not self.cursor_done:
                    found = self.conn.execute(
                        _ROW_SELECT + "WHERE d.campaign_id = ? AND d.state = 'queued' "
                        "AND d.id > ? ORDER BY d.id LIMIT ?",
                        [self.campaign_id, self.cursor, self.chunk],
                    ).fetchall()
                    if len(found) < self.chunk:
                        self.cursor_done = True
                    if found:
                        self.cursor = found[-1][0]
                if found:
                    self.pending += len(found)
                    return [_row(values) for values in found]
                if self.cursor_done and not self.retry_heap and self.pending == 0:
                    return None
                wait = 1.0
                if self.retry_heap:
                    wait = max(0.0, min(wait, self.retry_heap[0][0] - time.monotonic()))
                self.cond.wait(wait)
        return None

    def _claim(self, items: list[_Item]) -> list[_Item]:
        """Within the open transaction: mark the items' rows `sending`, if still due and wanted.

        Rows whose message could not be built fail here; rows whose subscriber
        unsubscribed (or was removed) since the campaign began are skipped.
        """
        stamp = now_iso()
        broken = [(row, m) for row, m in items if isinstance(m, Exception)]
        if broken:
            self.counts.queued -= len(broken)
            self.counts.sending += len(broken)
            self._record(_Outcome(results=[
                (row, DeliveryResult(str(row.id), Outcome.FAILED, error=_describe(exc)))
                for row, exc in broken  # type: ignore[misc]
            ]))
        wanted = [(row, m) for row, m in items if not isinstance(m, Exception)]
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        active = (
            "AND (SELECT status FROM subscribers s WHERE s.id = deliveries.subscriber_id) "
            "= 'active'" if self.check_subscribers else ""
        )
        claimed_ids = {
            r[0] for r in self.conn.execute(
                f"UPDATE deliveries SET state = 'sending', updated_at = ? WHERE id IN ({marks}) "
                f"AND state = 'queued' {active} RETURNING id",
                [stamp, *(row.id for row, _ in wanted)],
            ).fetchall()
        }
        claimed = [(row, m) for row, m in wanted if row.id in claimed_ids]
        left = [row.id for row, _ in wanted if row.id not in claimed_ids]
        if left:
            skipped = 0
            if self.check_subscribers:
                skipped = len(self.conn.execute(
                    "UPDATE deliveries SET state = 'skipped', updated_at = ?, error = 'subscriber '"
                    " || coalesce((SELECT status FROM subscribers s WHERE s.id = "
                    "deliveries.subscriber_id), 'removed') || ' before sending' "
                    f"WHERE id IN ({','.join('?' * len(left))}) AND state = 'queued' "
                    "RETURNING id",
                    [stamp, *left],
                ).fetchall())
            self.result.skipped += skipped
            self.counts.queued -= skipped
            self.counts.skipped += skipped
            self.pending -= len(left)
        self.counts.queued -= len(claimed)
        self.counts.sending += len(claimed)
        return claimed

    def _drop_stopped(self, part: list[_Item]) -> list[_Item]:
        """Just before a batch goes to the provider: skip the rows of readers who stopped.

        A chunk is claimed ahead of its batches, so a reader may unsubscribe (or be
        removed) after the claim; one indexed query per batch sees that change.
        """
        if not self.check_subscribers or not part:
            return part
        ids = [row.id for row, _ in part]
        marks = ",".join("?" * len(ids))
        with self.cond:
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                stopped = {r[0] for r in self.conn.execute(
                    "UPDATE deliveries SET state = 'skipped', updated_at = ?, error = 'subscriber '"
                    " || coalesce((SELECT status FROM subscribers s WHERE s.id = "
                    "deliveries.subscriber_id), 'removed') || ' before sending' "
                    f"WHERE id IN ({marks}) AND state = 'sending' AND coalesce((SELECT status "
                    "FROM subscribers s WHERE s.id = deliveries.subscriber_id), 'removed') "
                    "!= 'active' RETURNING id",
                    [now_iso(), *ids],
                ).fetchall()}
            if stopped:
                n = len(stopped)
                self.result.skipped += n
                self.counts.sending -= n
                self.counts.skipped += n
                self.pending -= n
                self.cond.notify_all()
                if self.on_progress is not None:
                    self.on_progress(Counts(**self.counts.as_dict()))
        return [(row, m) for row, m in part if row.id not in stopped]

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
        for sql, params in (
            ("UPDATE deliveries SET state = 'sent', provider_message_id = ?, sent_at = ?, "
             "updated_at = ?, error = NULL, attempts = attempts + 1 WHERE id = ?", sent),
            ("UPDATE deliveries SET state = 'failed', error = ?, updated_at = ?, "
             "attempts = attempts + 1 WHERE id = ?", failed),
            ("UPDATE deliveries SET state = 'uncertain', error = ?, updated_at = ?, "
             "attempts = attempts + 1 WHERE id = ?", uncertain),
            ("UPDATE deliveries SET state = 'queued', error = ?, updated_at = ?, "
             "attempts = attempts + 1 WHERE id = ?", queued),
            # Not attempted at all (the send stopped first): back to the queue, unchanged.
            ("UPDATE deliveries SET state = 'queued', updated_at = ? WHERE id = ?",
             [(stamp, row.id) for row in outcome.untouched]),
        ):
            if len(params) == 1:
                self.conn.execute(sql, params[0])
            elif params:
                self.conn.executemany(sql, params)
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
        self.pending -= n

    def _commit(self, done: _Outcome | None, items: list[_Item]) -> list[_Item]:
        """One short transaction: record `done`, claim `items`; returns the claimed ones."""
        with self.cond:
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                if done is not None:
                    self._record(done)
                claimed = self._claim(items) if items else []
            self.cond.notify_all()
            if self.on_progress is not None:
                self.on_progress(Counts(**self.counts.as_dict()))
        return claimed

    # -- threads ------------------------------------------------------------------------

    def _feed(self) -> None:
        """Read queued rows and build their messages ahead, into the bounded queue."""
        try:
            while (rows := self._read_rows()) is not None:
                for row in rows:
                    try:
                        item: _Item = (row, self.make_message(row))
                    except Exception as exc:  # one bad recipient must not stop the campaign
                        item = (row, exc)
                    while True:
                        if self.stopping.is_set():
                            return
                        try:
                            self.ahead.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
        except BaseException as exc:  # noqa: B036 — reported by run()
            self._fail(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
        finally:
            self.fed_all.set()

    def _take(self, limit: int, done: _Outcome, journal: _Journal) -> list[_Item]:
        """Up to `limit` prepared items; records `done` first when it has to wait for them."""
        items: list[_Item] = []
        try:
            items.append(self.ahead.get_nowait())
        except queue.Empty:
            if done:  # don't sit on results while waiting: the feeder needs them
                self._commit(done, [])
                journal.clear()
                done.clear()
            while not items:
                if self.stopping.is_set() or (self.fed_all.is_set() and self.ahead.empty()):
                    return []
                try:
                    items.append(self.ahead.get(timeout=0.05))
                except queue.Empty:
                    continue
        # Fill the chunk with what is ready; for batch APIs wait a moment for a fuller one.
        deadline = time.monotonic() + (0.02 if self.batch_size > 1 else 0.0)
        while len(items) < limit:
            try:
                items.append(self.ahead.get_nowait())
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.fed_all.is_set():
                    break
                try:
                    items.append(self.ahead.get(timeout=remaining))
                except queue.Empty:
                    break
        return items

    def _send_batch(self, provider: Provider, claimed: list[_Item], journal: _Journal) -> _Outcome:
        outcome = _Outcome()
        by_key = {m.key: row for row, m in claimed}  # type: ignore[union-attr]
        messages: list[Message] = [m for _, m in claimed]  # type: ignore[misc]
        units = len(messages) if provider.rate_unit == "message" else 1
        wait = self.limiter.reserve(units)
        if self.stopping.is_set() or (wait > 0 and self.stopping.wait(wait)):
            outcome.untouched = [row for row, _ in claimed]
            return outcome
        journal.handed([row for row, _ in claimed])
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
            # The provider says nothing more of this batch went out: back to the queue,
            # except the messages it answered before it stopped (exc.results).
            self._fail(exc)
            early = _early_results(exc, by_key)
            for m in messages:
                if m.key in early:
                    outcome.results.append((by_key[m.key], early[m.key]))
                else:
                    outcome.untouched.append(by_key[m.key])
            return outcome
        except Exception as exc:  # we cannot know what went out, beyond what was answered
            self._fail(exc)
            early = _early_results(exc, by_key)
            for m in messages:
                outcome.results.append((by_key[m.key], early.get(m.key) or DeliveryResult(
                    m.key, Outcome.UNCERTAIN, error=_describe(exc))))
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

    def _worker(self, provider: Provider, journal: _Journal) -> None:
        done = _Outcome()  # results journaled but not yet in the database
        per_call = max(1, provider.max_batch)
        try:
            while not self.stopping.is_set():
                items = self._take(self.claim_size, done, journal)
                if not items:
                    break
                claimed = self._commit(done, items)
                journal.clear()  # everything it held is in the database now
                done.clear()
                for start in range(0, len(claimed), per_call):
                    part = claimed[start:start + per_call]
                    if self.stopping.is_set():
                        done.untouched += [row for row, _ in claimed[start:]]
                        break
                    part = self._drop_stopped(part)
                    if not part:
                        continue
                    done.untouched += [row for row, _ in part]  # in case send blows up
                    outcome = self._send_batch(provider, part, journal)
                    del done.untouched[-len(part):]
                    journal.results(outcome)
                    done.extend(outcome)
            if done:
                self._commit(done, [])
                journal.clear()
                done.clear()
        except BaseException as exc:  # noqa: B036 — record, then let run() report it
            self._fail(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            if done:
                with self.cond, self.conn:
                    self.conn.execute("BEGIN IMMEDIATE")
                    self._record(done)
                journal.clear()

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
            self.batch_size = max(1, first.max_batch)
            # Rows claimed per transaction: a few provider calls' worth, so the log costs
            # one commit per chunk; the journal keeps what a crash leaves uncertain to
            # the messages actually in the provider's hands.
            self.claim_size = min(max(self.batch_size, CLAIM_CHUNK), 1000)
            if rate:
                self.claim_size = max(self.batch_size, min(self.claim_size, int(rate) or 1))
            # Enough prepared messages for every worker's next chunk, but bounded (memory).
            size = min(max(4, 2 * self.concurrency * self.claim_size), 2000)
            self.ahead: queue.Queue[_Item] = queue.Queue(maxsize=size)
            self.chunk = min(max(64, self.claim_size), 1000)
            journals = [
                _Journal(self.database.with_name(
                    f".{self.database.name}.campaign-{self.campaign_id}.w{i}.journal"))
                for i in range(len(providers))
            ]
            if self.on_progress is not None:
                self.on_progress(Counts(**self.counts.as_dict()))
            threads = [threading.Thread(target=self._feed, daemon=True,
                                        name=f"feed-{self.campaign_id}")]
            threads += [
                threading.Thread(target=self._worker, args=(p, journals[i]), daemon=True,
                                 name=f"send-{self.campaign_id}-{i}")
                for i, p in enumerate(providers)
            ]
            for t in threads:
                t.start()
            restore_signals = _stop_signals_as_ctrl_c()
            try:
                for t in threads:
                    while t.is_alive():
                        t.join(0.2)  # a short join keeps Ctrl-C responsive
            except KeyboardInterrupt:
                restore_signals()  # a second kill is not caught: it ends the process
                self.result.interrupted = True
                self.stopping.set()
                with self.cond:
                    self.cond.notify_all()
                for t in threads:
                    t.join()
            finally:
                restore_signals()
            for journal in journals:  # every result is in the database now
                journal.remove()
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


def _stop_signals_as_ctrl_c() -> Callable[[], None]:
    """Make SIGTERM and SIGHUP stop a send as Ctrl-C does; returns what undoes it.

    `kill`, systemd or docker stopping the process, or closing its terminal would
    otherwise end it at once and leave the messages in flight `uncertain`; now they
    get their answer and are recorded, and the rest stay queued. Only where the
    signal would kill (nohup's ignored SIGHUP stays ignored), from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    replaced: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            replaced[sig] = signal.signal(sig, stop)

    def restore() -> None:
        while replaced:
            sig, handler = replaced.popitem()
            signal.signal(sig, handler)

    return restore


_Item = tuple[DeliveryRow, "Message | Exception"]


@dataclass
class _Outcome:
    results: list[tuple[DeliveryRow, DeliveryResult]] = field(default_factory=list)
    untouched: list[DeliveryRow] = field(default_factory=list)  # never reached the provider

    def __bool__(self) -> bool:
        return bool(self.results or self.untouched)

    def extend(self, other: _Outcome) -> None:
        self.results += other.results
        self.untouched += other.untouched

    def clear(self) -> None:
        self.results = []
        self.untouched = []


def _early_results(exc: Exception, by_key: dict[str, DeliveryRow]) -> dict[str, DeliveryResult]:
    """The results a provider attached to the exception that stopped its batch (`results`)."""
    early = getattr(exc, "results", None)
    if not isinstance(early, list):
        return {}
    return {
        r.key: r for r in early
        if isinstance(r, DeliveryResult) and r.key in by_key and r.outcome != Outcome.RETRY
    }


def _describe(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ").strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _reason(error: str | None) -> str:
    return (error or "no reason given").replace("\r", " ").replace("\n", " ")[:1000]
