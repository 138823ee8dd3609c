"""Commands `send`, `campaigns` and `providers`: options in, one library call, output.

Progress goes to stderr (a rich bar, only on a terminal); summaries and
listings go to stdout.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from newsletter.cli.app import app, newsletter_dir, settings
from newsletter.delivery.log import REHEARSAL_PROVIDER, Counts
from newsletter.errors import ConfigError, DeliveryError, NewsletterError

if TYPE_CHECKING:
    from newsletter.compose.issue import Issue
    from newsletter.settings import Settings

# --- progress ------------------------------------------------------------------------------


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} msg/s" if speed else "– msg/s", style="progress.data.speed")


class _SendProgress:
    """A rich progress bar on stderr fed by the campaign engine's counts."""

    def __init__(self) -> None:
        console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("Sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            _RateColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
            transient=False,
        )
        self.task: Any = None

    def __enter__(self) -> _SendProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.progress.stop()

    def __call__(self, counts: Counts) -> None:
        done = counts.finished + counts.uncertain
        detail = f"{counts.sent:,} sent, {counts.failed:,} failed"
        if self.task is None:
            # Started at the first count, after any confirmation prompt is answered.
            self.progress.start()
            self.task = self.progress.add_task("send", total=counts.total, completed=done,
                                               detail=detail)
        else:
            self.progress.update(self.task, total=counts.total, completed=done, detail=detail)


# --- send ----------------------------------------------------------------------------------


class _Confirm:
    """Asks before a list send (shows the warnings first, even with --yes)."""

    def __init__(self, yes: bool):
        self.yes = yes
        self.warned = False

    def __call__(self, plan: Any) -> bool:
        for warning in plan.warnings:
            typer.echo(f"Warning: {warning}", err=True)
        self.warned = True
        if topics := plan.audience.topic_line():  # who gets it, and why
            typer.echo(f"Recipients by {topics}.")
        if self.yes:
            return True
        if not sys.stdin.isatty():
            raise DeliveryError(
                f"a send to the list ({plan.recipients:,} recipients) needs confirmation and "
                "there is no terminal to ask: pass --yes"
            )
        typer.echo(f"Subject:    {plan.subject}", err=True)
        typer.echo(f"To:         {plan.audience.spec} ({plan.recipients:,} recipients)", err=True)
        typer.echo(f"Provider:   {plan.provider}", err=True)
        try:
            answer = typer.confirm(f"Send to {plan.recipients:,} recipients?", err=True)
        except typer.Abort:  # Ctrl-C (or end of input) at the question: exit as Ctrl-C does
            typer.echo("\nCancelled: nothing was sent.", err=True)
            raise typer.Exit(130) from None
        if not answer:
            # The writer's own choice, not an error; exit 1 as apt-get does for "n", so
            # `newsletter send … && echo sent` never says it went out.
            typer.echo("Cancelled: nothing was sent.", err=True)
            raise typer.Exit(1)
        return True


