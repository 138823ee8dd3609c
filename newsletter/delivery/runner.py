"""CampaignRunner: send the queued rows of one campaign (feeder, workers, journal)."""

from __future__ import annotations

import heapq
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsletter import store
from newsletter.audience.events import now_iso
from newsletter.audience.policy import BouncePolicy, Feedback, means_no_such_address
from newsletter.audience.policy import apply as apply_feedback
from newsletter.delivery.log import Counts
from newsletter.delivery.providers.base import (
    DeliveryResult,
    Outcome,
    Provider,
    TransientBatchError,
)
from newsletter.delivery.rate import RateLimiter
from newsletter.delivery.recipients import DELIVERY_ROW_SELECT, DeliveryRow, delivery_row
from newsletter.delivery.recovery import _Journal
from newsletter.errors import ProviderError
from newsletter.signals import stop_signals_as_ctrl_c

if TYPE_CHECKING:
    from newsletter.compose.message import Message


MAX_BACKOFF = 300.0  # seconds: the longest pause between two attempts we choose ourselves
CLAIM_CHUNK = 32  # rows claimed per transaction (at least one provider batch)



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
        # One connection shared by the feeder and the workers, under self.cond.
        self.db = store.connect(self.database, threads=True)
        return self.db.conn

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
                if found:
                    self.pending += len(found)
                    return [delivery_row(values) for values in found]
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
            # A plain read first (the usual answer is "all still active"): no write lock.
            if not self.conn.execute(
                f"SELECT 1 FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id "
                f"WHERE d.id IN ({marks}) AND coalesce(s.status, 'removed') != 'active' LIMIT 1",
                ids,
            ).fetchone():
                return part
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
        unknown: list[tuple[DeliveryRow, str]] = []  # permanent "no such address": hard bounces
        for row, result in outcome.results:
            match result.outcome:
                case Outcome.SENT:
                    sent.append((result.provider_id, stamp, stamp, row.id))
                case Outcome.FAILED:
                    failed.append((_reason(result.error), stamp, row.id))
                    if means_no_such_address(result.error):
                        unknown.append((row, _reason(result.error)))
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
        for row, reason in unknown:  # after the row: the bounce names this campaign
            apply_feedback(self.db, Feedback("hard_bounce", row.email, "send", detail=reason,
                                             campaign_id=self.campaign_id), self.bounce_policy)
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
            restore_signals = stop_signals_as_ctrl_c()
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
