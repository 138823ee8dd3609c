"""The reader pages: subscribe, confirm, unsubscribe, manage (views; status changes are
reader_status.py).

GET never changes anything (link scanners open every link in an email): confirming,
unsubscribing and saving preferences happen only on POST. Pages are rendered from Jinja
templates, the writer's layouts/ first, then the built-ins, with autoescape on, so
reader data is always escaped. No page needs JavaScript. Database work runs in the
thread pool (SQLite blocks); status changes hold `Web.writing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from newsletter import paths
from newsletter.audience.events import STOPPED
from newsletter.audience.subscribers import (
    MAX_NAME,
    Subscriber,
    clean_name,
    email_key,
    normalize_email,
    topic_choice,
    topic_choice_from_form,
)
from newsletter.compose import tokens
from newsletter.compose.layout import make_environment
from newsletter.errors import NewsletterError
from newsletter.settings import Settings
from newsletter.store import connect
from newsletter.web import confirmation, limits, reader_status
from newsletter.web.context import CONSENT, Web

log = logging.getLogger("newsletter.web")

_ADDRESS = re.compile(r"[^\s<>\"'@]+@[^\s<>\"']+")


# RFC 8058: what a mail client's one-click POST carries (the page's button posts `action`).
ONE_CLICK = ("List-Unsubscribe", "One-Click")
_ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"


async def _form(request: Request) -> dict[str, Any]:
    """The form fields (urlencoded or multipart, no files); {} for a malformed body."""
    # One field may fill the whole body (BodyLimit bounds it): a long name is then
    # refused as a long name, not lost with the rest of the form.
    part = Web.of(request).config.max_body
    try:
        form = await request.form(max_files=0, max_fields=50, max_part_size=part)
    except Exception:  # noqa: BLE001 - a garbled body from a bot is just an empty form
        return {}
    out: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            out.setdefault(key, []).append(value)
    return out


def _one(form: dict[str, Any], key: str) -> str:
    return (form.get(key) or [""])[0]


def _invalid(web: Web) -> HTMLResponse:
    # One page whatever was wrong with the token: it tells a prober nothing.
    return web.page("link_invalid.html", 400)


def _name_error(name: str) -> str | None:
    """What the page says about a name over the limit (None when it fits)."""
    length = len(clean_name(name))
    if length <= MAX_NAME:
        return None
    return (f"That name is {length:,} characters long: at most {MAX_NAME} fit. Shorten it and "
            "try again.")


def _redacted(exc: Exception) -> str:
    # The provider's reason, without the reader's address: the log keeps none.
    return _ADDRESS.sub("<address>", str(exc))


def mask(email: str) -> str:
    """l***@example.com: enough for a reader to recognise, not enough to harvest."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


async def subscribe_form(request: Request) -> Response:
    return Web.of(request).page("subscribe.html")


async def subscribe(request: Request) -> Response:
    web = Web.of(request)
    form = await _form(request)
    email, name = _one(form, "email").strip(), _one(form, "name")
    if _one(form, "website"):  # the honeypot: people never see it, bots fill it
        return web.page("subscribed.html")
    origin = web.origin(request, consent=True, form=form)

    def run() -> Response:
        name_error = _name_error(name)
        if name_error:
            return web.page("subscribe.html", 400, email=email, name=name[:MAX_NAME],
                            error=name_error)
        try:
            normalize_email(email)
        except NewsletterError:
            return web.page("subscribe.html", 400, email=email, name=name,
                            error="That does not look like an email address: check it "
                                  "and try again.")
        db = web.db()
        with web.writing:
            if not limits.ip_allowed(db, origin.ip, web.config.signups_per_ip_per_hour):
                return web.page("error.html", 429, title="Too many sign-ups",
                                text="Too many sign-ups came from your network in the "
                                     "last hour. Please try again later.")
            reader = reader_status.subscribe(
                db, web.config, email, name, form.get("topics", []), origin,
                choice=topic_choice_from_form(web.config.topics, form))
        if reader is not None:
            failed = _send_confirmation(web, request, reader)
            if failed is not None:
                return failed
        # The same answer for a new, pending, stopped or active address: nothing to probe.
        return web.page("subscribed.html")

    return await run_in_threadpool(run)