def _summary(report: Any, warned: bool = False) -> None:
    campaign = report.campaign
    c = campaign.counts
    if report.recovered_rows:
        typer.echo(
            f"Resumed: the interrupted run's journal accounted for {report.recovered_rows} "
            "message(s) it had claimed.", err=True,
        )
    if report.interrupted_rows:
        if report.interrupted_requeued:
            typer.echo(
                f"Resumed: {report.interrupted_rows} message(s) caught mid-send by the interrupted "
                f"run were sent again ({campaign.provider} is idempotent: no duplicates)."
            )
    for warning in [] if warned else report.warnings:
        typer.echo(f"Warning: {warning}", err=True)
    kind = "Test send" if campaign.kind == "test" else "Campaign"
    run = report.run
    parts = [f"{c.sent:,} sent", f"{c.failed:,} failed"]
    parts += [f"{n:,} {state}" for state, n in
              (("skipped", c.skipped), ("uncertain", c.uncertain), ("queued", c.queued),
               ("claimed, left to the resume (the journal says which went out)", c.sending)) if n]
    took = ""
    if run is not None and run.seconds > 0 and run.sent:
        took = f" in {run.seconds:.1f} s ({run.sent / run.seconds:,.0f} msg/s)"
    typer.echo(
        f"{kind} {campaign.id} ({campaign.slug} → {campaign.audience}, {campaign.provider}): "
        f"{', '.join(parts)}{took}."
    )
    if campaign.kind == "test":
        typer.echo("A test send: the draft is not marked as sent to the list.")
    elif campaign.provider == REHEARSAL_PROVIDER:
        typer.echo(
            "A rehearsal: the outbox wrote the messages as .eml files and mailed nobody, "
            "so the draft is not marked as sent to the list; set a real [provider] and "
            "send it again to mail your readers."
        )
    if c.failed:
        typer.echo(
            f"{c.failed:,} failed: `newsletter campaigns {campaign.id}` shows why; "
            f"`newsletter send --retry-failed {campaign.id}` tries them again."
        )
    if c.uncertain:
        typer.echo(
            f"{c.uncertain:,} uncertain: the connection dropped or the send was interrupted "
            "before the server answered, so they may or may not have gone out "
            f"(`newsletter campaigns {campaign.id}` lists "
            "them). Run the same send with --retry-uncertain to send them again (their "
            "recipients may get it twice).",
            err=True,
        )
    if c.queued and run is not None and run.interrupted:
        typer.echo(f"Interrupted: {c.queued:,} still queued; run the same command to resume.",
                   err=True)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@app.command()
