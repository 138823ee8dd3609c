"""Review: a send never loses or duplicates mail, and says plainly what happened.

Real parts only: the CLI, a SQLite file, aiosmtpd on 127.0.0.1, plug-ins installed
on a real PYTHONPATH.
"""

from __future__ import annotations

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
