"""`newsletter preview`: the issue as a subscriber gets it, on a local server, live.

The draft is built with the same `build_issue()` and `personalize()` that send
uses, for a sample reader. A watcher thread polls the modification times of
the draft, its local images, `layouts/` and `newsletter.toml`, and rebuilds
on change; the toolbar page (`templates/preview/shell.html`) long-polls
`/events` and reloads only the email frame, keeping its scroll position. A
build error becomes a readable page; the server keeps running and the next
good save recovers.

Endpoints: `/` the toolbar page, `/meta.json`, `/events?since=N`,
`/email.html`, `/email-nostyle.html`, `/text.txt`, `/source.txt`, each of
the last four (and `/`) with `?reader=noname` for what a reader without a
name gets (the toolbar links to it: no script needed),
`/cid/<content-id>` (embedded images), `/files/<path>` (images inside the
newsletter folder only, never a hidden file, whatever a symlink says).
A connection silent for IDLE_SECONDS is closed and at most MAX_CONNECTIONS are
served at once, so stray or half-open sockets cannot pile up threads.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import html
import ipaddress
import json
import mimetypes
import re
import socket
import string
import sys
import threading
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parseaddr
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, quote, unquote, urlsplit

from newsletter.compose import issue as compose_issue
from newsletter.compose import message as compose_message
from newsletter.compose.issue import Issue
from newsletter.compose.message import Message
from newsletter.errors import NewsletterError
from newsletter.settings import Settings, load_settings

SAMPLE_READER = compose_message.SAMPLE_RECIPIENT  # the one sample reader, kept by this name
# A reader who gave no name, as the delivery log hands one to personalize(): name "".
# `{{ subscriber.name | default("friend") }}` shows its fallback for them.
NAMELESS_READER = dataclasses.replace(SAMPLE_READER, name="")
READERS = {"sample": SAMPLE_READER, "noname": NAMELESS_READER}
POLL_SECONDS = 0.25  # how often the watcher looks at mtimes: well inside the 1 s promise
LONG_POLL_SECONDS = 25.0
# A connection that sends nothing for this long is closed: half-open sockets must
# not hold a thread each forever. Longer than any gap a browser leaves mid-request.
IDLE_SECONDS = 15.0
# At most this many connections are served at once (a thread each); more are told
# 503 and closed. A writer's few tabs with their long-polls use a handful.
MAX_CONNECTIONS = 64
IMAGE_TYPES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".avif", ".bmp", ".ico"}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}

_IMAGE_REFS = [
    re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)"),  # ![alt](path "title")
    re.compile(r"""<img\b[^>]*?\bsrc\s*=\s*["']([^"']+)["']""", re.I),
    re.compile(r"""^\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)""", re.M),  # [ref]: path
]
_SCHEME = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//|#|/)", re.I)
_CID_ATTR = re.compile(r"""(["'(])cid:([^"')\s]+)""", re.I)
_SRC_ATTR = re.compile(r"""(\bsrc\s*=\s*)(["'])([^"']*)\2""", re.I)
_HEAD = re.compile(r"<head\b[^>]*>", re.I)
_STYLE_BLOCK = re.compile(r"<style\b[^>]*>.*?</style\s*>", re.I | re.S)
_STYLESHEET_LINK = re.compile(r"<link\b[^>]*\brel\s*=\s*[\"']?stylesheet[^>]*>", re.I)
_ERROR_PLACE = re.compile(r"(?P<path>[^\s:'\"]+):(?P<line>\d+)\b")


@dataclass(frozen=True)
class Build:
    """One build of the draft: the message, or the error that stopped it."""

    version: int
    built_at: str
    settings: Settings | None
    issue: Issue | None = None
    message: Message | None = None
    error: str | None = None
    seconds: float = 0.0
    nameless: Message | None = None  # the same issue for NAMELESS_READER

    @property
    def ok(self) -> bool:
        return self.error is None

    def message_for(self, reader: str) -> Message | None:
        """The message for "sample" or "noname" (None when the draft does not build)."""
        return self.nameless if reader == "noname" else self.message


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: addresses nobody else can reach."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def local_image_refs(draft_text: str) -> list[str]:
    """Local image paths a draft refers to (remote, data: and cid: ones left out)."""
    refs: list[str] = []
    for pattern in _IMAGE_REFS:
        for ref in pattern.findall(draft_text):
            ref = unquote(ref.split("#")[0].split("?")[0])
            # "/images/x.png" means the newsletter folder's images/, so it is kept.
            if ref and (ref.startswith("/") and not ref.startswith("//")
                        or not _SCHEME.match(ref)) and ref not in refs:
                refs.append(ref)
    return refs


def safe_file(root: Path, relative: str) -> Path | None:
    """The image `relative` names inside `root`, or None when it must not be served.

    Refuses `..`, absolute paths, hidden files (the secret, the database's
    neighbours), symlinks that lead outside or to a hidden file, and anything
    that is not an image.
    """
    if not _plain_relative(relative):
        return None
    try:
        real = (root / relative).resolve(strict=True)
        base = root.resolve(strict=True)
    except (FileNotFoundError, RuntimeError, OSError):
        return None
    if not real.is_relative_to(base) or not real.is_file():
        return None
    # The name asked for may be visible while a symlink leads to a hidden file:
    # the path actually read must pass the same rule.
    if not _plain_relative(real.relative_to(base).as_posix()):
        return None
    if real.suffix.lower() not in IMAGE_TYPES:
        return None
    return real


def _plain_relative(relative: str) -> bool:
    """A relative path with no `..`, no hidden parts, no drive or backslash."""
    if not relative or "\x00" in relative or "\\" in relative or relative.startswith("/"):
        return False
    if re.match(r"^[A-Za-z]:", relative):
        return False
    return not any(part in {"", ".", ".."} or part.startswith(".")
                   for part in relative.split("/"))


def _resource(name: str) -> str:
    return resources.files("newsletter").joinpath(f"templates/preview/{name}").read_text("utf-8")


class Preview:
    """The preview of one draft: builds, watches and serves it.

    `start()` binds the server and starts the threads; `stop()` ends them. Use
    `run_preview()` for the blocking command-line behaviour.
    """

    def __init__(
        self,
        settings: Settings,
        draft: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        poll_seconds: float = POLL_SECONDS,
        on_build: Callable[[Build], None] | None = None,
        idle_seconds: float = IDLE_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.root = settings.root
        self.draft = Path(draft).resolve()
        self.host = host
        self.port = port
        self.poll_seconds = poll_seconds
        self.on_build = on_build
        self.idle_seconds = idle_seconds
        self.max_connections = max_connections
        self._settings = settings
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: ThreadingHTTPServer | None = None
        self._snapshot: dict[Path, tuple[int, int, int] | None] = {}
        self._version = 0
        self._waiting = 0
        # Look before building: a change made during the build is seen by the next look.
        self._snapshot = self._take_snapshot()
        self.build: Build = self._build()

    # --- building ---------------------------------------------------------------------------

    def _build(self) -> Build:
        started = time.perf_counter()
        version = self._version + 1
        stamp = time.strftime("%H:%M:%S")
        settings: Settings | None = None
        try:
            # Its links are never mailed: a moved folder without its key still previews.
            settings = dataclasses.replace(load_settings(self.root), drafts_only=True)
            self._settings = settings
            issue = compose_issue.build_issue(settings, self.draft)
            message = compose_message.personalize(issue, SAMPLE_READER, key="preview",
                                                  settings=settings)
            nameless = compose_message.personalize(issue, NAMELESS_READER, key="preview",
                                                   settings=settings)
            for built in (message, nameless):
                built.as_bytes()  # fail now, not when the Source view is opened
            result = Build(version, stamp, settings, issue, message,
                           seconds=time.perf_counter() - started, nameless=nameless)
        except NewsletterError as exc:
            result = Build(version, stamp, settings, error=str(exc),
                           seconds=time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the writer's preview
            result = Build(version, stamp, settings,
                           error=f"internal error while building ({type(exc).__name__}: {exc}); "
                           "please report it with the draft that causes it",
                           seconds=time.perf_counter() - started)
        self._version = version
        return result

    def rebuild(self) -> Build:
        """Build again now and wake every waiting page."""
        result = self._build()
        with self._changed:
            self.build = result
            self._changed.notify_all()
        if self.on_build:
            self.on_build(result)
        return result

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until the version differs from `since` (or timeout/stop); the current version."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._waiting += 1
            try:
                while self.build.version == since and not self._stopping.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._changed.wait(min(left, 1.0))
                return self.build.version
            finally:
                self._waiting -= 1

    @property
    def waiting(self) -> int:
        """How many pages are waiting for the next build right now."""
        with self._changed:
            return self._waiting

    # --- watching ---------------------------------------------------------------------------

    def watched_files(self) -> list[Path]:
        """The draft, newsletter.toml, every file under layouts/, and the draft's local images."""
        settings = self._settings
        files = [self.draft, settings.config_path]
        if settings.layouts_dir.is_dir():
            files.extend(p for p in sorted(settings.layouts_dir.rglob("*")) if p.is_file())
        try:
            text = self.draft.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        for ref in local_image_refs(text):
            if ref.startswith("/"):
                files.append(self.root / ref.lstrip("/"))
                continue
            # Watch both places a relative path could mean, so a missing image that
            # appears later is noticed whichever way compose resolves it.
            files.append(self.draft.parent / ref)
            files.append(self.root / ref)
        return files

    def _take_snapshot(self) -> dict[Path, tuple[int, int, int] | None]:
        snapshot: dict[Path, tuple[int, int, int] | None] = {}
        for path in self.watched_files():
            try:
                st = path.stat()
                # The inode too: editors that save by renaming a new file over the old one.
                snapshot[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                snapshot[path] = None
        return snapshot

    def check_for_changes(self) -> bool:
        """Rebuild when a watched file changed since the last look; True when it did."""
        # The snapshot is taken before building, and reads the draft to find the
        # images it names, so it matches what the build sees; a save during the
        # build shows up as a change at the next look.
        snapshot = self._take_snapshot()
        if snapshot == self._snapshot:
            return False
        self._snapshot = snapshot
        self.rebuild()
        return True

    def _watch(self) -> None:
        while not self._stopping.wait(self.poll_seconds):
            try:
                self.check_for_changes()
            except Exception as exc:  # noqa: BLE001 - keep watching whatever happens
                print(f"preview: watcher error: {exc}", file=sys.stderr)

    # --- serving ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The address of the toolbar page."""
        if self._server is None:
            raise RuntimeError("the preview is not started")
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        if host in {"0.0.0.0", "[::]"}:
            host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
        return f"http://{host}:{self._server.server_address[1]}/"

    def start(self) -> str:
        """Bind the server, start serving and watching; returns the URL."""
        server_class = _IPv6Server if ":" in self.host.strip("[]") else _Server
        try:
            server = server_class((self.host.strip("[]"), self.port), _Handler)
        except OSError as exc:
            if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
                # The host is the problem (a typo, or an address of another machine).
                raise NewsletterError(
                    f"cannot listen on {self.host} ({exc.strerror}): pass an address of this "
                    "machine to --host, or leave it out to use 127.0.0.1"
                ) from None
            raise NewsletterError(
                f"cannot listen on {self.host}:{self.port} ({exc.strerror}): pick another "
                "--port, or leave it out to use a free one"
            ) from None
        server.preview = self  # type: ignore[attr-defined]
        server.slots = threading.BoundedSemaphore(self.max_connections)
        self._server = server
        # A short poll interval makes stop() quick; the cost is a wake-up every 0.1 s.
        serve = functools.partial(server.serve_forever, poll_interval=0.1)
        for target, name in ((serve, "http"), (self._watch, "watch")):
            thread = threading.Thread(target=target, name=f"preview-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self.url

    @property
    def stopped(self) -> threading.Event:
        """Set once `stop()` has been called."""
        return self._stopping

    def stop(self) -> None:
        """Stop serving and watching; waiting pages are released at once."""
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    # --- what the endpoints return ----------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        build = self.build
        settings = build.settings or self._settings
        name, _address = parseaddr(settings.sender)
        result: dict[str, Any] = {
            "version": build.version,
            "ok": build.ok,
            "built_at": build.built_at,
            "error": self._short_paths(build.error) if build.error else None,
            "from": build.message.from_header if build.message else settings.sender,
            "from_name": name or settings.name,
            "to": SAMPLE_READER.email,
            "subject": build.issue.subject if build.issue else "",
            "preheader": build.issue.preheader if build.issue else "",
        }
        return result

    def shell(self, reader: str = "sample") -> str:
        """The toolbar page; `reader` ("sample" or "noname") is whose email it frames."""
        page = _resource("shell.html")
        for name in READERS:
            mark = ' aria-current="page"' if name == reader else ""
            page = page.replace(f' data-reader="{name}"', f' data-reader="{name}"{mark}')
        # The frame starts on the email even without scripts; the script takes over.
        frame = "/email.html" + ("?reader=noname" if reader == "noname" else "")
        return page.replace('src="/email.html"', f'src="{frame}"')

    def email_html(self, *, strip_style: bool = False, reader: str = "sample") -> str:
        """The message HTML with embedded images pointed at this server."""
        message = self.build.message_for(reader)
        if message is None:
            return self.error_page()
        text = self._for_browser(message.html)
        # Links open in a new tab rather than inside the frame.
        text = _HEAD.sub(lambda m: m.group(0) + '<base target="_blank">', text, count=1)
        if strip_style:
            text = _STYLESHEET_LINK.sub("", _STYLE_BLOCK.sub("", text))
        return text

    def _for_browser(self, text: str) -> str:
        # cid: URLs only mean something inside the MIME message: serve them here.
        text = _CID_ATTR.sub(lambda m: f"{m.group(1)}/cid/{quote(m.group(2), safe='@.-_')}", text)
        # With base_url set, local images point at where they will be published, which
        # may not exist yet: show the local files instead.
        build = self.build
        base_url = build.settings.base_url if build.settings else None
        if base_url and build.issue is not None:
            for published, file in getattr(build.issue, "assets", ()):
                on_disk = self._root_relative(Path(file))
                if on_disk is not None:
                    url = f"{base_url}/{published}"
                    for form in {url, html.escape(url, quote=True)}:
                        text = text.replace(f'"{form}"', f'"/files/{quote(on_disk)}"')

        def local(match: re.Match[str]) -> str:
            src = html.unescape(match.group(3))
            if not src or _SCHEME.match(src) or src.startswith("data:"):
                return match.group(0)
            relative = self._root_relative(self.draft.parent / src)
            if relative is None:
                return match.group(0)
            return f"{match.group(1)}{match.group(2)}/files/{quote(relative)}{match.group(2)}"

        return _SRC_ATTR.sub(local, text)

    def _root_relative(self, file: Path) -> str | None:
        """`file` as a path under the newsletter folder, or None when it is outside."""
        root = self.root.resolve()
        target = file.resolve()
        if not target.is_relative_to(root):
            return None
        return target.relative_to(root).as_posix()

    def _short_paths(self, text: str) -> str:
        """Paths inside the newsletter shown relative to it, as the writer thinks of them."""
        return text.replace(f"{self.root.resolve()}/", "").replace(f"{self.root}/", "")

    def error_page(self) -> str:
        """A readable page for the last build error: the message and the lines around it."""
        error = self._short_paths(self.build.error or "unknown error")
        where = ""
        match = _ERROR_PLACE.search(error)
        if match:
            path = Path(match.group("path"))
            if not path.is_absolute():
                path = self.root / path
            line = int(match.group("line"))
            try:
                inside = path.resolve().is_relative_to(self.root.resolve())
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                inside, lines = False, []
            if inside and lines:
                first, last = max(1, line - 3), min(len(lines), line + 3)
                rows = "".join(
                    f'<span class="{"hit" if n == line else ""}">{n:>4}  '
                    f"{html.escape(lines[n - 1])}</span>"
                    for n in range(first, last + 1)
                )
                shown = self._short_paths(str(path))
                where = (f'<div class="where">{html.escape(shown)}, line {line}</div>'
                         f"<pre>{rows}</pre>")
        return string.Template(_resource("error.html")).safe_substitute(
            message=html.escape(error), where=where
        )

    def text_part(self, reader: str = "sample") -> str:
        build = self.build
        message = build.message_for(reader)
        if message is None:
            return f"The draft does not build:\n\n{build.error}"
        return message.text

    def source(self, reader: str = "sample") -> bytes:
        build = self.build
        message = build.message_for(reader)
        if message is None:
            return f"The draft does not build:\n\n{build.error}".encode()
        return message.as_bytes()

    def attachment(self, cid: str) -> tuple[bytes, str] | None:
        build = self.build
        if build.issue is None:
            return None
        attachments = build.message.attachments if build.message else ()
        for image in (*attachments, *build.issue.attachments):
            if image.cid.strip("<>") == cid:
                return image.data, image.content_type
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a page opens several connections at once; 5 drops some
    slots: threading.BoundedSemaphore

    def process_request(self, request: Any, client_address: Any) -> None:
        # One thread per connection, but never more than the cap: past it the
        # client hears 503 at once instead of the machine running out of threads.
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(0.5)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\nRetry-After: 5\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()  # the thread never started
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A browser dropping a connection is normal; anything else is worth a line,
        # never a traceback in the writer's terminal.
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError | TimeoutError):
            print(f"preview: error answering a request: {exc!r}", file=sys.stderr)


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server_version = "newsletter-preview"
    protocol_version = "HTTP/1.1"

    @property
    def preview(self) -> Preview:
        return self.server.preview  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        # A connection silent this long (between requests, or mid-request) is closed.
        self.connection.settimeout(self.preview.idle_seconds)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the terminal shows rebuilds and errors, not every request

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the tab was closed while a long-poll waited: nothing to tell anyone

    def _refuse(self, status: int, why: str) -> None:
        self._send(status, why.encode() + b"\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        preview = self.preview
        # A page on another site could point a DNS name at 127.0.0.1 and read the
        # draft (DNS rebinding): on loopback, only loopback names are answered.
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
        if is_loopback(preview.host) and host not in _LOOPBACK_NAMES:
            self._refuse(HTTPStatus.FORBIDDEN, "unexpected Host header")
            return
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query)
        email_headers = {"Content-Security-Policy": "script-src 'none'"}
        reader = query.get("reader", ["sample"])[0]
        if reader not in READERS:
            self._refuse(HTTPStatus.BAD_REQUEST, "reader must be sample or noname "
                         "(?reader=noname: a reader without a name)")
            return
        if path in {"/", "/index.html"}:
            self._send(200, preview.shell(reader).encode(), "text/html; charset=utf-8")
        elif path == "/meta.json":
            self._send(200, json.dumps(preview.meta()).encode(), "application/json")
        elif path == "/events":
            try:
                since = int(query.get("since", ["-1"])[0])
            except ValueError:
                since = -1
            version = preview.wait_for_change(since, LONG_POLL_SECONDS)
            self._send(200, json.dumps({"version": version}).encode(), "application/json")
        elif path in {"/email.html", "/email-nostyle.html"}:
            status = 200 if preview.build.ok else 500
            body = preview.email_html(strip_style=path == "/email-nostyle.html", reader=reader)
            self._send(status, body.encode(), "text/html; charset=utf-8", email_headers)
        elif path == "/text.txt":
            self._send(200, preview.text_part(reader).encode(), "text/plain; charset=utf-8")
        elif path == "/source.txt":
            self._send(200, preview.source(reader), "text/plain; charset=utf-8")
        elif path.startswith("/cid/"):
            found = preview.attachment(unquote(path[len("/cid/"):]))
            if found is None:
                self._refuse(HTTPStatus.NOT_FOUND, "no such embedded image")
            else:
                self._send(200, found[0], found[1])
        elif path.startswith("/files/"):
            self._serve_file(unquote(path[len("/files/"):]))
        elif path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
        else:
            self._refuse(HTTPStatus.NOT_FOUND, "not found")

    def _serve_file(self, relative: str) -> None:
        root = self.preview.root
        target = safe_file(root, relative)
        if target is None:
            # A plain path to nothing is "missing"; anything else (outside the folder,
            # hidden, a symlink out, not an image) is refused.
            if _plain_relative(relative) and not (root / relative).is_symlink() \
                    and not (root / relative).exists():
                self._refuse(HTTPStatus.NOT_FOUND, "no such file in the newsletter folder")
            else:
                self._refuse(HTTPStatus.FORBIDDEN, "only images inside the newsletter are served")
            return
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self._send(200, target.read_bytes(), content_type)


def run_preview(
    settings: Settings,
    draft: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    open_browser: bool = True,
    out: TextIO | None = None,
) -> None:
    """Serve the preview until Ctrl-C: prints the URL and every rebuild to `out` (stderr)."""
    out = out or sys.stderr

    def report(build: Build) -> None:
        if build.ok:
            print(f"{build.built_at} rebuilt in {build.seconds * 1000:.0f} ms", file=out)
        else:
            print(f"{build.built_at} build failed: {build.error}", file=out)

    preview: Preview | None = None
    try:
        preview = Preview(settings, draft, host=host, port=port, on_build=report)
        if not preview.build.ok:
            report(preview.build)
        url = preview.start()
        print(url, flush=True)  # stdout: the one piece of data, for scripts
        if not is_loopback(host):
            print(f"warning: serving on {host}: anyone who can reach this machine can read "
                  "the draft", file=out)
        print("Watching the draft, its images, layouts/ and newsletter.toml; Ctrl-C stops.",
              file=out, flush=True)
        if open_browser:
            webbrowser.open(url)
        while not preview.stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        print("\nStopped.", file=out)
    finally:
        if preview is not None:
            preview.stop()