def send(
    ctx: typer.Context,
    draft: Annotated[
        str | None, typer.Argument(help="The draft: a path or a slug.", show_default=False)
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="EXPR",
            help="subscribers (the list); a segment: tag:NAME, plan=paid, city!=Oslo, has:city, "
            "topic:NAME, joined with + (tag:friends+plan=paid, -tag:press); or addresses "
            "a@x.org,b@y.org (a test send).",
        ),
    ] = None,
    provider: Annotated[
        str | None, typer.Option(help="A provider name (default: [provider] name, else outbox).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Build every message and report; send nothing.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Send to the list without asking.")
    ] = False,
    rate: Annotated[
        float | None, typer.Option(help="At most N messages per second (0: no limit).")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="N connections (or API clients) in parallel.")
    ] = None,
    resend: Annotated[
        bool, typer.Option("--resend", help="Send a draft to the list that was sent before.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Send even when `newsletter check` finds errors.")
    ] = False,
    retry_failed: Annotated[
        int | None,
        typer.Option("--retry-failed", metavar="CAMPAIGN",
                     help="Retry only the failed deliveries of this campaign."),
    ] = None,
    retry_uncertain: Annotated[
        bool,
        typer.Option("--retry-uncertain",
                     help="Also re-send messages whose fate is unknown after a crash."),
    ] = False,
    at: Annotated[
        str | None,
        typer.Option("--at", metavar="TIME",
                     help='Schedule it: "2026-12-08 07:00" (local time; or add +01:00 or a '
                     "zone like Europe/Paris). `newsletter run` sends it when due."),
    ] = None,
    cancel: Annotated[
        int | None,
        typer.Option("--cancel", metavar="ID",
                     help="Cancel scheduled send ID (the number `--at` and `campaigns` show)."),
    ] = None,
    no_sync: Annotated[
        bool,
        typer.Option("--no-sync", help="Do not pull bounces and unsubscribes before a list send."),
    ] = False,
    no_web_check: Annotated[
        bool,
        typer.Option("--no-web-check",
                     help="Neither publish nor check the issue's web page and images before "
                     "sending (by default they are published, or, with the archive on a static "
                     "host, asked for, and a list send is refused until they answer)."),
    ] = False,
) -> None:
    """Send a draft to the list, a tag, or test addresses; resumes an interrupted send.

    Every recipient gets their own message. The campaign and one delivery row per
    recipient are saved before anything goes out, so running the same command again
    after a crash or Ctrl-C continues where it stopped, without duplicates.

    Before the first message leaves, the issue's web page and images are made live: when
    `serve` hosts the archive the issue is published into [publish] out (a test send's
    page unlisted: noindex, in no index or feed); when the archive is on a static host
    ([server] url) each is asked over HTTP, and a list send is refused until they answer.

    Example: newsletter send leaving-facebook-meta --to subscribers --yes
    """
    from newsletter.delivery import sending

    s = settings(ctx)
    if cancel is not None:
        from newsletter.delivery.schedule import cancel as cancel_schedule

        found = cancel_schedule(s, cancel)
        typer.echo(f"Cancelled scheduled send #{found.id}: {found.slug} → {found.audience}.")
        return
    from newsletter.compose.tokens import bind_key

    bind_key(s)  # before anything is mailed: only with the key that signed the database's links
    if at is not None:
        _schedule(s, draft, to, at, provider, resend, dry_run)
        return
    if retry_failed is not None:
        if dry_run:
            raise ConfigError("--dry-run and --retry-failed do not go together")
        with _SendProgress() as progress:
            report = sending.retry_failed(
                s, retry_failed, provider=provider, concurrency=concurrency, rate=rate,
                retry_uncertain=retry_uncertain, on_progress=progress,
            )
        _finish(report)
        return
    if not draft or not to:
        raise ConfigError(
            "send needs a draft and --to: e.g. newsletter send hello-world --to subscribers "
            "(or --to you@example.com for a test send)"
        )
    from newsletter.writer.check import pre_send_errors
    from newsletter.writer.hosting import make_live

    if dry_run:
        result = sending.dry_run(s, _issue(s, draft), to, check=pre_send_errors,
                                 provider=provider)
        for warning in result.warnings:
            typer.echo(f"Warning: {warning}", err=True)
        typer.echo(
            f"Dry run: {result.messages:,} messages built for “{result.subject}” → "
            f"{result.audience.spec} via {result.provider}; nothing was sent."
        )
        if topics := result.audience.topic_line():
            typer.echo(f"Recipients by {topics}.")
        average = result.total_bytes // max(1, result.messages)
        typer.echo(
            f"Size: {_size(result.total_bytes)} in all, {_size(average)} on average, "
            f"{_size(result.largest_bytes)} the largest; built in {result.seconds:.1f} s."
        )
        if result.sample is not None:
            typer.echo(f"First: {result.sample.to_header}")
        return
    if not no_sync:
        _sync_first(s, to)
    issue = _issue(s, draft)
    confirm = _Confirm(yes)
    with _SendProgress() as progress:
        # Delivery does not import the writer's tools: the pre-send check and make_live
        # (the issue's page and images online before the first message) are handed to it.
        report = sending.send_draft(
            s, issue, to, check=pre_send_errors, web=None if no_web_check else make_live,
            provider=provider, concurrency=concurrency,
            rate=rate, resend=resend, force=force, retry_uncertain=retry_uncertain,
            confirm=confirm, on_progress=progress,
        )
    _finish(report, confirm.warned)


def _issue(s: Settings, draft: str) -> Issue:
    """The draft (a path or slug) built once: what send checks and sends."""
    from newsletter.compose.issue import build_issue
    from newsletter.compose.source import resolve_draft

    return build_issue(s, resolve_draft(s, draft))


def _sync_first(s: Any, to: str) -> None:
    """Before a list send: pull what the provider and mailbox know, so nobody they already
    suppressed is sent to. A provider that cannot be read stops nothing: the send goes on."""
    from newsletter.delivery.recipients import parse_audience
    from newsletter.feedback import pull

    if parse_audience(to).kind != "list" or not pull.configured(s):
        return
    try:
        report = pull.sync(s)
    except NewsletterError as exc:
        typer.echo(f"Warning: sync before sending failed ({exc}); sending anyway "
                   "(--no-sync skips it)", err=True)
        return
    typer.echo(f"Synced first: {report.stopped} reader(s) stopped by bounces, complaints or "
               "unsubscribes the provider or mailbox reported.", err=True)


