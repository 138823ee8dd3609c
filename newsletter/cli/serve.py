"""Command `serve`: map options, call the web library, print."""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter.cli.app import app, settings
from newsletter.errors import ConfigError


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default [server] host, else "
                                 "127.0.0.1). Keep loopback behind a reverse proxy.",
                                 show_default=False)
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, show_default=False,
                                 help="Port to listen on (default [server] port, else 8080).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, show_default=False,
                                 help="Worker processes sharing newsletter.db (default "
                                 "[server] workers, else 1).")
    ] = None,
    embed: Annotated[
        bool, typer.Option("--embed", help="Print the sign-up form's HTML for another page "
                           "and exit.")
    ] = False,
) -> None:
    """Serve the reader pages: subscribe, confirm, unsubscribe, manage, provider webhooks.

    Pages: /subscribe (double opt-in: one confirmation email), /confirm,
    /unsubscribe (RFC 8058 one-click), /manage (name, topics), /healthz and
    POST /webhooks/PROVIDER. GET never changes anything. The same newsletter.db
    as the CLI: a send can run meanwhile. See docs/deploy.md for HTTPS and systemd.

    Example: newsletter serve --embed
    """
    current = settings(ctx)
    if current.web.hosting == "none":
        # Nothing it would answer is ever mailed: the writer meant something else.
        raise ConfigError(
            f'{current.config_path}: [server] url = "none" says no server runs (readers '
            "unsubscribe by email), so the emails link to nothing `serve` would answer: remove "
            "the line to serve everything at base_url, or set it to this server's address")
    if embed:
        from newsletter.web.reader_pages import embed_snippet

        typer.echo(embed_snippet(current), nl=False)
        return
    from newsletter.web.server import serve as run

    run(current, host=host, port=port, workers=workers,
        announce=lambda line: typer.echo(line, err=True))
