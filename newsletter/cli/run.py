"""`newsletter run`: sync, then the scheduled sends and welcomes that are due — once, for cron."""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter.cli.app import app, settings


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    no_sync: Annotated[
        bool, typer.Option("--no-sync", help="Do not pull bounces and unsubscribes this time.")
    ] = False,
) -> None:
    """Do everything that is due, once: sync, then scheduled sends and welcome emails.

    Safe to run every minute: an overlapping run exits at once, and nothing is ever sent
    twice. After downtime it sends what it missed, saying how late. Readers left
    uncertain, failed or unsent are named per campaign and the exit code is non-zero
    (5), run after run, until `newsletter campaigns settle ID` settles them. Cron (it
    mails what a command prints, to MAILTO):
    `* * * * * cd /path/to/newsletter && newsletter run >> run.log 2>&1 || tail -n 20 run.log`

    Example: newsletter run
    """
    from newsletter.compose.tokens import bind_key
    from newsletter.run import run_once

    current = settings(ctx)
    bind_key(current)  # scheduled sends mail links: only with the database's key
    report = run_once(current, do_sync=not no_sync, on_line=typer.echo)
    if report.busy:
        typer.echo(f"another `newsletter run` is still working ({report.busy}): nothing done",
                   err=True)
        return
    if report.sync is not None:
        c = report.sync.counts
        typer.echo(f"sync: {c['stopped']} reader(s) stopped, {c['counted']} soft bounce(s) "
                   f"counted", err=True)
    if report.sync_error is not None:
        typer.echo(f"sync failed (sends went on): {report.sync_error}", err=True)
    if not report.sends and not report.welcomes and not (report.outgoing
                                                         and report.outgoing.tried):
        typer.echo("run: nothing was due", err=True)
    for trouble in report.troubles:
        typer.echo(f"run: {trouble.text}", err=True)
    failed = (any(line.outcome == "failed" for line in report.sends)
              or any(line.error is not None for line in report.welcomes))
    if failed or report.sync_error is not None or report.troubles:
        raise typer.Exit(5)
    # A provider that refused (a revoked key, a server down): the send waits for the next
    # run, and a non-zero exit makes cron say so instead of retrying silently every minute.
    if any(line.outcome == "retry" for line in report.sends):
        raise typer.Exit(6)
