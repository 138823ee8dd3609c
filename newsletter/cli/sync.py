"""`newsletter sync`: pull bounces, complaints and unsubscribes from the provider and mailbox."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from newsletter.cli.app import app, settings

_WHAT = {"hard_bounce": "hard bounce", "soft_bounce": "soft bounces", "complaint": "complaint",
         "unsubscribe": "unsubscribed"}


@app.command("sync")
def sync_cmd(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
    ] = False,
) -> None:
    """Pull bounces, complaints and unsubscribes from the provider's API and the mailbox.

    Reads the configured [provider] (Postmark, SendGrid, Mailgun, SES) with its own key,
    and the [mailbox] over IMAP (mailto unsubscribes, bounce reports). Each run reads only
    what is new. Hard bounces and complaints stop mail at once; soft bounces count.

    Example: newsletter sync --dry-run
    """
    from newsletter.feedback.pull import sync

    # What it is reading, while it reads (on a terminal: a failure stays one line in logs).
    def progress(line: str) -> None:
        typer.echo(f"{line}…", err=True)

    from newsletter.compose.tokens import bind_key

    current = settings(ctx)
    bind_key(current)  # mailto unsubscribes carry links signed with the database's key
    report = sync(current, dry_run=dry_run,
                  progress=progress if sys.stderr.isatty() else None)
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    verb = "would stop" if dry_run else "stopped"
    for feedback, applied in report.changes:
        why = _WHAT.get(feedback.kind, feedback.kind)
        detail = f": {feedback.detail}" if feedback.detail else ""
        typer.echo(f"{verb} {applied.email} ({why}, {feedback.source}){detail}")
    for line in report.left_in_mailbox:
        typer.echo(f"left in the mailbox: {line}", err=True)
    c = report.counts
    read = ", ".join(report.sources) or "nothing configured to read"
    typer.echo(
        f"sync: {read}: {c['stopped']} reader(s) {verb}, {c['counted']} soft bounce(s) "
        f"counted, {c['duplicate']} already seen, {c['unknown']} not on the list"
        + (" (dry run: nothing changed)" if dry_run else ""),
        err=True,
    )
    if report.move_failed:
        raise typer.Exit(6)  # applied, but the mailbox needs a look: fail the cron job
