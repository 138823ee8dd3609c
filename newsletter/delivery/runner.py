"""The send engine: CampaignRunner sends the queued rows of one campaign.

A campaign and one `deliveries` row per recipient are written in one
transaction before anything is sent. A row then moves
queued → sending → sent | failed | uncertain | skipped:

- the thread that calls `run()` owns the SQLite connection that does every
  write and reads the queue (the dispatcher): it reads queued rows and builds their
  messages ahead into a small bounded buffer (memory stays flat;
  personalization overlaps the network wait), and answers the workers;
- a worker (one per connection, each with its own provider instance) talks
  to its provider and writes nothing to SQLite (it only reads, see below).
  Over a queue it hands the dispatcher the results of its previous chunk and
  asks for the next; the dispatcher records those
  results and marks the new chunk `sending` in one short transaction,
  re-checking that each subscriber is still active (else `skipped`), so at
  most one chunk per worker is ever `sending`, and the log costs one commit
  per chunk, not per message. The worker hands the chunk to `provider.send`
  in batches of at most `provider.max_batch`, pacing by the shared rate
  limiter. After the limiter's wait, right before each batch starts, it looks
  whether a reader stopped (unsubscribed, removed) meanwhile: on its own
  read-only connection it reads `PRAGMA data_version`, which moves only when
  another connection commits, and reads its chunk's readers again only then
  (a few microseconds per message, no round trip to the dispatcher). Those
  rows never start; the dispatcher records them `skipped` with the next claim.
  So once an unsubscribe is committed, no new message to that reader starts;
- around every `provider.send` the worker appends to its journal file (see
  `journal.py`) "handed over: these rows" and then their results. Appends are
  cheap and survive kill -9 (no fsync: the kernel has them), so after a crash
  the journal says which `sending` rows were answered, which were in the
  provider's hands without an answer (`uncertain`) and which never left
  (queued again; see `recovery.py`);
- each of the dispatcher's transactions also appends its outcomes and the rows it
  marks `sending` to the change journal (`newsletter/changes.py`), fsync'ed once before
  it commits: a restore from a snapshot taken mid-send knows every delivery that went
  out, and makes only those in a provider's hands `uncertain`;
- RETRY results and TransientBatchError go back to `queued` with attempts+1
  and an exponential backoff kept in memory (a resumed run retries them at
  once); after `max_attempts` they are `failed` with the last reason;
- ProviderError stops the send: the rows of the batch go back to `queued`;
- an unexpected exception inside `provider.send`, or an UNCERTAIN result,
  leaves the batch `uncertain`: it may or may not have gone out;
- a permanent refusal that means "no such address" is also a hard bounce,
  applied under the bounce policy (`audience/policy.py`).

Ctrl-C, SIGTERM and SIGHUP stop a run cleanly: the messages in the providers'
hands get their answers and are recorded, the rest stay queued. A second one
ends the process.

Only one process sends a campaign at a time (`lock.py`); a campaign whose
status is `sending` but whose lock is free was interrupted, and `sending.py`
settles its rows from the journals before running it again.

Nothing here knows about SMTP, HTTP or drafts: the caller passes a provider
factory and a function that turns a delivery row into a Message.
"""

from __future__ import annotations

import dataclasses
import errno
import heapq
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils

from newsletter import changes, store
from newsletter.audience.events import now_iso
from newsletter.audience.policy import BouncePolicy, Feedback, means_no_such_address
from newsletter.audience.policy import apply as apply_feedback
from newsletter.delivery.journal import Journal, journal_path
from newsletter.delivery.log import Counts
from newsletter.delivery.providers.base import (
    DeliveryResult,
    Outcome,
    Provider,
    TransientBatchError,
)
from newsletter.delivery.rate import RateLimiter
from newsletter.delivery.recipients import DELIVERY_ROW_SELECT, DeliveryRow, delivery_row
from newsletter.errors import DeliveryError, ProviderError
from newsletter.signals import stop_signals_call

if TYPE_CHECKING:
    from newsletter.compose.message import Message


