"""The preview server over plain HTTP: what it serves, what it refuses, how it stops."""

from __future__ import annotations

import html
import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from newsletter.settings import load_settings
from newsletter.writer.preview import Preview, is_loopback, local_image_refs


def get(preview: Preview, path: str, host: str | None = None) -> tuple[int, str, bytes]:
    """GET `path` exactly as written (no client-side `..` clean-up): (status, type, body)."""
    url = urlsplit(preview.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host or url.netloc)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def test_listens_on_loopback_on_a_free_port(running_preview: Preview) -> None:
    url = urlsplit(running_preview.url)
    assert url.hostname == "127.0.0.1" and url.port and url.port > 0
    status, ctype, body = get(running_preview, "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b'id="frame"' in body
    meta = json.loads(get(running_preview, "/meta.json")[2])
    assert meta["ok"] is True
    assert meta["subject"] == "Notes from the workshop"
    assert meta["preheader"] == "What I learned building a bicycle"
    assert meta["from"] == "Test Writer <writer@example.com>"


def test_local_images_are_served_in_place_of_their_published_url(
    running_preview: Preview,
) -> None:
    status, _, body = get(running_preview, "/email.html")
    html = body.decode()
    assert status == 200
    assert "/files/drafts/images/red.png" in html
    assert "https://example.com/news/images/red.png" not in html
    status, ctype, data = get(running_preview, "/files/drafts/images/red.png")
    assert (status, ctype) == (200, "image/png")
    assert data.startswith(b"\x89PNG")


def test_embedded_images_are_served_by_content_id(sample_draft: Path,
                                                  newsletter_dir: Path) -> None:
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(toml.read_text().replace('base_url = "https://example.com/news"\n', ""))
    preview = Preview(load_settings(newsletter_dir), sample_draft)
    preview.start()
    try:
        html = get(preview, "/email.html")[2].decode()
        assert "cid:" not in html
        start = html.index('src="/cid/') + len('src="')
        status, ctype, data = get(preview, html[start:html.index('"', start)])
        assert (status, ctype) == (200, "image/png") and data.startswith(b"\x89PNG")
        assert get(preview, "/cid/nothing@here")[0] == 404
    finally:
        preview.stop()


@pytest.mark.parametrize("path", [
    "/files/../../../../etc/passwd",
    "/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/files//etc/passwd",
    "/files/%2Fetc%2Fpasswd",
    "/files/drafts/..%2F..%2F..%2Fetc%2Fpasswd",
    "/files/.newsletter-secret",
    "/files/newsletter.toml",
    "/files/drafts/workshop.md",
    "/files/drafts/images/escape.png",
    "/files/drafts\\..\\..\\etc\\passwd",
])
def test_nothing_outside_the_newsletters_images_is_served(
    running_preview: Preview, newsletter_dir: Path, tmp_path: Path, path: str
) -> None:
    (newsletter_dir / ".newsletter-secret").write_text("s" * 40)
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"\x89PNG secret")
    (newsletter_dir / "drafts" / "images" / "escape.png").symlink_to(outside)
    status, _, body = get(running_preview, path)
    assert status == 403, (path, status, body)
    assert b"root:" not in body and b"secret" not in body and b"sss" not in body


@pytest.mark.parametrize("link, target", [
    ("drafts/images/logo.png", ".hidden.png"),            # a hidden file in the folder
    ("drafts/images/key.png", ".git/objects/key.png"),    # a file in a hidden folder
    ("drafts/pics", ".private"),                          # a visible folder that is hidden
], ids=["hidden file", "file in hidden folder", "hidden folder"])
def test_a_visible_symlink_to_a_hidden_file_is_refused(
    running_preview: Preview, newsletter_dir: Path, link: str, target: str
) -> None:
    # The hidden-file rule must hold for the file read, not only the name asked for.
    hidden = newsletter_dir / target
    if link == "drafts/pics":
        (hidden / "a.png").parent.mkdir(parents=True)
        (hidden / "a.png").write_bytes(b"\x89PNG private")
        asked = "/files/drafts/pics/a.png"
    else:
        hidden.parent.mkdir(parents=True, exist_ok=True)
        hidden.write_bytes(b"\x89PNG private")
        asked = f"/files/{link}"
    (newsletter_dir / link).symlink_to(hidden)
    status, _, body = get(running_preview, asked)
    assert status == 403, (asked, status, body)
    assert b"private" not in body
    # A visible symlink to a visible image is still fine.
    (newsletter_dir / "drafts" / "images" / "alias.png").symlink_to("red.png")
    assert get(running_preview, "/files/drafts/images/alias.png")[0] == 200


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """True once the server has closed `sock` (anything it said first is read and dropped)."""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(4096):
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    return False


