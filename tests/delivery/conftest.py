"""Delivery tests: the shared `cli` fixture, invoking the click command typer builds.

(The shared one hands the Typer object to click's CliRunner, which click 8.2+ refuses.)
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import typer
from click.testing import CliRunner

from newsletter.cli import app
from tests.conftest import Run


@pytest.fixture
def cli() -> Callable[..., Run]:
    command = typer.main.get_command(app)

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Run:
        result = CliRunner().invoke(command, list(args), input=input, env=env,
                                    catch_exceptions=True)
        exc = result.exception if not isinstance(result.exception, SystemExit) else None
        return Run(result.exit_code, result.stdout, result.stderr, exc)

    return run
