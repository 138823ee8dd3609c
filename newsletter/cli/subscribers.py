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
from newsletter.audience.segments import Segment
from newsletter.cli.app import app, settings
from newsletter.compose import tokens
from newsletter.delivery.providers.outbox import outbox_folder
from newsletter.errors import SubscriberError
from newsletter.signals import stop_signals_as_ctrl_c

subscribers_app = typer.Typer(
    help="The subscriber list: add, import, export, list, show, unsubscribe, remove.\n\n"
    "Example: newsletter subscribers import examples/subscribers.csv --dry-run",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(subscribers_app, name="subscribers")

StatusOpt = Annotated[
    str | None,
    typer.Option("--status", help=f"Only this status: {', '.join(subs.STATUSES)}."),
]
TagExprOpt = Annotated[str | None, typer.Option(
    "--tag", metavar="EXPR",
    help="The same as --to, where `tag:` is optional: `a+b`: both tags; `a,-b`: a but not b.",
)]
ToOpt = Annotated[str | None, typer.Option(
    "--to", metavar="EXPR",
    help="Only the readers a send --to EXPR would pick (any status here): tag:NAME, "
    "plan=paid, city!=Oslo, has:city, topic:NAME, joined with + (tag:friends+plan=paid, "
    "-tag:press).",
)]


def _segment(ctx: typer.Context, to: str | None, tag: str | None) -> Segment | None:
    return subs.segment_for(to=to, tag=tag, topics=settings(ctx).web.topics)


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
    welcome: Annotated[
        bool, typer.Option("--welcome", help="Send them the welcome email (trigger: welcome) "
                           "on the next `newsletter run`.")
    ] = False,
) -> None:
    """Add one subscriber (or add tags and a name to an existing one).

    Example: newsletter subscribers add liu@example.com --name Liu --tag friends
    """
    result = subs.add_or_update(_db(ctx), email, name=name, tags=tag or (),
                                resubscribe=resubscribe, welcome=welcome,
                                secret=settings(ctx).secret_key())
    typer.echo(f"{result.outcome.capitalize()}: {result.subscriber.email}")


@subscribers_app.command("remove")
def remove(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The address to forget.")],
    delete_outbox: Annotated[
        bool,
        typer.Option("--delete-outbox", help="Also delete the messages to them saved in "
                     "outbox/ (every campaign's folder, outbox/confirm/); without it they "
                     "are listed."),
    ] = False,
    suppress: Annotated[
        bool,
        typer.Option("--suppress", help="Keep a one-way hash of the address so no later "
                     "import or add brings it back."),
    ] = False,
) -> None:
    """Forget a subscriber: their row, their history, their address in the delivery log.

    Past deliveries stay counted, with the address replaced by a one-way hash (keyed with
    the newsletter secret). Prefer `unsubscribe`: it keeps the proof that they asked; a
    removed address can come back with the next import unless you pass --suppress.

    Example: newsletter subscribers remove liu@example.com --suppress
    """
    conf = settings(ctx)
    outboxes = [conf.outbox_dir]
    if conf.provider.name == "outbox":  # its [provider] directory, when set
        outboxes.append(outbox_folder(conf, conf.provider))
    gone = subs.remove(_db(ctx), email, secret=conf.secret_key(), outboxes=outboxes,
                       delete_outbox=delete_outbox, suppress=suppress)
    typer.echo(f"Forgotten: {gone.subscriber.email} ({gone.events} history events erased, "
               f"{gone.deliveries} deliveries kept with the address hashed)")
    if gone.suppressed:
        typer.echo("Suppressed: a later import or add of this address is refused.")
    left = {path for path, _ in gone.not_deleted}
    for path in gone.outbox_files:
        if path not in left:
            typer.echo(f"{'Deleted' if gone.deleted else 'Still holds the address'}: {path}")
    if gone.outbox_files and not gone.deleted:
        typer.echo("Delete those with --delete-outbox (or by hand) to forget them entirely.")
    if gone.not_deleted:
        for path, why in gone.not_deleted:
            typer.echo(f"Could not delete ({why}): {path}", err=True)
        raise SubscriberError(
            f"{len(gone.not_deleted)} saved message(s) holding the address could not be "
            "deleted (listed above): delete them by hand; the reader is forgotten otherwise"
        )


