"""Confirmation emails leave through a durable queue: a reader's request never waits on a
provider, and what is queued when the server stops goes out after a restart or a run."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from newsletter.delivery.outgoing import send_queued
from newsletter.settings import load_settings
from tests.delivery.smtpserver import SMTPServer
from tests.legacy_tokens import unsubscribe_token
from tests.web.conftest import SECRET, start_site, stop_site, subscribe, wait_for

SIGNUPS = 60
UNSUBSCRIBES = 20


@contextmanager
def silent_smtp_server() -> Iterator[int]:
    """An SMTP server that accepts every connection and never says a word (no 220)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(200)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()


def _smtp(port: int) -> str:
    return f'name = "smtp"\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\ntimeout = 5'


def test_sign_ups_against_a_silent_smtp_server_never_hold_up_unsubscribes(
        tmp_path: Path) -> None:
    # Before: the email was sent inside the request on the shared thread pool, so 60
    # sign-ups against a server that never greets made unsubscribes wait seconds each.
    root = tmp_path / "site"
    limits = "signups_per_ip_per_hour = 1000"
    with silent_smtp_server() as silent:
        site = start_site(root, extra_toml=limits, provider=_smtp(silent))
        try:
            readers = [f"reader{n}@example.com" for n in range(UNSUBSCRIBES)]
            for address in readers:
                assert site.cli("subscribers", "add", address).returncode == 0
            with httpx.Client(base_url=site.url, timeout=60,
                              limits=httpx.Limits(max_connections=SIGNUPS + 10)) as c:

                def sign_up(n: int) -> tuple[int, float]:
                    started = time.monotonic()
                    r = subscribe(site, c, f"new{n}@example.com")
                    return r.status_code, time.monotonic() - started

                def unsubscribe(address: str) -> tuple[int, float]:
                    time.sleep(0.3)  # while the sign-ups are in flight
                    token = unsubscribe_token(SECRET.encode(), address)
                    started = time.monotonic()
                    r = c.post(f"/unsubscribe?token={token}",
                               content=b"List-Unsubscribe=One-Click",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
                    return r.status_code, time.monotonic() - started

                with ThreadPoolExecutor(SIGNUPS + UNSUBSCRIBES) as pool:
                    signups = pool.map(sign_up, range(SIGNUPS))
                    unsubscribes = pool.map(unsubscribe, readers)
                    signups, unsubscribes = list(signups), list(unsubscribes)
            assert {code for code, _ in signups} == {200}
            assert {code for code, _ in unsubscribes} == {200}
            slowest = max(seconds for _, seconds in unsubscribes)
            assert slowest < 2, f"an unsubscribe waited {slowest:.1f} s"
            assert max(seconds for _, seconds in signups) < 2
            assert all(site.reader(a).status == "unsubscribed" for a in readers)
            assert site.queued() == SIGNUPS  # none could be sent: all still queued
        finally:
            stop_site(site)

    # The mail server is fixed; the server restarts and its workers send every one,
    # those a worker held when it stopped included.
    with SMTPServer() as fixed:
        site = start_site(root, extra_toml=limits, provider=_smtp(fixed.port))
        try:
            wait_for(lambda: len(fixed.received) >= SIGNUPS, 90, "the confirmation emails")
            time.sleep(0.5)
            assert sorted(r.recipient for r in fixed.received) == sorted(
                f"new{n}@example.com" for n in range(SIGNUPS))
            assert site.queued() == 0
            db = site.db()
            states = db.execute("SELECT state, count(*) FROM outgoing GROUP BY state").fetchall()
            db.conn.close()
            assert states == [("sent", SIGNUPS)]
        finally:
            stop_site(site)


def test_a_confirmation_queued_while_the_server_is_down_is_sent_by_run(tmp_path: Path) -> None:
    from tests.conftest import dead_port

    root = tmp_path / "site"
    site = start_site(root, provider=_smtp(dead_port()))
    try:
        with site.client() as c:
            r = subscribe(site, c, "later@example.com")
        assert r.status_code == 200 and "Check your inbox" in r.text
    finally:
        stop_site(site)
    db = site.db()
    [(state, attempts)] = db.execute("SELECT state, attempts FROM outgoing").fetchall()
    db.conn.close()
    assert state == "queued"  # tried (refused) or not yet: still owed, never dropped
    with SMTPServer() as fixed:
        text = (root / "newsletter.toml").read_text()
        (root / "newsletter.toml").write_text(
            text.split("[provider]")[0] + "[provider]\n" + _smtp(fixed.port)
            + "\n\n[subscribe]" + text.split("[subscribe]")[1])
        # Not before its retry pause: run sends what is due.
        wait_for(lambda: site.cli("run", "--no-sync").returncode == 0 and fixed.received,
                 30, "newsletter run to send it")
        assert [r.recipient for r in fixed.received] == ["later@example.com"]
    settings = load_settings(root)
    assert send_queued(settings).tried == 0  # sent once: nothing left