def _send_confirmation(web: Web, request: Request, reader: Subscriber) -> Response | None:
    """Send `reader` a confirmation email; the 503 page when the provider refused it."""
    url = confirmation.confirm_url(web.settings, web.public_base(request), reader)
    try:
        confirmation.send_confirmation(web.settings, reader, url)
    except NewsletterError as exc:
        log.error("confirmation email failed: %s", _redacted(exc))
        return web.page("error.html", 503, title="Could not send the email",
                        text="We could not send the confirmation email just now. "
                             "Please try again in a few minutes.")
    return None


async def confirm_form(request: Request) -> Response:
    web = Web.of(request)
    token = request.query_params.get("token", "")
    reader = await run_in_threadpool(
        lambda: reader_status.reader_for_confirm(web.db(), web.settings, token))
    if reader is None:
        return _invalid(web)
    return web.page("confirm_page.html", token=token, done=False)


async def confirm(request: Request) -> Response:
    web = Web.of(request)
    form = await _form(request)
    token = _one(form, "token") or request.query_params.get("token", "")
    origin = web.origin(request, consent=True)

    def run() -> Subscriber | None:
        with web.writing:
            return reader_status.confirm(web.db(), web.settings, token, origin)

    reader = await run_in_threadpool(run)
    if reader is None:
        return _invalid(web)
    if reader.status != "active":
        return web.page("error.html", 409, title="Not confirmed",
                        text="This address unsubscribed after the link was sent. Subscribe "
                             "again to get a new link.")
    return web.page("confirm_page.html", token="", done=True)


async def unsubscribe_page(request: Request) -> Response:
    web = Web.of(request)
    token = request.query_params.get("token", "")
    reader = await run_in_threadpool(
        lambda: reader_status.reader_for_unsubscribe(web.db(), web.settings, token, web.tokens))
    if reader is None:
        return _invalid(web)
    # Opened again after unsubscribing: say so, and offer to come back (not to leave again).
    return web.page("unsubscribe.html", token=token, masked=mask(reader.email),
                    done=reader.status in STOPPED)


async def unsubscribe(request: Request) -> Response:
    # RFC 8058: a mail client posts List-Unsubscribe=One-Click (urlencoded or multipart);
    # the page's button posts action=unsubscribe. The token in the URL authorises either;
    # the record says which it was.
    web = Web.of(request)
    # What RFC 8058 has a mail client post, byte for byte: no form parser needed.
    if (request.headers.get("content-type") == "application/x-www-form-urlencoded"
            and await request.body() == _ONE_CLICK_BODY):
        form = {ONE_CLICK[0]: [ONE_CLICK[1]]}
    else:
        form = await _form(request)
    token = request.query_params.get("token") or _one(form, "token")
    one_click = _one(form, ONE_CLICK[0]) == ONE_CLICK[1]
    origin = web.origin(request, "one-click" if one_click else "web")
    detail = ("List-Unsubscribe-Post (RFC 8058)" if one_click
              else "the button on the unsubscribe page")

    # Answered once durable: the writer commits every unsubscribe waiting in one go.
    reader = await asyncio.wrap_future(web.unsubscribes.submit(
        token, origin, detail, tokens.campaign_from(request.query_params.get("c"))))
    if reader is None:
        return _invalid(web)
    return web.answer("unsubscribe.html", {"done": True}, token=token, masked=mask(reader.email))


