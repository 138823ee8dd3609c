"""Issue 21: an import prepares its rows, ids and journal ops without the write lock and
merges them in one short transaction; still all or nothing, still journaled for restore.

Real SQLite files; another connection (or process) writes while the import prepares.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlite_utils

from newsletter import changes, store
from newsletter.audience import importers, subscribers
from tests.audience.conftest import rows


def _sheet(path: Path, addresses: list[str]) -> Path:
    path.write_text("email,name\n" + "".join(f"{a},Name {i}\n" for i, a in enumerate(addresses)))
    return path


def _journal_lines(database: Path) -> list[str]:
    return [line for g in changes.generations(database)
            for line in changes.generation_path(database, g).read_text().splitlines() if line]


def _replayed(database: Path) -> dict[int, dict]:
    """Each reader as the journal would put them back (the last image of each id)."""
    found: dict[int, dict] = {}
    for record in changes.read(database, 0):
        assert record is not None
        for op in record.ops:
            if op.get("op") == "reader" and op.get("subscriber"):
                found[op["subscriber"]["id"]] = op["subscriber"]
    return found


def test_an_imports_readers_are_journaled_in_their_own_file_named_by_one_line(
    db: sqlite_utils.Database, tmp_path: Path,
) -> None:
    # The ops used to be encoded and written line by line (one per 1,000 readers) inside
    # the merge's transaction: seconds under the write lock on a big import.
    database = tmp_path / "newsletter.db"
    subscribers.add_subscriber(db, "old@example.org", "Old")
    before = len(_journal_lines(database))
    addresses = [f"r{i}@example.org" for i in range(2500)] + ["old@example.org"]
    summary = importers.import_file(db, _sheet(tmp_path / "list.csv", addresses))
    assert (summary.added, summary.updated) == (2500, 1)
    lines = _journal_lines(database)
    assert len(lines) == before + 1 and '"op":"import"' in lines[-1]
    files = list(changes.journal_dir(database).glob("000000.import-*.jsonl"))
    assert len(files) == 1 and len(files[0].read_text().splitlines()) == 3
    assert not list(changes.journal_dir(database).glob("*.partial"))
    # Replayed, the journal gives every reader as the list has them (the renamed one too).
    assert _replayed(database) == {r["id"]: r for r in rows(db)}


def test_a_write_while_the_import_prepares_is_kept_and_the_merge_stays_short(
    db: sqlite_utils.Database, tmp_path: Path,
) -> None:
    database = tmp_path / "newsletter.db"
    subscribers.add_subscriber(db, "stays@example.org")
    other = store.connect(database)
    other.execute("PRAGMA busy_timeout=0")  # the lock is free: no waiting for it

    def meanwhile(stage: str, done: int, total: int) -> None:
        if stage == "Merging" and done == 0:  # prepared, not merged yet
            subscribers.unsubscribe(other, "stays@example.org")

    addresses = [f"r{i}@example.org" for i in range(1500)]
    summary = importers.import_file(db, _sheet(tmp_path / "list.csv", addresses),
                                    progress=meanwhile)
    other.conn.close()
    assert summary.added == 1500
    assert subscribers.get(db, "stays@example.org").status == "unsubscribed"
    assert db.execute("SELECT count(*) FROM events WHERE kind = 'imported'").fetchone() == (1500,)
    # Still the prepared merge: its ops in their own file, one line in the journal.
    assert '"op":"import"' in _journal_lines(database)[-1]
    assert _replayed(database) == {r["id"]: r for r in rows(db)}


def test_what_changed_under_the_snapshot_is_merged_as_if_one_after_the_other(
    db: sqlite_utils.Database, tmp_path: Path,
) -> None:
    # A reader of the file signs up, another one of it unsubscribes, while the import
    # prepares: the merge sees them (never a duplicate, never back to active).
    database = tmp_path / "newsletter.db"
    subscribers.add_subscriber(db, "r1@example.org")
    other = store.connect(database)

    def meanwhile(stage: str, done: int, total: int) -> None:
        if stage == "Merging" and done == 0:
            subscribers.unsubscribe(other, "r1@example.org")
            subscribers.add_subscriber(other, "r2@example.org", "Signed Up")

    addresses = [f"r{i}@example.org" for i in range(300)]
    summary = importers.import_file(db, _sheet(tmp_path / "list.csv", addresses),
                                    progress=meanwhile)
    other.conn.close()
    assert (summary.added, summary.updated) == (298, 2)
    assert subscribers.get(db, "r1@example.org").status == "unsubscribed"
    assert subscribers.get(db, "r2@example.org").name == "Name 2"
    assert db.execute("SELECT count(*) FROM subscribers").fetchone() == (300,)
    assert _replayed(database) == {r["id"]: r for r in rows(db)}


def test_an_import_killed_after_preparing_leaves_nothing_and_its_file_goes(
    newsletter_dir: Path, tmp_path: Path,
) -> None:
    database = newsletter_dir / "newsletter.db"
    db = store.connect(database)
    subscribers.add_subscriber(db, "first@example.org")
    before = rows(db)
    sheet = _sheet(tmp_path / "big.csv", [f"k{i}@example.org" for i in range(60_000)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--dir", str(newsletter_dir), "subscribers",
         "import", str(sheet)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    folder = changes.journal_dir(database)
    try:
        while proc.poll() is None and not list(folder.glob("import-*.partial")):
            time.sleep(0.001)
        assert proc.poll() is None, "the import finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rows(db) == before
    assert not list(folder.glob("*.import-*.jsonl"))
    assert not any('"op":"import"' in line for line in _journal_lines(database))
    # The next import deletes what the killed one left, and goes through whole.
    summary = importers.import_file(db, _sheet(tmp_path / "small.csv", ["s@example.org"]))
    assert summary.added == 1
    assert not list(folder.glob("*.partial"))
    db.conn.close()
