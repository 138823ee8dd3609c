"""Generate docs/cli.md from every command's --help, so the reference cannot drift.

Run: python scripts/gen_cli_docs.py        (rewrites docs/cli.md)
     python scripts/gen_cli_docs.py --check (exit 1 when docs/cli.md is stale)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer.main
from typer.testing import CliRunner

from newsletter.cli import app

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def walk(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    """Every command and sub-command, in the order they were registered.

    (typer vendors its own click, so groups are recognised by their `commands`.)
    """
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
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
