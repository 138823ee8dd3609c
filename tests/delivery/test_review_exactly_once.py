"""Review: a send never loses or duplicates mail, and says plainly what happened.

Real parts only: the CLI, a SQLite file, aiosmtpd on 127.0.0.1, plug-ins installed
on a real PYTHONPATH.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from .smtpserver import SMTPServer, _Handler
from .test_send_cli import DRAFT, add, deliveries, use_smtp


class PlainSMTPServer(SMTPServer):
    """The test server without SMTPUTF8 (as many relays and older Postfix setups)."""

    def __init__(self) -> None:
        super().__init__()
        self.controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, decode_data=False,
            data_size_limit=None, enable_SMTPUTF8=False,
        )


@pytest.fixture
def plain_server():
    with PlainSMTPServer() as s:
        yield s


def test_international_addresses_on_a_server_without_smtputf8(
    newsletter_dir: Path, write_draft, plain_server: SMTPServer, cli
) -> None:
    """An IDN domain goes out as xn--…; a non-ASCII local part fails that reader only.

    Before: the first such reader stopped the whole list send with a traceback and was
    left `uncertain` although nothing had been sent to them.
    """
    write_draft("hello.md", DRAFT)
    use_smtp(newsletter_dir, plain_server.port)
    add(newsletter_dir, "anna@bücher.de", "josé@example.org", "carl@example.org")
    run = cli("send", "hello", "--to", "subscribers", "--yes")
    assert run.exit_code == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(plain_server.recipients()) == ["anna@xn--bcher-kva.de", "carl@example.org"]
    states = {r["email"]: (r["state"], r["error"]) for r in deliveries(newsletter_dir)}
    assert states["anna@bücher.de"][0] == "sent"
    assert states["carl@example.org"][0] == "sent"
    assert states["josé@example.org"][0] == "failed"
    assert "SMTPUTF8" in states["josé@example.org"][1]
    shown = cli("campaigns", "1")
    assert "josé@example.org" in shown.stdout and "SMTPUTF8" in shown.stdout


BUGGY_PLUGIN = """\
from newsletter.delivery.providers.base import Provider

class BuggyProvider(Provider):
    name = "buggy"
    description = "raises inside send"
    remote = False

    def send(self, messages):
        raise KeyError("oops")
"""


def test_a_provider_bug_is_one_error_line_and_the_rows_are_uncertain(
    tmp_path: Path, newsletter_dir: Path, write_draft
) -> None:
    site = tmp_path / "site"
    dist = site / "buggy_provider-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: buggy-provider\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[newsletter.providers]\nbuggy = buggy_provider:BuggyProvider\n"
    )
    (site / "buggy_provider.py").write_text(BUGGY_PLUGIN)
    write_draft("hello.md", DRAFT)
    add(newsletter_dir, "ann@example.org")
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run(
        [sys.executable, "-m", "newsletter", "send", "hello", "--to", "subscribers", "--yes",
         "--provider", "buggy"],
        cwd=newsletter_dir, env=env, capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 5, run.stderr
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "KeyError" in errors[0] and "oops" in errors[0]
    assert "1 uncertain" in run.stderr
    assert [r["state"] for r in deliveries(newsletter_dir)] == ["uncertain"]
