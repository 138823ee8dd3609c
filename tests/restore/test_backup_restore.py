"""`newsletter backup` and `newsletter restore`, with the change journal replayed: readers
who left stay gone, readers who joined are there, erased readers stay erased, a send made
after the snapshot is known, replaying twice is replaying once, a lost journal is said
plainly and makes unfinished sends uncertain, and a live send or process is never
restored under.

Real SQLite files, the real CLI (in-process), a real SMTP server (aiosmtpd) for sends.
"""

from __future__ import annotations

import gc
import json
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from newsletter import changes, store
from newsletter.delivery.lock import CampaignLock
from newsletter.delivery.log import find_or_create_campaign
from newsletter.delivery.recipients import parse_audience

from ..delivery.smtpserver import SMTPServer

Cli = Callable[..., Any]


def _database(root: Path) -> Path:
    return root / "newsletter.db"


def _add(cli: Cli, *addresses: str) -> None:
    for address in addresses:
        run = cli("subscribers", "add", address)
        assert run.exit_code == 0, run.stderr


def _backup(cli: Cli, root: Path, name: str = "snap.db") -> Path:
    run = cli("backup", str(root / name))
    assert run.exit_code == 0, run.stderr
    return root / name


def _restore(cli: Cli, snapshot: Path) -> Any:
    # The in-process CLI runs above left their connections to the garbage collector (a
    # real command closes them when it exits); an open one would rightly refuse the restore.
    gc.collect()
    run = cli("restore", str(snapshot))
    assert run.exit_code == 0, run.stderr
    return run


