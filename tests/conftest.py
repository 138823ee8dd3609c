"""Shared fixtures: every test gets a real newsletter folder and SQLite file in a temp dir."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app

REPO = Path(__file__).resolve().parent.parent

# The tests that stop a CLI with Ctrl-C need SIGINT to reach it, as it does from a terminal.
# A suite started in the background by a script (`cmd &`, nohup) has SIGINT ignored, and an
# ignored signal stays ignored in every process it starts: the CLIs would never stop.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's environment, home or newsletter."""
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_") or name.endswith(("_API_KEY", "_SERVER_TOKEN")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BROWSER", "true")  # never open a real browser from a test


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections, reserved while the block runs.

    Bound but not listening: connecting gets ECONNREFUSED, and no other test (another
    pytest-xdist worker included) can be given the port meanwhile, unlike a port found
    free and then let go.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


_HELD: list[socket.socket] = []


def dead_port() -> int:
    """A port on 127.0.0.1 that refuses connections for the rest of this test process.

    Like refusing_port(), for code that needs the number outside a `with` block: the
    socket stays bound (not listening), so no other xdist worker's server can take it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    return sock.getsockname()[1]


DEFAULT_TOML = """\
[newsletter]
name = "Test Letter"
from = "Test Writer <writer@example.com>"
base_url = "https://example.com/news"
address = "1 Test Street, Testville"

[provider]
name = "outbox"
"""


@pytest.fixture
def newsletter_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A minimal newsletter folder (settings + drafts/), as the current directory.

    Layouts are not copied: a missing layouts/default.* falls back to the built-in one.
    """
    root = tmp_path / "letter"
    (root / "drafts").mkdir(parents=True)
    (root / "newsletter.toml").write_text(DEFAULT_TOML)
    monkeypatch.chdir(root)
    monkeypatch.setenv("NEWSLETTER_SECRET", "test-secret-" + "x" * 40)
    return root


@pytest.fixture
def write_draft(newsletter_dir: Path) -> Callable[..., Path]:
    """write_draft("name.md", "markdown text") → path under drafts/ (text is dedented)."""

    def write(name: str, text: str) -> Path:
        path = newsletter_dir / "drafts" / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None


@pytest.fixture
def cli() -> Callable[..., Run]:
    """cli("subscribers", "add", "a@example.com") runs the real CLI in-process."""

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Run:
        runner = CliRunner()
        result = runner.invoke(app, list(args), input=input, env=env, catch_exceptions=True)
        exc = result.exception if not isinstance(result.exception, SystemExit) else None
        return Run(result.exit_code, result.stdout, result.stderr, exc)

    return run