MAX_BACKOFF = 300.0  # seconds: the longest pause between two attempts we choose ourselves
CLAIM_CHUNK = 32  # rows claimed per transaction (at least one provider batch)
IDLE_WAIT = 0.1  # seconds the dispatcher waits for a worker before it looks around again


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
    `key == str(row.id)`. The caller holds the campaign lock. `run()` may be
    called again: each run has its own connection, workers and journals.
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
        bounce_policy: BouncePolicy | None = None,
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
        # A permanent "no such address" is a hard bounce, applied under this policy.
        self.bounce_policy = bounce_policy or BouncePolicy()
        self.on_progress = on_progress

    def run(self) -> RunResult:
        """Send every queued row; returns when all are settled, on ProviderError or Ctrl-C."""
        started = time.monotonic()
        db = store.connect(self.database)
        providers: list[Provider] = []
        try:
            try:
                for _ in range(self.concurrency):
                    provider = self.make_provider()
                    providers.append(provider)
                    provider.open()
            except ProviderError as exc:  # nothing was claimed yet: every row stays queued
                result = RunResult(_count_states(db.conn, self.campaign_id), error=exc)
                result.seconds = time.monotonic() - started
                return result
            dispatcher = _Dispatcher(self, db, providers)
            return dispatcher.run(started)
        finally:
            for provider in providers:
                try:
                    provider.close()
                except Exception:  # closing must not hide what happened
                    pass
            db.conn.close()


_Item = tuple[DeliveryRow, "Message | Exception"]


@dataclass
class _Outcome:
    """A worker's results not yet in the database (its journal holds them meanwhile)."""

    results: list[tuple[DeliveryRow, DeliveryResult]] = field(default_factory=list)
    untouched: list[DeliveryRow] = field(default_factory=list)  # never reached the provider
    errors: list[Exception] = field(default_factory=list)  # what stopped the send, if anything
    # Claimed, but their reader stopped before the message started: (row, status now).
    stopped: list[tuple[DeliveryRow, str]] = field(default_factory=list)
    # Delivery id → when its start was decided (just before the check that its reader is
    # still active): its `sent_at`, so an answered unsubscribe orders against it exactly.
    started: dict[int, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.results or self.untouched or self.errors or self.stopped)

    def extend(self, other: _Outcome) -> None:
        self.results += other.results
        self.untouched += other.untouched
        self.errors += other.errors
        self.stopped += other.stopped
        self.started.update(other.started)


@dataclass
class _Claim:
    """From a worker: record `done`, then mark up to `want` rows `sending` for it (0: it ends).

    The answer on `reply`: the claimed items; [] when there is nothing more for it (it
    ends); None when `done` could not be recorded (it ends and keeps its journal).
    """

    worker: int
    done: _Outcome
    want: int
    reply: queue.SimpleQueue[list[_Item] | None]


