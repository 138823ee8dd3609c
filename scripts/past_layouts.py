"""Write newsletter/templates/past_layouts.json: every earlier version of each built-in layout.

A newsletter folder made before `init` recorded what it copied has layout files equal to
some earlier built-in; those count as unedited and follow the built-in (compose/layout.py).
The hashes come from git history (`git log -p newsletter/templates/layouts`). Run it after
changing a built-in layout, and commit the file with the change; tests/compose/
test_layouts_follow.py fails when a committed version is missing from it.

    .venv/bin/python scripts/past_layouts.py
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYOUTS = "newsletter/templates/layouts"
OUT = REPO / "newsletter" / "templates" / "past_layouts.json"


def past_versions() -> dict[str, list[str]]:
    """file name → sha256 of each committed version that is not today's, oldest first."""
    def git(*args: str) -> bytes:
        return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True).stdout

    found: dict[str, list[str]] = {}
    for line in git("log", "--reverse", "--format=%H", "--", LAYOUTS).decode().split():
        listing = git("ls-tree", "--name-only", line, f"{LAYOUTS}/").decode().split()
        for path in listing:
            name = path.rsplit("/", 1)[-1]
            digest = hashlib.sha256(git("show", f"{line}:{path}")).hexdigest()
            current = REPO / LAYOUTS / name
            if current.is_file() and hashlib.sha256(current.read_bytes()).hexdigest() == digest:
                continue
            if digest not in found.setdefault(name, []):
                found[name].append(digest)
    return {name: hashes for name, hashes in sorted(found.items()) if hashes}


def main() -> int:
    OUT.write_text(json.dumps(past_versions(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
