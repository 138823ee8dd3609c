"""`newsletter send`, `campaigns` and `providers` end to end: real drafts, SQLite and aiosmtpd."""

from __future__ import annotations

import collections
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from newsletter.audience.subscribers import add_subscriber, open_db, unsubscribe
from newsletter.compose.tokens import verify_unsubscribe_token
from newsletter.settings import load_settings
from tests.conftest import dead_port

from .smtpserver import SMTPServer

SECRET = "test-secret-" + "x" * 40  # what the newsletter_dir fixture sets
DRAFT = """\
---
title: Hello, readers
subject: "Issue #1 — hello"
---
Hello {{ subscriber.name }}, welcome to the *first* issue.
"""


@pytest.fixture
def server():
    with SMTPServer() as s:
        yield s


def use_smtp(root: Path, port: int, **extra: object) -> None:
    """Point newsletter.toml's [provider] at the test server."""
    text = (root / "newsletter.toml").read_text().split("[provider]")[0]
    lines = ["[provider]", 'name = "smtp"', 'host = "127.0.0.1"', f"port = {port}",
             'security = "none"', "timeout = 5", "retry_delay = 0.02"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    (root / "newsletter.toml").write_text(text + "\n".join(lines) + "\n")


def add(root: Path, *emails: str, status: str = "active", tags: tuple[str, ...] = ()) -> None:
    db = open_db(load_settings(root))
    for email in emails:
        add_subscriber(db, email, name=email.split("@")[0].title(), tags=tags)
        if status == "unsubscribed":
            unsubscribe(db, email)
    db.conn.close()


def readers(n: int) -> list[str]:
    return [f"reader{i:03d}@example.org" for i in range(n)]


def deliveries(root: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(root / "newsletter.db")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM deliveries ORDER BY id").fetchall()
    finally:
        conn.close()


@pytest.fixture
def letter(newsletter_dir: Path, write_draft, server: SMTPServer) -> Path:
    write_draft("hello.md", DRAFT)
    use_smtp(newsletter_dir, server.port)
    return newsletter_dir


def test_list_send_reaches_every_active_subscriber_once_with_their_own_links(
    letter: Path, server: SMTPServer, cli
) -> None:
    add(letter, *readers(6))
    add(letter, "left@example.org", status="unsubscribed")

    run = cli("send", "hello", "--to", "subscribers", "--yes")

    assert run.exit_code == 0, run.stderr
    assert "Campaign 1 (hello → subscribers, smtp): 6 sent, 0 failed" in run.stdout
    assert collections.Counter(server.recipients()) == collections.Counter(readers(6))
    seen_ids, seen_tokens = set(), set()
    for received in server.received:
        msg = received.parsed()
        assert msg["Subject"] == "Issue #1 — hello"
        assert msg["From"] == "Test Writer <writer@example.com>"
        assert received.recipient in msg["To"]
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = msg["List-Unsubscribe"].strip("<>").split(">")[0]
        assert url.startswith("https://example.com/news/unsubscribe?token=")
        token = parse_qs(urlparse(url).query)["token"][0]
        # The link unsubscribes this reader and nobody else.
        news = "https://example.com/news"
        assert verify_unsubscribe_token(SECRET.encode(), token, news) == received.recipient
        assert verify_unsubscribe_token(SECRET.encode(), token[:-2] + "AA", news) is None
        body = msg.get_body(("plain",)).get_content()
        assert url in body and received.recipient.split("@")[0].title() in body
        seen_ids.add(msg["Message-ID"])
        seen_tokens.add(token)
    assert len(seen_ids) == len(seen_tokens) == 6
    assert all(r["state"] == "sent" and r["provider_message_id"] for r in deliveries(letter))


def test_second_list_send_is_refused_unless_resend(letter: Path, server: SMTPServer, cli) -> None:
    add(letter, *readers(2))
    assert cli("send", "hello", "--to", "subscribers", "--yes").exit_code == 0

    again = cli("send", "hello", "--to", "subscribers", "--yes")
    assert again.exit_code == 5
    assert again.stderr.startswith("Error: hello was sent to the list already (campaign 1")
    assert "--resend" in again.stderr
    assert len(server.received) == 2

    assert cli("send", "hello", "--to", "subscribers", "--yes", "--resend").exit_code == 0
    assert len(server.received) == 4


def test_sent_at_is_when_the_message_started_not_when_its_answer_was_recorded(
    letter: Path, server: SMTPServer, cli
) -> None:
    # "Nobody is mailed after their unsubscribe was answered" is checked against sent_at;
    # stamped when the answer was recorded, a slow server put it a second after a message
    # that had started before the unsubscribe, which then looked late.
    from datetime import UTC, datetime

    add(letter, "slow@example.org")
    server.delay = 1.2  # the server takes its time to accept
    assert cli("send", "hello", "--to", "subscribers", "--yes").exit_code == 0
    (row,) = deliveries(letter)
    (got,) = server.received
    began = datetime.fromtimestamp(int(got.started), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert row["state"] == "sent"
    assert row["sent_at"] <= began < row["updated_at"]


def test_test_send_goes_only_to_the_addresses_and_does_not_count_as_sent(
    letter: Path, server: SMTPServer, cli
) -> None:
    add(letter, *readers(3))
    run = cli("send", "hello", "--to", "me@example.com,Editor@Example.com")
    assert run.exit_code == 0, run.stderr
    assert "Test send 1" in run.stdout and "not marked as sent" in run.stdout
    assert sorted(server.recipients()) == ["Editor@example.com", "me@example.com"]
    assert cli("send", "hello", "--to", "subscribers", "--yes").exit_code == 0
    assert len(server.received) == 5


def test_list_send_needs_confirmation_or_yes(letter: Path, server: SMTPServer, cli) -> None:
    add(letter, *readers(2))
    run = cli("send", "hello", "--to", "subscribers")
    assert run.exit_code == 5
    assert run.stderr == (
        "Error: a send to the list (2 recipients) needs confirmation and there is no "
        "terminal to ask: pass --yes\n"
    )
    assert server.received == []
    assert cli("campaigns").stdout.startswith("No campaigns yet")


def _read_pty(fd: int, until: bytes | None = None, seconds: float = 30) -> bytes:
    """What the child writes to its terminal until `until` shows or it closes; with a deadline."""
    output = b""
    deadline = time.monotonic() + seconds
    while until is None or until not in output:
        left = deadline - time.monotonic()
        assert left > 0, f"no {until!r} from the terminal in {seconds}s; got {output!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # the child closed its terminal
            break
        if not chunk:
            break
        output += chunk
    return output


def _wait_child(pid: int, seconds: float = 30) -> int:
    """The child's wait status; kills it and fails when it does not end in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the child did not end within {seconds}s")


def test_confirmation_prompt_on_a_terminal(letter: Path, server: SMTPServer) -> None:
    import pty

    add(letter, *readers(2))
    pid, fd = pty.fork()
    if pid == 0:  # the child: `newsletter send` with a terminal for stdin
        os.chdir(letter)
        os.execv(sys.executable, [sys.executable, "-m", "newsletter", "send", "hello",
                                  "--to", "subscribers"])
    try:
        output = _read_pty(fd, until=b"Send to 2 recipients?")
        os.write(fd, b"n\n")
        output += _read_pty(fd)
        status = _wait_child(pid)
    finally:
        os.close(fd)
    text = output.decode()
    assert "Subject:    Issue #1 — hello" in text
    assert "To:         subscribers (2 recipients)" in text
    assert "Provider:   smtp" in text
    # A declined prompt is the writer's choice, not an error: one plain line, exit 1 (as apt).
    assert "Cancelled: nothing was sent." in text and "Error" not in text
    assert os.waitstatus_to_exitcode(status) == 1
    assert server.received == []


def test_dry_run_builds_everything_and_sends_nothing(letter: Path, server: SMTPServer, cli) -> None:
    add(letter, *readers(5))
    run = cli("send", "hello", "--to", "subscribers", "--dry-run")
    assert run.exit_code == 0, run.stderr
    assert "Dry run: 5 messages built for “Issue #1 — hello” → subscribers via smtp" in run.stdout
    assert "First: Reader000 <reader000@example.org>" in run.stdout
    assert server.received == [] and deliveries(letter) == []


def test_permanent_failure_shown_in_campaigns_then_retried(
    letter: Path, server: SMTPServer, cli
) -> None:
    add(letter, *readers(3))
    server.fail(readers(3)[1], "554 5.7.1 message refused by local policy")
    server.fail(readers(3)[2], "451 4.7.1 greylisted, come back later", times=1)

    run = cli("send", "hello", "--to", "subscribers", "--yes")
    assert run.exit_code == 0, run.stderr
    assert "2 sent, 1 failed" in run.stdout
    assert "newsletter send --retry-failed 1" in run.stdout
    assert sorted(server.recipients()) == [readers(3)[0], readers(3)[2]]  # greylist: retried

    shown = cli("campaigns", "1")
    assert "3 recipients: 2 sent, 1 failed" in shown.stdout
    assert (f"  {readers(3)[1]}  (1 attempt(s)) 554 5.7.1 message refused by local policy"
            in shown.stdout)
    listing = cli("campaigns")
    assert "hello" in listing.stdout and "done" in listing.stdout
    data = json.loads(cli("campaigns", "--json").stdout)
    assert data[0]["counts"] == {"queued": 0, "sending": 0, "sent": 2, "failed": 1,
                                 "uncertain": 0, "skipped": 0}

    server.failures.clear()  # the policy is fixed
    retry = cli("send", "--retry-failed", "1")
    assert retry.exit_code == 0, retry.stderr
    assert "3 sent, 0 failed" in retry.stdout
    assert sorted(server.recipients()) == readers(3)


def test_a_user_unknown_refusal_is_a_hard_bounce(letter: Path, server: SMTPServer, cli) -> None:
    r = readers(5)
    add(letter, *r)
    server.fail(r[1], "550 5.1.1 <reader001@example.org>: Recipient address rejected: "
                      "User unknown in virtual mailbox table")
    server.fail(r[2], "550 no such user here")
    server.fail(r[3], "554 5.7.1 message refused by local policy")  # permanent, not the address
    server.fail(r[4], "450 4.1.1 user unknown, try later", times=1)  # temporary: retried

    run = cli("send", "hello", "--to", "subscribers", "--yes")
    assert run.exit_code == 0, run.stderr
    assert "2 sent, 3 failed" in run.stdout
    status = {line.split()[0]: line.split()[1]
              for line in cli("subscribers", "list").stdout.splitlines()}
    assert status == {r[0]: "active", r[1]: "bounced", r[2]: "bounced", r[3]: "active",
                      r[4]: "active"}
    conn = sqlite3.connect(letter / "newsletter.db")
    events = conn.execute(
        "SELECT email, kind, status_after, source, campaign_id, detail FROM events "
        "WHERE source = 'send' ORDER BY id").fetchall()
    conn.close()
    assert [e[:5] for e in events] == [(r[1], "hard_bounce", "bounced", "send", 1),
                                       (r[2], "hard_bounce", "bounced", "send", 1)]
    assert "User unknown" in events[0][5]

    server.failures.clear()
    retry = cli("send", "--retry-failed", "1")  # the bounced are not mailed again
    assert retry.exit_code == 0, retry.stderr
    assert collections.Counter(server.recipients())[r[1]] == 0
    assert collections.Counter(server.recipients())[r[3]] == 1


def test_server_down_is_one_clear_error_and_the_send_resumes_later(
    letter: Path, server: SMTPServer, cli
) -> None:
    add(letter, *readers(3))
    use_smtp(letter, dead_port())
    run = cli("send", "hello", "--to", "subscribers", "--yes")
    assert run.exit_code == 6
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: cannot connect to the SMTP server 127.0.0.1:")
    assert "unsent messages stay queued" in error
    assert {r["state"] for r in deliveries(letter)} == {"queued"}

    use_smtp(letter, server.port)
    again = cli("send", "hello", "--to", "subscribers", "--yes")
    assert again.exit_code == 0, again.stderr
    assert "Campaign 1 " in again.stdout  # the same campaign, continued
    assert sorted(server.recipients()) == readers(3)


def test_remote_provider_needs_base_url_and_unknown_provider_lists_known(
    letter: Path, cli
) -> None:
    toml = letter / "newsletter.toml"
    toml.write_text(toml.read_text().replace('base_url = "https://example.com/news"\n', ""))
    add(letter, *readers(1))
    run = cli("send", "hello", "--to", "subscribers", "--yes")
    assert run.exit_code == 2
    assert "needs base_url" in run.stderr
    run = cli("send", "hello", "--to", "subscribers", "--yes", "--provider", "carrier-pigeon")
    assert run.exit_code == 2
    assert 'unknown provider "carrier-pigeon": known providers are ' in run.stderr
    assert "outbox" in run.stderr and "smtp" in run.stderr


def test_check_errors_stop_a_send_unless_forced(
    letter: Path, write_draft, server: SMTPServer, cli
) -> None:
    write_draft("todo.md", "# Almost\n\nFIXME: finish this paragraph.\n")
    add(letter, *readers(1))
    run = cli("send", "todo", "--to", "subscribers", "--yes")
    assert run.exit_code == 5
    assert "the draft has errors" in run.stderr and "--force" in run.stderr
    assert server.received == []
    assert cli("send", "todo", "--to", "subscribers", "--yes", "--force").exit_code == 0
    assert server.recipients() == readers(1)


def test_outbox_send_works_with_nothing_configured(newsletter_dir: Path, write_draft, cli) -> None:
    write_draft("hello.md", DRAFT)
    add(newsletter_dir, *readers(2))
    run = cli("send", "hello", "--to", "subscribers", "--yes")
    assert run.exit_code == 0, run.stderr
    files = sorted((newsletter_dir / "outbox" / "1-hello").glob("*.eml"))
    assert [f.name.split("-", 1)[1] for f in files] == [f"{r}.eml" for r in readers(2)]


def test_tag_send(letter: Path, server: SMTPServer, cli) -> None:
    add(letter, *readers(2), tags=("friends",))
    add(letter, "stranger@example.org")
    assert cli("send", "hello", "--to", "tag:friends", "--yes").exit_code == 0
    assert sorted(server.recipients()) == readers(2)


def _tagged(letter: Path) -> None:
    add(letter, "ann@example.org", tags=("Founders",))
    add(letter, "bob@example.org", tags=("founders", "Press"))
    add(letter, "cat@example.org", tags=("press",))
    add(letter, "dan@example.org")


def test_tag_expressions_in_send_dry_run_and_the_subscriber_commands(
    letter: Path, server: SMTPServer, cli
) -> None:
    _tagged(letter)
    listed = cli("subscribers", "list", "--tag", "tag:founders,-tag:press")
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["ann@example.org"]
    both = cli("subscribers", "list", "--tag", "Founders+PRESS")
    assert [line.split()[0] for line in both.stdout.splitlines()] == ["bob@example.org"]
    counted = cli("subscribers", "count", "--tag", "founders", "--json")
    assert json.loads(counted.stdout)["active"] == 2

    dry = cli("send", "hello", "--to", "tag:Founders,-tag:press", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "Dry run: 1 messages built for “Issue #1 — hello” → tag:founders,-tag:press" in (
        dry.stdout)
    run = cli("send", "hello", "--to", "tag:FOUNDERS+tag:press", "--yes")
    assert run.exit_code == 0, run.stderr
    assert server.recipients() == ["bob@example.org"]

    listing = cli("campaigns").stdout
    assert "tags founders and press" in listing
    assert "tag:founders+tag:press" in cli("campaigns", "1").stdout


def test_an_unknown_tag_names_the_tags_there_are(letter: Path, server: SMTPServer, cli) -> None:
    _tagged(letter)
    for args in (["send", "hello", "--to", "tag:founder", "--yes"],
                 ["send", "hello", "--to", "tag:founders,-tag:pres", "--dry-run"],
                 ["subscribers", "count", "--tag", "founder"],
                 ["subscribers", "list", "--tag", "founder"]):
        run = cli(*args)
        assert run.exit_code != 0, args
        assert run.stderr.count("\n") == 1, run.stderr
        assert "no subscriber has the tag" in run.stderr, run.stderr
        assert "tags in use: founders, press (" in run.stderr
    assert server.received == []
    bad = cli("subscribers", "list", "--tag", "a,b")
    assert bad.exit_code != 0 and "tag:a+tag:b" in bad.stderr


def test_campaigns_shows_whole_slugs_and_readable_audiences(
    newsletter_dir: Path, write_draft, cli
) -> None:
    slug = "a-rather-long-title-for-a-spring-issue-about-gardens"
    write_draft(f"{slug}.md", DRAFT)
    add(newsletter_dir, "ann@example.org", "bob@example.org")
    assert cli("send", slug, "--to", "subscribers", "--yes").exit_code == 0
    assert cli("send", slug, "--to", "ann@example.org,bob@example.org").exit_code == 0
    lines = cli("campaigns").stdout.splitlines()
    assert slug in lines[1] and "test: 2 addresses" in lines[1]
    assert slug in lines[2] and " everyone " in lines[2]


def _register_shaky(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install tests/delivery/plugins/shaky_provider.py as a plug-in, as pip would."""
    site = tmp_path / "site"
    dist = site / "shaky_provider-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shaky-provider\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[newsletter.providers]\nshaky = shaky_provider:ShakyProvider\n")
    (site / "shaky_provider.py").write_text(
        (Path(__file__).parent / "plugins" / "shaky_provider.py").read_text())
    monkeypatch.syspath_prepend(str(site))


def test_a_batch_answered_uncertain_is_never_counted_as_sent(
    newsletter_dir: Path, write_draft, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_shaky(tmp_path, monkeypatch)
    log = tmp_path / "shaky.log"
    write_draft("hello.md", DRAFT)
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(toml.read_text().split("[provider]")[0]
                    + f'[provider]\nname = "shaky"\nlog = "{log}"\n')
    add(newsletter_dir, *readers(3))

    run = cli("send", "hello", "--to", "subscribers", "--yes")
    assert "Campaign 1 (hello → subscribers, shaky): 0 sent, 0 failed, 3 uncertain." in (
        run.stdout), run.stdout
    assert "--retry-uncertain" in run.stdout + run.stderr
    assert {r["state"] for r in deliveries(newsletter_dir)} == {"uncertain"}
    row = cli("campaigns").stdout.splitlines()[1].split()
    assert [int(n) for n in row[-5:]] == [0, 0, 3, 0, 0]  # sent failed uncertain skip queued
    assert json.loads(cli("campaigns", "--json").stdout)[0]["counts"]["sent"] == 0

    again = cli("send", "hello", "--to", "subscribers", "--yes")  # a plain re-run
    assert "0 sent, 0 failed, 3 uncertain" in again.stdout
    assert len(log.read_text().splitlines()) == 3  # nothing more was handed over

    settled = cli("send", "hello", "--to", "subscribers", "--yes", "--retry-uncertain")
    assert settled.exit_code == 0, settled.stderr
    assert "3 sent, 0 failed in" in settled.stdout
    handed = collections.Counter(line.split("\t")[1] for line in log.read_text().splitlines())
    assert handed == collections.Counter({r: 2 for r in readers(3)})  # once uncertain, once sent
    assert cli("send", "hello", "--to", "subscribers", "--yes").exit_code != 0  # done: a resend


def test_parallel_connections_and_rate(letter: Path, server: SMTPServer, cli) -> None:
    add(letter, *readers(30))
    run = cli("send", "hello", "--to", "subscribers", "--yes", "--concurrency", "3",
              "--rate", "0")
    assert run.exit_code == 0, run.stderr
    assert collections.Counter(server.recipients()) == collections.Counter(readers(30))


def test_killed_send_resumes_each_recipient_exactly_once(letter: Path, server: SMTPServer,
                                                         cli) -> None:
    n = 40
    add(letter, *readers(n))
    server.delay = 0.04  # slow enough to kill part-way
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    child = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "send", "hello", "--to", "subscribers", "--yes"],
        cwd=letter, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while len(server.received) < 10:
        assert child.poll() is None, child.stderr.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    child.stderr.close()  # type: ignore[union-attr]
    server.delay = 0
    assert len(server.received) < n

    listing = cli("campaigns").stdout.splitlines()[1]
    assert " interrupted " in listing  # no live process holds it

    resumed = cli("send", "hello", "--to", "subscribers", "--yes")
    assert resumed.exit_code == 0, resumed.stderr
    got = collections.Counter(server.recipients())
    assert max(got.values()) == 1
    rows = {r["email"]: r["state"] for r in deliveries(letter)}
    uncertain = [e for e, s in rows.items() if s == "uncertain"]
    # The journal narrows it down to the one message the server had when the kill came.
    assert len(uncertain) <= 1
    assert set(readers(n)) - set(got) <= set(uncertain)
    assert sum(1 for s in rows.values() if s == "sent") == n - len(uncertain)
    if uncertain:
        assert f"{len(uncertain)} uncertain" in resumed.stderr
        assert "--retry-uncertain" in resumed.stderr
        shown = cli("campaigns", "1").stdout
        assert "Uncertain:" in shown and uncertain[0] in shown


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(
    letter: Path, server: SMTPServer, cli
) -> None:
    n = 40
    add(letter, *readers(n))
    server.delay = 0.04
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    child = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "send", "hello", "--to", "subscribers", "--yes"],
        cwd=letter, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while len(server.received) < 5:
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert "Interrupted:" in err and "run the same command to resume" in err
    states = collections.Counter(r["state"] for r in deliveries(letter))
    assert set(states) == {"sent", "queued"}  # a clean stop: nothing uncertain
    assert states["sent"] == len(server.received)

    server.delay = 0
    resumed = cli("send", "hello", "--to", "subscribers", "--yes")
    assert resumed.exit_code == 0, resumed.stderr
    assert collections.Counter(server.recipients()) == collections.Counter(readers(n))


def test_list_changes_during_a_send_are_safe(letter: Path, server: SMTPServer, cli) -> None:
    """Other commands write subscribers while a send runs; a late unsubscribe is honoured."""
    n = 40
    add(letter, *readers(n))
    server.hold_after = 2  # the send is under way, its rows claimed, and waits for us
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    child = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "send", "hello", "--to", "subscribers", "--yes"],
        cwd=letter, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while len(server.received) < 2:
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    assert cli("subscribers", "unsubscribe", readers(n)[-1]).exit_code == 0
    assert cli("subscribers", "add", "newcomer@example.org").exit_code == 0
    assert cli("subscribers", "count").exit_code == 0
    server.release.set()
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    got = server.recipients()
    assert sorted(got) == readers(n)[:-1]  # the leaver skipped, the newcomer not in this issue
    states = {r["email"]: (r["state"], r["error"]) for r in deliveries(letter)}
    assert states[readers(n)[-1]] == ("skipped", "subscriber unsubscribed before sending")
    assert "newcomer@example.org" not in states