class _Dispatcher:
    """One run: the thread that calls `run()` owns the connection; workers ask it over a queue."""

    def __init__(self, runner: CampaignRunner, db: sqlite_utils.Database,
                 providers: Sequence[Provider]):
        self.runner = runner
        self.db = db
        self.conn = db.conn
        self.campaign_id = runner.campaign_id
        self.counts = _count_states(self.conn, self.campaign_id)
        self.result = RunResult(self.counts)
        self.errors: list[Exception] = []
        self.stopping = threading.Event()
        self.requests: queue.SimpleQueue[_Claim] = queue.SimpleQueue()

        first = providers[0]
        rate = runner.rate if runner.rate is not None else first.default_rate
        self.batch_size = max(1, first.max_batch)
        # Rows claimed per transaction: a few provider calls' worth, so the log costs
        # one commit per chunk; the journal keeps what a crash leaves uncertain to
        # the messages actually in the provider's hands.
        claim_size = min(max(self.batch_size, CLAIM_CHUNK), 1000)
        if rate:
            claim_size = max(self.batch_size, min(claim_size, int(rate) or 1))
        # Enough prepared messages for every worker's next chunk, but bounded (memory).
        self.ahead = min(max(4, 2 * len(providers) * claim_size), 2000)
        self.chunk = min(max(64, claim_size), 1000)  # rows read per query

        self.ready: deque[_Item] = deque()  # rows with their message built, not yet claimed
        self.unbuilt: deque[DeliveryRow] = deque()  # rows read, message not built yet
        self.retry_heap: list[tuple[float, int]] = []  # (due monotonic time, delivery id)
        self.cursor = 0  # highest delivery id read from the queue in this run
        self.cursor_done = False
        self.pending = 0  # rows read whose outcome is not recorded yet
        self.parked: list[_Claim] = []  # workers waiting for rows (retries not due yet)
        self.unrecorded: set[int] = set()  # workers whose journal holds unrecorded results
        # Rows of the open transaction, for the change journal (see _commit).
        self.touched: list[int] = []  # their outcome was recorded
        self.handed: list[int] = []  # marked `sending`: about to go to a provider

        limiter = RateLimiter(rate)
        self.journals = [
            Journal(journal_path(runner.database, self.campaign_id, i))
            for i in range(len(providers))
        ]
        self.workers = [
            _Worker(i, provider, self.journals[i], self.requests, self.stopping, limiter,
                    claim_size=claim_size,
                    readers=_ReaderWatch(runner.database) if runner.check_subscribers else None)
            for i, provider in enumerate(providers)
        ]
        self.working = len(self.workers)  # workers that have not ended yet

    # -- the loop ---------------------------------------------------------------------

    def run(self, started: float) -> RunResult:
        self._progress()
        threads = [
            threading.Thread(target=worker.run, daemon=True,
                             name=f"send-{self.campaign_id}-{worker.index}")
            for worker in self.workers
        ]
        restore_signals = stop_signals_call(self._interrupt)
        try:
            for t in threads:
                t.start()
            while self.working:
                self._step()
        finally:
            restore_signals()
            self.stopping.set()
            if self.working:  # we are leaving early (a bug, a second Ctrl-C): let them end
                for worker in self.workers:
                    worker.claims.put(None)
        for t in threads:
            t.join()
        for i, journal in enumerate(self.journals):
            journal.close(remove=i not in self.unrecorded)  # kept: resume reads it
        self.result.counts = self.counts
        self.result.seconds = time.monotonic() - started
        if self.errors:
            self.result.error = self.errors[0]
        return self.result

    def _step(self) -> None:
        """Answer one request, or build one message ahead, or wait a little for a request."""
        try:
            request = self.requests.get_nowait()
        except queue.Empty:
            if self._prepare():
                return
            try:
                request = self.requests.get(timeout=self._idle_wait())
            except queue.Empty:
                self._serve_parked()
                return
        # Group commit: the workers that asked meanwhile (while the last transaction's
        # journal fsync ran) are answered by the same transaction and one fsync.
        claims = [request]
        while len(claims) < len(self.workers):
            try:
                claims.append(self.requests.get_nowait())
            except queue.Empty:
                break
        self._answer_claims(claims)
        if self.parked:
            self._serve_parked()

    def _interrupt(self) -> None:
        """Ctrl-C, SIGTERM, SIGHUP: workers finish the batch in hand, nothing new starts."""
        self.result.interrupted = True
        self.stopping.set()

    def _idle_wait(self) -> float:
        if self.parked and self.retry_heap:
            return min(IDLE_WAIT, max(0.0, self.retry_heap[0][0] - time.monotonic()))
        return IDLE_WAIT

    def _settled(self) -> bool:
        """Nothing left to read, retry or wait for."""
        return (self.cursor_done and not self.retry_heap and self.pending == 0
                and not self.ready and not self.unbuilt)

    # -- reading and building ahead -----------------------------------------------------

    def _prepare(self) -> bool:
        """Build one more message ahead, or read more rows; False when there is nothing to do."""
        if self.stopping.is_set() or len(self.ready) >= self.ahead:
            return False
        if not self.unbuilt:
            try:
                return self._read_rows()
            except Exception as exc:  # the database failed us: stop, and say why
                self._fail(exc)
                return False
        row = self.unbuilt.popleft()
        try:
            item: _Item = (row, self.runner.make_message(row))
        except Exception as exc:  # one bad recipient must not stop the campaign
            item = (row, exc)
        self.ready.append(item)
        return True

    def _read_rows(self) -> bool:
        """Due retries first, then the next queued rows; False when none is due now."""
        now = time.monotonic()
        ids: list[int] = []
        while self.retry_heap and self.retry_heap[0][0] <= now and len(ids) < self.chunk:
            ids.append(heapq.heappop(self.retry_heap)[1])
        found: list[Sequence[Any]] = []
        if ids:
            marks = ",".join("?" * len(ids))
            found = self.conn.execute(
                DELIVERY_ROW_SELECT + f"WHERE d.id IN ({marks}) AND d.state = 'queued' "
                "ORDER BY d.id", ids,
            ).fetchall()
        if not found and not self.cursor_done:
            found = self.conn.execute(
                DELIVERY_ROW_SELECT + "WHERE d.campaign_id = ? AND d.state = 'queued' "
                "AND d.id > ? ORDER BY d.id LIMIT ?",
                [self.campaign_id, self.cursor, self.chunk],
            ).fetchall()
            if len(found) < self.chunk:
                self.cursor_done = True
            if found:
                self.cursor = found[-1][0]
        self.pending += len(found)
        self.unbuilt.extend(delivery_row(values) for values in found)
        return bool(found)

    def _take(self, want: int) -> list[_Item]:
        """Up to `want` prepared items: at least one when any row is due; for batch APIs as
        many as are due (full batches: a provider call costs more than building)."""
        enough = want if self.batch_size > 1 else 1
        while len(self.ready) < enough and self._prepare():
            pass
        return [self.ready.popleft() for _ in range(min(want, len(self.ready)))]

    # -- answering the workers ------------------------------------------------------------

    def _answer_claim(self, claim: _Claim) -> None:
        self._answer_claims([claim])

    def _answer_claims(self, claims: list[_Claim]) -> None:
        taken = [self._take(c.want) if c.want and not self.stopping.is_set() else []
                 for c in claims]
        try:
            answers = self._commit([(c.done, items) for c, items in zip(claims, taken,
                                                                         strict=True)])
        except Exception as exc:  # not recorded: their journals keep the results for resume
            self._fail(exc)
            for claim in claims:
                self.unrecorded.add(claim.worker)
                self._end(claim, None)
            return
        for claim, claimed in zip(claims, answers, strict=True):
            self._reply(claim, claimed)

    def _reply(self, claim: _Claim, claimed: list[_Item]) -> None:
        if claimed:
            claim.reply.put(claimed)
        elif not claim.want or self.stopping.is_set() or self._settled():
            self._end(claim, [])
        else:  # rows are still out (retries not due, other workers' results): wait
            self.parked.append(
                _Claim(claim.worker, _Outcome(), claim.want, claim.reply))

    def _serve_parked(self) -> None:
        waiting, self.parked = self.parked, []
        for claim in waiting:
            self._answer_claim(claim)

    def _end(self, claim: _Claim, answer: list[_Item] | None) -> None:
        self.working -= 1
        claim.reply.put(answer)

    def _fail(self, exc: Exception) -> None:
        if isinstance(exc, sqlite3.Error | OSError):  # a full disk above all: say so, once
            exc = storage_error(exc, self.runner.database)
        self.errors.append(exc)
        self.stopping.set()

    def _progress(self) -> None:
        if self.runner.on_progress is not None:
            self.runner.on_progress(Counts(**self.counts.as_dict()))

    # -- the database -------------------------------------------------------------------

    def _commit(self, work: list[tuple[_Outcome, list[_Item]]]) -> list[list[_Item]]:
        """One short transaction: for each worker record `done`, claim `items`; returns
        the claimed ones, per worker."""
        for done, _ in work:
            self.errors += done.errors
        if not any(done or items for done, items in work):
            return [[] for _ in work]
        # What the counts said before: a transaction that fails (a full disk) changed no
        # row, so it changes no count either, and the summary matches the rows.
        counts, result = dataclasses.replace(self.counts), dataclasses.replace(self.result)
        pending = self.pending
        try:
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                self.touched, self.handed = [], []
                answers = []
                for done, items in work:
                    self._record(done)
                    answers.append(self._claim(items) if items else [])
                # One append and fsync per committed batch, before the commit: outcomes,
                # then the rows about to be handed over (a restore makes those uncertain).
                ops = [changes.deliveries_op(self.conn, self.touched)] if self.touched else []
                if self.handed:
                    ops.append({"op": "handed", "campaign": self.campaign_id,
                                "ids": self.handed})
                changes.append(self.conn, ops)
        except BaseException:
            self.counts, self.result, self.pending = counts, result, pending
            self.result.counts = counts
            raise
        self._progress()
        return answers

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
                for row, exc in broken
            ]))
        wanted = [(row, m) for row, m in items if not isinstance(m, Exception)]
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        active = (
            "AND (SELECT status FROM subscribers s WHERE s.id = deliveries.subscriber_id) "
            "= 'active'" if self.runner.check_subscribers else ""
        )
        claimed_ids = {
            r[0] for r in self.conn.execute(
                f"UPDATE deliveries SET state = 'sending', updated_at = ? WHERE id IN ({marks}) "
                f"AND state = 'queued' {active} RETURNING id",
                [stamp, *(row.id for row, _ in wanted)],
            ).fetchall()
        }
        claimed: list[_Item] = [(row, m) for row, m in wanted if row.id in claimed_ids]
        self.handed += [row.id for row, _ in claimed]
        left = [row.id for row, _ in wanted if row.id not in claimed_ids]
        if left:
            skipped = 0
            if self.runner.check_subscribers:
                skipped_ids = [r[0] for r in self.conn.execute(
                    "UPDATE deliveries SET state = 'skipped', updated_at = ?, error = 'subscriber '"
                    " || coalesce((SELECT status FROM subscribers s WHERE s.id = "
                    "deliveries.subscriber_id), 'removed') || ' before sending' "
                    f"WHERE id IN ({','.join('?' * len(left))}) AND state = 'queued' "
                    "RETURNING id",
                    [stamp, *left],
                ).fetchall()]
                self.touched += skipped_ids
                skipped = len(skipped_ids)
            self.result.skipped += skipped
            self.counts.queued -= skipped
            self.counts.skipped += skipped
            self.pending -= len(left)
        self.counts.queued -= len(claimed)
        self.counts.sending += len(claimed)
        return claimed

    def _record(self, outcome: _Outcome) -> None:
        """Within the open transaction: write one batch's results."""
        stamp = now_iso()
        self.touched += [row.id for row, _ in outcome.results]
        self.touched += [row.id for row in outcome.untouched]
        self.touched += [row.id for row, _ in outcome.stopped]
        sent, failed, uncertain, queued = [], [], [], []
        unknown: list[tuple[DeliveryRow, str]] = []  # permanent "no such address": hard bounces
        for row, result in outcome.results:
            match result.outcome:
                case Outcome.SENT:
                    sent.append((result.provider_id, outcome.started.get(row.id, stamp),
                                 stamp, row.id))
                case Outcome.FAILED:
                    failed.append((_reason(result.error), stamp, row.id))
                    if means_no_such_address(result.error):
                        unknown.append((row, _reason(result.error)))
                case Outcome.UNCERTAIN:
                    uncertain.append((_reason(result.error), stamp, row.id))
                case Outcome.RETRY if row.attempts + 1 >= self.runner.max_attempts:
                    reason = f"gave up after {row.attempts + 1} attempts: {_reason(result.error)}"
                    failed.append((reason, stamp, row.id))
                case _:  # RETRY
                    delay = min(self.runner.retry_delay * 2**row.attempts, MAX_BACKOFF)
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
        if outcome.stopped:  # their reader stopped after the claim: never started
            self.conn.executemany(
                "UPDATE deliveries SET state = 'skipped', updated_at = ?, error = ? "
                "WHERE id = ? AND state = 'sending'",
                [(stamp, f"subscriber {status} before sending", row.id)
                 for row, status in outcome.stopped],
            )
        for row, reason in unknown:  # after the row: the bounce names this campaign
            apply_feedback(self.db, Feedback("hard_bounce", row.email, "send", detail=reason,
                                             campaign_id=self.campaign_id),
                           self.runner.bounce_policy)
        n = len(outcome.results) + len(outcome.untouched) + len(outcome.stopped)
        self.counts.sending -= n
        self.counts.skipped += len(outcome.stopped)
        self.result.skipped += len(outcome.stopped)
        self.counts.sent += len(sent)
        self.counts.failed += len(failed)
        self.counts.uncertain += len(uncertain)
        self.counts.queued += len(queued) + len(outcome.untouched)
        self.result.sent += len(sent)
        self.result.failed += len(failed)
        self.result.uncertain += len(uncertain)
        self.result.retried += len(queued)
        self.pending -= n