@subscribers_app.command("show")
def show(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The subscriber's address.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One subscriber: address, name, status, tags, attributes, dates, and their history.

    The history says when each change happened, what it was, where it came from (the
    CLI, an import, the sign-up form with its IP and browser, a webhook…) and the consent
    text the reader was shown.

    Example: newsletter subscribers show liu@example.com
    """
    profile = subs.show(_db(ctx), email)
    if as_json:
        typer.echo(json.dumps(profile.as_dict(), ensure_ascii=False, indent=2))
        return
    for line in _profile_lines(profile):
        typer.echo(line)


def _profile_lines(profile: subs.Profile) -> list[str]:
    sub = profile.subscriber
    out = [f"{'email':<13} {sub.email}", f"{'name':<13} {sub.name}",
           f"{'status':<13} {sub.status}", f"{'tags':<13} {', '.join(sub.tags)}"]
    out += [f"{'attribute':<13} {k} = {v}" for k, v in sub.attributes.items()]
    for label in ("source", "created_at", "confirmed_at", "unsubscribed_at", "updated_at",
                  "optin_ip"):
        if value := getattr(sub, label):
            out.append(f"{label.replace('_at', ''):<13} {value}")
    out.append(f"History ({len(profile.history)} events):" if profile.history
               else "History: none recorded")
    for e in profile.history:
        change = f" {e.status_before or '-'} -> {e.status_after}" if e.status_after else ""
        line = f"  {e.created_at}  {e.kind}{change}  via {e.source}"
        if e.detail:
            line += f" ({e.detail})"
        if e.ip or e.user_agent:
            line += f"  from {e.ip or '?'} {e.user_agent or ''}".rstrip()
        out.append(line)
        if e.consent:
            out.append(f"    consent: {e.consent}")
    # Reader-supplied text can hold terminal escapes: print only printable characters.
    return [subs.printable(x).rstrip() for x in out]


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
        conf = settings(ctx)
        key = tokens.verify_unsubscribe_token(tokens.bind_key(conf), token, conf.base_url)
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
    to: ToOpt = None,
    tag: TagExprOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """How many subscribers have each status (only active ones are sent to); with --to,
    how many a send to that segment would reach before you send.

    Example: newsletter subscribers count --to tag:friends
    """
    segment = _segment(ctx, to, tag)
    counts = subs.count_by_status(_db(ctx), tag=segment)
    if as_json:
        extra = {"to": segment.spec} if segment else {}
        typer.echo(json.dumps({**counts, "total": sum(counts.values()), **extra}))
        return
    width = max(len(s) for s in counts)
    for status, n in counts.items():
        typer.echo(f"{status:<{width}}  {n}")
    typer.echo(f"{'total':<{width}}  {sum(counts.values())}")
    if segment:
        typer.echo(f"A send --to {segment.spec} reaches the {counts['active']} active.")


@subscribers_app.command("list")
def list_(
    ctx: typer.Context,
    status: StatusOpt = None,
    to: ToOpt = None,
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

    Example: newsletter subscribers list --to tag:friends --limit 20
    """
    write = sys.stdout.write  # not echo: it flushes every line, slow over a million
    for sub in subs.iter_subscribers(_db(ctx), status=status, tag=_segment(ctx, to, tag),
                                     search=search, limit=limit):
        if as_json:
            write(json.dumps(sub.as_dict(), ensure_ascii=False) + "\n")
        else:
            tags = ",".join(sub.tags)
            write("\t".join([sub.email, sub.status, sub.name, tags]).rstrip("\t") + "\n")


@subscribers_app.command("export")
def export(
    ctx: typer.Context,
    status: StatusOpt = None,
    to: ToOpt = None,
    tag: TagExprOpt = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write to FILE (default: stdout).")
    ] = None,
) -> None:
    """Export subscribers as CSV (email,name,status,tags,…) that `import` reads back.

    Example: newsletter subscribers export -o subscribers.csv
    """
    db = _db(ctx)
    segment = _segment(ctx, to, tag)
    if output is None:
        subs.export_csv(db, sys.stdout, status=status, tag=segment)
        return
    with _progress_bar("Exporting") as update:
        n = subs.export_file(db, output, status=status, tag=segment,
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
    welcome: Annotated[
        bool, typer.Option("--welcome", help="Send the new readers the welcome email "
                           "(trigger: welcome) on the next `newsletter run`.")
    ] = False,
) -> None:
    """Import subscribers from Substack, Mailchimp, Buttondown, listmonk, Ghost, beehiiv or a list.

    One transaction: all of it goes in, or (on an error or Ctrl-C) nothing. Nobody who
    unsubscribed, bounced or complained is made active again.

    Example: newsletter subscribers import examples/subscribers.csv --tag early
    """
    db = _db(ctx)
    secret = settings(ctx).secret_key()
    stopped_by: list[int] = []
    restore = stop_signals_as_ctrl_c(stopped_by)
    try:
        with _progress_bar() as update:
            summary = importers.import_file(db, file, format=format, tags=tag or (),
                                            dry_run=dry_run, rejects=rejects, progress=update,
                                            secret=secret, welcome=welcome)
    except KeyboardInterrupt:
        # The import is one transaction, rolled back on the way out (and the rejects file
        # being written removed).
        typer.echo("Interrupted: nothing was imported; the list is as it was.", err=True)
        raise typer.Exit(128 + stopped_by[0] if stopped_by else 130) from None
    finally:
        restore()
    for line in summary.lines():
        typer.echo(line)
