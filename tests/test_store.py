"""The database is created and upgraded by migrations."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter import store
from newsletter.errors import ConfigError


def test_new_database_gets_every_table(tmp_path: Path) -> None:
    db = store.connect(tmp_path / "n.db")
    assert {"subscribers", "campaigns", "deliveries", "_migrations"} <= set(db.table_names())
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    store.connect(tmp_path / "n.db").conn.close()
    db = store.connect(tmp_path / "n.db")
    assert store.migrate(db) == []
    names = [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name")]
    assert names == [name for name, _ in store.MIGRATIONS]


def test_an_older_database_is_upgraded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database written by the first release opens in this one, data intact."""
    path = tmp_path / "old.db"
    all_migrations = list(store.MIGRATIONS)
    monkeypatch.setattr(store, "MIGRATIONS", all_migrations[:1])  # the first release
    old = store.connect(path)
    old.execute(
        "INSERT INTO subscribers (email, email_key, created_at, updated_at) "
        "VALUES ('a@example.com', 'a@example.com', '2026-01-01', '2026-01-01')"
    )
    old.conn.close()
    monkeypatch.setattr(store, "MIGRATIONS", all_migrations)
    db = store.connect(path)
    names = [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name")]
    assert names == sorted(name for name, _ in all_migrations)
    assert db.execute("SELECT email FROM subscribers").fetchall() == [("a@example.com",)]


def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    db = store.connect(tmp_path / "n.db")
    db.execute("INSERT INTO _migrations VALUES ('999_future', datetime('now'))")
    db.conn.close()
    with pytest.raises(ConfigError, match="newer version of newsletter"):
        store.connect(tmp_path / "n.db")
