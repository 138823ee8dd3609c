"""A send never loses or duplicates mail, and says plainly what happened.

Real parts only: the CLI, a SQLite file, aiosmtpd on 127.0.0.1, plug-ins installed
on a real PYTHONPATH.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from .smtpserver import SMTPServer, _Handler
from .test_send_cli import DRAFT, SECRET, add, deliveries, use_smtp


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


def _kill_while_a_message_is_in_flight(root: Path, server: SMTPServer, *args: str) -> None:
    """Start `newsletter send *args` and kill -9 it while the server holds a message unanswered.

    The server accepts three messages and holds the fourth until the kill: no timing to
    race, however slow the machine (a fixed delay let a loaded machine finish the send first).
    """
    server.hold_after = 3
    server.release.clear()
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    child = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "send", *args],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        while not (len(server.received) == 3 and server.mail_count == 4):
            assert child.poll() is None, child.stderr.read().decode()  # type: ignore[union-attr]
            time.sleep(0.005)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stderr.close()  # type: ignore[union-attr]
        server.hold_after = None
        server.release.set()


def test_resuming_through_another_provider_does_not_resend_what_was_in_flight(
    newsletter_dir: Path, write_draft, cli
) -> None:
    """The outbox is idempotent, but not for a message the dead run handed to SMTP.

    Before: the in-flight row was queued again and sent through the new provider
    ("sent again (outbox is idempotent: no duplicates)"): a second copy for that reader.
    """
    write_draft("hello.md", DRAFT)
    add(newsletter_dir, *[f"reader{i:02d}@example.org" for i in range(12)])
    with SMTPServer() as server:
        use_smtp(newsletter_dir, server.port)
        _kill_while_a_message_is_in_flight(newsletter_dir, server, "hello", "--to",
                                           "subscribers", "--yes")
        delivered = set(server.recipients())
    resumed = cli("send", "hello", "--to", "subscribers", "--yes", "--provider", "outbox")
    assert resumed.exit_code == 0, resumed.stderr
    assert "is idempotent" not in resumed.stdout
    assert "was being sent through smtp; the rest now goes through outbox" in resumed.stderr
    rows = {r["email"]: r["state"] for r in deliveries(newsletter_dir)}
    uncertain = [e for e, s in rows.items() if s == "uncertain"]
    assert len(uncertain) == 1 and uncertain[0] not in delivered
    written = {p.name.split("-", 1)[1].removesuffix(".eml")
               for p in (newsletter_dir / "outbox").glob("*/*.eml")}
    assert uncertain[0] not in written  # not sent a second time through the outbox
    assert written | delivered | set(uncertain) == set(rows)
    assert not written & delivered


def test_resuming_after_the_draft_was_edited_warns_and_asks_again(
    newsletter_dir: Path, write_draft, cli
) -> None:
    """The rest of an interrupted send gets the draft as it is now: say so, and confirm.

    Before: the resume went ahead silently, so part of the list got one text and the
    rest another without the writer being told.
    """
    draft = write_draft("hello.md", DRAFT)
    add(newsletter_dir, *[f"reader{i:02d}@example.org" for i in range(8)])
    with SMTPServer() as server:
        use_smtp(newsletter_dir, server.port)
        _kill_while_a_message_is_in_flight(newsletter_dir, server, "hello", "--to",
                                           "subscribers", "--yes")
        first = len(server.received)
        draft.write_text(draft.read_text().replace("welcome to", "welcome (corrected) to"))
        later = time.time() + 5  # unmistakably after the campaign began
        os.utime(draft, (later, later))

        asked = cli("send", "hello", "--to", "subscribers")  # no terminal, no --yes
        assert asked.exit_code == 5
        assert "hello.md was edited after campaign 1 began" in asked.stderr
        assert "pass --yes" in asked.stderr
        assert len(server.received) == first  # nothing more went out

        resumed = cli("send", "hello", "--to", "subscribers", "--yes")
        assert resumed.exit_code == 0, resumed.stderr
        assert "hello.md was edited after campaign 1 began" in resumed.stderr
        later_ones = server.received[first:]
    assert later_ones and all(b"(corrected)" in r.data for r in later_ones)
    assert len(set(server.recipients())) == len(server.recipients())  # nobody twice


def test_a_plain_resume_is_not_asked_again(newsletter_dir: Path, write_draft, cli) -> None:
    write_draft("hello.md", DRAFT)
    add(newsletter_dir, *[f"reader{i:02d}@example.org" for i in range(8)])
    with SMTPServer() as server:
        use_smtp(newsletter_dir, server.port)
        _kill_while_a_message_is_in_flight(newsletter_dir, server, "hello", "--to",
                                           "subscribers", "--yes")
        resumed = cli("send", "hello", "--to", "subscribers")  # no --yes: not needed to resume
        assert resumed.exit_code == 0, resumed.stderr
        assert "Warning" not in resumed.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_kill_or_a_closed_terminal_stops_like_ctrl_c(
    newsletter_dir: Path, write_draft, cli, sig: signal.Signals
) -> None:
    """`kill PID`, systemd/docker stop or closing the terminal: nothing left uncertain.

    Before: the process died at once, and the message in flight was left uncertain.
    """
    write_draft("hello.md", DRAFT)
    everyone = [f"reader{i:02d}@example.org" for i in range(20)]
    add(newsletter_dir, *everyone)
    with SMTPServer() as server:
        use_smtp(newsletter_dir, server.port)
        server.delay = 0.02
        env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
        child = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "send", "hello", "--to", "subscribers", "--yes"],
            cwd=newsletter_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL),  # even under nohup
        )
        while len(server.received) < 3:
            assert child.poll() is None
            time.sleep(0.005)
        with server.lock:
            server.delay = 0.5  # a message is surely in flight when the signal lands
            mails = server.mail_count
        while server.mail_count == mails:
            assert child.poll() is None
            time.sleep(0.005)
        child.send_signal(sig)
        out, err = child.communicate(timeout=30)
        assert child.returncode == 130, err
        assert "Interrupted:" in err and "run the same command to resume" in err
        states = collections.Counter(r["state"] for r in deliveries(newsletter_dir))
        assert set(states) == {"sent", "queued"}  # the one in flight got its answer
        assert states["sent"] == len(server.received)

        server.delay = 0
        resumed = cli("send", "hello", "--to", "subscribers", "--yes")
        assert resumed.exit_code == 0, resumed.stderr
        assert sorted(server.recipients()) == everyone


class _DyingHandler(_Handler):
    """After `die_after` messages the server goes away: it stops listening and hangs up."""

    async def handle_MAIL(self, smtp, session, envelope, address, options):  # noqa: ANN001
        s = self.server
        if s.die_after is not None and len(s.received) >= s.die_after:
            s.controller.server.close()  # reconnecting is refused from now on
            smtp.transport.close()
            return "421 4.3.2 shutting down"
        return await super().handle_MAIL(smtp, session, envelope, address, options)


class DyingSMTPServer(SMTPServer):
    def __init__(self, die_after: int) -> None:
        super().__init__()
        self.die_after: int | None = die_after
        self.controller = Controller(
            _DyingHandler(self), hostname="127.0.0.1", port=self.port, decode_data=False,
            data_size_limit=None,
        )


def test_server_gone_in_the_middle_of_a_batch_keeps_what_was_delivered(
    newsletter_dir: Path, write_draft, cli
) -> None:
    """With `batch = 5`, the server dies after the 2nd message of a batch.

    Before: the whole batch went back to the queue, so the resume sent the first two
    messages a second time.
    """
    write_draft("hello.md", DRAFT)
    everyone = [f"reader{i:02d}@example.org" for i in range(8)]
    add(newsletter_dir, *everyone)
    with DyingSMTPServer(die_after=2) as server:
        use_smtp(newsletter_dir, server.port, batch=5)
        first = cli("send", "hello", "--to", "subscribers", "--yes")
        assert first.exit_code == 6, first.stderr
        assert "Error: " in first.stderr and "stay queued" in first.stderr
        got = server.recipients()
    assert got == everyone[:2]
    states = {r["email"]: r["state"] for r in deliveries(newsletter_dir)}
    assert [states[e] for e in everyone] == ["sent"] * 2 + ["queued"] * 6
    with SMTPServer() as again:
        use_smtp(newsletter_dir, again.port, batch=5)
        resumed = cli("send", "hello", "--to", "subscribers", "--yes")
        assert resumed.exit_code == 0, resumed.stderr
        assert sorted(again.recipients()) == everyone[2:]  # nobody twice


def test_a_tag_nobody_has_says_so_instead_of_asking_to_send_to_0(
    newsletter_dir: Path, write_draft, cli
) -> None:
    """Before: "a send to the list (0 recipients) needs confirmation … pass --yes"."""
    write_draft("hello.md", DRAFT)
    add(newsletter_dir, "ann@example.org", tags=("friends",))
    add(newsletter_dir, "bob@example.org", tags=("former",), status="unsubscribed")
    run = cli("send", "hello", "--to", "tag:nobody")
    assert run.exit_code != 0
    assert "no subscriber has the tag 'nobody'; tags in use: former, friends" in run.stderr
    assert "confirmation" not in run.stderr and "0 recipients" not in run.stderr
    run = cli("send", "hello", "--to", "tag:former")  # a tag only a leaver has
    assert run.exit_code == 5
    assert "no active subscribers with tag former to send to" in run.stderr
    assert "confirmation" not in run.stderr and "0 recipients" not in run.stderr


def test_a_test_send_to_an_unsubscribed_address_warns(
    newsletter_dir: Path, write_draft, cli
) -> None:
    write_draft("hello.md", DRAFT)
    add(newsletter_dir, "gone@example.org", status="unsubscribed")
    add(newsletter_dir, "me@example.org")
    run = cli("send", "hello", "--to", "me@example.org,Gone@example.org")
    assert run.exit_code == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if line.startswith("Warning: ")]
    assert warnings == [
        "Warning: gone@example.org is unsubscribed on the list: this test send goes to it "
        "all the same"
    ]


def test_campaign_list_counts_every_recipient_of_an_interrupted_send(
    newsletter_dir: Path, write_draft, cli
) -> None:
    """Rows a killed sender had claimed were in no column: 8 recipients showed as 0."""
    write_draft("hello.md", DRAFT)
    add(newsletter_dir, *[f"reader{i:02d}@example.org" for i in range(8)])
    with SMTPServer() as server:
        use_smtp(newsletter_dir, server.port)
        _kill_while_a_message_is_in_flight(newsletter_dir, server, "hello", "--to",
                                           "subscribers", "--yes")
    row = cli("campaigns").stdout.splitlines()[1].split()
    assert "interrupted" in row
    sent, failed, uncertain, skipped, queued = (int(n) for n in row[-5:])
    assert sent + failed + uncertain + skipped + queued == 8


def test_an_answer_lost_after_data_is_not_called_an_interruption(
    newsletter_dir: Path, write_draft, cli
) -> None:
    write_draft("hello.md", DRAFT)
    add(newsletter_dir, "ann@example.org", "bob@example.org")
    with SMTPServer() as server:
        use_smtp(newsletter_dir, server.port)
        server.drop_after_data.add("bob@example.org")
        run = cli("send", "hello", "--to", "subscribers", "--yes")
    assert run.exit_code == 0, run.stderr
    assert "1 uncertain: the connection dropped or the send was interrupted" in run.stderr


def test_a_server_slower_than_the_timeout_stops_the_send_instead_of_all_uncertain(
    newsletter_dir: Path, write_draft, cli
) -> None:
    """Before: every message timed out waiting for the answer and the send went on, so
    the whole list ended `uncertain` although the server had delivered each one."""
    write_draft("hello.md", DRAFT)
    everyone = [f"reader{i:02d}@example.org" for i in range(6)]
    add(newsletter_dir, *everyone)
    with SMTPServer() as server:
        use_smtp(newsletter_dir, server.port)
        toml = newsletter_dir / "newsletter.toml"
        toml.write_text(toml.read_text().replace("timeout = 5", "timeout = 0.3"))
        server.delay = 1.5  # answers each message long after the client gave up
        run = cli("send", "hello", "--to", "subscribers", "--yes")
        assert run.exit_code == 6, run.stderr
        assert "without confirming them" in run.stderr and "timeout" in run.stderr
        states = collections.Counter(r["state"] for r in deliveries(newsletter_dir))
        assert states == {"uncertain": 2, "queued": 4}

        server.delay = 0
        toml.write_text(toml.read_text().replace("timeout = 0.3", "timeout = 5"))
        resumed = cli("send", "hello", "--to", "subscribers", "--yes")
        assert resumed.exit_code == 0, resumed.stderr
        states = collections.Counter(r["state"] for r in deliveries(newsletter_dir))
        assert states == {"sent": 4, "uncertain": 2}
