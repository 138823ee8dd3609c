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

from newsletter import changes
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
    changes.append_request(db.conn, changes.request_op(
        subscriber_id=2, email="r2@example.com", before="active", after="unsubscribed",
        kind="unsubscribed", source="one-click", detail="", ip=None, user_agent=None,
        campaign_id=1, request_id="request:test", at="2026-12-07T23:00:00Z"))
    # Not in the database (nothing committed), seen by the check all the same.
    assert watch.stopped() == {12: "unsubscribed"}
    watch.close()
    db.conn.close()

