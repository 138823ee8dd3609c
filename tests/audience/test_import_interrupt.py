"""An import killed half-way (kill -9, Ctrl-C) leaves the database exactly as before."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from newsletter import store
from newsletter.audience import importers
from tests.audience.conftest import rows

ROWS = 20_000


def write_list(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("email,name\n")
        for i in range(n):
            f.write(f"reader{i}@example.com,Reader {i}\n")


def lock_is_held(path: Path) -> bool:
    """True while another connection holds the write lock (the import's transaction)."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc) or "busy" in str(exc)
        return True
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
    return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM],
                         ids=["kill-9", "ctrl-c", "kill"])
def test_an_interrupted_import_leaves_the_database_as_before(
    newsletter_dir: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    db_path = newsletter_dir / "newsletter.db"
    first = tmp_path / "first.csv"
    write_list(first, ROWS)
    db = store.connect(db_path)
    importers.import_file(db, first)
    before = rows(db)
    db.conn.close()

    # The second import updates every row (a new tag) and adds as many again: a long merge.
    second = tmp_path / "second.csv"
    write_list(second, 2 * ROWS)
    with open(second, "a") as f:
        f.write("not-an-address,Someone\n")  # one reject: the rejects file is being written
    rejects = tmp_path / "rejects.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--dir", str(newsletter_dir),
         "subscribers", "import", str(second), "--tag", "second", "--rejects", str(rejects)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        # Held twice in a row: the merge, not a momentary lock while the CLI opens the db.
        held = 0
        while proc.poll() is None and held < 2:
            held = held + 1 if lock_is_held(db_path) else 0
            time.sleep(0.002)
        assert proc.poll() is None, "the import finished before it could be interrupted"
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, err
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 128 + sig
        assert err.splitlines()[-1] == b"Interrupted: nothing was imported; the list is as it was."
        assert b"Traceback" not in err
    # No rejects file, and no half-written one beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.csv", "letter", "second.csv"]

    db = store.connect(db_path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert rows(db) == before
    # The list is usable at once: the same import now goes through whole.
    summary = importers.import_file(db, second, tags=["second"])
    assert (summary.added, summary.updated) == (ROWS, ROWS)
