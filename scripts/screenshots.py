"""Render the README's screenshots: docs/screenshots/<page>-<width>.png.

It runs tests/web/test_a11y.py (a real `newsletter serve` and headless Chromium; axe-core
must pass on every page first), which saves every page at 375 px and 1280 px, and copies
the few the README shows. Run it after changing a layout or style.css:

    .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "screenshots"
SHOWN = ("home", "issue", "subscribe", "manage")
WIDTHS = (375, 1280)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="newsletter-shots-") as folder:
        env = {**os.environ, "A11Y_SCREENSHOTS": folder}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
             "tests/web/test_a11y.py::test_every_page_passes_axe_at_both_widths"],
            cwd=REPO, env=env)
        if run.returncode != 0:
            print("Error: the accessibility test failed (or was skipped): no screenshots "
                  "were copied; fix what it names and run this again", file=sys.stderr)
            return 1
        missing = [f"{page}-{width}.png" for page in SHOWN for width in WIDTHS
                   if not (Path(folder) / f"{page}-{width}.png").is_file()]
        if missing:
            print(f"Error: the test saved no {', '.join(missing)}: is Chromium installed?",
                  file=sys.stderr)
            return 1
        OUT.mkdir(parents=True, exist_ok=True)
        for page in SHOWN:
            for width in WIDTHS:
                name = f"{page}-{width}.png"
                shutil.copyfile(Path(folder) / name, OUT / name)
                print(f"wrote {OUT.relative_to(REPO) / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
