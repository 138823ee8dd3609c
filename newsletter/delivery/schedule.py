"""Scheduled sends: `send DRAFT --to … --at TIME` records one; `newsletter run` sends it.

A schedule names a draft, an audience and a time; nothing is built for readers and no
audience is fixed until it is sent (readers who join before the time get it). When the
time comes, `run_due()` claims the schedule in one transaction, builds the issue and hands
it to the very same `send_draft()` as an interactive send, with the pre-send check its
caller (`newsletter run`) handed in, so the check, the delivery log, its exactly-once
promise, resume after a crash and the campaign lock all apply. Two overlapping runs cannot both
claim it; a run that died mid-send leaves it claimed, and the next run resumes it (the
lock file tells a live sender from a dead one).

A draft edited after it was scheduled is noted; by default it is sent as it is at send
time (`[schedule] if_edited = "send"`), or held for the writer (`if_edited = "hold"`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlite_utils

from newsletter import store
from newsletter.audience.events import now_iso
from newsletter.compose.issue import build_issue
from newsletter.compose.source import draft_files, parse_draft, resolve_draft
from newsletter.delivery.sending import MakeLive, PreSendCheck, send_draft
from newsletter.errors import DeliveryError, NewsletterError, ProviderError
from newsletter.settings import Settings

# A send started this much after its time is reported as late.
LATE = timedelta(minutes=2)
_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True)
class Scheduled:
    id: int
    draft_path: str
    slug: str
    subject: str
    audience: str
    send_at: str  # ISO 8601 UTC
    status: str  # scheduled | sending | sent | cancelled | held | failed
    created_at: str
    draft_sha: str
    provider: str | None
    resend: bool
    campaign_id: int | None
    note: str

    @property
    def when(self) -> datetime:
        return datetime.fromisoformat(self.send_at.replace("Z", "+00:00"))


_COLUMNS = ("id, draft_path, slug, subject, audience, send_at, status, created_at, draft_sha, "
            "provider, resend, campaign_id, note")


def _row(values: tuple[Any, ...]) -> Scheduled:
    (schedule_id, draft_path, slug, subject, audience, send_at, status, created_at, draft_sha,
     provider, resend, campaign_id, note) = values
    return Scheduled(schedule_id, draft_path, slug, subject, audience, send_at, status,
                     created_at, draft_sha, provider, bool(resend), campaign_id, note or "")


def parse_at(text: str, now: datetime | None = None) -> datetime:
    """`--at`: "2026-12-08 07:00" (local time), with "+01:00"/"Z" or a zone name after it.

    Returns an aware UTC time; a time in the past, or one the clocks skip at a daylight
    saving change, is refused; a time that happens twice is the first of the two.
    """
    raw = " ".join(text.split())
    zone = None
    head, _, tail = raw.rpartition(" ")
    if head and "/" in tail or tail in ("UTC", "GMT"):
        try:
            zone = ZoneInfo(tail)
        except (ZoneInfoNotFoundError, ValueError):
            raise DeliveryError(f"--at {text!r}: {tail!r} is not a time zone (write it like "
                                "Europe/Paris, or give an offset like +01:00)") from None
        raw = head
    moment = None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        for fmt in _FORMATS:
            try:
                moment = datetime.strptime(raw, fmt)
                break
            except ValueError:
                continue
    if moment is None or (len(raw) <= 10):
        raise DeliveryError(f'--at {text!r} is not a date and time: write it like '
                            '"2026-12-08 07:00" (local time), "2026-12-08 07:00 Europe/Paris" '
                            'or "2026-12-08T07:00+01:00"')
    if moment.tzinfo is None:
        wall = moment
        moment = moment.replace(tzinfo=zone) if zone else moment.astimezone()  # local time
        # A wall-clock time the clocks skip (02:30 the night summer time starts) comes
        # back as another time: refuse it rather than send an hour early or late. A time
        # that happens twice (the night it ends) is its first occurrence.
        back = moment.astimezone(UTC).astimezone(zone) if zone else \
            moment.astimezone(UTC).astimezone()
        if back.replace(tzinfo=None) != wall:
            place = zone.key if zone else "your local time zone"
            raise DeliveryError(
                f"--at {text!r}: {wall:%Y-%m-%d %H:%M} does not exist in {place} (the clocks "
                f"jump past it): give a time after the change, or an offset like +01:00")
    moment = moment.astimezone(UTC)
    now = now or datetime.now(UTC)
    if moment <= now:
        shown = moment.astimezone().strftime("%Y-%m-%d %H:%M %Z")
        raise DeliveryError(f"--at {text!r} ({shown}) is in the past: give a time to come, or "
                            "send now without --at")
    return moment


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def schedule_send(
    settings: Settings, draft: str, to: str, at: datetime, *,
    provider: str | None = None, resend: bool = False,
) -> Scheduled:
    """Record a scheduled send; checks now what can be checked now (draft, audience, resend)."""
    from newsletter.delivery.log import next_number, refuse_resend
    from newsletter.delivery.recipients import audience_for_issue, audience_where

    audience = audience_for_issue(settings, to, ())
    if audience.kind != "list":
        raise DeliveryError("--at schedules a send to the list or a segment: send a test to "
                            "addresses now, without --at")
    path = resolve_draft(settings, draft)
    issue = build_issue(settings, path)  # a broken draft is refused now, not at 7 am
    db = store.connect(settings.database)
    try:
        # A segment naming a tag or attribute nobody has is refused now too; the stored
        # text is the canonical one the send re-reads at its time.
        audience_where(db, audience)
        refuse_resend(db, issue.slug, audience, resend)
        label = os.path.relpath(path, settings.root)
        with db.conn:
            db.execute("BEGIN IMMEDIATE")
            twin = db.execute(
                "SELECT id, send_at FROM schedules WHERE slug = ? AND audience = ? "
                "AND status IN ('scheduled', 'sending', 'held')", [issue.slug, audience.spec]
            ).fetchone()
            if twin is not None:
                raise DeliveryError(
                    f"{issue.slug} is already scheduled for {audience.spec} (#{twin[0]}, "
                    f"{twin[1]}): cancel it first with `newsletter send --cancel {twin[0]}`"
                )
            # One numbering with campaigns: its campaign, when sent, keeps this number.
            number = next_number(db)
            db.execute(
                "INSERT INTO schedules (id, draft_path, slug, subject, audience, send_at, "
                "status, created_at, draft_sha, provider, resend, note) "
                "VALUES (?, ?, ?, ?, ?, ?, 'scheduled', ?, ?, ?, ?, '')",
                [number, label, issue.slug, issue.subject, audience.spec,
                 at.strftime("%Y-%m-%dT%H:%M:%SZ"), now_iso(), _sha(path), provider,
                 int(resend)],
            )
        return get(db, number)
    finally:
        db.conn.close()


def get(db: sqlite_utils.Database, schedule_id: int) -> Scheduled:
    row = db.execute(f"SELECT {_COLUMNS} FROM schedules WHERE id = ?", [schedule_id]).fetchone()
    if row is None:
        raise DeliveryError(f"there is no scheduled send #{schedule_id}: `newsletter campaigns` "
                            "lists them")
    return _row(row)


def list_schedules(db: sqlite_utils.Database, pending_only: bool = False) -> list[Scheduled]:
    where = "WHERE status IN ('scheduled', 'sending', 'held')" if pending_only else ""
    rows = db.execute(f"SELECT {_COLUMNS} FROM schedules {where} ORDER BY send_at, id")
    return [_row(r) for r in rows]


def cancel(settings: Settings, schedule_id: int) -> Scheduled:
    """Cancel a send that has not started; a started one is refused (it is in the log)."""
    db = store.connect(settings.database)
    try:
        with db.conn:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT 1 FROM schedules WHERE id = ?", [schedule_id]).fetchone()
            if row is None and db.execute(
                    "SELECT 1 FROM campaigns WHERE id = ?", [schedule_id]).fetchone():
                raise DeliveryError(
                    f"campaign {schedule_id} has started: it can no longer be cancelled "
                    f"(`newsletter campaigns {schedule_id}` shows how far it got)")
            found = get(db, schedule_id)
            if found.status in ("sending", "sent"):
                raise DeliveryError(
                    f"scheduled send #{schedule_id} has started (campaign "
                    f"{found.campaign_id or '?'}): it can no longer be cancelled")
            if found.status != "cancelled":
                db.execute("UPDATE schedules SET status = 'cancelled', note = ? WHERE id = ?",
                           [f"cancelled {now_iso()}", schedule_id])
        return get(db, schedule_id)
    finally:
        db.conn.close()


@dataclass(frozen=True)
class RunLine:
    schedule: Scheduled
    outcome: str  # sent | held | failed | busy | retry
    text: str


class _ScheduleLock:
    """A non-blocking flock per schedule: held by the run sending it, released if it dies."""

    def __init__(self, database: Path, schedule_id: int):
        self.path = database.with_name(f".{database.name}.schedule-{schedule_id}.lock")
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _claim(db: sqlite_utils.Database, item: Scheduled) -> bool:
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        changed = db.execute(
            "UPDATE schedules SET status = 'sending' WHERE id = ? AND status IN "
            "('scheduled', 'sending')", [item.id]).rowcount
    return changed == 1


def _finish(db: sqlite_utils.Database, item: Scheduled, status: str, note: str,
            campaign_id: int | None = None) -> None:
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE schedules SET status = ?, note = ?, campaign_id = coalesce(?, "
                   "campaign_id) WHERE id = ?", [status, note, campaign_id, item.id])


def run_due(
    settings: Settings, *, check: PreSendCheck, web: MakeLive | None = None,
    now: datetime | None = None, on_line: Callable[[RunLine], None] | None = None,
    on_progress: Callable[..., None] | None = None,
) -> list[RunLine]:
    """Send every schedule whose time has come (and resume any a dead run left half-sent).

    `check` is the pre-send check each send runs (the writer's `pre_send_errors`), `web`
    what puts its page and images online first (the writer's `make_live`).
    """
    now = now or datetime.now(UTC)
    policy = settings.schedule.if_edited
    lines: list[RunLine] = []

    def say(item: Scheduled, outcome: str, text: str) -> None:
        line = RunLine(item, outcome, text)
        lines.append(line)
        if on_line:
            on_line(line)

    db = store.connect(settings.database)
    try:
        due = [s for s in list_schedules(db, pending_only=True)
               if s.status != "held" and s.when <= now]
        for item in due:
            lock = _ScheduleLock(settings.database, item.id)
            if not lock.acquire():
                say(item, "busy", f"#{item.id} {item.slug}: being sent by another run")
                continue
            try:
                if not _claim(db, item):
                    continue  # cancelled meanwhile
                path = settings.root / item.draft_path
                late = now - item.when
                when = item.when.astimezone().strftime("%Y-%m-%d %H:%M %Z")
                lateness = f", {_duration(late)} late" if late > LATE else ""
                notes = []
                if not path.exists():
                    moved = _moved_draft(settings, item)
                    if moved is not None:
                        path = moved
                        notes.append("the draft moved to "
                                     f"{os.path.relpath(moved, settings.root)}: sent from there")
                if not path.exists():
                    _finish(db, item, "failed", f"the draft {item.draft_path} is gone")
                    say(item, "failed", f"#{item.id} {item.slug}: the draft {item.draft_path} "
                                        "is gone: nothing was sent")
                    continue
                if _sha(path) != item.draft_sha:
                    if policy == "hold" and item.status == "scheduled":
                        _finish(db, item, "held", "draft edited after scheduling: held")
                        say(item, "held", f"#{item.id} {item.slug}: the draft was edited after "
                            "it was scheduled: held (send it with `newsletter send`, or set "
                            "[schedule] if_edited = \"send\")")
                        continue
                    notes.append("the draft was edited after it was scheduled: sent as it is now")
                try:
                    # Built once, as it is now: checked and sent as built.
                    issue = build_issue(settings, path.resolve())
                    report = send_draft(settings, issue, item.audience, check=check, web=web,
                                        provider=item.provider, resend=item.resend,
                                        confirm=None, on_progress=on_progress)
                except ProviderError as exc:
                    # Nothing or part went out; the delivery log resumes it on the next run.
                    _finish(db, item, "scheduled", f"retrying: {exc}")
                    say(item, "retry", f"#{item.id} {item.slug}: {exc} (the next run resumes)")
                    continue
                except NewsletterError as exc:
                    _finish(db, item, "failed", str(exc))
                    say(item, "failed", f"#{item.id} {item.slug} (due {when}): not sent: {exc}")
                    continue
                campaign = report.campaign
                error = report.error
                if error is not None or (report.run is not None and report.run.interrupted):
                    _finish(db, item, "scheduled", f"interrupted: {error or 'stopped'}",
                            campaign.id)
                    say(item, "retry", f"#{item.id} {item.slug}: campaign {campaign.id} "
                        f"stopped ({error or 'interrupted'}): the next run resumes it")
                    continue
                note = "; ".join(notes)
                _finish(db, item, "sent", note, campaign.id)
                counts = campaign.counts
                detail = f": {counts.sent:,} sent, {counts.failed:,} failed, " \
                    f"{counts.uncertain:,} uncertain"
                say(item, "sent", f"#{item.id} {item.slug} → {item.audience} (due {when}"
                    f"{lateness}): campaign {campaign.id}{detail}" + (f"; {note}" if note else ""))
            finally:
                lock.release()
    finally:
        db.conn.close()
    return lines


def _moved_draft(settings: Settings, item: Scheduled) -> Path | None:
    """The scheduled draft under another name (same content, or same slug), if it is so."""
    files = draft_files(settings)
    for path in files:  # renamed only: the very same file
        if _sha(path) == item.draft_sha:
            return path
    for path in files:  # renamed and edited: its front matter names the same slug
        try:
            if parse_draft(path).slug == item.slug:
                return path
        except NewsletterError:
            continue
    return None


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"
