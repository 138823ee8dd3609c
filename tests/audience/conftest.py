"""Fixtures for the subscriber list: a real SQLite file in a temp dir, sample exports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlite_utils
import typer.main
from click.testing import CliRunner

from newsletter.audience import store
from newsletter.cli import app
from tests.conftest import Run

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


@pytest.fixture
def cli() -> Callable[..., Run]:
    """Like the shared `cli` fixture, but invoking the click command typer builds.

    The shared one hands the Typer object itself to click's CliRunner, which
    fails with click 8.2+ ('Typer' object has no attribute 'name').
    """
    command = typer.main.get_command(app)

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Run:
        result = CliRunner().invoke(command, list(args), input=input, env=env,
                                    catch_exceptions=True)
        exc = result.exception if not isinstance(result.exception, SystemExit) else None
        return Run(result.exit_code, result.stdout, result.stderr, exc)

    return run
