"""A disk that fills up during a send (the database's, where the journals and the lock
live too) stops the send cleanly: one error line, no thread traceback, the worker
journals kept until their results are in the database, and the summary matches the rows.
A resume after space is freed sends the rest, nobody twice.

The database is on a real tmpfs of a few hundred KB (we run as root in CI: `mount` works;
elsewhere the test is skipped saying so), filled up by this test mid-send; the send is the
real CLI in another process, through smtp to aiosmtpd on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from newsletter import store

from .smtpserver import SMTPServer

READERS = 400


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(where)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a small tmpfs is needed to fill a disk for real, and mount refused: "
                    f"{mounted.stderr.strip() or mounted.returncode} (run as root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it (remove it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    finally:
        os.close(fd)
    return filler


def _counts(database: Path) -> dict[str, int]:
    db = store.connect(database)
    try:
        return dict(db.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall())
    finally:
        db.conn.close()


def test_a_disk_full_mid_send_stops_it_cleanly_and_loses_no_answer(
    newsletter_dir: Path, write_draft: Callable[..., Path], cli: Callable[..., Any],
    tmp_path: Path,
) -> None:
    write_draft("hello.md", "---\ntitle: Hello\n---\nHi there.\n")
    # Room for the checkpoint of the WAL once the filler is gone (1m left ~20 KB to spare:
    # one more migration's pages in the WAL and the resume could not checkpoint).
    with small_disk(tmp_path / "disk", "2m") as disk, SMTPServer() as server:
        database = disk / "newsletter.db"
        toml = newsletter_dir / "newsletter.toml"
        toml.write_text(toml.read_text().replace(
            '[newsletter]\n', f'[newsletter]\ndatabase = "{database}"\n').replace(
            '[provider]\nname = "outbox"',
            f'[provider]\nname = "smtp"\nhost = "127.0.0.1"\nport = {server.port}\n'
            'security = "none"'))
        csv = newsletter_dir / "readers.csv"
        csv.write_text("email\n" + "".join(f"r{i:04}@example.org\n" for i in range(READERS)))
        assert cli("subscribers", "import", str(csv)).exit_code == 0
        server.delay = 0.002
        sender = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "send", "hello", "--to", "subscribers",
             "--yes", "--concurrency", "2"],
            cwd=newsletter_dir, env=os.environ.copy(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        while len(server.recipients()) < 60 and sender.poll() is None:
            time.sleep(0.001)
        filler = fill(disk)
        out, err = sender.communicate(timeout=120)
        # Still full: a second try stops at once too (the lock file, the database).
        full = cli("send", "hello", "--to", "subscribers", "--yes")
        filler.unlink()  # space again: what did the stopped send leave?
        left = _counts(database)
        journals = list(disk.glob(".newsletter.db.campaign-1.w*.journal"))
        journaled = sum(len(p.read_text().splitlines()) for p in journals)
        again = cli("send", "hello", "--to", "subscribers", "--yes")
        final = _counts(database)
        received = server.recipients()

    assert sender.returncode != 0
    for stopped in (err, full.stderr):  # one line that says what to do, no traceback
        assert "Traceback" not in stopped and "Exception in thread" not in stopped, stopped
        errors = [line for line in stopped.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, stopped
    assert "is full" in err and "free some space" in err
    # The summary says what the rows say.
    summary = next(line for line in out.splitlines() if line.startswith("Campaign 1"))
    assert f"{left.get('sent', 0):,} sent" in summary, (summary, left)
    if left.get("queued"):
        assert f"{left['queued']:,} queued" in summary, (summary, left)
    if left.get("sending"):
        assert f"{left['sending']:,} claimed, left to the resume" in summary, (summary, left)
    # Rows still `sending` are answered in the journals, kept for the resume.
    if left.get("sending"):
        assert journals and journaled >= left["sending"], (left, journaled)
    # The resume sends the rest: everybody once, nobody uncertain, nobody twice.
    assert again.exit_code == 0, again.stderr
    assert final == {"sent": READERS}, final
    assert sorted(received) == sorted(set(received)) and len(received) == READERS
