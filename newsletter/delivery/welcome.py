"""Welcome emails: a draft with `trigger: welcome`, sent once to each reader who joins.

A reader is owed the welcome when they become active through a path that asks for it:
confirming through `newsletter serve`, `subscribers add --welcome`, or `subscribers import
--welcome` (a plain import never triggers it: those readers joined long ago). That request
is an event (`welcome_requested`). The welcome draft gets one campaign (audience
"welcome"), created the first time `newsletter run` sees the draft: that moment is when
the welcome was enabled, and only readers asking after it get it — turning a welcome on
does not mail the whole list.

Each run adds the readers owed it as delivery rows (the delivery log's one row per
campaign and reader makes it exactly-once) and sends the queued rows with the same engine
as every send, so a crash mid-way resumes, and `newsletter campaigns` shows the running
counts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from newsletter import changes, store
from newsletter.audience import events
from newsletter.audience.events import Origin, now_iso
from newsletter.compose.issue import build_issue
from newsletter.compose.source import draft_files, parse_draft
from newsletter.delivery.log import next_number
from newsletter.delivery.sending import message_factory, run_campaign
from newsletter.errors import NewsletterError
from newsletter.settings import Settings

AUDIENCE = "welcome"


def request_welcome(db: sqlite_utils.Database, subscriber_id: int, email: str,
                    origin: Origin) -> None:
    """Record that this reader is owed the welcome (inside the caller's transaction).

    (`subscribers.add_or_update(..., welcome=True)` writes the same event.)
    """
    events.record(db, subscriber_id=subscriber_id, email=email, kind="welcome_requested",
                  origin=origin, detail="welcome email requested")


# `trigger: welcome` as written, found in a draft whose front matter cannot be parsed.
_TRIGGER_LINE = re.compile(rb"^[ \t]*trigger[ \t]*[:=][ \t]*[\"']?welcome\b", re.I | re.M)


def welcome_drafts(settings: Settings) -> tuple[list[Path], dict[Path, str]]:
    """The drafts whose front matter says `trigger: welcome`, and the broken ones that are
    welcome drafts (their text says `trigger: welcome`, or a welcome campaign was made from
    them) with why they cannot be read.

    A broken welcome is reported, never skipped: readers are owed it, and a quiet
    "nothing was due" every minute would hide that.
    """
    found: list[Path] = []
    broken: dict[Path, str] = {}
    enabled: set[str] | None = None
    for path in draft_files(settings):
        try:
            if str(parse_draft(path).extra.get("trigger", "")).lower() == "welcome":
                found.append(path)
            continue
        except NewsletterError as exc:
            error = str(exc)
        if enabled is None:
            enabled = {os.path.normpath(str(row[0])) for row in store.read_only_rows(
                settings.database,
                "SELECT draft_path FROM campaigns WHERE audience = ? AND kind = 'list'",
                [AUDIENCE])}
        try:
            with path.open("rb") as f:  # front matter is at the top: a huge file is not read
                says_welcome = _TRIGGER_LINE.search(f.read(64 * 1024)) is not None
        except OSError:
            says_welcome = False  # unreadable: only a campaign made from it says it is one
        if says_welcome or os.path.relpath(path, settings.root) in enabled:
            broken[path] = error
    return found, broken


@dataclass(frozen=True)
class WelcomeLine:
    slug: str
    campaign_id: int
    added: int  # readers newly owed it this run
    sent: int
    failed: int
    text: str
    error: str | None = None  # the draft could not be built: nothing was sent


def _campaign(db: sqlite_utils.Database, slug: str, draft_label: str, subject: str,
              provider: str) -> tuple[int, bool]:
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT id FROM campaigns WHERE slug = ? AND audience = ? AND kind = "
                         "'list' ORDER BY id DESC LIMIT 1", [slug, AUDIENCE]).fetchone()
        if row is not None:
            db.execute("UPDATE campaigns SET subject = ?, draft_path = ? WHERE id = ?",
                       [subject, draft_label, row[0]])
            return row[0], False
        # Campaigns and scheduled sends share one numbering: never a pending schedule's.
        number = next_number(db)
        db.execute(
            "INSERT INTO campaigns (id, slug, draft_path, subject, audience, kind, provider, "
            "created_at, status) VALUES (?, ?, ?, ?, ?, 'list', ?, ?, 'done')",
            [number, slug, draft_label, subject, AUDIENCE, provider, now_iso()])
        changes.append(db.conn, [changes.campaign_op(db.conn, number)])  # a restore knows it
        return number, True


def _owed(db: sqlite_utils.Database, campaign_id: int) -> int:
    """Queue every active reader who asked for the welcome since it was enabled."""
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        added = db.execute(
            "INSERT OR IGNORE INTO deliveries (campaign_id, subscriber_id, email, updated_at) "
            "SELECT ?, s.id, s.email, ? FROM subscribers s WHERE s.status = 'active' AND "
            "EXISTS (SELECT 1 FROM events e WHERE e.subscriber_id = s.id AND "
            "e.kind = 'welcome_requested' AND e.created_at >= "
            "(SELECT created_at FROM campaigns WHERE id = ?)) ORDER BY s.id",
            [campaign_id, now_iso(), campaign_id]).rowcount
        if added:  # the rows owed go to the change journal: a restore mails nobody twice
            changes.append(db.conn, [changes.campaign_op(db.conn, campaign_id, deliveries=True)])
        return added


def send_welcomes(settings: Settings) -> list[WelcomeLine]:
    """Send each welcome draft to the readers owed it; one line per welcome draft."""
    lines = []
    found, broken = welcome_drafts(settings)
    for path, error in broken.items():
        lines.append(WelcomeLine(path.stem, 0, 0, 0, 0,
                                 f"welcome {path.stem}: not sent: {error}", error=error))
    for path in found:
        try:
            issue = build_issue(settings, path)
        except NewsletterError as exc:
            # One broken welcome (half-written, a template typo) must not stop the other
            # welcomes, nor the sync after them, every minute until it is fixed.
            lines.append(WelcomeLine(path.stem, 0, 0, 0, 0,
                                     f"welcome {path.stem}: not sent: {exc}", error=str(exc)))
            continue
        db = store.connect(settings.database)
        try:
            campaign_id, created = _campaign(db, issue.slug, os.path.relpath(path, settings.root),
                                             issue.subject, settings.provider.name)
            added = _owed(db, campaign_id)
            queued = db.execute("SELECT count(*) FROM deliveries WHERE campaign_id = ? AND "
                                "state IN ('queued', 'sending')", [campaign_id]).fetchone()[0]
        finally:
            db.conn.close()
        if created:
            lines.append(WelcomeLine(issue.slug, campaign_id, 0, 0, 0,
                                     f"welcome {issue.slug}: enabled (campaign {campaign_id}): "
                                     "readers who join from now on get it"))
            continue
        if not queued:
            continue
        report = run_campaign(settings, campaign_id, message_factory(settings, issue))
        run = report.run
        sent, failed = (run.sent, run.failed) if run else (0, 0)
        text = f"welcome {issue.slug}: {sent} sent, {failed} failed (campaign {campaign_id})"
        if report.error is not None:
            text += f"; stopped: {report.error} (the next run resumes)"
        lines.append(WelcomeLine(issue.slug, campaign_id, added, sent, failed, text))
    return lines