def test_idle_connections_time_out_and_threads_are_capped(
    sample_draft: Path, newsletter_dir: Path
) -> None:
    # 1,500 half-open sockets once held 1,503 threads: each connection that says
    # nothing must be closed after the idle time, and never more than the cap served.
    preview = Preview(load_settings(newsletter_dir), sample_draft, idle_seconds=1.0,
                      max_connections=8)
    url = urlsplit(preview.start())
    base = threading.active_count()
    peak = base
    sockets: list[socket.socket] = []
    try:
        for n in range(150):
            sock = socket.create_connection((url.hostname, url.port), timeout=5)
            if n % 2:
                sock.sendall(b"GET /meta.json HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no end
            sockets.append(sock)
            peak = max(peak, threading.active_count())
        deadline = time.monotonic() + 15
        for sock in sockets:
            peak = max(peak, threading.active_count())
            assert _closed_by_server(sock, deadline), "an idle connection was kept open"
        assert peak <= base + 8, f"{peak - base} threads for idle connections (cap 8)"
        # Once the idle ones are gone, a reader is answered as usual.
        assert get(preview, "/meta.json")[0] == 200
    finally:
        for sock in sockets:
            sock.close()
        preview.stop()


def test_a_slow_but_live_request_is_still_answered(sample_draft: Path,
                                                   newsletter_dir: Path) -> None:
    # The idle time is per silence, not per request: a request sent in pieces, each
    # within the idle time, is answered.
    preview = Preview(load_settings(newsletter_dir), sample_draft, idle_seconds=3.0)
    url = urlsplit(preview.start())
    try:
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            for piece in (b"GET /meta.json HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n",
                          b"Connection: close\r\n\r\n"):
                sock.sendall(piece)
                time.sleep(0.5)  # a slow client, well inside the 3 s idle time
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert b"Notes from the workshop" in answer
    finally:
        preview.stop()


def test_a_missing_image_is_404(running_preview: Preview) -> None:
    assert get(running_preview, "/files/drafts/images/nope.png")[0] == 404


def test_requests_for_another_host_name_are_refused(running_preview: Preview) -> None:
    # DNS rebinding: a web page whose name resolves to 127.0.0.1 must not read the draft.
    port = urlsplit(running_preview.url).port
    assert get(running_preview, "/meta.json", host=f"evil.example:{port}")[0] == 403
    assert get(running_preview, "/meta.json", host=f"localhost:{port}")[0] == 200


def test_views_text_source_and_no_style(running_preview: Preview) -> None:
    status, ctype, text = get(running_preview, "/text.txt")
    assert status == 200 and ctype.startswith("text/plain")
    assert b"The first line of the essay" in text and b"<p>" not in text
    source = get(running_preview, "/source.txt")[2]
    assert b"Subject: Notes from the workshop" in source and b"MIME-Version: 1.0" in source
    styled = get(running_preview, "/email.html")[2]
    bare = get(running_preview, "/email-nostyle.html")[2]
    assert b"<style" in styled and b"<style" not in bare
    assert b'style="' in bare  # the inlined CSS stays


def test_long_poll_returns_when_the_draft_changes(running_preview: Preview,
                                                  sample_draft: Path) -> None:
    version = running_preview.build.version
    # Asking with an old version answers at once.
    assert json.loads(get(running_preview, f"/events?since={version - 1}")[2]) == {
        "version": version}

    def edit() -> None:
        time.sleep(0.3)
        sample_draft.write_text(sample_draft.read_text().replace("The end.", "The new end."))

    threading.Thread(target=edit).start()
    answer = json.loads(get(running_preview, f"/events?since={version}")[2])
    assert answer["version"] > version
    assert b"The new end." in get(running_preview, "/email.html")[2]


@pytest.mark.parametrize("mistake, shown", [
    (("The end.", "![Chart](images/chart.png)"), "images/chart.png"),
    (("The end.", "Dear {{ reader_nmae }},"), "reader_nmae"),
    (("subject: Notes", "subject: [Notes"), "front matter"),
], ids=["missing image", "unknown variable", "broken front matter"])
def test_a_build_error_is_a_readable_page_and_the_next_save_recovers(
    running_preview: Preview, sample_draft: Path, mistake: tuple[str, str], shown: str
) -> None:
    good = sample_draft.read_text()
    version = running_preview.build.version
    sample_draft.write_text(good.replace(*mistake))
    version = running_preview.wait_for_change(version, 5)
    status, _, body = get(running_preview, "/email.html")
    page = body.decode()
    assert status == 500
    assert "does not build" in page and shown in page
    # Where, with the lines around it and the culprit marked (YAML names the line
    # where it noticed, one after the stray bracket).
    lines = sample_draft.read_text().splitlines()
    bad_line = next(n for n, line in enumerate(lines, 1) if mistake[1] in line)
    if shown == "front matter":
        bad_line += 1
    assert f"drafts/workshop.md, line {bad_line}" in page
    assert f'<span class="hit">{bad_line:>4}  {html.escape(lines[bad_line - 1])}</span>' in page
    assert json.loads(get(running_preview, "/meta.json")[2])["ok"] is False

    sample_draft.write_text(good)
    running_preview.wait_for_change(version, 5)
    assert get(running_preview, "/email.html")[0] == 200


def test_a_new_image_is_picked_up_when_it_appears(running_preview: Preview,
                                                  sample_draft: Path,
                                                  newsletter_dir: Path) -> None:
    version = running_preview.build.version
    sample_draft.write_text(sample_draft.read_text() + "\n![Blue](images/blue.png)\n")
    version = running_preview.wait_for_change(version, 5)
    assert not running_preview.build.ok
    (newsletter_dir / "drafts" / "images" / "blue.png").write_bytes(
        (newsletter_dir / "drafts" / "images" / "red.png").read_bytes())
    running_preview.wait_for_change(version, 5)
    assert running_preview.build.ok


def test_stop_releases_waiting_pages_at_once(running_preview: Preview) -> None:
    version = running_preview.build.version
    answers: list[int] = []
    waiter = threading.Thread(
        target=lambda: answers.append(get(running_preview, f"/events?since={version}")[0]))
    waiter.start()
    # Stop only once the page is really waiting (not before its request arrived).
    deadline = time.monotonic() + 10
    while running_preview.waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert running_preview.waiting == 1
    started = time.monotonic()
    running_preview.stop()
    waiter.join(10)
    assert answers == [200]
    assert time.monotonic() - started < 5


def test_helpers() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert local_image_refs(
        '![a](img/a.png) ![b](https://x.org/b.png) <img src="c.jpg"> ![d](data:x)\n'
        "[ref]: img/e.png\n![f](/images/f.png) ![g](//cdn.example/g.png)\n"
    ) == ["img/a.png", "/images/f.png", "c.jpg", "img/e.png"]


class _Lines:
    """The lines of a pipe, read by a thread, so that waiting for one has a deadline."""

    def __init__(self, pipe: Any) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.seen = ""
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe: Any) -> None:
        for line in pipe:
            self._queue.put(line)
        self._queue.put(None)

    def next(self, timeout: float = 30) -> str:
        """The next line ("" at the end); fails the test when none comes in `timeout` s."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output for {timeout} s; so far: {self.seen!r}") from None
        if line is None:
            self._queue.put(None)  # the end stays the end
            return ""
        self.seen += line
        return line

    def rest(self, timeout: float = 30) -> str:
        """Everything until the end."""
        while self.next(timeout):
            pass
        return self.seen


def _start_cli(args: list[str], cwd: Path) -> tuple[subprocess.Popen[str], str, _Lines]:
    env = {**os.environ, "BROWSER": "true", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    out, err = _Lines(proc.stdout), _Lines(proc.stderr)
    url = out.next().strip()
    # Wait until it says it is watching, as a person would before pressing Ctrl-C.
    while url and "Ctrl-C stops" not in err.seen:
        if not err.next():
            break
    return proc, url, err


def _ctrl_c(proc: subprocess.Popen[str], err: _Lines) -> str:
    """Press Ctrl-C; its whole stderr once it has exited."""
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    return err.rest()


def test_the_command_prints_the_url_and_ctrl_c_stops_it_cleanly(
    sample_draft: Path, newsletter_dir: Path
) -> None:
    proc, url, err = _start_cli(["preview", "workshop", "--no-open"], newsletter_dir)
    try:
        assert url.startswith("http://127.0.0.1:"), err.seen if not url else url
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request("GET", "/meta.json")
        assert json.loads(conn.getresponse().read())["subject"] == "Notes from the workshop"
        conn.close()
    finally:
        stderr = _ctrl_c(proc, err)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "Stopped." in stderr


def test_any_other_host_is_explicit_and_warned_about(sample_draft: Path,
                                                     newsletter_dir: Path) -> None:
    proc, url, err = _start_cli(["preview", "workshop", "--no-open", "--host", "0.0.0.0"],
                                newsletter_dir)
    try:
        assert url.startswith("http://127.0.0.1:")
    finally:
        stderr = _ctrl_c(proc, err)
    assert "warning: serving on 0.0.0.0" in stderr
    assert proc.returncode == 0


def test_a_port_in_use_is_a_one_line_error(sample_draft: Path, newsletter_dir: Path,
                                           running_preview: Preview) -> None:
    port = str(urlsplit(running_preview.url).port)
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "preview", "workshop", "--no-open", "--port", port],
        cwd=newsletter_dir, env={**os.environ, "BROWSER": "true"}, capture_output=True,
        text=True, timeout=20,
    )
    assert result.returncode != 0
    assert result.stderr.startswith("Error: cannot listen on 127.0.0.1:" + port)
    assert "Traceback" not in result.stderr
