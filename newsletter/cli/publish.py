"""Command `publish`: map options, call writer.publish, print what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from newsletter.cli.app import app, settings


@app.command()
def publish(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option("--out", help='The site folder (default: [publish] out, else "site").'),
    ] = None,
) -> None:
    """Write the static archive: a page per issue sent to the list, index, feeds, sitemap.

    Issues that went to the list (or say `publish: true`) get a web page at
    {base_url}/<slug>/ with their images beside it; index.html lists them,
    newest first; feed.xml (Atom), rss.xml, feed.json and sitemap.xml carry
    them too. `publish: false` in a draft keeps it off the web. Running it
    again rewrites only what changed and removes pages of issues taken off.

    Example: newsletter publish --out site
    """
    from newsletter.writer.publish import publish as publish_site
    from newsletter.writer.publish import shown

    result = publish_site(settings(ctx), out)
    for warning in result.warnings:
        typer.echo(f"Warning: {warning}", err=True)
    for rel in result.written:
        typer.echo(f"wrote   {shown(result.out / rel)}")
    for rel in result.removed:
        typer.echo(f"removed {shown(result.out / rel)}")
    typer.echo(
        f"{len(result.issues)} issue(s) in {shown(result.out)}: {len(result.written)} file(s) "
        f"written, {result.unchanged} unchanged, {len(result.removed)} removed",
        err=True,
    )
