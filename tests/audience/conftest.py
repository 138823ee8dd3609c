"""Fixtures for the subscriber list: a real SQLite file in a temp dir, sample exports."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlite_utils

from newsletter import store

DATA = Path(__file__).resolve().parent.parent / "data" / "imports"


@pytest.fixture
def db(tmp_path: Path) -> sqlite_utils.Database:
    """A fresh, migrated newsletter database on disk."""
    database = store.connect(tmp_path / "newsletter.db")
    yield database
    database.conn.close()


def rows(db: sqlite_utils.Database) -> list[dict]:
    """Every subscriber row as a dict, in id order (for before/after comparisons)."""
    return [dict(r) for r in db.query("SELECT * FROM subscribers ORDER BY id")]

