"""`newsletter run`: everything that is due, once — safe to start every minute from cron.

In order: `sync` when a provider or mailbox can be read (so nobody who left since the
last run is mailed), scheduled sends whose time has come (and any a dead run left
half-sent), then welcome emails owed to readers who joined, then confirmation emails still queued.
One run at a time: a second run started while one is still working (a long send) says
so and exits 0, and the campaign and schedule locks below make even two runs on two
machines sharing the folder send nothing twice. A run after downtime sends what it
missed, with a line saying how late.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from newsletter.delivery import outgoing, schedule, welcome
from newsletter.errors import NewsletterError
from newsletter.feedback import pull
from newsletter.settings import Settings
from newsletter.writer.check import pre_send_errors


@dataclass
class RunReport:
    busy: str | None = None  # another run holds the lock: who
    sends: list[schedule.RunLine] = field(default_factory=list)
    welcomes: list[welcome.WelcomeLine] = field(default_factory=list)
    outgoing: outgoing.OutgoingReport | None = None  # confirmation emails left queued
    sync: pull.SyncReport | None = None
    sync_error: str | None = None  # the sync before the sends failed (they went on)


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
        # Delivery does not import the writer's tools: the pre-send check is handed to it.
        report.sends = schedule.run_due(
            settings, check=pre_send_errors, now=now or datetime.now(UTC),
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
    finally:
        os.close(fd)  # releases the lock
    return report
