"""A real, migrated SQLite file for the feedback tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlite_utils

from newsletter import store


@pytest.fixture
def db(tmp_path: Path) -> sqlite_utils.Database:
    database = store.connect(tmp_path / "newsletter.db")
    yield database
    database.conn.close()


# -- a real IMAP server ------------------------------------------------------------------


DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

_CONF = """\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 0
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


@dataclass
class IMAPServer:
    host: str
    port: int
    username: str
    password: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dovecot() -> Iterator[IMAPServer]:
    """Debian's Dovecot on 127.0.0.1, one user, a Maildir in a temp folder."""
    if not os.path.exists(DOVECOT):
        pytest.skip("dovecot is not installed (Debian's dovecot-imapd; .ci/run installs it)")
    # Dovecot's auth process runs as its own user: pytest's temp folders (0700) are closed
    # to it, so the server gets a folder of its own that it can read.
    with tempfile.TemporaryDirectory(prefix="newsletter-dovecot-") as name:
        root = Path(name)
        root.chmod(0o755)
        yield from _run_dovecot(root)


def _run_dovecot(root: Path) -> Iterator[IMAPServer]:
    # Mail is never kept as root: as root, the mailbox belongs to "nobody".
    uid, gid = (os.getuid(), os.getgid()) if os.getuid() != 0 else (65534, 65534)
    (root / "mail").mkdir()
    os.chown(root / "mail", uid, gid)
    # The port is found free, then given to Dovecot: another test worker may take it in
    # between, and then Dovecot exits at once; it is started again on another port.
    for attempt in range(3):
        server = IMAPServer("127.0.0.1", _free_port(), "reader", "imap-secret-pw")
        (root / "users").write_text(f"{server.username}:{{PLAIN}}{server.password}\n")
        conf = root / "dovecot.conf"
        conf.write_text(_CONF.format(root=root, uid=uid, gid=gid, port=server.port))
        # In the foreground (-F), as our child: it cannot outlive the test run.
        process = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if _greets(server, process):
            break
        _stop(process)
        if attempt == 2:
            log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
            pytest.fail(f"dovecot did not start: {log[-2000:]}")
    try:
        yield server
    finally:
        _stop(process)


def _greets(server: IMAPServer, process: subprocess.Popen[bytes]) -> bool:
    """True once Dovecot answers "* OK" on the port; False if it exits or 20 s pass."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection((server.host, server.port), timeout=1) as s:
                if s.recv(100).startswith(b"* OK"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
