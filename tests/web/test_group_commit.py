"""Unsubscribes committed in groups (issue 21): one writer, one transaction and one journal
fsync for every unsubscribe waiting, each answered only once its group is durable."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from newsletter import changes
from newsletter.audience.events import CLI, Origin, change_status
from newsletter.audience.subscribers import add_subscriber
from newsletter.compose.tokens import TokenMaker
from newsletter.settings import load_settings
from newsletter.store import connect
from newsletter.web import reader_status
from tests.legacy_tokens import unsubscribe_token
from tests.web.conftest import BIN, SECRET, start_site, stop_site, wait_for

READERS = 1500
LEAVING = 400  # the last readers in send order, all unsubscribing at once
CLIENTS = 50


def _journal_lines(database: Path) -> list[dict]:  # type: ignore[type-arg]
    path = changes.generation_path(database, 0)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_concurrent_one_clicks_are_applied_once_durably_and_stop_a_running_send(
        tmp_path: Path) -> None:
    site = start_site(tmp_path / "site")
    database = site.root / "newsletter.db"
    try:
        rows = "\n".join(f"reader{i:05d}@example.com,Reader {i}" for i in range(READERS))
        (site.root / "list.csv").write_text("email,name\n" + rows + "\n")
        assert site.cli("subscribers", "import", "list.csv").returncode == 0
        (site.root / "drafts" / "issue-one.md").write_text(
            "---\nsubject: Issue one\n---\nHello.\n\n[Unsubscribe]({{ unsubscribe_url }})\n")
        send = subprocess.Popen(
            [str(BIN), "send", "issue-one", "--to", "subscribers", "--yes", "--rate", "300"],
            cwd=site.root, env=site.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        try:
            def started() -> bool:
                db = site.db()
                try:
                    return db.execute("SELECT count(*) FROM deliveries WHERE state = 'sent'"
                                      ).fetchone()[0] > 20
                finally:
                    db.conn.close()

            wait_for(started, 60, "the send to start")
            leaving = [f"reader{i:05d}@example.com" for i in range(READERS - LEAVING, READERS)]
            answered: dict[str, float] = {}
            lock = threading.Lock()
            local = threading.local()

            def leave(address: str) -> int:
                if not hasattr(local, "client"):  # one kept-alive connection per client
                    local.client = httpx.Client(base_url=site.url, timeout=60)
                token = unsubscribe_token(SECRET.encode(), address)
                r = local.client.post(f"/unsubscribe?token={token}",
                                      data={"List-Unsubscribe": "One-Click"})
                if r.status_code == 200:
                    with lock:
                        answered[address] = time.time()
                return r.status_code

            with ThreadPoolExecutor(CLIENTS) as pool:
                codes = list(pool.map(leave, leaving))
            # Durable when answered: kill -9 at once, nothing is flushed at exit.
            site.process.send_signal(signal.SIGKILL)
            site.process.wait(10)
            _, err = send.communicate(timeout=120)
        finally:
            if send.poll() is None:
                send.kill()
        assert codes == [200] * LEAVING
        assert send.returncode == 0, err

        db = connect(database)
        try:
            marks = ",".join("?" * LEAVING)
            # Applied (not merely journaled as requests: nothing else held the lock long).
            statuses = dict(db.execute(
                f"SELECT email, status FROM subscribers WHERE email IN ({marks})", leaving
            ).fetchall())
            assert set(statuses.values()) == {"unsubscribed"}, statuses
            # Once each: one event per reader, from the one-click POST.
            counts = db.execute(
                "SELECT email, count(*), min(source) FROM events WHERE kind = 'unsubscribed' "
                f"AND email IN ({marks}) GROUP BY email", leaving).fetchall()
            assert len(counts) == LEAVING
            assert {(n, source) for _, n, source in counts} == {(1, "one-click")}
            # Nobody mailed after their answer (sent_at has seconds: a later second).
            sent = dict(db.execute(
                "SELECT email, sent_at FROM deliveries WHERE state = 'sent' "
                f"AND email IN ({marks})", leaving).fetchall())
            skipped = db.execute(
                f"SELECT count(*) FROM deliveries WHERE state = 'skipped' AND email IN ({marks})",
                leaving).fetchone()[0]
        finally:
            db.conn.close()
        late = [a for a, at in sent.items() if at[:19] > datetime.fromtimestamp(
            int(answered[a]), UTC).strftime("%Y-%m-%dT%H:%M:%S")]
        assert late == []
        assert skipped > 0  # the send had not reached them all: its check saw the answers
        # In the change journal once each, so a restore replays every one.
        journaled: dict[str, int] = {}
        for line in _journal_lines(database):
            for op in line["ops"]:
                for event in op.get("events", []):
                    if event["kind"] == "unsubscribed" and event["source"] == "one-click":
                        journaled[event["email"]] = journaled.get(event["email"], 0) + 1
        assert journaled == dict.fromkeys(leaving, 1)
    finally:
        if site.process.poll() is None:
            stop_site(site)


# --- the writer itself ----------------------------------------------------------------------


@pytest.fixture
def letter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    (tmp_path / "newsletter.toml").write_text(
        '[newsletter]\nname = "Field Notes"\nfrom = "ada@example.com"\n'
        'base_url = "https://example.com/news"\n')
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    settings = load_settings(tmp_path)
    db = connect(settings.database)
    for i in range(5):
        add_subscriber(db, f"r{i}@example.com")
    maker = TokenMaker(settings.secret_key(), settings.base_url)
    yield settings, db, maker
    db.conn.close()


def test_a_group_is_one_transaction_and_its_journal_lines_are_written_together(
        letter) -> None:  # noqa: ANN001
    settings, db, maker = letter
    writer = reader_status.Unsubscribes(settings, maker, threading.Lock())
    origin = Origin("one-click", "192.0.2.1")
    group = [(maker.make("r1@example.com"), origin, "d", None),
             (maker.make("r2@example.com"), origin, "d", None),
             (maker.make("r1@example.com"), origin, "d", None),  # twice in one group
             ("3forged", origin, "d", None)]
    before = len(_journal_lines(settings.database))
    readers = writer.apply(db, group)
    assert [r.status if r else None for r in readers] == [
        "unsubscribed", "unsubscribed", "unsubscribed", None]
    events = db.execute("SELECT email FROM events WHERE kind = 'unsubscribed' "
                        "ORDER BY id").fetchall()
    assert events == [("r1@example.com",), ("r2@example.com",)]
    # One line per change, as before group commit (a restore reads them the same way).
    assert len(_journal_lines(settings.database)) == before + 2
    # Already stopped: nothing written.
    assert writer.apply(db, group[:1])[0].status == "unsubscribed"
    assert len(_journal_lines(settings.database)) == before + 2


def test_a_group_while_another_writer_holds_the_lock_is_journaled_once_each_then_applied(
        letter) -> None:  # noqa: ANN001
    settings, db, maker = letter
    writer = reader_status.Unsubscribes(settings, maker, threading.Lock())
    origin = Origin("one-click", "192.0.2.1")
    group = [(maker.make(f"r{i}@example.com"), origin, "d", None) for i in (1, 2, 1)]
    holder = connect(settings.database)
    holder.execute("BEGIN IMMEDIATE")  # a long import's merge
    try:
        readers = writer.apply(db, group)
        again = writer.apply(db, group[:1])  # asked again, still busy
        lines = changes.requests_path(settings.database, 0).read_text().splitlines()
        asked = [json.loads(line)["ops"][0]["email"] for line in lines]
    finally:
        holder.conn.rollback()
        holder.conn.close()
    assert [r.status for r in readers + again] == ["unsubscribed"] * 4
    assert asked == ["r1@example.com", "r2@example.com"]  # durable before the answer, once each
    later = reader_status.deferred(db)
    wait_for(lambda: not later.waiting(), 10, "the journaled requests to be applied")
    assert db.execute("SELECT email FROM subscribers WHERE status = 'unsubscribed' "
                      "ORDER BY email").fetchall() == [("r1@example.com",), ("r2@example.com",)]


def test_one_fsync_holds_the_lines_until_the_group_ends_and_writes_none_on_error(
        letter) -> None:  # noqa: ANN001
    settings, db, _ = letter
    path = changes.generation_path(settings.database, 0)
    size = path.stat().st_size
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        with changes.one_fsync(db.conn):
            change_status(db, 1, "unsubscribed", CLI)
            change_status(db, 2, "unsubscribed", CLI)
            assert path.stat().st_size == size  # not yet: one write, one fsync, at the end
        assert path.stat().st_size > size
    lines = _journal_lines(settings.database)
    assert [line["ops"][0]["subscriber_id"] for line in lines[-2:]] == [1, 2]
    size = path.stat().st_size
    with pytest.raises(RuntimeError), db.conn:
        db.execute("BEGIN IMMEDIATE")
        with changes.one_fsync(db.conn):
            change_status(db, 3, "unsubscribed", CLI)
            raise RuntimeError("the group failed")
    assert path.stat().st_size == size  # nothing journaled; the transaction rolled back
    assert db.execute("SELECT status FROM subscribers WHERE id = 3").fetchone()[0] == "active"


def test_the_writer_answers_every_request_even_when_the_database_fails(letter) -> None:  # noqa: ANN001
    settings, db, maker = letter
    writer = reader_status.Unsubscribes(settings, maker, threading.Lock())
    db.execute("DROP TABLE events")  # an error waiting will not cure
    futures = [writer.submit(maker.make(f"r{i}@example.com"), CLI, "d", None) for i in range(3)]
    for future in futures:
        with pytest.raises(Exception, match="no such table: events"):
            future.result(timeout=10)
    wait_for(lambda: writer.thread is None, 10, "the writer to end when idle")


def test_the_answer_page_rendered_once_is_the_page_rendered_each_time(letter) -> None:  # noqa: ANN001
    settings, db, _ = letter
    from newsletter.web.context import Web

    web = Web(settings)
    for masked, token in (("r***@example.com", "3abc"), ("o'b&<x>@example.com", "3de_f-")):
        assert web.answer("unsubscribe.html", {"done": True}, token=token,
                          masked=masked).body == web.page(
            "unsubscribe.html", token=token, masked=masked, done=True).body
    # A writer's layout that does more with a value than print it: rendered every time.
    layouts = settings.root / "layouts"
    layouts.mkdir(exist_ok=True)
    (layouts / "unsubscribe.html").write_text("<p>{{ masked|upper }} {{ token|length }}</p>")
    web = Web(settings)
    answer = web.answer("unsubscribe.html", {"done": True}, token="3abcd", masked="a&b")
    assert answer.body == b"<p>A&amp;B 5</p>"
    assert web.answer("unsubscribe.html", {"done": True}, token="3ab", masked="x").body == \
        b"<p>X 3</p>"
