"""Commands `init`, `draft`, `drafts` and `build`: map options, call the writer library, print."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from newsletter.cli.app import app, settings
from newsletter.errors import ContentError


def _shown(path: Path) -> str:
    """A path relative to the current folder when it is below it, else absolute."""
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    except ValueError:  # another drive on Windows
        return str(path)


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KB"


@app.command()
def init(
    path: Annotated[
        Path, typer.Argument(help="The folder to lay out (created if missing).")
    ] = Path("."),
) -> None:
    """Lay out a newsletter folder: newsletter.toml, drafts/, layouts/, .gitignore, a secret.

    Running it again keeps every file that exists; nothing is overwritten.

    Example: newsletter init mylog
    """
    from newsletter.writer.drafts import init_newsletter

    result = init_newsletter(path)
    for created in result.created:
        typer.echo(f"created {_shown(created)}")
    for kept in result.kept:
        typer.echo(f"kept    {_shown(kept)}")
    where = _shown(result.root)
    step = f"cd {where} && " if where != "." else ""
    typer.echo(
        f'Next: edit newsletter.toml, then {step}newsletter draft "My first issue"', err=True
    )


@app.command()
def draft(
    ctx: typer.Context,
    title: Annotated[str, typer.Argument(help="The issue's title (also its subject).")],
    slug: Annotated[
        str | None,
        typer.Option(help="The file name part after the date (default: from the title)."),
    ] = None,
    when: Annotated[
        str | None, typer.Option("--date", help="The issue's date, YYYY-MM-DD (default: today).")
    ] = None,
) -> None:
    """Start a draft: write drafts/<date>-<slug>.md with front matter and print its path.

    Example: newsletter draft "Notes from week one"
    """
    from newsletter.writer.drafts import new_draft

    day = None
    if when is not None:
        try:
            day = date.fromisoformat(when)
        except ValueError:
            raise ContentError(f"--date {when!r} is not a date: write it as YYYY-MM-DD") from None
    path = new_draft(settings(ctx), title, slug=slug, when=day)
    typer.echo(_shown(path))


@app.command()
def drafts(ctx: typer.Context) -> None:
    """List drafts with their date, subject and whether each was sent to the list.

    Example: newsletter drafts
    """
    from newsletter.writer.drafts import list_drafts

    infos = list_drafts(settings(ctx))
    if not infos:
        typer.echo('No drafts yet: start one with newsletter draft "Title"', err=True)
        return
    width = max(len(i.slug) for i in infos)
    state_width = max(15, *(len(i.sent) for i in infos))
    for info in infos:
        day = info.date.isoformat() if info.date else "          "
        state = info.sent or "not sent"
        subject = info.subject if info.error is None else f"(cannot read: {info.error})"
        typer.echo(f"{day}  {info.slug:<{width}}  {state:<{state_width}}  {subject}")


@app.command()
def build(
    ctx: typer.Context,
    draft: Annotated[str, typer.Argument(help="The draft: a path or a slug.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write the files (default: build/ in the newsletter)."),
    ] = None,
) -> None:
    """Render a draft to DIR/<slug>.html (its web version), .txt and .eml (a sample reader's).

    Prints each file with its size; warnings (no base_url, HTML over Gmail's
    102 KB clipping limit, …) go to stderr.

    Example: newsletter build leaving-facebook-meta --out public
    """
    from rich.console import Console

    from newsletter.writer.drafts import build_draft

    current = replace(settings(ctx), drafts_only=True)  # a build's links are never mailed
    console = Console(stderr=True)
    with console.status("Rendering the issue…"):
        result = build_draft(current, draft, out)
    for warning in result.issue.warnings:
        typer.echo(f"Warning: {warning}", err=True)
    for path, size in result.files:
        typer.echo(f"{_shown(path)}  {_size(size)}")