def test_providers_lists_builtins_with_their_origin(cli, newsletter_dir: Path) -> None:
    run = cli("providers")
    assert run.exit_code == 0
    lines = {line.split()[0].lstrip("*"): line for line in run.stdout.splitlines()
             if line.split() and line.split()[0] != "*"}
    lines.update({line.split()[1]: line for line in run.stdout.splitlines()
                  if line.startswith("*")})
    assert "outbox" in lines and "smtp" in lines
    assert lines["smtp"].split()[1] == "newsletter"
    assert lines["outbox"].startswith("*")  # the configured one


def test_broken_plugin_is_reported_not_a_crash(tmp_path: Path, newsletter_dir: Path) -> None:
    site = tmp_path / "site"
    dist = site / "carrier_pigeon-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: carrier-pigeon\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[newsletter.providers]\npigeon = carrier_pigeon:PigeonProvider\n"
    )
    (site / "carrier_pigeon.py").write_text("import no_such_module_anywhere\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-m", "newsletter", "providers"], cwd=newsletter_dir,
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    pigeon = [line for line in run.stdout.splitlines() if " pigeon " in line]
    assert pigeon and "carrier-pigeon" in pigeon[0]
    assert "cannot load: ModuleNotFoundError" in pigeon[0]
    assert "smtp" in run.stdout


@pytest.mark.parametrize("command", ["send", "campaigns", "providers"])
def test_help_has_an_example(cli, command: str) -> None:
    run = cli(command, "--help")
    assert run.exit_code == 0 and "Example: newsletter " + command in run.stdout
