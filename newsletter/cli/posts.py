"""`newsletter import-posts`: past posts from Substack, Ghost or Buttondown become drafts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from newsletter.cli.app import app, settings


@app.command("import-posts")
def import_posts(
    ctx: typer.Context,
    export: Annotated[
        Path,
        typer.Argument(help="Substack's export ZIP, Ghost's JSON export or Buttondown's ZIP."),
    ],
    download_images: Annotated[
        bool,
        typer.Option("--download-images",
                     help="Copy each post's images into drafts/images/ (where reachable)."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be written; write nothing.")
    ] = False,
) -> None:
    """Turn a platform's archive of past posts into Markdown drafts.

    Posts the platform emailed are marked `sent:`, so `publish` puts them in the archive
    and `send --to subscribers` refuses them without --resend. Posts that were not public
    (paid-only, unpublished) get `publish: false`. Run it again after a new export: drafts
    you edited or deleted are left as they are.

    Example: newsletter import-posts examples/ghost-export.json --dry-run
    """
    from newsletter.writer.posts import import_posts as run

    console = Console(stderr=True)
    with Progress(TextColumn("Importing"), BarColumn(), TaskProgressColumn(), console=console,
                  transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("posts", total=None)
        report = run(settings(ctx), export, download_images=download_images, dry_run=dry_run,
                     progress=lambda done, total: bar.update(task, completed=done, total=total))

    def shown(path: Path) -> str:
        rel = os.path.relpath(path)
        return str(path) if rel.startswith("..") else rel

    verb = "would write" if dry_run else "wrote"
    for path in report.written:
        typer.echo(f"{verb:<11} {shown(path)}")
    for path in report.updated:
        typer.echo(f"{'would update' if dry_run else 'updated':<11} {shown(path)}")
    for path, why in report.kept:
        typer.echo(f"{'kept':<11} {shown(path)}: {why}")
    for why in report.dropped:
        typer.echo(f"{'dropped':<11} {why}", err=True)
    for failure in report.image_failures:
        typer.echo(f"warning: image {failure}", err=True)
    fetched = "to download" if dry_run else "downloaded"
    images = f", {report.images} image(s) {fetched}" if download_images else ""
    typer.echo(
        f"{report.platform}: {report.total} post(s): {len(report.written)} new, "
        f"{len(report.updated)} updated, {len(report.unchanged)} unchanged, "
        f"{len(report.kept)} kept as they were{images}"
        + (f", {len(report.dropped)} dropped (listed above)" if report.dropped else "")
        + (" (dry run: nothing written)" if dry_run else ""),
        err=True,
    )
