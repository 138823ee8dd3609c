"""The typer app, global options (--dir, --traceback) and error handling."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from newsletter.errors import NewsletterError
from newsletter.settings import Settings, load_settings

# typer vendors click and exports only BadParameter: its base class is click's UsageError.
_UsageError: type[Exception] = typer.BadParameter.__base__  # type: ignore[assignment]


def _usage_error(ctx: typer.Context, exc: Any) -> None:
    """A mistyped command line as one line too (click prints usage, a hint and a blank line)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # `newsletter subscribers`: the help is wanted
        raise exc
    see = f"`{exc.ctx.command_path} --help`" if exc.ctx is not None else "--help"
    message = exc.format_message().replace("\r", " ").replace("\n", " ").rstrip(".")
    typer.echo(f"Error: {message} (see {see})", err=True)
    ctx.exit(exc.exit_code)


class NewsletterGroup(TyperGroup):
    """Turns NewsletterError into one line `Error: …` on stderr and its exit code."""

    # `ctx` is the click Context typer hands down: its own vendored click's, hence Any.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except _UsageError as exc:  # newsletter --bogus …
            _usage_error(ctx, exc)
            raise  # pragma: no cover - _usage_error exits

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _UsageError as exc:  # an unknown command, option or a bad value below us
            _usage_error(ctx, exc)
        except (NewsletterError, sqlite3.Error) as exc:
            if ctx.params.get("traceback") or os.environ.get("NEWSLETTER_DEBUG"):
                raise
            error = exc if isinstance(exc, NewsletterError) else _database_error(exc)
            message = str(error).replace("\r", " ").replace("\n", " ")
            typer.echo(f"Error: {message}", err=True)
            ctx.exit(error.exit_code)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # in the order they were registered, not sorted


def _database_error(exc: sqlite3.Error) -> NewsletterError:
    # A damaged or read-only newsletter.db surfaces at the first query that touches the bad
    # page or writes, anywhere in a command: one line here rather than a traceback.
    from newsletter.store import database_error

    return database_error(exc)


app = typer.Typer(
    cls=NewsletterGroup,
    name="newsletter",
    help="Publish an email newsletter from Markdown to a list you own.\n\n"
    "Example: newsletter init mylog && cd mylog && newsletter draft \"Hello\"",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global(
    ctx: typer.Context,
    dir: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            envvar="NEWSLETTER_DIR",
            help="The newsletter folder (default: the nearest one holding newsletter.toml).",
            show_envvar=True,
        ),
    ] = None,
    traceback: Annotated[
        bool, typer.Option("--traceback", help="Show the full traceback on errors.")
    ] = False,
) -> None:
    ctx.obj = {"dir": dir}


def newsletter_dir(ctx: typer.Context) -> Path | None:
    """The folder given with --dir / NEWSLETTER_DIR, or None (search upwards)."""
    root = ctx.find_root()
    return (root.obj or {}).get("dir")


def settings(ctx: typer.Context) -> Settings:
    """Load the newsletter's settings, honouring --dir."""
    return load_settings(newsletter_dir(ctx))


def main() -> None:
    app()
