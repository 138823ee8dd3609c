"""Idle and slow clients of a real `newsletter serve` are disconnected, not kept forever."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx

from newsletter.web.timeouts import KEEP_ALIVE, READ_TIMEOUT
from tests.web.conftest import Site

# How long past the deadline the server may take to hang up before the test calls it a hang.
SLACK = 4.0


def _connect(site: Site) -> socket.socket:
    parts = urlsplit(site.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=2)
    return sock


def _closed_after(sock: socket.socket, drip: bytes, limit: float) -> tuple[float, bytes]:
    """Send `drip` one byte a second; the seconds until the server closed, and its answer.

    Gives up (returning `limit`) when the connection is still open after `limit` seconds.
    """
    start = time.monotonic()
    answer = b""
    sock.settimeout(1.0)
    i = 0
    while time.monotonic() - start < limit:
        if i < len(drip):
            try:
                sock.sendall(drip[i:i + 1])
            except OSError:
                return time.monotonic() - start, answer
            i += 1
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start, answer
        if not chunk:
            return time.monotonic() - start, answer
        answer += chunk
    return limit, answer


def test_a_header_sent_one_byte_a_second_is_cut_off_at_the_read_timeout(site: Site) -> None:
    limit = READ_TIMEOUT + SLACK
    endless = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100

    def slow_header() -> tuple[float, bytes]:
        with _connect(site) as sock:
            return _closed_after(sock, endless, limit)

    def silent() -> tuple[float, bytes]:
        with _connect(site) as sock:
            return _closed_after(sock, b"", limit)

    def slow_body() -> tuple[float, bytes]:
        head = (b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/x-www-form-urlencoded\r\nContent-Length: 400\r\n\r\n")
        with _connect(site) as sock:
            sock.sendall(head)
            return _closed_after(sock, b"email=" + b"a" * 300, limit)

    with ThreadPoolExecutor(3) as pool:
        header, idle, body = (f.result() for f in
                              [pool.submit(slow_header), pool.submit(silent),
                               pool.submit(slow_body)])
    for name, (seconds, _) in (("slow header", header), ("silent", idle), ("slow body", body)):
        assert seconds < limit, f"the {name} connection was still open after {limit:.0f} s"
        assert seconds >= READ_TIMEOUT - 1, f"the {name} connection was cut too early"
    assert header[1].startswith(b"HTTP/1.1 408 ")
    # The server still answers everyone else.
    assert httpx.get(site.url + "/healthz", timeout=5).status_code == 200


def test_a_kept_alive_connection_is_closed_after_the_idle_timeout(site: Site) -> None:
    with _connect(site) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        seconds, answer = _closed_after(sock, b"", KEEP_ALIVE + SLACK)
    assert answer.startswith(b"HTTP/1.1 200 ") and seconds < KEEP_ALIVE + SLACK
    # A second request dripped after the first answer is held to the read deadline too.
    with _connect(site) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        seconds, answer = _closed_after(sock, b"GET /healthz HTTP/1.1\r\nX: " + b"b" * 60,
                                        READ_TIMEOUT + SLACK)
    assert seconds < READ_TIMEOUT + SLACK and b"408 Request Timeout" in answer