def _schedule(s: Any, draft: str | None, to: str | None, at: str, provider: str | None,
              resend: bool, dry_run: bool) -> None:
    from newsletter.delivery.schedule import parse_at, schedule_send

    if not draft or not to:
        raise ConfigError('send --at needs a draft and --to: e.g. newsletter send hello-world '
                          '--to subscribers --at "2026-12-08 07:00"')
    if dry_run:
        raise ConfigError("--dry-run and --at do not go together: dry-run it now, schedule after")
    when = parse_at(at)
    found = schedule_send(s, draft, to, when, provider=provider, resend=resend)
    local = when.astimezone().strftime("%Y-%m-%d %H:%M %Z")
    typer.echo(
        f"Scheduled #{found.id}: “{found.subject}” → {found.audience} at {local}. Nothing was "
        "sent now: `newsletter run` (from cron or a timer) sends it when due, as campaign "
        f"{found.id}; `newsletter send --cancel {found.id}` cancels it."
    )


def _finish(report: Any, warned: bool = False) -> None:
    _summary(report, warned)
    error = report.error
    if isinstance(error, NewsletterError):  # a ProviderError: the CLI prints it as `Error: …`
        raise error
    if error is not None:  # a bug or a surprise inside a provider: still one line, and why
        text = " ".join(str(error).split())
        raise DeliveryError(
            f"the send stopped on an unexpected error ({type(error).__name__}: {text}); "
            f"`newsletter campaigns {report.campaign.id}` shows what was sent and what is "
            "uncertain, and the same command resumes (--traceback shows where it happened)"
        ) from error
    if report.run is not None and report.run.interrupted:
        raise typer.Exit(130)


# --- campaigns -----------------------------------------------------------------------------


def _status(campaign: Any, database: Any) -> str:
    from newsletter.delivery.lock import is_being_sent

    if campaign.status == "sending" and not is_being_sent(database, campaign.id):
        return "interrupted"
    return campaign.status


