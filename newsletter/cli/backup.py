"""`newsletter backup [FILE]` and `newsletter restore FILE`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from newsletter.cli.app import app, settings
from newsletter.delivery.log import send_command

# Below this the snapshot takes well under a second: no progress lines.
PROGRESS_FROM = 32 * 1024 * 1024


@app.command("backup")
def backup_cmd(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(
        help="Where to write the snapshot (default: backups/<database>-<time>.db next to "
             "the database).")] = None,
) -> None:
    """Write a consistent snapshot of the database, safe while serve, a send or an import run.

    The snapshot is SQLite's own (never a plain copy), readable only by you (0600). It
    starts a new change journal beside the database, which a restore replays; older
    journal files are deleted (the snapshot holds what they held). The secret is NOT in
    it: keep NEWSLETTER_SECRET or .newsletter-secret too, or every link already mailed
    dies after a restore. Cron, every night at 03:00:
    `0 3 * * * cd /path/to/newsletter && newsletter backup`

    Example: newsletter backup
    """
    from newsletter.restore import backup

    current = settings(ctx)

    def progress(done: int, total: int) -> None:
        if total >= PROGRESS_FROM:
            typer.echo(f"backup: {done / 2**20:,.0f} of {total / 2**20:,.0f} MB", err=True)

    made = backup(current.database, file, progress=progress)
    where = os.path.relpath(made.path)
    typer.echo(f"Snapshot of {current.database.name} written to {where} "
               f"({made.size / 1024:,.0f} KB, mode 0600); the change journal starts again "
               f"with it (generation {made.generation}).")
    if made.deleted_journals:
        typer.echo(f"Deleted {len(made.deleted_journals)} older journal file(s): this "
                   "snapshot holds what they held.")
    typer.echo("The secret is NOT in the snapshot: keep NEWSLETTER_SECRET (or "
               ".newsletter-secret) safe too, and copy the snapshot and the journal folder "
               f"{current.database.name}.journal/ off this disk.")


@app.command("restore")
def restore_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A snapshot `newsletter backup` wrote.")],
) -> None:
    """Put a snapshot back, then replay the change journal written since it.

    Readers who left after the snapshot stay gone, readers who joined are there, erased
    readers stay erased, and every delivery that went out is known, so a resumed send
    mails nobody twice. Only messages handed to a provider with no answer come back
    uncertain; scheduled sends that came due are held. Refused while a send runs or
    another command (serve, an import) has the database open. The replaced database is
    kept aside, never deleted. Nothing is sent.

    Example: newsletter restore "$(ls -t backups/*.db | head -n 1)"
    """
    from newsletter.restore import restore

    current = settings(ctx)
    done = restore(current.database, file)
    name = current.database.name
    taken = f" (taken {done.snapshot_at})" if done.snapshot_at else ""
    typer.echo(f"Restored {name} from {file}{taken}.")
    if done.kept_aside is not None:
        typer.echo(f"The database it replaced is kept as {done.kept_aside.name}: delete it "
                   "yourself once you are sure.")
    if done.journal_lost:
        typer.echo(f"No change journal since this snapshot ({name}.journal/ lost with the "
                   "disk, or deleted by a newer backup: the newest snapshot has it): what "
                   "happened after it is LOST and cannot be known: readers who joined or "
                   "left, and mail sent after it. Unfinished campaigns are marked uncertain "
                   "rather than resumed.")
    else:
        typer.echo(f"Replayed {done.transactions:,} journaled change(s): {done.readers:,} "
                   f"reader change(s), {done.erased:,} erasure(s), {done.outcomes:,} "
                   "delivery outcome(s).")
    if done.torn:
        typer.echo(f"Skipped {done.torn} journal line(s) that never committed (torn).")
    for campaign_id, n in sorted(done.uncertain.items()):
        slug, _ = done.campaigns[campaign_id]
        typer.echo(f"Campaign {campaign_id} ({slug}): {n:,} message(s) may have gone out "
                   "(uncertain): check the provider's log, then `newsletter campaigns "
                   f"settle {campaign_id} --as-sent` or `--resend`.")
    for campaign_id, n in sorted(done.resumable.items()):
        slug, audience = done.campaigns[campaign_id]
        typer.echo(f"Campaign {campaign_id} ({slug}): {n:,} reader(s) never mailed: "
                   f"`{send_command(slug, audience)}` mails them (nobody twice).")
    for schedule_id, slug, audience in done.held:
        typer.echo(f"Scheduled send #{schedule_id} ({slug}) came due: held for you: send it "
                   f"with `{send_command(slug, audience)}` if it did not go out, or "
                   f"`newsletter send --cancel {schedule_id}`.")
    typer.echo("Nothing was sent.")
