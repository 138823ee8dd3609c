"""Issue 21: serve while a long import holds the write lock. Real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from newsletter.delivery.outgoing import claim
from newsletter.store import connect


def test_the_outgoing_workers_never_wait_on_a_busy_lock_with_nothing_queued(
    tmp_path: Path,
) -> None:
    # serve's outgoing workers poll every second. Each poll took the write lock, so while
    # an import's merge held it past the busy timeout serve logged "database is locked".
    database = tmp_path / "newsletter.db"
    db = connect(database)
    db.execute("PRAGMA busy_timeout=50")  # stands for the 30 s a long merge outlasts
    other = sqlite3.connect(database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the import's merge
    try:
        assert claim(db) is None
    finally:
        other.execute("ROLLBACK")
        other.close()
        db.conn.close()