async def manage(request: Request) -> Response:
    """The reader's subscription: name, topics, leave, or come back (double opt-in).

    The token is a manage link's or an issue's unsubscribe link's. Without a valid one,
    a POST with `email` asks for a fresh link by email.
    """
    web = Web.of(request)
    token = request.query_params.get("token", "")
    form = await _form(request) if request.method == "POST" else {}
    action = _one(form, "action")

    def run() -> Response:
        db = web.db()
        reader = reader_status.reader_for_manage(db, web.settings, token)
        if reader is None:
            if request.method == "POST" and "email" in form:
                return _send_manage_link(web, request, _one(form, "email"))
            return _invalid(web)
        page: dict[str, Any] = {"token": token, "masked": mask(reader.email)}
        if request.method != "POST":
            return _manage_page(web, reader, **page)
        if action == "unsubscribe":
            with web.writing:
                reader = reader_status.unsubscribe(
                    db, reader, web.origin(request), "the button on the manage page",
                    tokens.campaign_from(request.query_params.get("c")))
            return web.page("unsubscribe.html", done=True, **page)
        if action == "resubscribe":
            with web.writing:
                back = reader_status.request_return(db, web.config, reader,
                                                    web.origin(request, consent=True))
            if back is not None:
                failed = _send_confirmation(web, request, back)
                if failed is not None:
                    return failed
            return web.page("subscribed.html")
        name = _one(form, "name")
        name_error = _name_error(name)
        if name_error:
            return _manage_page(web, reader, 400, error=name_error, **page)
        with web.writing:
            reader = reader_status.update_preferences(
                db, web.config, reader, name, form.get("topics", []), web.origin(request),
                choice=topic_choice_from_form(web.config.topics, form))
        return _manage_page(web, reader, saved=True, **page)

    return await run_in_threadpool(run)


def _manage_page(web: Web, reader: Subscriber, status: int = 200, **context: Any) -> Response:
    return web.page("manage.html", status, reader_name=reader.name,
                    **_topics_shown(web.db(), web, reader), reader_status=reader.status,
                    stopped=reader.status in STOPPED, **context)


def _send_manage_link(web: Web, request: Request, email: str) -> Response:
    """Email a fresh manage link to `email` if it is on the list; the same page either way.

    The email leaves after the answer (a background task), so neither the page nor the
    time it takes tells whether the address is on the list.
    """
    try:
        key = email_key(normalize_email(email))
    except NewsletterError:
        return web.page("link_invalid.html", 400, email=email,
                        error="That does not look like an email address: check it and try "
                              "again.")
    db = web.db()
    with web.writing:
        if not limits.link_requests_allowed(db, web.client_ip(request),
                                            web.config.signups_per_ip_per_hour):
            return web.page("error.html", 429, title="Too many requests",
                            text="Too many links were asked for from your network in the "
                                 "last hour. Please try again later.")
        allowed = limits.link_email_allowed(db, key, web.config.confirmations_per_day)
    reader = reader_status.reader_for_address(db, email) if allowed else None
    response = web.page("link_sent.html")
    if reader is not None:
        url = confirmation.manage_url(web.settings, web.public_base(request), reader)
        response.background = BackgroundTask(_mail_manage_link, web, reader, url)
    return response


def _mail_manage_link(web: Web, reader: Subscriber, url: str) -> None:
    try:
        confirmation.send_manage_link(web.settings, reader, url)
    except NewsletterError as exc:  # the reader saw their page already: the log says it
        log.error("manage link email failed: %s", _redacted(exc))


def _topics_shown(db: Any, web: Web, reader: Subscriber) -> dict[str, Any]:
    """What /manage ticks: exactly what the reader gets (everything, or the chosen topics)."""
    choice = topic_choice(db, reader.id, web.config.topics)
    return {"everything": choice.everything, "chosen": list(choice.chosen)}


def embed_snippet(settings: Settings, public_base: str | None = None) -> str:
    """The sign-up form as HTML to paste into any page (it posts to {base_url}/subscribe)."""
    web_env = make_environment(settings.layouts_dir)
    config = settings.web
    base = (public_base or settings.server_url or "http://127.0.0.1:8080").rstrip("/")
    return web_env.get_template("subscribe_form.html").render(
        action=f"{base}{paths.SUBSCRIBE}", topics=config.topics,
        default_topics=config.default_topics,
        consent=config.consent_text(settings),
        consent_seal=tokens.seal_text(settings, CONSENT, config.consent_text(settings)),
        email="", name="", error="",
        name_max=MAX_NAME)


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """While the server runs: the outgoing email workers, and at start the unsubscribes a
    server killed while the database was busy journaled but never applied (applied as soon
    as the lock is free, in the background: the server answers meanwhile)."""
    web: Web = app.state.web
    db = connect(web.settings.database)
    try:
        found = await run_in_threadpool(reader_status.deferred(db).recover)
    finally:
        db.conn.close()
    if found:
        log.info("Applying %d journaled reader request(s) not applied before the restart",
                 found)
    async with confirmation.lifespan(app):
        yield
