"""Scheduled sends and `newsletter run`: on time, once, cancellable, safe to overlap."""

from __future__ import annotations

import email
import email.policy
import fcntl
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsletter import store
from newsletter.audience import subscribers
from newsletter.delivery import schedule
from newsletter.errors import DeliveryError
from newsletter.run import run_once
from newsletter.settings import load_settings

AT = "2031-06-01 07:00 Europe/Paris"
DUE = datetime(2031, 6, 1, 5, 0, 30, tzinfo=UTC)  # 07:00:30 in Paris (summer time)


@pytest.fixture
def letter(newsletter_dir: Path, write_draft):
    write_draft("2031-06-01-hello.md", "---\ntitle: Hello\npreheader: hi\n---\nHello "
                "{{ subscriber.name | default('friend') }}.\n")
    db = store.connect(newsletter_dir / "newsletter.db")
    for n in range(3):
        subscribers.add_subscriber(db, f"r{n}@example.com")
    db.conn.close()
    return newsletter_dir


def outbox_files(root: Path) -> list[Path]:
    return sorted((root / "outbox").rglob("*.eml")) if (root / "outbox").exists() else []


def test_parse_at_reads_local_offsets_and_zones_and_refuses_the_past():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert schedule.parse_at("2031-06-01 07:00 Europe/Paris", now) == \
        datetime(2031, 6, 1, 5, 0, tzinfo=UTC)
    assert schedule.parse_at("2031-06-01T07:00+02:00", now) == \
        datetime(2031, 6, 1, 5, 0, tzinfo=UTC)
    assert schedule.parse_at("2031-06-01 07:00", now).tzinfo is not None  # local time
    with pytest.raises(DeliveryError, match="is in the past"):
        schedule.parse_at("2029-12-31 23:59 UTC", now)
    with pytest.raises(DeliveryError, match="is not a date and time"):
        schedule.parse_at("tomorrow morning", now)
    with pytest.raises(DeliveryError, match="is not a time zone"):
        schedule.parse_at("2031-06-01 07:00 Mars/Olympus", now)


def test_parse_at_refuses_a_time_the_clocks_skip_and_takes_the_first_of_a_repeated_one():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    # 2027-03-28 02:30 never happens in Paris (02:00 → 03:00): say so, do not guess.
    with pytest.raises(DeliveryError, match="does not exist in Europe/Paris"):
        schedule.parse_at("2027-03-28 02:30 Europe/Paris", now)
    # 02:30 happens twice on 2027-10-31: the first (summer time, UTC+2), said in the docs.
    assert schedule.parse_at("2027-10-31 02:30 Europe/Paris", now) == \
        datetime(2027, 10, 31, 0, 30, tzinfo=UTC)
    assert schedule.parse_at("2027-03-28 03:00 Europe/Paris", now) == \
        datetime(2027, 3, 28, 1, 0, tzinfo=UTC)


