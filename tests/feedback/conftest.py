"""A real, migrated SQLite file for the feedback tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlite_utils

from newsletter import store


@pytest.fixture
def db(tmp_path: Path) -> sqlite_utils.Database:
    database = store.connect(tmp_path / "newsletter.db")
    yield database
    database.conn.close()
