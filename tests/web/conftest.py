"""A real `newsletter serve` process on 127.0.0.1 and a free port, talked to over HTTP."""

from __future__ import annotations

import email
import email.policy
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from newsletter.audience.subscribers import get
from newsletter.store import connect

BIN = Path(sys.executable).parent / "newsletter"
SECRET = "web-test-secret-" + "y" * 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):  # noqa: ANN001, ANN201
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Site:
    root: Path
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    extra_toml: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def db(self):  # noqa: ANN201
        return connect(self.root / "newsletter.db")

    def reader(self, address: str):  # noqa: ANN201
        db = self.db()
        try:
            return get(db, address)
        finally:
            db.conn.close()

    def outbox(self, folder: str = "confirm") -> list[Path]:
        """The .eml files in outbox/<folder>, once the server's outgoing queue is empty (a
        confirmation email is queued by the request and sent by the server's workers)."""
        wait_for(lambda: self.queued() == 0, 20, "the outgoing queue to empty")
        return sorted((self.root / "outbox" / folder).glob("*.eml"))

    def queued(self) -> int:
        """Confirmation emails queued or being sent (not yet sent or failed)."""
        db = self.db()
        try:
            return db.execute("SELECT count(*) FROM outgoing WHERE state IN ('queued', "
                              "'sending')").fetchone()[0]
        finally:
            db.conn.close()

    def confirm_link(self, address: str) -> str:
        """The confirmation link in the newest confirmation email to `address`."""
        for path in reversed(self.outbox()):
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if address.lower() in str(msg["To"]).lower():
                text = msg.get_body(("plain",)).get_content()
                return re.search(r"https?://\S+/confirm\?token=\S+", text).group(0)
        raise AssertionError(f"no confirmation email to {address}")

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN), *args], cwd=self.root, env=self.env, text=True,
                              capture_output=True, timeout=timeout)


def write_site(root: Path, port: int, extra_toml: str = "",
               provider: str = 'name = "outbox"') -> None:
    (root / "drafts").mkdir(parents=True, exist_ok=True)
    (root / "newsletter.toml").write_text(f"""\
[newsletter]
name = "Field Notes"
from = "Ada Writer <ada@example.com>"
base_url = "http://127.0.0.1:{port}"
address = "1 Test Street, Testville"

[provider]
{provider}

[subscribe]
topics = ["essays", "links"]
{extra_toml}
""")


def start_site(root: Path, extra_toml: str = "", workers: int = 1,
               provider: str = 'name = "outbox"') -> Site:
    # The port is found free, then handed to the server: another test worker may take it
    # in between. Then the server cannot bind, and it is started again on another port.
    for attempt in range(3):
        port = free_port()
        write_site(root, port, extra_toml, provider)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env["NEWSLETTER_SECRET"] = SECRET
        log = root / "serve.log"
        process = subprocess.Popen(
            [str(BIN), "serve", "--port", str(port), "--workers", str(workers)], cwd=root,
            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        site = Site(root, f"http://127.0.0.1:{port}", process, log, extra_toml, env)

        def healthy(site: Site = site) -> bool:
            if site.process.poll() is not None:
                raise AssertionError(f"serve exited: {site.log.read_text()}")
            try:
                return httpx.get(f"{site.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(healthy, 20, "/healthz")
        except AssertionError:
            stop_site(site)
            if attempt < 2 and "in use" in log.read_text(errors="replace").lower():
                continue
            raise
        return site
    raise AssertionError("unreachable")


def stop_site(site: Site) -> None:
    site.process.terminate()
    try:
        site.process.wait(15)
    except subprocess.TimeoutExpired:
        site.process.kill()
        site.process.wait(5)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = start_site(tmp_path / "site")
    try:
        yield s
    finally:
        stop_site(s)


def subscribe(site: Site, client: httpx.Client, address: str, name: str = "",
              topics: tuple[str, ...] = ()) -> httpx.Response:
    data: dict[str, object] = {"email": address, "name": name, "website": ""}
    if topics:
        data["topics"] = list(topics)
    return client.post("/subscribe", data=data)
