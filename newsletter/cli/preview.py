"""Commands `preview` and `check`: map options, call the writer library, print."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from newsletter.cli.app import app, settings
from newsletter.errors import NewsletterError
from newsletter.settings import Settings

CHECK_FAILED = 1
CHECK_COULD_NOT_RUN = 2


def _draft_path(current: Settings, draft: str) -> Path:
    from newsletter.compose.source import resolve_draft

    return Path(resolve_draft(current, draft))


@app.command()
def preview(
    ctx: typer.Context,
    draft: Annotated[str, typer.Argument(help="The draft: a path or a slug.")],
    host: Annotated[
        str,
        typer.Option(help="Address to listen on. Anything but loopback lets others on the "
                     "network read the draft."),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0: a free one).")
    ] = 0,
    no_open: Annotated[
        bool, typer.Option("--no-open", help="Print the URL without opening a browser.")
    ] = False,
) -> None:
    """Serve the issue as subscribers will get it, and refresh it on every save.

    The page shows the inbox row (from, subject, preheader), desktop and phone
    widths, dark mode, the text part, the raw source, a view without <style>
    blocks, and a reader with no name (what default("friend") falls back to).
    Saving the draft, a layout or newsletter.toml rebuilds it.
    Ctrl-C stops.

    Example: newsletter preview leaving-facebook-meta --no-open
    """
    from newsletter.writer.preview import run_preview

    current = replace(settings(ctx), drafts_only=True)
    run_preview(current, _draft_path(current, draft), host=host, port=port,
                open_browser=not no_open)


@app.command()
def check(
    ctx: typer.Context,
    draft: Annotated[str, typer.Argument(help="The draft: a path or a slug.")],
    strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings too.")] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the findings as JSON, for tools.")
    ] = False,
) -> None:
    """Lint a draft before sending: exit 0 clean, 1 on findings that fail, 2 if it cannot run.

    Errors: no subject, undefined template variable, missing image, no
    unsubscribe link, relative links without base_url, HTML over 102 KB,
    <style> over 16 KB, no From address, leftover TODO/TK/lorem ipsum.
    Warnings: images without alt text, empty or # links, CSS common clients
    ignore, no preheader, an all-caps or very long subject.

    Example: newsletter check leaving-facebook-meta --strict
    """
    from newsletter.writer.check import check_draft, format_finding, shown_path

    try:
        current = replace(settings(ctx), drafts_only=True)
        report = check_draft(current, _draft_path(current, draft))
    except NewsletterError as exc:
        # The check itself could not run: distinct from "found problems" for scripts.
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(CHECK_COULD_NOT_RUN) from None
    if json_output:
        typer.echo(report.to_json())
    else:
        for finding in report.findings:
            typer.echo(format_finding(report, finding))
        errors, warnings = len(report.errors), len(report.warnings)
        if not report.findings:
            typer.echo(f"{shown_path(report.draft)}: no problems found", err=True)
        else:
            typer.echo(f"{errors} error{'s' * (errors != 1)}, "
                       f"{warnings} warning{'s' * (warnings != 1)}", err=True)
    if report.failed(strict=strict):
        raise typer.Exit(CHECK_FAILED)
