"""Print the shell command in README.md's code block after `<!-- NAME -->`.

.ci/run runs the README's quick start through this, so CI proves the exact
command a newcomer types (tests/test_readme.py checks the two agree).
Usage: python3 .ci/readme_command.py quickstart
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def command_after(marker: str, text: str | None = None) -> str:
    """The command in the first code block after `<!-- marker -->` (ValueError when none)."""
    text = README.read_text(encoding="utf-8") if text is None else text
    match = re.search(rf"<!-- {re.escape(marker)} -->\s*```(?:sh|bash|console)?\n(.+?)```",
                      text, re.S)
    if not match:
        raise ValueError(f"README.md has no code block after <!-- {marker} -->")
    return match.group(1).strip()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 .ci/readme_command.py MARKER")
    try:
        print(command_after(sys.argv[1]))
    except ValueError as exc:
        sys.exit(f"Error: {exc}")
