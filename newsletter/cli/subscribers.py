"""`newsletter subscribers …`: the list you own. Options in, one library call, output."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from newsletter.audience import importers
from newsletter.audience import subscribers as subs
from newsletter.cli.app import app, settings
from newsletter.compose import tokens
from newsletter.errors import SubscriberError

subscribers_app = typer.Typer(
    help="The subscriber list: add, import, export, list, unsubscribe.\n\n"
    "Example: newsletter subscribers import examples/subscribers.csv --dry-run",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(subscribers_app, name="subscribers")

StatusOpt = Annotated[
    str | None,
    typer.Option("--status", help=f"Only this status: {', '.join(subs.STATUSES)}."),
]
TagOpt = Annotated[str | None, typer.Option("--tag", help="Only subscribers with this tag.")]
TagExprOpt = Annotated[str | None, typer.Option(
    "--tag", metavar="EXPR",
    help="Only subscribers with this tag (any letter case); `a+b`: both; `a,-b`: a but not b.",
)]


def _db(ctx: typer.Context):
    return subs.open_db(settings(ctx))


@subscribers_app.command("add")
def add(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The address to add.")],
    name: Annotated[str, typer.Option("--name", help="The subscriber's name.")] = "",
    tag: Annotated[
        list[str] | None, typer.Option("--tag", metavar="TAG", help="A tag (repeat for several).")
    ] = None,
    resubscribe: Annotated[
        bool,
        typer.Option(
            "--resubscribe",
            help="Make an unsubscribed, bounced or complained subscriber active again "
            "(only with their consent).",
        ),
    ] = False,
) -> None:
    """Add one subscriber (or add tags and a name to an existing one).

    Example: newsletter subscribers add liu@example.com --name Liu --tag friends
    """
    result = subs.add_or_update(_db(ctx), email, name=name, tags=tag or (),
                                resubscribe=resubscribe)
    typer.echo(f"{result.outcome.capitalize()}: {result.subscriber.email}")


@subscribers_app.command("remove")
def remove(
    ctx: typer.Context, email: Annotated[str, typer.Argument(help="The address to delete.")]
) -> None:
    """Delete a subscriber and their consent history (prefer `unsubscribe`).

    A removed address can come back with the next import; an unsubscribed one can't.

    Example: newsletter subscribers remove liu@example.com
    """
    gone = subs.remove(_db(ctx), email)
    typer.echo(f"Removed: {gone.email}")


@subscribers_app.command("unsubscribe")
def unsubscribe(
    ctx: typer.Context,
    email: Annotated[
        str, typer.Argument(help="The address to stop, or an unsubscribe link from an issue.")
    ],
) -> None:
    """Stop sending to a subscriber; they stay on file so no import makes them active again.

    Also takes the unsubscribe link of any issue (a reader forwards it, or your web server
    logged it): its signed token names the reader, and a forged or altered one is refused.

    Example: newsletter subscribers unsubscribe liu@example.com
    """
    token = tokens.token_from(email)
    if token is not None:
        key = tokens.verify_unsubscribe_token(settings(ctx).secret_key(), token)
        if key is None:
            raise SubscriberError(
                "that unsubscribe link was not made by this newsletter (or was altered): "
                "unsubscribe the reader by address instead"
            )
        email = key
    sub = subs.unsubscribe(_db(ctx), email)
    typer.echo(f"Unsubscribed: {sub.email} ({sub.status} since {sub.unsubscribed_at})")


@subscribers_app.command("count")
def count(
    ctx: typer.Context,
    tag: TagExprOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """How many subscribers have each status (only active ones are sent to).

    Example: newsletter subscribers count
    """
    counts = subs.count_by_status(_db(ctx), tag=tag)
    if as_json:
        typer.echo(json.dumps({**counts, "total": sum(counts.values())}))
        return
    width = max(len(s) for s in counts)
    for status, n in counts.items():
        typer.echo(f"{status:<{width}}  {n}")
    typer.echo(f"{'total':<{width}}  {sum(counts.values())}")


@subscribers_app.command("list")
def list_(
    ctx: typer.Context,
    status: StatusOpt = None,
    tag: TagExprOpt = None,
    search: Annotated[
        str | None, typer.Option("--search", help="Part of the address or name.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line (JSON Lines).")
    ] = False,
) -> None:
    """List subscribers in the order they joined (streams, however long the list).

    Example: newsletter subscribers list --tag friends --limit 20
    """
    write = sys.stdout.write  # not echo: it flushes every line, slow over a million
    for sub in subs.iter_subscribers(_db(ctx), status=status, tag=tag, search=search,
                                     limit=limit):
        if as_json:
            write(json.dumps(sub.as_dict(), ensure_ascii=False) + "\n")
        else:
            tags = ",".join(sub.tags)
            write("\t".join([sub.email, sub.status, sub.name, tags]).rstrip("\t") + "\n")


@subscribers_app.command("export")
def export(
    ctx: typer.Context,
    status: StatusOpt = None,
    tag: TagOpt = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write to FILE (default: stdout).")
    ] = None,
) -> None:
    """Export subscribers as CSV (email,name,status,tags,…) that `import` reads back.

    Example: newsletter subscribers export -o subscribers.csv
    """
    db = _db(ctx)
    if output is None:
        subs.export_csv(db, sys.stdout, status=status, tag=tag)
        return
    with _progress_bar("Exporting") as update:
        n = subs.export_file(db, output, status=status, tag=tag,
                             progress=lambda done, total: update("Exporting", done, total))
    typer.echo(f"Exported {n} subscribers to {output}", err=True)


@contextmanager
def _progress_bar(first: str = "Reading"):
    """A progress bar on stderr (stdout stays for data); silent when stderr is not a terminal."""
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
        TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(first, total=None)

        def update(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total or None)

        yield update


@subscribers_app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The export: CSV, or Mailchimp's ZIP.")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="NAME",
            help=f"Which platform it comes from: {', '.join(importers.FORMAT_NAMES)} "
            "(auto reads the header row).",
        ),
    ] = "auto",
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="TAG", help="Tag every imported subscriber."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would change; write nothing.")
    ] = False,
    rejects: Annotated[
        Path | None,
        typer.Option("--rejects", help="Write the skipped rows, with line and reason, to FILE."),
    ] = None,
) -> None:
    """Import subscribers from Substack, Mailchimp, Buttondown, listmonk, Ghost, beehiiv or a list.

    One transaction: all of it goes in, or (on an error or Ctrl-C) nothing. Nobody who
    unsubscribed, bounced or complained is made active again.

    Example: newsletter subscribers import examples/subscribers.csv --tag early
    """
    db = _db(ctx)
    try:
        with _progress_bar() as update:
            summary = importers.import_file(db, file, format=format, tags=tag or (),
                                            dry_run=dry_run, rejects=rejects, progress=update)
    except KeyboardInterrupt:
        # The import is one transaction, rolled back on the way out.
        typer.echo("Interrupted: nothing was imported; the list is as it was.", err=True)
        raise typer.Exit(130) from None
    for line in summary.lines():
        typer.echo(line)
