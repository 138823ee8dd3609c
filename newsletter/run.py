"""`newsletter run`: everything that is due, once — safe to start every minute from cron.

In order: `sync` when a provider or mailbox can be read (so nobody who left since the
last run is mailed), scheduled sends whose time has come (and any a dead run left
half-sent), then welcome emails owed to readers who joined, then confirmation emails still queued,
and last the click and open records older than [analytics] keep_days are deleted.
One run at a time: a second run started while one is still working (a long send) says
so and exits 0, and the campaign and schedule locks below make even two runs on two
machines sharing the folder send nothing twice. A run after downtime sends what it
missed, with a line saying how late.

A run is honest about what is left: every campaign that still has readers uncertain
(the writer decides: `campaigns settle`) or queued and not being sent, and the failed
readers of the sends it made, are reported as `troubles`; the CLI exits non-zero on
any, so cron tells the writer, run after run, until they are settled.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from newsletter import store
from newsletter.audience import engagement
from newsletter.delivery import outgoing, schedule, welcome
from newsletter.delivery.lock import is_being_sent
from newsletter.delivery.log import Campaign, get_campaign, send_command, unsettled_campaigns
from newsletter.errors import NewsletterError
from newsletter.feedback import pull
from newsletter.settings import Settings
from newsletter.writer.check import pre_send_errors
from newsletter.writer.hosting import make_live


@dataclass
class RunReport:
    busy: str | None = None  # another run holds the lock: who
    sends: list[schedule.RunLine] = field(default_factory=list)
    welcomes: list[welcome.WelcomeLine] = field(default_factory=list)
    outgoing: outgoing.OutgoingReport | None = None  # confirmation emails left queued
    sync: pull.SyncReport | None = None
    sync_error: str | None = None  # the sync before the sends failed (they went on)
    troubles: list[Trouble] = field(default_factory=list)  # readers left unsettled
    pruned: int = 0  # click and open records deleted: older than [analytics] keep_days


@dataclass(frozen=True)
class Trouble:
    """Readers of one campaign a run leaves uncertain, failed or queued: said, not hidden."""

    campaign: Campaign
    state: str  # uncertain | failed | queued
    count: int

    @property
    def text(self) -> str:
        c = self.campaign
        head = f"campaign {c.id} ({c.slug} → {c.audience}): {self.count:,} reader(s) {self.state}"
        if self.state == "uncertain":
            return (f"{head}: they may or may not have been mailed; check the provider's log, "
                    f"then `newsletter campaigns settle {c.id} --as-sent` (they went out) or "
                    "`--resend` (send them the issue)")
        if self.state == "failed":
            return (f"{head}: `newsletter campaigns {c.id}` shows why; `newsletter send "
                    f"--retry-failed {c.id}` tries them again")
        return f"{head}, not sent: `{send_command(c.slug, c.audience)}` sends the rest"


def run_once(
    settings: Settings, *, now: datetime | None = None, do_sync: bool = True,
    on_line: Callable[[str], None] | None = None,
) -> RunReport:
    """Do what is due now; see the module docstring."""
    report = RunReport()
    path = settings.database.with_name(f".{settings.database.name}.run.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            report.busy = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            return report
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        # Sync first, as `send` does: a reader who complained or unsubscribed at the
        # provider or by mail since the last run is not sent the issue due now. A sync
        # that fails stops nothing (the sends go on), and is reported.
        if do_sync and pull.configured(settings):
            try:
                report.sync = pull.sync(settings)
            except NewsletterError as exc:
                report.sync_error = str(exc)
        # Delivery does not import the writer's tools: the pre-send check, and what puts
        # the page and images online before it is mailed, are handed to it.
        report.sends = schedule.run_due(
            settings, check=pre_send_errors, web=make_live, now=now or datetime.now(UTC),
            on_line=(lambda line: on_line(line.text)) if on_line else None,
        )
        report.welcomes = welcome.send_welcomes(settings)
        if on_line:
            for line in report.welcomes:
                on_line(line.text)
        # Confirmation emails the server queued and could not send (it stopped, or the
        # provider was down): kept apart from issues, counted on their own line.
        report.outgoing = outgoing.send_queued(settings)
        if on_line and report.outgoing.tried:
            on_line(report.outgoing.text)
        report.troubles = troubles(settings, report.sends)
        report.pruned = prune_engagement(settings, now)
        if on_line and report.pruned:
            on_line(f"deleted {report.pruned:,} click and open records older than "
                    f"{settings.analytics.keep_days} days ([analytics] keep_days)")
    finally:
        os.close(fd)  # releases the lock
    return report


def prune_engagement(settings: Settings, now: datetime | None = None) -> int:
    """Delete click and open records past [analytics] keep_days (whether or not tracking is
    on now: records made while it was on still age out)."""
    if not settings.database.exists():
        return 0
    db = store.connect(settings.database)
    try:
        return engagement.prune(db, settings.analytics.keep_days, now=now)
    finally:
        db.conn.close()


def troubles(settings: Settings, sends: list[schedule.RunLine]) -> list[Trouble]:
    """What is left unsettled: every campaign with uncertain readers, or queued ones that
    no live process is sending and no pending schedule will resume; and the failed
    readers of the campaigns this run sent (a failure is final: said once)."""
    found: list[Trouble] = []
    db = store.connect(settings.database)
    try:
        resumed = {s.campaign_id for s in schedule.list_schedules(db, pending_only=True)}
        for campaign in reversed(unsettled_campaigns(db)):  # oldest first
            if is_being_sent(settings.database, campaign.id):
                continue
            n = campaign.counts
            if n.uncertain:
                found.append(Trouble(campaign, "uncertain", n.uncertain))
            if (n.queued or n.sending) and campaign.id not in resumed:
                found.append(Trouble(campaign, "queued", n.queued + n.sending))
        for line in sends:
            if line.outcome != "sent":
                continue
            campaign_id = schedule.get(db, line.schedule.id).campaign_id
            if campaign_id is not None:
                campaign = get_campaign(db, campaign_id)
                if campaign.counts.failed:
                    found.append(Trouble(campaign, "failed", campaign.counts.failed))
    finally:
        db.conn.close()
    return found
