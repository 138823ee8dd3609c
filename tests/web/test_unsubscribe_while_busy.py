"""An unsubscribe while another process holds the write lock for long (issue 21).

A long import's merge is stood in for by a real process holding BEGIN IMMEDIATE. The
unsubscribe is answered at once with the normal page, made durable in the change journal,
survives kill -9 of `serve`, is applied after the restart, and a send skips the reader;
a running send's check sees it before it is applied.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from newsletter import changes, restore
from newsletter.audience import importers
from newsletter.delivery.runner import _ReaderWatch
from newsletter.store import connect
from tests.legacy_tokens import unsubscribe_token
from tests.web.conftest import SECRET, Site, start_site, stop_site, wait_for

HOLD = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE meta SET value = value WHERE 0")
print("locked", flush=True)
sys.stdin.read()  # until the test closes stdin
conn.execute("COMMIT")
"""


def hold_write_lock(database: Path) -> subprocess.Popen[str]:
    """Another process holding the write lock, as a long import's merge does."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(database)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def release(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.wait(10) == 0


def status(site: Site, address: str) -> str:
    db = site.db()
    try:
        return db.execute("SELECT status FROM subscribers WHERE email = ?",
                          [address]).fetchone()[0]
    finally:
        db.conn.close()


def one_click(site: Site, address: str) -> httpx.Response:
    token = unsubscribe_token(SECRET.encode(), address)
    return httpx.post(f"{site.url}/unsubscribe?token={token}",
                      data={"List-Unsubscribe": "One-Click"}, timeout=60)


def test_unsubscribe_while_busy_is_answered_at_once_and_survives_kill_9(tmp_path: Path) -> None:
    site = start_site(tmp_path / "site")
    try:
        rows = "\n".join(f"reader{i}@example.com,Reader {i}" for i in range(20))
        (site.root / "list.csv").write_text("email,name\n" + rows + "\n")
        assert site.cli("subscribers", "import", "list.csv").returncode == 0
        database = site.root / "newsletter.db"
        holder = hold_write_lock(database)
        try:
            started = time.monotonic()
            answers = [one_click(site, f"reader{i}@example.com") for i in (3, 7)]
            took = time.monotonic() - started
            for answer in answers:
                assert answer.status_code == 200
                assert "unsubscribed" in answer.text.lower()
            assert took < 3, f"two unsubscribes took {took:.1f} s while the database was busy"
            # Not applied (the lock is held), but durable in the journal: kill -9 now.
            assert status(site, "reader3@example.com") == "active"
            assert len(changes.requests(database)) == 2
            site.process.send_signal(signal.SIGKILL)
            site.process.wait(10)
        finally:
            release(holder)
        assert status(site, "reader3@example.com") == "active"  # nobody applied it yet
    finally:
        stop_site(site)
    site = start_site(tmp_path / "site")  # the restart applies what was journaled
    try:
        for i in (3, 7):
            wait_for(lambda i=i: status(site, f"reader{i}@example.com") == "unsubscribed", 20,
                     f"reader{i} to be unsubscribed after the restart")
        db = site.db()
        try:
            sources = db.execute(
                "SELECT source, count(*) FROM events WHERE kind = 'unsubscribed' "
                "GROUP BY source").fetchall()
        finally:
            db.conn.close()
        assert sources == [("one-click", 2)]  # applied once, as a one-click unsubscribe
        (site.root / "drafts" / "issue-one.md").write_text(
            "---\nsubject: Issue one\n---\nHello.\n\n[Unsubscribe]({{ unsubscribe_url }})\n")
        sent = site.cli("send", "issue-one", "--to", "subscribers", "--yes")
        assert sent.returncode == 0, sent.stderr
        mailed = "".join(p.read_text() for p in (site.root / "outbox").glob("*issue-one*/*.eml"))
        assert "reader4@example.com" in mailed
        assert "reader3@example.com" not in mailed and "reader7@example.com" not in mailed
    finally:
        stop_site(site)


def test_a_second_server_start_applies_nothing_twice(tmp_path: Path) -> None:
    site = start_site(tmp_path / "site")
    try:
        (site.root / "list.csv").write_text("email\nreader1@example.com\n")
        assert site.cli("subscribers", "import", "list.csv").returncode == 0
        holder = hold_write_lock(site.root / "newsletter.db")
        try:
            assert one_click(site, "reader1@example.com").status_code == 200
        finally:
            release(holder)
        # Applied by the running server as soon as the lock is free.
        wait_for(lambda: status(site, "reader1@example.com") == "unsubscribed", 20,
                 "the journaled unsubscribe to be applied")
    finally:
        stop_site(site)
    site = start_site(tmp_path / "site")
    try:
        time.sleep(0.5)
        db = site.db()
        try:
            assert db.execute("SELECT count(*) FROM events WHERE kind = 'unsubscribed'"
                              ).fetchone()[0] == 1
        finally:
            db.conn.close()
    finally:
        stop_site(site)


def test_a_running_sends_check_sees_a_journaled_unsubscribe(tmp_path: Path) -> None:
    database = tmp_path / "newsletter.db"
    db = connect(database)
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        for i in (1, 2):
            db.execute("INSERT INTO subscribers (id, email, email_key, status, created_at, "
                       "updated_at) VALUES (?, ?, ?, 'active', 'x', 'x')",
                       [i, f"r{i}@example.com", f"r{i}@example.com"])
        db.execute("INSERT INTO campaigns (id, slug, draft_path, subject, audience, kind, "
                   "provider, created_at) VALUES (1, 's', 'd', 's', 'subscribers', 'list', "
                   "'outbox', 'x')")
        for i in (1, 2):
            db.execute("INSERT INTO deliveries (id, campaign_id, subscriber_id, email, state, "
                       "updated_at) VALUES (?, 1, ?, ?, 'sending', 'x')",
                       [10 + i, i, f"r{i}@example.com"])
    watch = _ReaderWatch(database)
    watch.watch([11, 12])
    assert watch.stopped() == {}
    changes.append_requests(db.conn, [changes.request_op(
        subscriber_id=2, email="r2@example.com", before="active", after="unsubscribed",
        kind="unsubscribed", source="one-click", detail="", ip=None, user_agent=None,
        campaign_id=1, request_id="request:test", at="2026-12-07T23:00:00Z")])
    # Not in the database (nothing committed), seen by the check all the same.
    assert watch.stopped() == {12: "unsubscribed"}
    watch.close()
    db.conn.close()



def _request(subscriber_id: int, email: str, rid: str) -> dict[str, object]:
    return changes.request_op(
        subscriber_id=subscriber_id, email=email, before="active", after="unsubscribed",
        kind="unsubscribed", source="one-click", detail="", ip=None, user_agent=None,
        campaign_id=None, request_id=rid, at="2026-12-07T23:00:00Z")


def test_a_backup_keeps_a_journaled_unsubscribe_not_applied_yet(tmp_path: Path) -> None:
    """A backup deletes the journal its snapshot covers; an unsubscribe journaled there and
    not applied is not in the snapshot, so it moves to the new journal, and a restore of
    that snapshot applies it."""
    database = tmp_path / "newsletter.db"
    db = connect(database)
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO subscribers (id, email, email_key, status, created_at, "
                   "updated_at) VALUES (1, 'r1@example.com', 'r1@example.com', 'active', 'x', "
                   "'x')")
    changes.append_requests(db.conn, [_request(1, "r1@example.com", "request:one")])
    db.conn.close()
    taken = restore.backup(database, tmp_path / "snap.db")
    assert [changes.request_id(op) for op in changes.requests(database, taken.generation)] == [
        "request:one"]
    restore.restore(database, tmp_path / "snap.db")
    db = connect(database)
    try:
        assert db.execute("SELECT status FROM subscribers WHERE id = 1").fetchone()[0] == \
            "unsubscribed"
    finally:
        db.conn.close()


def test_an_imports_journal_holds_each_reader_as_it_is_in_the_database(
        tmp_path: Path) -> None:
    """The import's readers are encoded by SQLite (json_object), not row by row: each op is
    the reader's row and event exactly as `SELECT *` reads them (what a restore upserts)."""
    database = tmp_path / "newsletter.db"
    db = connect(database)
    (tmp_path / "list.csv").write_text("email,name,tags\nA@Example.com,Ada \"Quote\" É,x\n"
                                       "b@example.com,,\n")
    importers.import_file(db, tmp_path / "list.csv")
    ops = [op for record in changes.read(database, 0) if record for op in record.ops]
    assert len(ops) == 2
    for op in ops:
        event = op["events"][0]
        assert op["subscriber"] == changes.reader_op(db.conn, event["subscriber_id"])[
            "subscriber"]
        assert event == changes.reader_op(db.conn, event["subscriber_id"], [event["id"]])[
            "events"][0]
    db.conn.close()