def campaigns(
    ctx: typer.Context,
    campaign_id: Annotated[
        int | None, typer.Argument(metavar="[ID]", help="Show this campaign in detail.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option(help="Show at most N campaigns (0: all).")] = 50,
) -> None:
    """List past sends with delivery counts per state, or show one with its failures.

    Example: newsletter campaigns 1
    """
    from newsletter import store
    from newsletter.delivery.log import campaign_problems, get_campaign, list_campaigns
    from newsletter.delivery.recipients import describe_audience

    s = settings(ctx)
    db = store.connect(s.database)
    try:
        if campaign_id is None:
            from newsletter.delivery.schedule import list_schedules

            pending = list_schedules(db, pending_only=True)
            found = list_campaigns(db, limit or None)
            if as_json:
                typer.echo(json.dumps([_campaign_json(c, s.database) for c in found], indent=2))
                return
            for item in pending:
                local = item.when.astimezone().strftime("%Y-%m-%d %H:%M %Z")
                state = {"sending": "sending now", "held": "held (edited)"}.get(
                    item.status, "scheduled")
                typer.echo(f"#{item.id:<3} {state} for {local}: {item.slug} → {item.audience}"
                           f"  (cancel: newsletter send --cancel {item.id})")
            if pending:
                typer.echo("")
            if not found:
                if not pending:
                    typer.echo("No campaigns yet: `newsletter send DRAFT --to subscribers` "
                               "starts one.")
                return
            # Whole slugs and readable audiences: the columns are as wide as what they hold.
            tos = [describe_audience(c.audience) if c.kind == "list"
                   else f"test: {describe_audience(c.audience)}" for c in found]
            dw = max(5, *(len(c.slug) for c in found))
            tw = max(2, *(len(t) for t in tos))
            typer.echo(
                f"{'ID':>4}  {'CREATED':<19}  {'DRAFT':<{dw}}  {'TO':<{tw}}  {'PROVIDER':<9} "
                f"{'STATUS':<11} {'SENT':>7} {'FAILED':>6} {'UNCERT':>6} {'SKIP':>5} {'QUEUED':>6}"
            )
            for c, to in zip(found, tos, strict=True):
                n = c.counts
                typer.echo(
                    f"{c.id:>4}  {c.created_at[:19].replace('T', ' '):<19}  {c.slug:<{dw}}  "
                    f"{to:<{tw}}  {c.provider[:9]:<9} {_status(c, s.database):<11} "
                    f"{n.sent:>7,} {n.failed:>6,} {n.uncertain:>6,} {n.skipped:>5,} "
                    f"{n.queued + n.sending:>6,}"  # claimed, unanswered: not sent yet either
                )
            return
        c = get_campaign(db, campaign_id)
        problems = campaign_problems(db, campaign_id, ("failed", "uncertain", "skipped"))
    finally:
        db.conn.close()
    if as_json:
        data = _campaign_json(c, s.database)
        data["problems"] = [p.__dict__ for p in problems]
        typer.echo(json.dumps(data, indent=2))
        return
    n = c.counts
    typer.echo(f"Campaign {c.id}: {c.subject}")
    typer.echo(f"  draft     {c.draft_path} ({c.slug})")
    kind = "the list" if c.kind == "list" else "a test send"
    typer.echo(f"  to        {describe_audience(c.audience)} ({c.audience}, {kind})")
    typer.echo(f"  provider  {c.provider}")
    typer.echo(f"  created   {c.created_at}")
    typer.echo(f"  finished  {c.finished_at or '-'}")
    typer.echo(f"  status    {_status(c, s.database)}")
    typer.echo(
        f"  {n.total:,} recipients: {n.sent:,} sent, {n.failed:,} failed, {n.uncertain:,} "
        f"uncertain, {n.skipped:,} skipped, {n.queued + n.sending:,} queued"
    )
    for state in ("failed", "uncertain", "skipped"):
        rows = [p for p in problems if p.state == state]
        if rows:
            typer.echo(f"{state.capitalize()}:")
            for p in rows:
                typer.echo(f"  {p.email}  ({p.attempts} attempt(s)) {p.error or ''}".rstrip())


def _campaign_json(c: Any, database: Any) -> dict[str, Any]:
    return {
        "id": c.id, "slug": c.slug, "draft": c.draft_path, "subject": c.subject,
        "audience": c.audience, "kind": c.kind, "provider": c.provider,
        "created_at": c.created_at, "finished_at": c.finished_at,
        "status": _status(c, database), "counts": c.counts.as_dict(),
    }


# --- providers -----------------------------------------------------------------------------


@app.command()
def providers(ctx: typer.Context) -> None:
    """List the providers you can send through: built-in and plug-ins, and where they come from.

    Plug-ins register in the entry-point group `newsletter.providers`.

    Example: newsletter providers
    """
    from newsletter.delivery.providers.registry import available_providers
    from newsletter.settings import load_settings

    try:
        configured = load_settings(newsletter_dir(ctx)).provider.name
    except NewsletterError:  # listing providers works outside a newsletter too
        configured = None
    found = available_providers()
    width = max([len(p.name) for p in found] + [4])
    dist_width = max([len(p.distribution) for p in found] + [4])
    for p in found:
        mark = "*" if p.name == configured else " "
        about = p.description if p.cls is not None else f"(cannot load: {p.error})"
        typer.echo(f"{mark} {p.name:<{width}}  {p.distribution:<{dist_width}}  {about}")
    if configured:
        typer.echo(f"* the provider newsletter.toml selects ({configured})", err=True)
