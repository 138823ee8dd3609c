"""`newsletter doctor`: is this newsletter ready to send for real, and why not."""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter.cli.app import app, newsletter_dir
from newsletter.errors import NewsletterError

DOCTOR_FAILED = 1  # as `check`: errors found (or warnings, with --strict)
DOCTOR_COULD_NOT_RUN = 2  # no newsletter here, or a bad option


@app.command()
def doctor(
    ctx: typer.Context,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the lines as JSON, for tools.")
    ] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings too.")] = False,
    dns: Annotated[
        str | None,
        typer.Option("--dns", metavar="HOST[:PORT]",
                     help="Ask this DNS server instead of the system's resolver."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each answer.")
    ] = 5.0,
) -> None:
    """Check that the newsletter is ready to send for real: exit 0 ready, 1 on errors, 2 if
    it cannot run.

    One line per item, ok / warning / error with how to fix it: settings valid; the
    secret matches the database; the provider accepts its credentials (a harmless
    authenticated call, SMTP EHLO and AUTH: nothing is sent); base_url answers /healthz,
    the archive home and a one-click unsubscribe POST; the From domain's DNS has SPF,
    DKIM for the provider's selector ([provider] dkim_selector) and DMARC, as Gmail's and
    Yahoo's bulk-sender rules ask; the last backup is under 2 days old. It never writes
    the database and never makes a secret.

    Example: newsletter doctor --strict
    """
    from newsletter.doctor import diagnose, format_line

    if dns is not None and not _valid_server(dns):
        typer.echo(f"Error: --dns {dns} is not HOST or HOST:PORT (like 127.0.0.1:5353)",
                   err=True)
        raise typer.Exit(DOCTOR_COULD_NOT_RUN)
    try:
        report = diagnose(newsletter_dir(ctx), dns_server=dns, timeout=timeout)
    except NewsletterError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(DOCTOR_COULD_NOT_RUN) from None
    if json_output:
        typer.echo(report.to_json())
    else:
        for line in report.lines:
            typer.echo(format_line(line))
        errors, warnings = len(report.errors), len(report.warnings)
        verdict = "not ready" if report.failed(strict) else "ready to send"
        typer.echo(f"{errors} error{'s' * (errors != 1)}, {warnings} "
                   f"warning{'s' * (warnings != 1)}: {verdict}", err=True)
    if report.failed(strict=strict):
        raise typer.Exit(DOCTOR_FAILED)


def _valid_server(value: str) -> bool:
    host, sep, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    if sep and not (port.isdigit() and 0 < int(port) < 65536):
        return False
    return bool(host if sep else value)
