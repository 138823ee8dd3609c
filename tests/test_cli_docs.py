"""Docs cannot drift: every command has help with an example, and docs/cli.md is current."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer.main

from newsletter.cli import app
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import gen_cli_docs  # noqa: E402

COMMANDS = [path for path, _ in gen_cli_docs.walk(typer.main.get_command(app), ["newsletter"])]


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_command_has_help_with_an_example(path: list[str]) -> None:
    text = gen_cli_docs.help_text(path)
    assert "Usage:" in text
    assert "Example" in text, f"`{' '.join(path)} --help` shows no example"


def test_the_contract_commands_exist() -> None:
    names = {" ".join(p[1:]) for p in COMMANDS}
    for command in [
        "init", "draft", "drafts", "build", "preview", "check",
        "subscribers add", "subscribers import", "subscribers export", "subscribers list",
        "subscribers remove", "subscribers unsubscribe", "subscribers count",
        "send", "campaigns", "providers",
    ]:
        assert command in names, f"`newsletter {command}` is missing"


def test_cli_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_cli_docs.py"), "--check"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "Usage: python -m newsletter" in result.stdout
