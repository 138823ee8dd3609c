"""An unsubscribe committed during a send is honoured at once: no new message to that
reader starts after it, even with a rate limit (the check runs after the limiter's wait).

The send is the real CLI in another process, through the smtp provider to aiosmtpd on
127.0.0.1; the unsubscribes are made from this process on their own connection, by the
very function `serve` calls for an unsubscribe link.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter import store
from newsletter.audience.events import Origin
from newsletter.audience.subscribers import COLUMNS, Subscriber
from newsletter.web import reader_status

from .smtpserver import SMTPServer


def _smtp_toml(port: int) -> str:
    return (
        '[newsletter]\nname = "Test Letter"\nfrom = "Test Writer <writer@example.com>"\n'
        'base_url = "https://example.com/news"\naddress = "1 Test Street, Testville"\n\n'
        f'[provider]\nname = "smtp"\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
    )


@pytest.mark.parametrize(("readers", "rate", "concurrency"), [(36, 8, 4), (8, 2, 1)])
def test_no_message_starts_after_the_readers_unsubscribe_committed(
    newsletter_dir: Path, write_draft: Callable[..., Path], cli: Callable[..., object],
    readers: int, rate: int, concurrency: int,
) -> None:
    write_draft("hello.md", "---\ntitle: Hello\n---\nHi there.\n")
    csv = newsletter_dir / "readers.csv"
    csv.write_text("email\n" + "".join(f"r{i:03}@example.org\n" for i in range(readers)))
    assert cli("subscribers", "import", str(csv)).exit_code == 0  # type: ignore[attr-defined]
    database = newsletter_dir / "newsletter.db"
    committed: dict[str, float] = {}  # address → time.time() right after its commit
    rng = random.Random(18)

    with SMTPServer() as server:
        (newsletter_dir / "newsletter.toml").write_text(_smtp_toml(server.port))
        sender = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "send", "hello", "--to", "subscribers",
             "--yes", "--rate", str(rate), "--concurrency", str(concurrency)],
            cwd=newsletter_dir, env=os.environ.copy(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )

        def unsubscribe_while_sending() -> None:
            # After each message the server receives, a reader not yet mailed leaves, as
            # a reader clicking the link does: between two of the limiter's slots.
            db = store.connect(database)
            try:
                seen = 0
                while sender.poll() is None and len(committed) < readers // 3:
                    got = server.recipients()
                    if len(got) == seen:
                        time.sleep(0.002)
                        continue
                    seen = len(got)
                    left = sorted({f"r{i:03}@example.org" for i in range(readers)}
                                  - set(got) - set(committed))
                    if not left:
                        return
                    address = rng.choice(left)
                    reader = Subscriber.from_row(db.execute(
                        f"SELECT {', '.join(COLUMNS)} FROM subscribers WHERE email = ?",
                        [address]).fetchone())
                    reader_status.unsubscribe(db, reader, Origin("web", ip="127.0.0.1"))
                    committed[address] = time.time()
            finally:
                db.conn.close()

        worker = threading.Thread(target=unsubscribe_while_sending)
        worker.start()
        out, err = sender.communicate(timeout=120)
        worker.join()
        received = list(server.received)

    assert sender.returncode == 0, err
    assert len(committed) >= 2  # the test did what it means to
    late = [(r.recipient, round(r.started - committed[r.recipient], 3)) for r in received
            if r.recipient in committed and r.started > committed[r.recipient]]
    assert late == []  # (address, seconds its message began after the unsubscribe)
    db = store.connect(database)
    skipped = {e for (e,) in db.execute(
        "SELECT email FROM deliveries WHERE state = 'skipped'").fetchall()}
    db.conn.close()
    mailed = {r.recipient for r in received}
    assert skipped == set(committed) - mailed  # each one left out is recorded as skipped
    assert len(mailed) + len(skipped) == readers
