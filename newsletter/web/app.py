"""The Starlette app: routes, pages from layouts/, limits. What each page does is readers.py.

GET never changes anything (link scanners open every link in an email): confirming,
unsubscribing and saving preferences happen only on POST. Pages are rendered from Jinja
templates, the writer's layouts/ first, then the built-ins, with autoescape on, so
reader data is always escaped. No page needs JavaScript.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import jinja2
import sqlite_utils
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from newsletter.audience.events import Origin
from newsletter.compose.layout import make_environment
from newsletter.errors import NewsletterError
from newsletter.settings import Settings, WebConfig
from newsletter.web import readers

access_log = logging.getLogger("newsletter.access")
log = logging.getLogger("newsletter.web")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]

# Token pages must not leak their URL (the token) to another site, nor be cached.
_ADDRESS = re.compile(r"[^\s<>\"'@]+@[^\s<>\"']+")

_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "img-src 'self' data:; form-action *; frame-ancestors 'none'",
}


class BodyLimit:
    """413 for a request body over the limit, counted as it arrives (chunked included)."""

    def __init__(self, app: ASGIApp, limit: int, webhook_limit: int):
        self.app, self.limit, self.webhook_limit = app, limit, webhook_limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        limit = self.webhook_limit if scope["path"].startswith("/webhooks/") else self.limit
        declared = dict(scope["headers"]).get(b"content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > limit
        chunks: list[bytes] = []
        size = 0
        while not too_big:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            too_big = size > limit
            if not message.get("more_body"):
                break
        if too_big:
            response = PlainTextResponse(f"Request body too large (limit {limit} bytes).\n", 413,
                                         headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        body, sent = b"".join(chunks), False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class AccessLog:
    """One line per request: method, path without the query (tokens), status, duration.

    No client IP and no query string: the log holds nothing that identifies a reader.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            access_log.info("%s %s %d %.1fms", scope["method"], scope["path"], status,
                            (time.perf_counter() - start) * 1000)