def test_a_request_journaled_inside_an_import_that_never_committed_is_kept_alone(
        tmp_path: Path) -> None:
    """A request line lands between the lines of a long transaction (the import holds the
    lock while it journals). The import is killed before its last line: a restore applies
    the unsubscribe and nothing of the import."""
    database = tmp_path / "newsletter.db"
    db = connect(database)
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO subscribers (id, email, email_key, status, created_at, "
                   "updated_at) VALUES (1, 'r1@example.com', 'r1@example.com', 'active', 'x', "
                   "'x')")
    db.conn.close()
    taken = restore.backup(database, tmp_path / "snap.db")
    db = connect(database)
    new_reader = {"id": 2, "email": "new@example.com", "email_key": "new@example.com",
                  "name": "", "status": "active", "tags": "[]", "attributes": "{}",
                  "source": "import", "created_at": "x", "updated_at": "x"}
    path = changes.generation_path(database, taken.generation)
    changes.write_line(path, changes._line([{"op": "reader", "subscriber": new_reader,
                                             "events": []}], more=True))
    changes.append_requests(db.conn, [_request(1, "r1@example.com", "request:inside")])
    db.conn.close()  # the import's last line never comes: it was killed, it rolled back
    restore.restore(database, tmp_path / "snap.db")
    db = connect(database)
    try:
        assert db.execute("SELECT id, status FROM subscribers ORDER BY id").fetchall() == [
            (1, "unsubscribed")]
    finally:
        db.conn.close()