def _rows(database: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(database)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _statuses(database: Path) -> dict[str, str]:
    return dict(_rows(database, "SELECT email, status FROM subscribers"))


def _everything(database: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The tables a restore rebuilds, as rows (timestamps of the restore itself left out)."""
    return {
        "subscribers": _rows(database, "SELECT * FROM subscribers ORDER BY id"),
        "events": _rows(database, "SELECT * FROM events ORDER BY id"),
        "deliveries": _rows(database, "SELECT id, campaign_id, subscriber_id, email, state, "
                                      "provider_message_id, sent_at FROM deliveries ORDER BY id"),
        "campaigns": _rows(database, "SELECT id, slug, audience, status FROM campaigns"),
        "suppressions": _rows(database, "SELECT address_hash FROM suppressions"),
    }


def _smtp(root: Path, port: int) -> None:
    toml = root / "newsletter.toml"
    toml.write_text(toml.read_text().replace(
        '[provider]\nname = "outbox"',
        f'[provider]\nname = "smtp"\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"'))


def test_backup_is_a_private_snapshot_recorded_in_the_live_database(
    newsletter_dir: Path, cli: Cli,
) -> None:
    _add(cli, "a@example.org")
    run = cli("backup")
    assert run.exit_code == 0, run.stderr
    made = list((newsletter_dir / "backups").glob("newsletter-*.db"))
    assert len(made) == 1
    assert stat.S_IMODE(made[0].stat().st_mode) == 0o600
    assert "The secret is NOT in the snapshot" in run.stdout
    assert "NEWSLETTER_SECRET" in run.stdout
    meta = dict(_rows(_database(newsletter_dir), "SELECT key, value FROM meta"))
    assert meta["last_backup_file"] == str(made[0].resolve())
    assert meta["last_backup_at"].endswith("Z") and meta["last_backup_at"][:2] == "20"
    # The snapshot is a database of its own, with the reader, made by SQLite (not a copy
    # of a WAL file that would miss rows).
    assert _rows(made[0], "SELECT email FROM subscribers") == [("a@example.org",)]
    # A second backup to the same file is refused, never overwritten.
    again = cli("backup", str(made[0]))
    assert again.exit_code != 0 and "exists already" in again.stderr


def test_each_backup_starts_a_journal_generation_and_deletes_the_older_ones(
    newsletter_dir: Path, cli: Cli,
) -> None:
    database = _database(newsletter_dir)
    _add(cli, "a@example.org")
    _backup(cli, newsletter_dir, "one.db")
    _add(cli, "b@example.org")
    first = changes.generations(database)
    assert len(first) == 1 and "b@example.org" in changes.generation_path(
        database, first[0]).read_text()
    _backup(cli, newsletter_dir, "two.db")
    second = changes.generations(database)
    # The journal that named b is gone: the newer snapshot holds what it held (erasure).
    assert second == [first[0] + 1]
    assert changes.generation_path(database, second[0]).read_text() == ""


def test_restore_replays_who_left_who_joined_and_who_was_erased(
    newsletter_dir: Path, cli: Cli,
) -> None:
    database = _database(newsletter_dir)
    _add(cli, "a@example.org", "b@example.org", "c@example.org", "e@example.org")
    snapshot = _backup(cli, newsletter_dir)
    assert cli("subscribers", "unsubscribe", "a@example.org").exit_code == 0
    _add(cli, "d@example.org")
    assert cli("subscribers", "remove", "b@example.org").exit_code == 0
    assert cli("subscribers", "remove", "e@example.org", "--suppress").exit_code == 0
    before = _everything(database)

    run = _restore(cli, snapshot)

    assert _statuses(database) == {"a@example.org": "unsubscribed",
                                   "c@example.org": "active", "d@example.org": "active"}
    assert _everything(database) == before  # events (consent records) included
    assert "4 journaled change(s): 2 reader change(s), 2 erasure(s)" in run.stdout
    # The database it replaced is kept, never deleted.
    kept = list(newsletter_dir.glob("newsletter.db.replaced-*"))
    assert len(kept) == 1 and _statuses(kept[0]) == _statuses(database)
    assert "Nothing was sent." in run.stdout
    # e asked to be forgotten for good: adding them back is still refused.
    again = cli("subscribers", "add", "e@example.org")
    assert again.exit_code != 0 and "never added again" in again.stderr


def test_replaying_twice_is_replaying_once(newsletter_dir: Path, cli: Cli) -> None:
    database = _database(newsletter_dir)
    _add(cli, "a@example.org", "b@example.org")
    snapshot = _backup(cli, newsletter_dir)
    assert cli("subscribers", "unsubscribe", "a@example.org").exit_code == 0
    _add(cli, "c@example.org")
    assert cli("subscribers", "remove", "b@example.org").exit_code == 0
    _restore(cli, snapshot)
    once = _everything(database)
    _restore(cli, snapshot)  # the same journal again, over the same snapshot
    assert _everything(database) == once
    # And a change made after a restore is journaled on, so a third restore keeps it.
    _add(cli, "f@example.org")
    _restore(cli, snapshot)
    assert _statuses(database) == {"a@example.org": "unsubscribed",
                                   "c@example.org": "active", "f@example.org": "active"}
    # Three restores (within a second or two), three databases kept aside: none overwritten.
    assert len(list(newsletter_dir.glob("newsletter.db.replaced-*"))) == 3


def test_an_erased_reader_never_comes_back_from_a_snapshot(
    newsletter_dir: Path, cli: Cli,
) -> None:
    database = _database(newsletter_dir)
    _add(cli, "gone@example.org", "stays@example.org")
    assert cli("subscribers", "unsubscribe", "gone@example.org").exit_code == 0
    snapshot = _backup(cli, newsletter_dir)  # the snapshot holds them and their history
    assert cli("subscribers", "remove", "gone@example.org").exit_code == 0
    _restore(cli, snapshot)
    _restore(cli, snapshot)
    assert "gone@example.org" not in _statuses(database)
    assert _rows(database, "SELECT count(*) FROM events WHERE email = 'gone@example.org'") \
        == [(0,)]


def test_a_send_made_after_the_snapshot_is_known_after_the_restore(
    newsletter_dir: Path, cli: Cli, write_draft: Callable[..., Path],
) -> None:
    write_draft("hello.md", "---\ntitle: Hello\n---\nHi there.\n")
    _add(cli, "a@example.org", "b@example.org", "c@example.org")
    snapshot = _backup(cli, newsletter_dir)
    with SMTPServer() as server:
        _smtp(newsletter_dir, server.port)
        sent = cli("send", "hello", "--to", "subscribers", "--yes")
        assert sent.exit_code == 0, sent.stderr
        _restore(cli, snapshot)
        again = cli("send", "hello", "--to", "subscribers", "--yes")
        received = server.recipients()
    assert again.exit_code != 0 and "was sent to the list already" in again.stderr
    assert sorted(received) == ["a@example.org", "b@example.org", "c@example.org"]
    assert _rows(_database(newsletter_dir), "SELECT state, count(*) FROM deliveries "
                                            "GROUP BY state") == [("sent", 3)]


def test_a_lost_journal_is_said_plainly_and_unfinished_sends_become_uncertain(
    newsletter_dir: Path, cli: Cli, write_draft: Callable[..., Path],
) -> None:
    database = _database(newsletter_dir)
    _add(cli, "a@example.org", "b@example.org")
    db = store.connect(database)
    try:  # a send that has begun: its rows are written, nothing is answered yet
        campaign, _ = find_or_create_campaign(
            db, slug="hello", draft_path="drafts/hello.md", subject="Hello",
            audience=parse_audience("subscribers"), provider="smtp")
    finally:
        db.conn.close()
    snapshot = _backup(cli, newsletter_dir)
    _add(cli, "late@example.org")
    for path in changes.journal_dir(database).iterdir():  # lost with the disk
        path.unlink()
    changes.journal_dir(database).rmdir()

    run = _restore(cli, snapshot)

    assert "what happened after it is LOST" in run.stdout
    assert "late@example.org" not in _statuses(database)  # it cannot know
    assert _rows(database, f"SELECT state, count(*) FROM deliveries WHERE campaign_id = "
                           f"{campaign.id} GROUP BY state") == [("uncertain", 2)]
    assert f"Campaign {campaign.id} (hello): 2 message(s) may have gone out" in run.stdout
    # The restored database journals on, in a generation of its own.
    _add(cli, "next@example.org")
    assert "next@example.org" in changes.generation_path(
        database, changes.generations(database)[-1]).read_text()


def test_restore_is_refused_while_a_send_holds_its_lock(
    newsletter_dir: Path, cli: Cli,
) -> None:
    database = _database(newsletter_dir)
    _add(cli, "a@example.org")
    snapshot = _backup(cli, newsletter_dir)
    _add(cli, "b@example.org")
    gc.collect()
    with CampaignLock(database, 7):
        run = cli("restore", str(snapshot))
    assert run.exit_code == 5
    assert run.stderr.strip() == ("Error: campaign 7 is being sent right now: let it finish "
                                  "(or stop it with Ctrl-C), then restore; nothing was changed")
    assert "b@example.org" in _statuses(database)
    assert not list(newsletter_dir.glob("newsletter.db.replaced-*"))


def test_restore_is_refused_while_another_process_has_the_database_open(
    newsletter_dir: Path, cli: Cli,
) -> None:
    database = _database(newsletter_dir)
    _add(cli, "a@example.org")
    snapshot = _backup(cli, newsletter_dir)
    _add(cli, "b@example.org")
    gc.collect()
    other = store.connect(database)  # as `serve` keeps one open
    try:
        run = cli("restore", str(snapshot))
    finally:
        other.conn.close()
    assert run.exit_code == 5
    assert "another command has newsletter.db open" in run.stderr
    assert "b@example.org" in _statuses(database)


@pytest.mark.parametrize("bad", ["missing.db", "not-a-db.db"])
def test_restore_of_what_is_not_a_snapshot_is_one_error_line(
    newsletter_dir: Path, cli: Cli, bad: str,
) -> None:
    _add(cli, "a@example.org")
    if bad == "not-a-db.db":
        (newsletter_dir / bad).write_text("hello")
    run = cli("restore", str(newsletter_dir / bad))
    assert run.exit_code == 2
    assert run.stderr.startswith("Error: ") and len(run.stderr.strip().splitlines()) == 1
    assert _statuses(_database(newsletter_dir)) == {"a@example.org": "active"}


def test_a_status_change_journaled_before_its_transaction_is_replayed_once(
    newsletter_dir: Path, cli: Cli,
) -> None:
    # Issue 21 will make a reader's unsubscribe durable in the journal first when the
    # database is busy: an entry with no row image, appended before any transaction.
    database = _database(newsletter_dir)
    _add(cli, "busy@example.org")
    snapshot = _backup(cli, newsletter_dir)
    reader_id = _rows(database, "SELECT id FROM subscribers")[0][0]
    at = "2026-12-07T10:00:00Z"
    entry = {"at": at, "ops": [{
        "op": "reader", "subscriber_id": reader_id, "email": "busy@example.org",
        "before": "active", "after": "unsubscribed", "source": "one-click", "at": at,
        "events": [{"subscriber_id": reader_id, "email": "busy@example.org",
                    "kind": "unsubscribed", "status_before": "active",
                    "status_after": "unsubscribed", "source": "one-click", "detail": "",
                    "created_at": at}]}]}
    generation = changes.generations(database)[-1]
    changes.write_line(changes.generation_path(database, generation),
                       (json.dumps(entry) + "\n").encode())
    _restore(cli, snapshot)
    _restore(cli, snapshot)
    assert _statuses(database) == {"busy@example.org": "unsubscribed"}
    assert _rows(database, "SELECT kind, source, created_at FROM events WHERE kind = "
                           "'unsubscribed'") == [("unsubscribed", "one-click", at)]
    assert _rows(database, "SELECT unsubscribed_at FROM subscribers") == [(at,)]


def test_a_torn_last_line_never_committed_and_is_skipped(
    newsletter_dir: Path, cli: Cli,
) -> None:
    database = _database(newsletter_dir)
    _add(cli, "a@example.org")
    snapshot = _backup(cli, newsletter_dir)
    _add(cli, "b@example.org")
    path = changes.generation_path(database, changes.generations(database)[-1])
    with path.open("a") as f:
        f.write('{"at":"2026-12-07T10:00:00Z","ops":[{"op":"rea')  # killed mid-append
    run = _restore(cli, snapshot)
    assert "Skipped 1 journal line(s) that never committed" in run.stdout
    assert _statuses(database) == {"a@example.org": "active", "b@example.org": "active"}
    _add(cli, "c@example.org")  # the next append starts on a line of its own
    _restore(cli, snapshot)
    assert set(_statuses(database)) == {"a@example.org", "b@example.org", "c@example.org"}


def test_an_older_snapshot_whose_journal_a_newer_backup_deleted_says_it_is_lost(
    newsletter_dir: Path, cli: Cli,
) -> None:
    database = _database(newsletter_dir)
    _add(cli, "a@example.org")
    old = _backup(cli, newsletter_dir, "old.db")
    _add(cli, "b@example.org")
    new = _backup(cli, newsletter_dir, "new.db")  # deletes old.db's journal: it covers it
    _add(cli, "c@example.org")
    run = _restore(cli, old)
    assert "what happened after it is LOST" in run.stdout
    assert set(_statuses(database)) == {"a@example.org"}
    # The newer journal belongs to the database that was replaced: kept aside, and a
    # restore of new.db no longer replays c onto this history.
    assert list(changes.journal_dir(database).glob("replaced-*/*.jsonl"))
    run = _restore(cli, new)
    assert "what happened after it is LOST" in run.stdout
    assert set(_statuses(database)) == {"a@example.org", "b@example.org"}


def test_scheduled_sends_that_came_due_wait_for_the_writer_after_a_restore(
    newsletter_dir: Path, cli: Cli, write_draft: Callable[..., Path],
) -> None:
    from datetime import UTC, datetime, timedelta

    from newsletter.delivery.schedule import schedule_send
    from newsletter.settings import load_settings

    write_draft("soon.md", "---\ntitle: Soon\n---\nSoon.\n")
    write_draft("later.md", "---\ntitle: Later\n---\nLater.\n")
    _add(cli, "a@example.org")
    settings = load_settings(newsletter_dir)
    now = datetime.now(UTC)
    soon = schedule_send(settings, "soon", "subscribers", now + timedelta(seconds=1))
    later = schedule_send(settings, "later", "subscribers", now + timedelta(days=1))
    snapshot = _backup(cli, newsletter_dir)
    time.sleep(1.5)  # `soon` comes due: it may have gone out before the disk died

    run = _restore(cli, snapshot)

    assert (f"Scheduled send #{soon.id} (soon) came due: held for you: send it with "
            "`newsletter send soon --to subscribers` if it did not go out, or "
            f"`newsletter send --cancel {soon.id}`.") in run.stdout
    assert f"#{later.id}" not in run.stdout
    ran = cli("run", "--no-sync")
    assert ran.exit_code == 0, ran.stderr
    database = _database(newsletter_dir)
    assert dict(_rows(database, "SELECT slug, status FROM schedules")) == {
        "soon": "held", "later": "scheduled"}
    assert _rows(database, "SELECT count(*) FROM campaigns") == [(0,)]


def test_a_backup_taken_while_an_import_runs_loses_none_of_it_after_a_restore(
    newsletter_dir: Path, cli: Cli,
) -> None:
    import os
    import subprocess
    import sys

    database = _database(newsletter_dir)
    _add(cli, "first@example.org")
    rows = 20_000
    sheet = newsletter_dir / "big.csv"
    sheet.write_text("email\n" + "".join(f"i{n:05d}@example.org\n" for n in range(rows)))
    importing = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "subscribers", "import", str(sheet)],
        cwd=newsletter_dir, env=os.environ.copy(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    snapshots = []
    while importing.poll() is None or not snapshots:  # snapshots before, during and after
        name = f"snap{len(snapshots)}.db"
        backup = subprocess.run([sys.executable, "-m", "newsletter", "backup", name],
                                cwd=newsletter_dir, env=os.environ.copy(),
                                capture_output=True, text=True)
        assert backup.returncode == 0, backup.stderr
        snapshots.append(newsletter_dir / name)
    out, err = importing.communicate()
    assert importing.returncode == 0, err
    # The newest snapshot and its journal hold the whole import, whichever side of it
    # the snapshot fell.
    before = _everything(database)
    _restore(cli, snapshots[-1])
    assert _everything(database) == before
    assert len(_statuses(database)) == rows + 1
    assert _rows(database, "SELECT count(*) FROM events WHERE kind = 'imported'") == [(rows,)]


def test_a_lost_journal_moves_the_replaced_databases_requests_aside_too(
    newsletter_dir: Path, cli: Cli,
) -> None:
    # An unsubscribe journaled while the replaced database was busy belongs to that
    # database's history: left in place, serve's start (Deferred.recover) would apply it to
    # the restored one, whose journal no longer says anything about that reader.
    database = _database(newsletter_dir)
    _add(cli, "a@example.org", "b@example.org")
    old = _backup(cli, newsletter_dir, "old.db")
    _backup(cli, newsletter_dir, "new.db")  # deletes old.db's journal
    reader_id = _rows(database, "SELECT id FROM subscribers WHERE email = 'b@example.org'")[0][0]
    conn = sqlite3.connect(database)
    try:
        changes.append_requests(conn, [changes.request_op(
            subscriber_id=reader_id, email="b@example.org", before="active",
            after="unsubscribed", kind="unsubscribed", source="one-click", detail="",
            ip=None, user_agent=None, campaign_id=None, request_id="request:old-1",
            at="2026-12-07T10:00:00Z")])
    finally:
        conn.close()
    assert changes.requests(database)
    run = _restore(cli, old)
    assert "what happened after it is LOST" in run.stdout
    assert changes.requests(database) == []
    assert list(changes.journal_dir(database).glob("replaced-*/*.requests.jsonl"))
    assert _statuses(database) == {"a@example.org": "active", "b@example.org": "active"}


def test_an_imports_journal_file_is_replayed_and_a_missing_one_is_said(
    newsletter_dir: Path, cli: Cli,
) -> None:
    database = _database(newsletter_dir)
    _add(cli, "a@example.org")
    snapshot = _backup(cli, newsletter_dir)
    sheet = newsletter_dir / "list.csv"
    sheet.write_text("email,name\n" + "".join(f"i{n}@example.org,I {n}\n" for n in range(1500)))
    run = cli("subscribers", "import", str(sheet))
    assert run.exit_code == 0, run.stderr
    before = _everything(database)
    _restore(cli, snapshot)
    assert _everything(database) == before
    # The import's own file lost (the journal folder damaged): said, nothing replaced.
    for path in changes.journal_dir(database).glob("*.import-*.jsonl"):
        path.unlink()
    gc.collect()
    run = cli("restore", str(snapshot))
    assert run.exit_code != 0
    assert run.stderr.startswith("Error: the journal file ") and "is missing" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert _everything(database) == before
