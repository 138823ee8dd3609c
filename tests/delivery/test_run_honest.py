"""`newsletter run` is honest: readers it leaves uncertain, failed or queued are named per
campaign and the exit code is non-zero, run after run, until the writer settles them with
`newsletter campaigns settle ID --as-sent | --resend`; then `run` is quiet again.

The real CLI, a real SQLite file, the smtp provider against aiosmtpd on 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from newsletter import store
from newsletter.audience import subscribers
from newsletter.delivery import schedule
from newsletter.settings import load_settings

from .smtpserver import SMTPServer


def _use_smtp(root: Path, port: int) -> None:
    toml = root / "newsletter.toml"
    toml.write_text(toml.read_text().replace(
        '[provider]\nname = "outbox"',
        f'[provider]\nname = "smtp"\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"'))


@pytest.fixture
def letter(newsletter_dir: Path, write_draft: Callable[..., Path]) -> Path:
    write_draft("hello.md", "---\ntitle: Hello\n---\nHello.\n")
    db = store.connect(newsletter_dir / "newsletter.db")
    for address in ("ann@example.org", "bob@example.org", "cy@example.org"):
        subscribers.add_subscriber(db, address)
    db.conn.close()
    return newsletter_dir


def _schedule_now(root: Path) -> None:
    """A send due a moment from now, as `send --at` records it; then wait until it is due."""
    at = datetime.now(UTC) + timedelta(seconds=1)
    schedule.schedule_send(load_settings(root), "hello", "subscribers", at)
    time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()) + 0.05)


def _states(root: Path) -> dict[str, str]:
    db = store.connect(root / "newsletter.db")
    try:
        return dict(db.execute("SELECT email, state FROM deliveries").fetchall())
    finally:
        db.conn.close()


@pytest.mark.parametrize("how", ["--as-sent", "--resend"])
def test_a_run_that_leaves_a_reader_uncertain_says_so_until_it_is_settled(
    letter: Path, cli: Callable[..., Any], how: str,
) -> None:
    with SMTPServer() as server:
        _use_smtp(letter, server.port)
        server.drop_after_data.add("bob@example.org")  # taken, but no answer: uncertain
        _schedule_now(letter)
        first = cli("run", "--no-sync")
        assert _states(letter)["bob@example.org"] == "uncertain"
        assert first.exit_code == 5, first.stderr
        expected = "campaign 1 (hello → subscribers): 1 reader(s) uncertain"
        assert expected in first.stderr
        assert "newsletter campaigns settle 1 --as-sent" in first.stderr

        again = cli("run", "--no-sync")  # nothing due, but the campaign is still unsettled
        assert again.exit_code == 5
        assert expected in again.stderr

        server.drop_after_data.clear()
        settled = cli("campaigns", "settle", "1", how)
        assert settled.exit_code == 0, settled.stderr
        received = server.recipients()

    assert _states(letter)["bob@example.org"] == "sent"
    # --resend sent it again (bob may have it twice: the writer chose so); --as-sent did not.
    assert received.count("bob@example.org") == (2 if how == "--resend" else 1)
    quiet = cli("run", "--no-sync")
    assert quiet.exit_code == 0, quiet.stderr
    assert "campaign 1" not in quiet.stderr
    assert "done" in cli("campaigns", "1").stdout


def test_a_run_whose_send_failed_readers_exits_non_zero_and_names_them_once(
    letter: Path, cli: Callable[..., Any],
) -> None:
    with SMTPServer() as server:
        _use_smtp(letter, server.port)
        server.fail("cy@example.org", "554 5.7.1 rejected by policy")
        _schedule_now(letter)
        first = cli("run", "--no-sync")
    assert first.exit_code == 5
    assert "campaign 1 (hello → subscribers): 1 reader(s) failed" in first.stderr
    # A failure is final (retried only when asked): the next run does not repeat it.
    assert cli("run", "--no-sync").exit_code == 0


def test_settle_needs_one_choice_and_a_campaign_with_uncertain_readers(
    letter: Path, cli: Callable[..., Any],
) -> None:
    assert cli("send", "hello", "--to", "subscribers", "--yes").exit_code == 0  # outbox
    neither = cli("campaigns", "settle", "1")
    assert neither.exit_code == 2
    assert neither.stderr.startswith("Error: settle needs one of --as-sent")
    for how in ("--as-sent", "--resend"):  # settling twice is no error, and sends nothing
        nothing = cli("campaigns", "settle", "1", how)
        assert nothing.exit_code == 0, nothing.stderr
        assert nothing.stdout == ("Campaign 1 (hello) has no uncertain deliveries: nothing to "
                                  "settle.\n")
    assert cli("campaigns", "settle", "9", "--as-sent").stderr == (
        "Error: there is no campaign 9: `newsletter campaigns` lists them\n")
    # `campaigns [ID]` as before, beside `settle`.
    assert "Campaign 1: Hello" in cli("campaigns", "1").stdout
    assert "hello" in cli("campaigns").stdout
