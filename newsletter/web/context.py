"""What every view shares: settings, [subscribe]/[server] config, page templates, the database.

create_app makes one `Web` and puts it on `app.state.web`; a view finds it with
`Web.of(request)`. Nothing else is shared between requests.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import threading
from email.utils import parseaddr
from typing import Any

import jinja2
import markupsafe
import sqlite_utils
from starlette.requests import Request
from starlette.responses import HTMLResponse

from newsletter.audience.events import Origin
from newsletter.audience.subscribers import MAX_NAME
from newsletter.compose import tokens
from newsletter.compose.layout import make_environment
from newsletter.settings import Settings, WebConfig
from newsletter.store import connect
from newsletter.web import reader_status

CONSENT = "consent"  # the purpose a sign-up form's consent text is sealed for

# Token pages must not leak their URL (the token) to another site, nor be cached.
HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "img-src 'self' data:; form-action *; frame-ancestors 'none'",
}


class Web:
    """The state every request shares: settings, config, templates, a DB connection per thread."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.config: WebConfig = settings.web
        # Fail at start, not on the first reader, when the key is unusable or not the one
        # that signed the database's links (a newsletter moved without its secret).
        key = tokens.bind_key(settings)
        # Made once: deriving its keys costs more than reading a token.
        self.tokens = tokens.TokenMaker(key, settings.base_url)
        self.env = make_environment(settings.layouts_dir)
        self.env.undefined = jinja2.ChainableUndefined  # pages: a missing value prints nothing
        self._local = threading.local()
        # One writer per process at a time: threads queue here, not in SQLite's busy loop
        # (which polls with growing sleeps, so under a running send many threads polling
        # at once starve each other: seconds at p99 instead of milliseconds).
        self.writing = threading.Lock()
        self.db()  # open and migrate once, before serving
        # Unsubscribes go to one writer that commits them in groups, one fsync for all.
        self.unsubscribes = reader_status.Unsubscribes(settings, self.tokens, self.writing)
        self._base: dict[str, Any] | None = None
        # answer(): pages rendered once, by template and fixed values.
        self._answers: dict[Any, tuple[jinja2.Template, list[tuple[int, str]] | None]] = {}
        # The address a reader can write to when a link fails them: reply-to, else from.
        self.contact = parseaddr(settings.reply_to or settings.sender or "")[1] or None

    @staticmethod
    def of(request: Request) -> Web:
        """The app's shared state, for a view."""
        web: Web = request.app.state.web
        return web

    def db(self) -> sqlite_utils.Database:
        """This thread's connection to newsletter.db (opened on first use)."""
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = connect(self.settings.database)
        return db

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """A page from layouts/ (the writer's, else the built-in), with the no-leak headers."""
        html = self.env.get_template(template).render({**self.base(), **context})
        return HTMLResponse(html, status, headers=HEADERS)

    def answer(self, template: str, fixed: dict[str, Any], **varying: str) -> HTMLResponse:
        """`page(template, **fixed, **varying)`, from the page rendered once.

        The page is rendered once with stand-ins for the `varying` strings and split there;
        each answer joins the parts with the values escaped, as autoescape would (a
        one-click unsubscribe's answer page was a third of serve's CPU per request). A
        template that does more with a value than print it escaped (a filter, a test) is
        found out at the first render (a second set of stand-ins, one with `&`, must come
        out the same) and is rendered every time instead. An edited layout is rendered anew.
        """
        compiled = self.env.get_template(template)
        key = (template, tuple(sorted(fixed.items())), tuple(sorted(varying)))
        found = self._answers.get(key)
        if found is None or found[0] is not compiled:
            found = self._answers[key] = (compiled, self._split(compiled, fixed, sorted(varying)))
        parts = found[1]
        if parts is None:
            return self.page(template, 200, **fixed, **varying)
        names = sorted(varying)
        out = [parts[0][1]]
        for index, text in parts[1:]:
            out.append(str(markupsafe.escape(varying[names[index]])))
            out.append(text)
        return HTMLResponse("".join(out), 200, headers=HEADERS)

    def _split(self, compiled: jinja2.Template, fixed: dict[str, Any],
               names: list[str]) -> list[tuple[int, str]] | None:
        """The page's text between the `names` values: [(-1, head), (name index, text)...];
        None when the values cannot be put in by escaping them."""
        stand_in = {n: f"zq{i}x{secrets.token_hex(8)}" for i, n in enumerate(names)}
        other = {n: f"zq{i}y{secrets.token_hex(8)}&" for i, n in enumerate(names)}
        html = compiled.render({**self.base(), **fixed, **stand_in})
        pattern = re.compile("|".join(re.escape(v) for v in stand_in.values()))
        index = {v: i for i, v in enumerate(stand_in.values())}
        parts: list[tuple[int, str]] = []
        last, which = 0, -1
        for found in pattern.finditer(html):
            parts.append((which, html[last:found.start()]))
            last, which = found.end(), index[found.group()]
        parts.append((which, html[last:]))
        joined = parts[0][1] + "".join(
            str(markupsafe.escape(other[names[i]])) + text for i, text in parts[1:])
        if joined != compiled.render({**self.base(), **fixed, **other}):
            return None
        return [(-1, parts[0][1])] + parts[1:]

    def base(self) -> dict[str, Any]:
        """What every page shows of the settings (computed once: they do not change while
        serving, and the consent seal is an HMAC)."""
        if self._base is not None:
            return self._base
        s = self.settings
        # The same newsletter and page values the published pages have: page.html frames both.
        self._base = {"newsletter": {"name": s.name, "base_url": s.base_url, "address": s.address,
                               "contact": self.contact, "description": s.publish.description,
                               "home": f"{s.base_url}/" if s.base_url else "/"},
                "page": {"lang": s.publish.lang},
                "topics": self.config.topics, "default_topics": self.config.default_topics,
                "consent": self.config.consent_text(s),
                "consent_seal": tokens.seal_text(s, CONSENT, self.config.consent_text(s)),
                "name_max": MAX_NAME}
        return self._base

    def client_ip(self, request: Request) -> str | None:
        """The reader's IP (behind a trusted proxy, the one it saw)."""
        peer = request.client.host if request.client else None
        return client_ip(peer, request.headers.get("x-forwarded-for"), self.config)

    def origin(self, request: Request, source: str = "web", *,
               consent: bool = False, form: dict[str, Any] | None = None) -> Origin:
        """Where a change came from: `source`, this IP and user agent, and for a consent
        event (a sign-up, a confirmation) the consent text the page showed.

        A sign-up `form` that carries its consent text sealed (an archived copy, the
        snippet on another site) records that text: what the reader saw, even when the
        settings say something else today. Without a valid seal, today's text.
        """
        agent = request.headers.get("user-agent", "")[:500] or None
        text = self.config.consent_text(self.settings) if consent else None
        if consent and form is not None:
            shown = tokens.unseal_text(self.settings, CONSENT,
                                       (form.get("consent_text") or [""])[0],
                                       (form.get("consent_seal") or [""])[0])
            text = shown or text
        return Origin(source, self.client_ip(request), agent, text)

    def public_base(self, request: Request) -> str:
        """The address readers reach the server at ([server] url, else base_url, else as this
        request came)."""
        return self.settings.server_url or str(request.base_url).rstrip("/")


def client_ip(peer: str | None, forwarded_for: str | None, config: WebConfig) -> str | None:
    """The reader's IP: X-Forwarded-For only when the request came from a trusted proxy.

    Walks the header from the right (the entry our proxy added) past trusted proxies, so
    a client cannot choose its IP by sending the header itself.
    """
    if peer is None or not config.trusted_proxies or not forwarded_for:
        return peer

    def trusted(text: str) -> bool:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return False
        return any(address in net for net in config.trusted_proxies)

    if not trusted(peer):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return hops[0] if hops else peer


