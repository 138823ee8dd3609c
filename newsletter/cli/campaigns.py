"""Command group `campaigns`: the history (`campaigns [ID]`, the `show` command in send.py's
module) and `campaigns settle ID --as-sent | --resend` for readers a send left uncertain."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from newsletter.cli.app import app, settings
from newsletter.cli.send import campaigns as show
from newsletter.errors import ConfigError, DeliveryError, NewsletterError


class _ShowByDefault(TyperGroup):
    """`campaigns`, `campaigns 3` and `campaigns --json` are `campaigns show …`: the
    contract's `newsletter campaigns [ID]` stays as it was, beside `campaigns settle`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["show", *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)


campaigns_app = typer.Typer(
    cls=_ShowByDefault,
    help="Past sends with their delivery counts, and settling readers a send left uncertain.\n\n"
    "newsletter campaigns [ID] lists them, or shows one (the same as `campaigns show`).\n\n"
    "Example: newsletter campaigns",
    rich_markup_mode=None,
)
app.add_typer(campaigns_app, name="campaigns")
campaigns_app.command("show")(show)


@campaigns_app.command("settle")
def settle(
    ctx: typer.Context,
    campaign_id: Annotated[int, typer.Argument(help="The campaign to settle.")],
    as_sent: Annotated[bool, typer.Option(
        "--as-sent", help="They went out (the provider's log says so): mark them sent.")] = False,
    resend: Annotated[bool, typer.Option(
        "--resend", help="Send them the issue now (some may get it twice).")] = False,
) -> None:
    """Settle the readers a send left uncertain: mark them sent, or send them the issue.

    A message is uncertain when the provider may have taken it but never answered (a
    dropped connection, a crash mid-send). Check the provider's log, then decide; after
    that `newsletter run` stops reporting the campaign.

    Example: newsletter campaigns settle 1 --as-sent
    """
    from newsletter.delivery import sending

    if as_sent == resend:
        raise ConfigError("settle needs one of --as-sent (they went out) or --resend (send "
                          "them the issue now): e.g. newsletter campaigns settle "
                          f"{campaign_id} --as-sent")
    s = settings(ctx)
    if as_sent:
        campaign, n = sending.settle_as_sent(s, campaign_id)
        if n:
            typer.echo(f"Campaign {campaign.id} ({campaign.slug}): {n:,} uncertain "
                       f"delivery(ies) marked sent; status {campaign.status}.")
        else:
            _nothing(campaign)
        return
    report = sending.resend_uncertain(s, campaign_id)
    if report.run is None:
        _nothing(report.campaign)
        return
    c = report.campaign.counts
    typer.echo(f"Campaign {report.campaign.id} ({report.campaign.slug}): sent again; now "
               f"{c.sent:,} sent, {c.failed:,} failed, {c.uncertain:,} uncertain, "
               f"{c.queued + c.sending:,} queued; status {report.campaign.status}.")
    error = report.error
    if isinstance(error, NewsletterError):  # a ProviderError: printed as `Error: …`
        raise error
    if error is not None:
        raise DeliveryError(f"the send stopped on an unexpected error ({type(error).__name__}: "
                            f"{' '.join(str(error).split())}); `newsletter campaigns "
                            f"{report.campaign.id}` shows what is left") from error


def _nothing(campaign: Any) -> None:
    typer.echo(f"Campaign {campaign.id} ({campaign.slug}) has no uncertain deliveries: nothing "
               "to settle.")
