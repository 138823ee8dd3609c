"""A newsletter folder that sends through a real aiosmtpd, and the URLs its emails hold.

Shared by the end-to-end tests: the real CLI (a subprocess), a real SQLite database, real
servers on 127.0.0.1; nothing patched.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import httpx

from newsletter.audience.subscribers import add_subscriber, open_db
from newsletter.settings import load_settings
from tests.web.conftest import free_port, wait_for
from tests.writer.pngs import make_png

BIN = Path(sys.executable).parent / "newsletter"
SECRET = "e2e-test-secret-" + "z" * 40
READERS = ("ann@example.org", "bob@example.org")

DRAFT = """\
---
title: The first issue
preheader: Where this letter starts
---
Hello {{ subscriber.name | default("reader") }}, welcome.

![A red square, our logo](images/red.png)
"""


def make_letter(root: Path, base_url: str, smtp_port: int, *, server: str = "",
                newsletter: str = "") -> Path:
    """A newsletter at `root` whose first issue (`first`, with an image) goes to READERS."""
    (root / "drafts" / "images").mkdir(parents=True)
    (root / "drafts" / "first.md").write_text(DRAFT)
    (root / "drafts" / "images" / "red.png").write_bytes(make_png(4, 4, lambda x, y: (200, 0, 0)))
    (root / "newsletter.toml").write_text(f"""\
[newsletter]
name = "Field Notes"
from = "Ada Writer <ada@example.com>"
base_url = "{base_url}"
address = "1 Test Street, Testville"
{newsletter}

[provider]
name = "smtp"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
timeout = 5
retry_delay = 0.02

[subscribe]

[server]
{server}
""")
    db = open_db(load_settings(root))
    try:
        for address in READERS:
            add_subscriber(db, address, name=address.split("@")[0].title())
    finally:
        db.conn.close()
    return root


def env() -> dict[str, str]:
    found = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    found["NEWSLETTER_SECRET"] = SECRET
    return found


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `newsletter` command in `root`."""
    return subprocess.run([str(BIN), *args], cwd=root, env=env(), text=True,
                          capture_output=True, timeout=120)


@contextlib.contextmanager
def process(args: list[str], cwd: Path, health: str, log: Path,
            environ: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, ready once `health` answers below 500; stopped after the block."""
    proc = subprocess.Popen(args, cwd=cwd, env=environ or env(), stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{args[0]} exited: {log.read_text(errors='replace')}")
        try:
            return httpx.get(health, timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 20, health)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def serve(root: Path, port: int | None = None) -> Iterator[str]:
    """`newsletter serve` for `root` on 127.0.0.1; yields its address."""
    port = port or free_port()
    with process([str(BIN), "serve", "--port", str(port)], root,
                 f"http://127.0.0.1:{port}/healthz", root / "serve.log"):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def static_host(folder: Path, port: int) -> Iterator[str]:
    """A plain static file server (`python -m http.server`) on `folder`, as a static host."""
    folder.mkdir(parents=True, exist_ok=True)
    with process([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                  "--directory", str(folder)], folder, f"http://127.0.0.1:{port}/",
                 folder.parent / "static.log"):
        yield f"http://127.0.0.1:{port}"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.urls.append(value)


def parsed(data: bytes) -> EmailMessage:
    return message_from_bytes(data, policy=policy.default)  # type: ignore[return-value]


def urls_in(message: EmailMessage) -> tuple[list[str], list[str]]:
    """(every URL in the HTML hrefs and srcs, the text part and List-Unsubscribe; the
    List-Unsubscribe ones alone), in order, without repeats."""
    found: list[str] = []
    html = message.get_body(("html",))
    assert html is not None
    links = _Links()
    links.feed(html.get_content())
    found += links.urls
    text = message.get_body(("plain",))
    assert text is not None
    found += re.findall(r"(?:https?://|mailto:)[^\s<>()\"]+", text.get_content())
    header = [u.strip() for u in re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"] or ""))]
    found += header
    return list(dict.fromkeys(found)), header


def crawl(messages: list[EmailMessage], client: httpx.Client, *, mailto: str | None = None
          ) -> dict[str, int]:
    """Fetch every URL in `messages` as a mail client and a reader would: each http one with
    GET (redirects followed), then each one-click List-Unsubscribe one POSTed with
    `List-Unsubscribe=One-Click` as Gmail does; mailto ones are checked for shape. Returns
    URL → final status (mailto: 0); asserts none failed."""
    answers: dict[str, int] = {}
    one_click: list[str] = []
    for message in messages:
        urls, header = urls_in(message)
        assert urls, "the message links to nothing"
        for url in urls:
            if url.startswith("mailto:"):
                assert mailto is not None, f"a mailto link where none was set: {url}"
                assert re.fullmatch(re.escape(f"mailto:{mailto}?subject=unsubscribe") +
                                    r"(%20[A-Za-z0-9_-]+)?", url), url
                answers[url] = 0
                continue
            assert url.startswith("http://127.0.0.1:"), f"a link outside the test: {url}"
            answers[url] = client.get(url, follow_redirects=True).status_code
        if message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click":
            one_click += [u for u in header if u.startswith("http")]
    for url in one_click:
        answer = client.post(url, data={"List-Unsubscribe": "One-Click"})
        answers[f"POST {url}"] = answer.status_code
    failed = {url: status for url, status in answers.items() if status not in (0, 200)}
    assert not failed, f"links that do not answer 200: {failed}"
    return answers