class _Worker:
    """One sending thread: it talks to its provider and the dispatcher; it never writes to
    SQLite (it only reads whether its readers stopped, on its own read-only connection)."""

    def __init__(self, index: int, provider: Provider, journal: Journal,
                 requests: queue.SimpleQueue[_Claim], stopping: threading.Event,
                 limiter: RateLimiter, *, claim_size: int, readers: _ReaderWatch | None):
        self.index = index
        self.provider = provider
        self.journal = journal
        self.requests = requests
        self.stopping = stopping
        self.limiter = limiter
        self.claim_size = claim_size
        self.readers = readers  # None: a test send, to addresses whatever their status
        self.per_call = max(1, provider.max_batch)
        self.claims: queue.SimpleQueue[list[_Item] | None] = queue.SimpleQueue()

    def run(self) -> None:
        done = _Outcome()  # results journaled but not yet in the database
        try:
            while True:
                self.requests.put(_Claim(self.index, done, self.claim_size, self.claims))
                claimed = self.claims.get()
                if claimed is None:  # not recorded: the journal keeps it for resume
                    return
                self.journal.clear()  # everything it held is in the database now
                done = _Outcome()
                if not claimed:
                    return
                self._send_chunk(claimed, done)
        except BaseException as exc:  # noqa: B036 — handed over; run() reports it
            self.stopping.set()
            if isinstance(exc, OSError):  # the journal could not be written (a full disk)
                exc = storage_error(exc, self.journal.path)
            done.errors.append(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            self.requests.put(_Claim(self.index, done, 0, self.claims))
            if self.claims.get() is not None:
                self.journal.clear()
        finally:
            if self.readers is not None:
                self.readers.close()

    def _send_chunk(self, claimed: list[_Item], done: _Outcome) -> None:
        if self.readers is not None:
            self.readers.watch([row.id for row, _ in claimed])
        for start in range(0, len(claimed), self.per_call):
            part = claimed[start:start + self.per_call]
            if self.stopping.is_set():
                done.untouched += [row for row, _ in claimed[start:]]
                return
            done.untouched += [row for row, _ in part]  # in case send blows up
            outcome = self._send_batch(part)
            del done.untouched[-len(part):]
            # The answers are handed to the dispatcher even when the journal line cannot
            # be written (a full disk): an answer is never lost to a failed append.
            done.extend(outcome)
            self.journal.results((row.id, r) for row, r in outcome.results)

    def _send_batch(self, claimed: list[_Item]) -> _Outcome:
        provider = self.provider
        outcome = _Outcome()
        units = len(claimed) if provider.rate_unit == "message" else 1
        wait = self.limiter.reserve(units)
        if self.stopping.is_set() or (wait > 0 and self.stopping.wait(wait)):
            outcome.untouched = [row for row, _ in claimed]
            return outcome
        # Stamped before the check, so a message whose `sent_at` is later than an answer
        # was checked after it too: that would be a real late message, never a clock artefact.
        started = now_iso()
        # Right before the batch starts, after the wait: a reader who stopped meanwhile
        # (even a moment ago) is not mailed.
        if self.readers is not None:
            stopped = self.readers.stopped()
            if stopped:
                outcome.stopped = [(row, stopped[row.id]) for row, _ in claimed
                                   if row.id in stopped]
                claimed = [(row, m) for row, m in claimed if row.id not in stopped]
                if not claimed:
                    return outcome
        by_key = {m.key: row for row, m in claimed}  # type: ignore[union-attr]
        outcome.started.update((row.id, started) for row, _ in claimed)
        messages: list[Message] = [m for _, m in claimed]  # type: ignore[misc]
        self.journal.handed(row.id for row, _ in claimed)
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
            self._fail(exc, outcome)
            early = _early_results(exc, by_key)
            for m in messages:
                if m.key in early:
                    outcome.results.append((by_key[m.key], early[m.key]))
                else:
                    outcome.untouched.append(by_key[m.key])
            return outcome
        except Exception as exc:  # we cannot know what went out, beyond what was answered
            self._fail(exc, outcome)
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

    def _fail(self, exc: Exception, outcome: _Outcome) -> None:
        self.stopping.set()  # at once: the other workers start nothing new
        outcome.errors.append(exc)


class _ReaderWatch:
    """A worker's own read-only view of whether the readers of its chunk stopped.

    `PRAGMA data_version` on this connection changes only when another connection
    commits (an unsubscribe from `serve`, the dispatcher's own claims), so the
    readers are read again only then; otherwise the last answer still holds. Exact
    (it looks at the moment a batch starts) and cheap (no round trip to the
    dispatcher, a few microseconds when nothing changed).
    """

    def __init__(self, database: Path):
        self.database = database
        self.conn: sqlite3.Connection | None = None
        self.ids: list[int] = []
        self.version: int | None = None
        self.found: dict[int, str] = {}  # delivery id → its reader's status, when not active
        self.reader_of: dict[int, int | None] = {}  # delivery id → its reader
        self.requests = changes.Requests(database)

    def watch(self, ids: list[int]) -> None:
        """The rows of a newly claimed chunk: read them at the next look."""
        self.ids = ids
        self.version = None

    def stopped(self) -> dict[int, str]:
        """The watched rows whose reader is no longer active, with the status they have."""
        if self.conn is None:  # opened in the worker's thread: sqlite3 wants that
            self.conn = sqlite3.connect(
                self.database.resolve().as_uri() + "?mode=ro", uri=True, timeout=30,
                isolation_level=None)
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self.version:
            marks = ",".join("?" * len(self.ids))
            rows = self.conn.execute(
                "SELECT d.id, d.subscriber_id, coalesce(s.status, 'removed') FROM deliveries d "
                "LEFT JOIN subscribers s ON s.id = d.subscriber_id "
                f"WHERE d.id IN ({marks})", self.ids).fetchall()
            self.reader_of = {did: sid for did, sid, _ in rows}
            self.found = {did: status for did, _, status in rows if status != "active"}
            self.version = version
        # An unsubscribe `serve` journaled while the database was busy, not applied yet,
        # stops the reader exactly as the status change will.
        asked = self.requests.new()
        if asked:
            return {**{did: asked[sid] for did, sid in self.reader_of.items()
                       if sid in asked}, **self.found}
        return self.found

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _count_states(conn: sqlite3.Connection, campaign_id: int) -> Counts:
    counts = Counts()
    for state, n in conn.execute(
        "SELECT state, count(*) FROM deliveries WHERE campaign_id = ? GROUP BY state",
        [campaign_id],
    ).fetchall():
        setattr(counts, state, n)
    return counts


def storage_error(exc: sqlite3.Error | OSError, path: Path) -> Exception:
    """A full disk (or another failed write) as one line that says what to do."""
    full = (getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or getattr(exc, "errno", None) == errno.ENOSPC)
    if not full:
        return exc if isinstance(exc, OSError) else DeliveryError(
            f"the database {path.name} failed during the send ({_describe(exc)}): what was "
            "sent is kept in the worker journals; fix it, then run the same command to resume")
    return DeliveryError(
        f"the disk holding {path.parent} is full: the send stopped, and what was sent is kept "
        "in the database or its worker journals; free some space, then run the same command "
        "to resume (nobody gets the issue twice)")


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
