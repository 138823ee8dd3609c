"""`newsletter stats`: each issue's results and the list's growth, in the terminal, as JSON,
or as an HTML report with charts (newsletter/stats/)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from newsletter.cli.app import app, settings
from newsletter.errors import ConfigError

if TYPE_CHECKING:
    from newsletter.stats.numbers import Growth, IssueResult


@app.command("stats")
def stats(
    ctx: typer.Context,
    campaign_id: Annotated[
        int | None, typer.Argument(metavar="CAMPAIGN", help="Show this campaign only.")
    ] = None,
    by: Annotated[str, typer.Option("--by", help="List growth per week or month.")] = "month",
    segment: Annotated[str | None, typer.Option(
        "--segment", help="List growth of part of the list, written as --to writes it: "
        "tag:NAME, topic:NAME, plan=paid, has:city, joined with + (tag:friends+plan=paid).",
    )] = None,
    tests: Annotated[bool, typer.Option(
        "--tests", help="Include test sends (left out by default).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    html_path: Annotated[Path | None, typer.Option(
        "--html", metavar="FILE", help="Write an HTML report with charts to FILE (opens "
        "offline: no script, no network).")] = None,
) -> None:
    """How each issue did and how the list grows: no tracking, from what is recorded anyway.

    Per issue: sent, failed, uncertain, bounced (hard / soft), complaints and the
    unsubscribes that came from that issue, as counts and as a share of what was sent.
    The list: readers who joined (on their own sign-up date, imported ones included),
    confirmed and left per week or month, and the active count at the end of each.
    Confirmation, manage-link and welcome emails are counted apart from issues.
    With [analytics] clicks or opens on: the people who opened and clicked, clicks per
    link, and machine events (scanners, pre-fetchers) counted apart.

    Example: newsletter stats --by week --html report.html
    """
    from newsletter.stats import numbers

    if by not in numbers.PERIODS:
        raise ConfigError(f"--by {by!r}: use week or month")
    s = settings(ctx)
    results = numbers.issue_results(s.database, campaign_id, include_tests=tests)
    growth = None if campaign_id is not None else numbers.list_growth(s.database, by, segment)
    extra = None if campaign_id is not None else numbers.transactional(s.database)
    if html_path is not None:
        from newsletter.stats import report

        if growth is None or extra is None:
            raise ConfigError("--html reports the whole newsletter: leave out CAMPAIGN")
        page = report.render(s.name, results, growth, extra)
        tmp = html_path.with_name(f".{html_path.name}.tmp")
        try:
            tmp.write_text(page, encoding="utf-8")
            tmp.replace(html_path)  # never a half-written report
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ConfigError(f"cannot write {html_path}: {exc.strerror}") from None
        typer.echo(f"Wrote {html_path} (open it in a browser).")
        return
    if as_json:
        typer.echo(numbers.as_json(results, growth, extra))
        return
    _print_results(results, single=campaign_id is not None)
    if growth is not None:
        typer.echo("")
        _print_growth(growth)
    if extra is not None:
        typer.echo("")
        typer.echo(f"Other mail (not counted above): {extra.confirmations_sent} confirmations, "
                   f"{extra.manage_links_sent} manage links, {extra.welcomes_sent} welcomes sent"
                   + (f"; {extra.queued_or_failed} waiting or failed"
                      if extra.queued_or_failed else "") + ".")


def _pct(n: int, of: int) -> str:
    return f"{n} ({100 * n / of:.1f}%)" if of else str(n)


def _print_results(results: list[IssueResult], *, single: bool) -> None:
    if not results:
        typer.echo("No issue has been sent to the list yet: `newsletter send DRAFT --to "
                   "subscribers` sends one.")
        return
    if any(r.rehearsal for r in results) and not single:
        typer.echo("(* a rehearsal: written to the outbox, nobody was mailed)")
    if single:
        r = results[0]
        typer.echo(f"#{r.id} {r.subject}  ({r.created_at[:10]}, to {r.audience}, {r.status}"
                   + (", a rehearsal to the outbox)" if r.rehearsal else ")"))
        for label, value in (
            ("sent", str(r.sent)), ("failed", _pct(r.failed, r.sent)),
            ("uncertain", str(r.uncertain)), ("skipped", str(r.skipped)),
            ("not yet sent", str(r.pending)),
            ("hard bounces", _pct(r.hard_bounces, r.sent)),
            ("soft bounces", _pct(r.soft_bounces, r.sent)),
            ("complaints", _pct(r.complaints, r.sent)),
            ("unsubscribed", _pct(r.unsubscribes, r.sent)),
        ):
            typer.echo(f"  {label:<13} {value}")
        _print_engagement(r)
        return
    labels = [f"{r.subject} *" if r.rehearsal else r.subject for r in results]
    sw = min(40, max(7, *(len(label) for label in labels)))
    typer.echo(f"{'ID':>4}  {'DATE':<10}  {'ISSUE':<{sw}} {'SENT':>7} {'FAILED':>13} "
               f"{'UNCERT':>6} {'BOUNCED H/S':>13} {'COMPLAINTS':>12} {'UNSUBSCRIBED':>13}")
    for r, label in zip(results, labels, strict=True):
        subject = label if len(label) <= sw else label[: sw - 1] + "…"
        typer.echo(
            f"{r.id:>4}  {r.created_at[:10]:<10}  {subject:<{sw}} {r.sent:>7} "
            f"{_pct(r.failed, r.sent):>13} {r.uncertain:>6} "
            f"{f'{r.hard_bounces}/{r.soft_bounces}':>13} {_pct(r.complaints, r.sent):>12} "
            f"{_pct(r.unsubscribes, r.sent):>13}"
        )
    engaged = [r for r in results if r.engagement is not None]
    if engaged:
        typer.echo("")
        typer.echo("Opens and clicks ([analytics]; people only, machines apart):")
        typer.echo(f"{'ID':>4}  {'OPENED':>13} {'CLICKED':>13} {'MACHINE OPENS/CLICKS':>21}")
        for r in engaged:
            g = r.engagement
            assert g is not None
            typer.echo(f"{r.id:>4}  {_pct(g.openers, r.sent):>13} {_pct(g.clickers, r.sent):>13}"
                       f" {f'{g.machine_opens}/{g.machine_clicks}':>21}")


def _print_engagement(r: IssueResult) -> None:
    """One issue's opens, clicks and links ([analytics]), machines apart."""
    g = r.engagement
    if g is None:
        return
    typer.echo(f"  {'opened':<13} {_pct(g.openers, r.sent)} people")
    typer.echo(f"  {'clicked':<13} {_pct(g.clickers, r.sent)} people, {g.clicks} clicks")
    for link in g.links:
        typer.echo(f"    {link.clicks:>5} clicks, {link.clickers:>4} people  {link.url}")
    machine = ", ".join(f"{n} {why}" for why, n in g.machine.items())
    typer.echo(f"  {'machines':<13} {g.machine_opens} opens, {g.machine_clicks} clicks, "
               f"not counted above" + (f" ({machine})" if machine else ""))


def _print_growth(growth: Growth) -> None:
    from newsletter.stats.numbers import sparkline

    if not growth.buckets:
        typer.echo(f"No readers yet in {growth.segment}.")
        return
    fmt = "%Y-%m-%d" if growth.period == "week" else "%Y-%m"
    typer.echo(f"List growth per {growth.period} ({growth.segment}):")
    typer.echo(f"  {'PERIOD':<10} {'JOINED':>7} {'CONFIRMED':>9} {'UNSUBSCRIBED':>12} "
               f"{'BOUNCED':>7} {'COMPLAINED':>10} {'ACTIVE':>7}")
    for b in growth.buckets[-24:]:
        typer.echo(f"  {b.start.strftime(fmt):<10} {b.joined:>7} {b.confirmed:>9} "
                   f"{b.unsubscribed:>12} {b.bounced:>7} {b.complained:>10} {b.active:>7}")
    shown = growth.buckets[-60:]
    typer.echo(f"  active: {sparkline(b.active for b in shown)}  "
               f"{shown[0].active} → {shown[-1].active}")