def test_parse_at_refuses_a_local_time_the_clocks_skip(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        with pytest.raises(DeliveryError, match="does not exist"):
            schedule.parse_at("2027-03-28 02:30", datetime(2026, 1, 1, tzinfo=UTC))
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_scheduled_send_goes_out_when_due_to_the_list_as_it_is_then(letter, cli):
    run = cli("send", "hello", "--to", "subscribers", "--at", AT)
    assert run.exit_code == 0, run.stderr
    assert "Scheduled #1" in run.stdout and "Nothing was sent now" in run.stdout
    assert outbox_files(letter) == []
    listing = cli("campaigns")
    assert "#1   scheduled for 2031-06-01" in listing.stdout

    settings = load_settings(letter)
    early = run_once(settings, now=DUE - timedelta(minutes=5), do_sync=False)
    assert early.sends == [] and outbox_files(letter) == []

    # Someone who joins before the time gets it: the audience is fixed when it is sent.
    db = store.connect(settings.database)
    subscribers.add_subscriber(db, "late@example.com")
    db.conn.close()
    report = run_once(settings, now=DUE, do_sync=False)
    assert [line.outcome for line in report.sends] == ["sent"]
    assert "4 sent, 0 failed" in report.sends[0].text
    assert len(outbox_files(letter)) == 4
    # Once: a later run sends nothing more.
    assert run_once(settings, now=DUE + timedelta(hours=1), do_sync=False).sends == []
    assert len(outbox_files(letter)) == 4
    assert "scheduled for" not in cli("campaigns").stdout


def test_a_run_after_downtime_says_how_late(letter, cli):
    cli("send", "hello", "--to", "subscribers", "--at", AT)
    report = run_once(load_settings(letter), now=DUE + timedelta(hours=5), do_sync=False)
    assert "5 h late" in report.sends[0].text


def test_a_cancelled_send_is_never_sent_and_a_sent_one_cannot_be_cancelled(letter, cli):
    cli("send", "hello", "--to", "subscribers", "--at", AT)
    assert cli("send", "--cancel", "1").exit_code == 0
    assert run_once(load_settings(letter), now=DUE, do_sync=False).sends == []
    assert outbox_files(letter) == []
    cli("send", "hello", "--to", "subscribers", "--at", AT)
    run_once(load_settings(letter), now=DUE, do_sync=False)
    refused = cli("send", "--cancel", "2")
    assert refused.exit_code == 5 and "can no longer be cancelled" in refused.stderr


def test_scheduling_the_same_draft_twice_or_a_sent_one_is_refused(letter, cli):
    assert cli("send", "hello", "--to", "subscribers", "--at", AT).exit_code == 0
    twice = cli("send", "hello", "--to", "subscribers", "--at", "2031-07-01 07:00")
    assert twice.exit_code == 5 and "already scheduled" in twice.stderr
    test_send = cli("send", "hello", "--to", "me@example.org", "--at", AT)
    assert test_send.exit_code == 5 and "test to addresses now" in test_send.stderr


def test_an_overlapping_run_sends_nothing(letter, cli):
    cli("send", "hello", "--to", "subscribers", "--at", AT)
    settings = load_settings(letter)
    lock = settings.database.with_name(f".{settings.database.name}.run.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run still working
    try:
        report = run_once(settings, now=DUE, do_sync=False)
        assert report.busy is not None and report.sends == []
        busy = cli("run", "--no-sync")
        assert busy.exit_code == 0 and "still working" in busy.stderr
    finally:
        os.close(fd)
    assert outbox_files(letter) == []
    assert len(run_once(settings, now=DUE, do_sync=False).sends) == 1
    assert len(outbox_files(letter)) == 3


def test_a_send_a_dead_run_left_claimed_is_resumed_without_duplicates(letter, cli):
    cli("send", "hello", "--to", "subscribers", "--at", AT)
    settings = load_settings(letter)
    db = store.connect(settings.database)
    # A run claimed it and died (its lock died with it).
    db.execute("UPDATE schedules SET status = 'sending' WHERE id = 1")
    db.conn.close()
    report = run_once(settings, now=DUE, do_sync=False)
    assert [line.outcome for line in report.sends] == ["sent"]
    assert len(outbox_files(letter)) == 3


def test_a_draft_edited_after_scheduling_is_noted_or_held(letter, cli):
    cli("send", "hello", "--to", "subscribers", "--at", AT)
    draft = letter / "drafts" / "2031-06-01-hello.md"
    draft.write_text(draft.read_text() + "\nA late addition.\n")
    report = run_once(load_settings(letter), now=DUE, do_sync=False)
    assert "edited after it was scheduled: sent as it is now" in report.sends[0].text
    assert "A late addition." in text_of(outbox_files(letter)[0])


def test_if_edited_hold_keeps_an_edited_draft_back(letter, cli):
    toml = letter / "newsletter.toml"
    toml.write_text(toml.read_text() + '\n[schedule]\nif_edited = "hold"\n')
    cli("send", "hello", "--to", "subscribers", "--at", AT)
    draft = letter / "drafts" / "2031-06-01-hello.md"
    draft.write_text(draft.read_text() + "\nChanged.\n")
    report = run_once(load_settings(letter), now=DUE, do_sync=False)
    assert [line.outcome for line in report.sends] == ["held"]
    assert outbox_files(letter) == []
    assert "held (edited)" in cli("campaigns").stdout


WELCOME = "---\ntitle: Welcome to Test Letter\ntrigger: welcome\n---\nGlad you are here, " \
    "{{ subscriber.name | default('friend') }}.\n"


def text_of(path: Path) -> str:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return message.get_body(("plain",)).get_content()


def welcome_files(root: Path) -> list[Path]:
    return [p for p in outbox_files(root) if "welcome" in p.parent.name]


def test_a_welcome_email_goes_once_to_each_reader_who_joins_after_it_is_enabled(
    letter, cli, write_draft
):
    write_draft("welcome.md", WELCOME)
    settings = load_settings(letter)
    first = run_once(settings, do_sync=False)
    assert "enabled" in first.welcomes[0].text
    assert welcome_files(letter) == []  # turning it on does not mail the existing list

    assert cli("subscribers", "add", "new@example.com", "--name", "Ana",
               "--welcome").exit_code == 0
    assert cli("subscribers", "add", "quiet@example.com").exit_code == 0  # no --welcome
    report = run_once(settings, do_sync=False)
    assert [line.sent for line in report.welcomes] == [1]
    files = welcome_files(letter)
    assert len(files) == 1 and "Glad you are here, Ana." in text_of(files[0])

    # Exactly once: later runs, and asking again, send nothing more.
    cli("subscribers", "add", "new@example.com", "--welcome")
    assert run_once(settings, do_sync=False).welcomes == []
    assert len(welcome_files(letter)) == 1
    shown = cli("campaigns")
    assert "welcome" in shown.stdout


def test_a_reader_who_leaves_before_the_run_is_not_welcomed(letter, cli, write_draft):
    write_draft("welcome.md", WELCOME)
    settings = load_settings(letter)
    run_once(settings, do_sync=False)
    cli("subscribers", "add", "brief@example.com", "--welcome")
    cli("subscribers", "unsubscribe", "brief@example.com")
    run_once(settings, do_sync=False)
    assert welcome_files(letter) == []


def test_import_with_welcome_owes_it_and_a_plain_import_does_not(letter, cli, write_draft):
    write_draft("welcome.md", WELCOME)
    settings = load_settings(letter)
    run_once(settings, do_sync=False)  # enables it
    plain = letter / "plain.csv"
    plain.write_text("email,name\nold@example.com,Old\n")
    fresh = letter / "fresh.csv"
    fresh.write_text("email,name\nnew1@example.com,One\nnew2@example.com,Two\n")
    assert cli("subscribers", "import", str(plain)).exit_code == 0
    assert cli("subscribers", "import", str(fresh), "--welcome").exit_code == 0
    report = run_once(settings, do_sync=False)
    assert [line.sent for line in report.welcomes] == [2]
    assert sorted(p.name.split("-", 1)[1] for p in welcome_files(letter)) == [
        "new1@example.com.eml", "new2@example.com.eml"]
def test_a_welcome_draft_that_fails_to_build_does_not_stop_the_run(letter, cli, write_draft):
    """A half-written welcome must not block the scheduled send, the other welcome, or sync."""
    write_draft("welcome.md", WELCOME)
    write_draft("welcome-broken.md", "---\ntitle: Broken\npreheader: hi\ntrigger: welcome\n"
                "---\nWelcome {{ subscriber.email }\n")
    cli("send", "hello", "--to", "subscribers", "--at", AT)
    settings = load_settings(letter)
    db = store.connect(settings.database)
    db.execute("UPDATE schedules SET send_at = '2026-01-01T00:00:00Z'")
    db.conn.commit()
    db.conn.close()
    run_once(settings, do_sync=False)  # enables the good welcome
    cli("subscribers", "add", "new@example.com", "--name", "Ana", "--welcome")
    run = cli("run", "--no-sync")
    output = run.stdout + run.stderr
    assert run.exit_code == 5 and run.exception is None, output
    assert "welcome welcome-broken: not sent:" in output
    assert "template syntax error" in output
    assert len(welcome_files(letter)) == 1  # the good welcome still went out


def test_a_draft_renamed_after_scheduling_is_found_and_sent(letter, cli):
    cli("send", "hello", "--to", "subscribers", "--at", AT)
    old = letter / "drafts" / "2031-06-01-hello.md"
    old.rename(letter / "drafts" / "2031-06-02-hello.md")  # the writer moved its date
    report = run_once(load_settings(letter), now=DUE, do_sync=False)
    assert [line.outcome for line in report.sends] == ["sent"], report.sends[0].text
    assert "moved to drafts/2031-06-02-hello.md" in report.sends[0].text
    assert len(outbox_files(letter)) == 3


def test_a_draft_deleted_after_scheduling_fails_and_sends_nothing(letter, cli):
    cli("send", "hello", "--to", "subscribers", "--at", AT)
    (letter / "drafts" / "2031-06-01-hello.md").unlink()
    report = run_once(load_settings(letter), now=DUE, do_sync=False)
    assert [line.outcome for line in report.sends] == ["failed"]
    assert "is gone" in report.sends[0].text and outbox_files(letter) == []


def _due_schedule_for_300(letter: Path, cli) -> None:
    """300 readers, an outbox that sends 100 a second (3 s), a schedule already due."""
    toml = letter / "newsletter.toml"
    toml.write_text(toml.read_text().replace('name = "outbox"', 'name = "outbox"\nrate = 100'))
    db = store.connect(letter / "newsletter.db")
    for n in range(3, 300):
        subscribers.add_subscriber(db, f"r{n}@example.com")
    db.conn.close()
    assert cli("send", "hello", "--to", "subscribers", "--at", AT).exit_code == 0
    db = store.connect(letter / "newsletter.db")
    with db.conn:
        db.execute("UPDATE schedules SET send_at = '2026-01-01T00:00:00Z'")
    db.conn.close()


def _recipients(letter: Path) -> list[str]:
    return sorted(email.message_from_bytes(p.read_bytes())["To"] for p in outbox_files(letter))


def _newsletter(letter: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "newsletter", *args],
                            cwd=letter, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_runs_started_together_send_each_reader_once(letter, cli):
    _due_schedule_for_300(letter, cli)
    runs = [_newsletter(letter, "run", "--no-sync") for _ in range(2)]
    outs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outs
    said = b"".join(out + err for out, err in outs).decode()
    assert "still working" in said or "being sent by another run" in said, said
    got = _recipients(letter)
    assert len(got) == 300 and len(set(got)) == 300


def test_a_run_killed_mid_send_is_finished_by_the_next_without_duplicates(letter, cli):
    _due_schedule_for_300(letter, cli)
    first = _newsletter(letter, "run", "--no-sync")
    deadline = time.monotonic() + 60
    while len(outbox_files(letter)) < 30 and time.monotonic() < deadline:
        time.sleep(0.02)  # polling the outbox, the condition itself
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    partial = len(outbox_files(letter))
    assert 30 <= partial < 300
    second = _newsletter(letter, "run", "--no-sync")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    got = _recipients(letter)
    assert len(got) == len(set(got)), "a reader got it twice"
    # At most the one message in flight at the kill is uncertain; everyone else has it.
    assert len(got) >= 299, (len(got), out.decode())


def test_a_send_the_provider_refuses_waits_and_run_says_so(letter, cli):
    from tests.conftest import refusing_port

    with refusing_port() as port:
        toml = letter / "newsletter.toml"
        toml.write_text(toml.read_text().replace(
            '[provider]\nname = "outbox"',
            f'[provider]\nname = "smtp"\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"'))
        assert cli("send", "hello", "--to", "subscribers", "--at", AT).exit_code == 0
        db = store.connect(letter / "newsletter.db")
        db.execute("UPDATE schedules SET send_at = '2020-01-01T00:00:00Z'")  # due now
        db.conn.close()
        run = cli("run", "--no-sync")
        assert run.exit_code == 6, run.stderr  # cron hears about it
        assert "the next run resumes" in run.stdout
        db = store.connect(letter / "newsletter.db")
        assert db.execute("SELECT status FROM schedules").fetchone() == ("scheduled",)
        db.conn.close()


def test_schedules_and_campaigns_share_one_numbering(letter, cli, write_draft):
    # Campaign 1 is an earlier send; the scheduled send must not be another "1".
    write_draft("2031-05-01-earlier.md", "---\ntitle: Earlier\npreheader: hi\n---\nBefore.\n")
    assert cli("send", "earlier", "--to", "subscribers", "--yes").exit_code == 0
    scheduled = cli("send", "hello", "--to", "subscribers", "--at", AT)
    assert scheduled.exit_code == 0, scheduled.stderr
    assert "Scheduled #2" in scheduled.stdout and "as campaign 2" in scheduled.stdout
    assert "newsletter send --cancel 2" in scheduled.stdout
    listing = cli("campaigns").stdout
    assert "#2   scheduled for 2031-06-01" in listing and "--cancel 2)" in listing

    # The number of a campaign that went out is not some scheduled send's number.
    refused = cli("send", "--cancel", "1")
    assert refused.exit_code == 5
    assert refused.stderr == ("Error: campaign 1 has started: it can no longer be cancelled "
                              "(`newsletter campaigns 1` shows how far it got)\n")
    assert "#2   scheduled" in cli("campaigns").stdout  # still scheduled

    # Sent when due, it is campaign 2: the number the writer was given all along.
    report = run_once(load_settings(letter), now=DUE, do_sync=False)
    assert "campaign 2:" in report.sends[0].text
    shown = cli("campaigns", "2")
    assert shown.exit_code == 0 and "hello" in shown.stdout
    # A schedule made after it takes the next number, past both.
    write_draft("2031-07-01-later.md", "---\ntitle: Later\npreheader: hi\n---\nAfter.\n")
    assert "Scheduled #3" in cli("send", "later", "--to", "subscribers", "--at", AT).stdout


def test_a_welcome_campaign_never_takes_a_scheduled_sends_number(letter, cli, write_draft):
    scheduled = cli("send", "hello", "--to", "subscribers", "--at", AT)
    assert "Scheduled #1" in scheduled.stdout, scheduled.stdout
    write_draft("welcome.md", WELCOME)
    report = run_once(load_settings(letter), now=DUE - timedelta(days=1), do_sync=False)
    assert "enabled" in report.welcomes[0].text
    listing = cli("campaigns").stdout
    assert "#1   scheduled" in listing
    assert cli("campaigns", "2").exit_code == 0 and "welcome" in cli("campaigns", "2").stdout
    # Sent when due, the scheduled send is still campaign 1, as the writer was told.
    sent = run_once(load_settings(letter), now=DUE, do_sync=False)
    assert "campaign 1:" in sent.sends[0].text
