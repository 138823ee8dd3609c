"""A list import refuses a header it cannot read, names every row it skips, and stays
within a small machine's memory on a million rows (issue 18)."""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MEMORY_LIMIT = 512 * 1024 * 1024
# A million rows takes minutes on a 2-core CI box shared with other jobs: the default is
# 200,000; NEWSLETTER_TEST_IMPORT_ROWS=1000000 runs the full-size trial.
ROWS = int(os.environ.get("NEWSLETTER_TEST_IMPORT_ROWS", "200000"))


def limited_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.mark.parametrize("bad", ["\x00", "\x1b", "\x7f", "\x9b"])
def test_a_header_with_a_control_character_is_refused_naming_the_column(
        cli: Callable[..., Any], newsletter_dir: Path, bad: str) -> None:
    sheet = newsletter_dir / "list.csv"
    sheet.write_text(f"email,name{bad}\nada@example.com,Ada\nbob@example.com,Bob\n",
                     encoding="utf-8")

    run = cli("subscribers", "import", str(sheet))

    assert run.exit_code != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"Error: list.csv line 1: header column 2 ({'name' + bad!r}) "
                               f"holds the control character U+{ord(bad):04X}"), lines[0]
    assert cli("subscribers", "list").stdout == ""  # nothing imported with names lost


def test_the_report_names_every_skipped_row(
        cli: Callable[..., Any], newsletter_dir: Path) -> None:
    rows = ["email,name"]
    for n in range(1, 41):
        rows.append(f"reader{n}@example.com,Reader {n}")
    rows += [f"not-an-address-{n},Nobody" for n in range(13)]  # lines 42-54
    rows += ["reader1@example.com,Again", "reader2@example.com,Again"]  # lines 55, 56
    rows += [",No address"]  # line 57
    sheet = newsletter_dir / "list.csv"
    sheet.write_text("\n".join(rows) + "\n")

    run = cli("subscribers", "import", str(sheet))

    assert run.exit_code == 0, run.stderr
    assert "40 added" in run.stdout and "16 skipped" in run.stdout
    assert "  skipped (invalid address) lines 42-54" in run.stdout
    assert "  skipped (duplicate) lines 55-56" in run.stdout
    assert "  skipped (missing address) lines 57" in run.stdout
    assert "more skipped rows" not in run.stdout


@pytest.mark.slow
def test_a_huge_csv_imports_under_512_mb(newsletter_dir: Path) -> None:
    sheet = newsletter_dir / "big.csv"
    with sheet.open("w") as f:
        f.write("email,name,tags\n")
        for n in range(ROWS):
            f.write(f"reader{n}@example.com,Reader Number {n},\"a,b\"\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "newsletter", "subscribers", "import",
                           str(sheet)], cwd=newsletter_dir, capture_output=True, text=True,
                          timeout=1800, preexec_fn=limited_memory)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{ROWS} added" in done.stdout, done.stdout
    conn = sqlite3.connect(newsletter_dir / "newsletter.db")
    assert conn.execute("SELECT count(*) FROM subscribers").fetchone()[0] == ROWS
    conn.close()
    print(f"{ROWS} rows imported in {time.monotonic() - started:.1f} s under 512 MB")
