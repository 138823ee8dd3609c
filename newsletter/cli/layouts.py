"""Command group `layouts`: which layout files follow the built-ins, and how an edited one
differs from its built-in (what `newsletter doctor` points at)."""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter.cli.app import app, settings

layouts_app = typer.Typer(
    help="The layouts in layouts/: which follow the built-ins, and how yours differ.\n\n"
    "A layout you never edited follows the built-in of the installed version; an edited "
    "one is used as it is.\n\n"
    "Example: newsletter layouts list",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(layouts_app, name="layouts")


@layouts_app.command("list")
def list_cmd(ctx: typer.Context) -> None:
    """Each file in layouts/ and what is used: the built-in, or your edited copy.

    Example: newsletter layouts list
    """
    from newsletter.compose.layout import layout_states

    for name, state in layout_states(settings(ctx).root):
        typer.echo(f"{name:<22} {state}")


@layouts_app.command("diff")
def diff_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The layout's file name, e.g. default.html.")],
) -> None:
    """Show how layouts/NAME differs from today's built-in (a unified diff).

    Example: newsletter layouts diff manage.html
    """
    from newsletter.compose.layout import layout_diff

    diff = layout_diff(settings(ctx).root, name)
    typer.echo(diff.rstrip("\n") if diff else f"layouts/{name} is the same as the built-in")