class Web:
    """The state every request shares: settings, config, templates, a DB connection per thread."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.config: WebConfig = settings.web
        settings.secret_key()  # fail at start, not on the first reader, when it is unusable
        self.env = make_environment(settings.layouts_dir)
        self.env.undefined = jinja2.ChainableUndefined  # pages: a missing value prints nothing
        self._local = threading.local()
        # One writer per process at a time: threads queue here, not in SQLite's busy loop
        # (which polls with growing sleeps, so under a running send many threads polling
        # at once starve each other: seconds at p99 instead of milliseconds).
        self.writing = threading.Lock()
        self.db()  # open and migrate once, before serving

    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            from newsletter.store import connect

            db = self._local.db = connect(self.settings.database)
        return db

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        s = self.settings
        base = {"newsletter": {"name": s.name, "base_url": s.base_url, "address": s.address},
                "topics": self.config.topics, "consent": self.config.consent_text(s)}
        html = self.env.get_template(template).render({**base, **context})
        return HTMLResponse(html, status, headers=_HEADERS)

    def origin(self, request: Request) -> Origin:
        peer = request.client.host if request.client else None
        ip = readers.client_ip(peer, request.headers.get("x-forwarded-for"), self.config)
        agent = request.headers.get("user-agent", "")[:500] or None
        return Origin("web", ip, agent, self.config.consent_text(self.settings))

    def public_base(self, request: Request) -> str:
        return self.settings.base_url or str(request.base_url).rstrip("/")


async def _form(request: Request) -> dict[str, Any]:
    """The form fields (urlencoded or multipart, no files); {} for a malformed body."""
    try:
        form = await request.form(max_files=0, max_fields=50, max_part_size=16 * 1024)
    except Exception:  # noqa: BLE001 - a garbled body from a bot is just an empty form
        return {}
    out: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            out.setdefault(key, []).append(value)
    return out


def _one(form: dict[str, Any], key: str) -> str:
    return (form.get(key) or [""])[0]


def create_app(settings: Settings) -> Starlette:
    """The ASGI app for `settings` (the same database as the CLI)."""
    web = Web(settings)

    def invalid() -> HTMLResponse:
        # One page whatever was wrong with the token: it tells a prober nothing.
        return web.page("link_invalid.html", 400)

    async def healthz(request: Request) -> Response:
        def check() -> None:
            web.db().execute("SELECT 1").fetchone()

        await run_in_threadpool(check)
        return PlainTextResponse("ok\n")

    async def subscribe_form(request: Request) -> Response:
        return web.page("subscribe.html")

    async def subscribe(request: Request) -> Response:
        form = await _form(request)
        email, name = _one(form, "email").strip(), _one(form, "name")
        if _one(form, "website"):  # the honeypot: people never see it, bots fill it
            return web.page("subscribed.html")
        origin = web.origin(request)

        def run() -> Response:
            from newsletter.audience.subscribers import normalize_email

            try:
                normalize_email(email)
            except NewsletterError:
                return web.page("subscribe.html", 400, email=email, name=name,
                                error="That does not look like an email address: check it "
                                      "and try again.")
            db = web.db()
            with web.writing:
                if not readers.ip_allowed(db, web.config, origin.ip):
                    return web.page("error.html", 429, title="Too many sign-ups",
                                    text="Too many sign-ups came from your network in the "
                                         "last hour. Please try again later.")
                reader = readers.subscribe(db, web.config, email, name,
                                           form.get("topics", []), origin)
            if reader is not None:
                url = readers.confirm_url(settings, web.public_base(request), reader)
                try:
                    readers.send_confirmation(settings, reader, url)
                except NewsletterError as exc:
                    # The provider's reason, without the reader's address: the log keeps none.
                    log.error("confirmation email failed: %s",
                              _ADDRESS.sub("<address>", str(exc)))
                    return web.page("error.html", 503, title="Could not send the email",
                                    text="We could not send the confirmation email just now. "
                                         "Please try again in a few minutes.")
            # The same answer for a new, pending or active address: nothing to probe.
            return web.page("subscribed.html")

        return await run_in_threadpool(run)

    async def confirm_form(request: Request) -> Response:
        token = request.query_params.get("token", "")
        reader = await run_in_threadpool(
            lambda: readers.reader_for_confirm(web.db(), settings, token))
        if reader is None:
            return invalid()
        return web.page("confirm_page.html", token=token, done=False)

    async def confirm(request: Request) -> Response:
        form = await _form(request)
        token = _one(form, "token") or request.query_params.get("token", "")
        origin = web.origin(request)
        def run() -> Any:
            with web.writing:
                return readers.confirm(web.db(), settings, token, origin)

        reader = await run_in_threadpool(run)
        if reader is None:
            return invalid()
        if reader.status != "active":
            return web.page("error.html", 409, title="Not confirmed",
                            text="This address unsubscribed after the link was sent. Subscribe "
                                 "again to get a new link.")
        return web.page("confirm_page.html", token="", done=True)

    async def unsubscribe_page(request: Request) -> Response:
        token = request.query_params.get("token", "")
        reader = await run_in_threadpool(
            lambda: readers.reader_for_unsubscribe(web.db(), settings, token))
        if reader is None:
            return invalid()
        return web.page("unsubscribe.html", token=token, masked=readers.mask(reader.email),
                        done=False)

    async def unsubscribe(request: Request) -> Response:
        # RFC 8058: the body is List-Unsubscribe=One-Click (urlencoded or multipart); the
        # button posts the same. The token in the URL is what authorises it.
        form = await _form(request)
        token = request.query_params.get("token") or _one(form, "token")
        origin = web.origin(request)

        def run() -> Response:
            db = web.db()
            reader = readers.reader_for_unsubscribe(db, settings, token)
            if reader is None:
                return invalid()
            with web.writing:
                reader = readers.unsubscribe(db, reader, origin)
            return web.page("unsubscribe.html", token=token, masked=readers.mask(reader.email),
                            done=True)

        return await run_in_threadpool(run)

    async def manage(request: Request) -> Response:
        token = request.query_params.get("token", "")
        form = await _form(request) if request.method == "POST" else {}
        origin = web.origin(request)

        def run() -> Response:
            db = web.db()
            reader = readers.reader_for_unsubscribe(db, settings, token)
            if reader is None:
                return invalid()
            saved = False
            if request.method == "POST":
                with web.writing:
                    if _one(form, "action") == "unsubscribe":
                        reader = readers.unsubscribe(db, reader, origin)
                        return web.page("unsubscribe.html", token=token,
                                        masked=readers.mask(reader.email), done=True)
                    reader = readers.update_preferences(db, web.config, reader,
                                                        _one(form, "name"),
                                                        form.get("topics", []), origin)
                saved = True
            return web.page("manage.html", token=token, masked=readers.mask(reader.email),
                            reader_name=reader.name, chosen=list(reader.tags),
                            reader_status=reader.status, saved=saved)

        return await run_in_threadpool(run)

    def public_url(request: Request) -> str:
        # The URL as the provider called it (signatures cover it): behind the proxy that is
        # base_url + path, not the loopback address uvicorn sees.
        if not settings.base_url:
            return str(request.url)
        query = request.url.query
        return f"{settings.base_url.rstrip('/')}{request.url.path}" + (f"?{query}" if query
                                                                        else "")

    async def webhook(request: Request) -> Response:
        from newsletter.feedback.webhooks import WebhookRequest, handle

        body = await request.body()
        peer = request.client.host if request.client else None
        hook = WebhookRequest(
            provider=request.path_params["provider"], url=public_url(request),
            headers={k.lower(): v for k, v in request.headers.items()}, body=body,
            client_ip=readers.client_ip(peer, request.headers.get("x-forwarded-for"),
                                        web.config),
        )
        answer = await run_in_threadpool(lambda: handle(hook, settings, web.db()))
        return PlainTextResponse(answer.text, answer.status)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/", subscribe_form, methods=["GET"]),
        Route("/subscribe", subscribe_form, methods=["GET"]),
        Route("/subscribe", subscribe, methods=["POST"]),
        Route("/confirm", confirm_form, methods=["GET"]),
        Route("/confirm", confirm, methods=["POST"]),
        Route("/unsubscribe", unsubscribe_page, methods=["GET"]),
        Route("/unsubscribe", unsubscribe, methods=["POST"]),
        Route("/manage", manage, methods=["GET", "POST"]),
        Route("/webhooks/{provider}", webhook, methods=["POST"]),
    ]
    async def busy(request: Request, exc: Exception) -> Response:
        # Only after the 30 s busy timeout (e.g. a million-row import holding the lock):
        # say so and when to retry, rather than a bare 500.
        log.error("database busy: %s", exc)
        response = web.page("error.html", 503, title="Busy",
                            text="The newsletter is busy for a moment. Please try again in a "
                                 "minute.")
        response.headers["Retry-After"] = "60"
        return response

    app = Starlette(routes=routes, exception_handlers={sqlite3.OperationalError: busy})
    app.state.web = web
    wrapped: Any = AccessLog(BodyLimit(app, web.config.max_body, web.config.webhook_max_body))
    return wrapped


def embed_snippet(settings: Settings, public_base: str | None = None) -> str:
    """The sign-up form as HTML to paste into any page (it posts to {base_url}/subscribe)."""
    web_env = make_environment(settings.layouts_dir)
    config = settings.web
    base = (public_base or settings.base_url or "http://127.0.0.1:8080").rstrip("/")
    return web_env.get_template("subscribe_form.html").render(
        action=f"{base}/subscribe", topics=config.topics, consent=config.consent_text(settings),
        email="", name="", error="")
