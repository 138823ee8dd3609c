"""Generate docs/cli.md from every command's --help, so the reference cannot drift.

Run: python scripts/gen_cli_docs.py        (rewrites docs/cli.md)
     python scripts/gen_cli_docs.py --check (exit 1 when docs/cli.md is stale)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click
import typer.main
from typer.testing import CliRunner

from newsletter.cli import app

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def walk(command: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    """Every command and sub-command, in the order the CLI lists them."""
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path[-1])
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, [*path, name])


def help_text(path: list[str]) -> str:
    """The help exactly as a user sees it, at a fixed width."""
    result = CliRunner().invoke(app, [*path[1:], "--help"], env={"COLUMNS": "88"})
    if result.exit_code != 0:
        raise SystemExit(f"{' '.join(path)} --help failed: {result.output}")
    return result.output.rstrip() + "\n"


def render() -> str:
    root = typer.main.get_command(app)
    parts = [
        "# Command reference\n\n",
        "Generated from `--help` by `scripts/gen_cli_docs.py`; do not edit by hand.\n",
    ]
    for path, _command in walk(root, ["newsletter"]):
        parts.append(f"\n## `{' '.join(path)}`\n\n```\n{help_text(path)}```\n")
    return "".join(parts)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not DOCS.exists() or DOCS.read_text() != text:
            print("docs/cli.md is stale: run python scripts/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    DOCS.parent.mkdir(exist_ok=True)
    DOCS.write_text(text)
    print(f"wrote {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
