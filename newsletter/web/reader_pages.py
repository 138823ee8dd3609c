"""The reader pages: subscribe, confirm, unsubscribe, manage (views; status changes are
reader_status.py).

GET never changes anything (link scanners open every link in an email): confirming,
unsubscribing and saving preferences happen only on POST. Pages are rendered from Jinja
templates, the writer's layouts/ first, then the built-ins, with autoescape on, so
reader data is always escaped. No page needs JavaScript. Database work runs in the
thread pool (SQLite blocks); status changes hold `Web.writing`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from newsletter import paths
from newsletter.audience.subscribers import (
    Subscriber,
    normalize_email,
    topic_choice,
    topic_choice_from_form,
)
from newsletter.compose.layout import make_environment
from newsletter.errors import NewsletterError
from newsletter.settings import Settings
from newsletter.web import confirmation, limits, reader_status
from newsletter.web.context import Web

log = logging.getLogger("newsletter.web")

_ADDRESS = re.compile(r"[^\s<>\"'@]+@[^\s<>\"']+")


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


def _invalid(web: Web) -> HTMLResponse:
    # One page whatever was wrong with the token: it tells a prober nothing.
    return web.page("link_invalid.html", 400)


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
    origin = web.origin(request)

    def run() -> Response:
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
            url = confirmation.confirm_url(web.settings, web.public_base(request), reader)
            try:
                confirmation.send_confirmation(web.settings, reader, url)
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
    origin = web.origin(request)

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
        lambda: reader_status.reader_for_unsubscribe(web.db(), web.settings, token))
    if reader is None:
        return _invalid(web)
    return web.page("unsubscribe.html", token=token, masked=mask(reader.email), done=False)


async def unsubscribe(request: Request) -> Response:
    # RFC 8058: the body is List-Unsubscribe=One-Click (urlencoded or multipart); the
    # button posts the same. The token in the URL is what authorises it.
    web = Web.of(request)
    form = await _form(request)
    token = request.query_params.get("token") or _one(form, "token")
    origin = web.origin(request)

    def run() -> Response:
        db = web.db()
        reader = reader_status.reader_for_unsubscribe(db, web.settings, token)
        if reader is None:
            return _invalid(web)
        with web.writing:
            reader = reader_status.unsubscribe(db, reader, origin)
        return web.page("unsubscribe.html", token=token, masked=mask(reader.email), done=True)

    return await run_in_threadpool(run)


async def manage(request: Request) -> Response:
    web = Web.of(request)
    token = request.query_params.get("token", "")
    form = await _form(request) if request.method == "POST" else {}
    origin = web.origin(request)

    def run() -> Response:
        db = web.db()
        reader = reader_status.reader_for_unsubscribe(db, web.settings, token)
        if reader is None:
            return _invalid(web)
        saved = False
        if request.method == "POST":
            with web.writing:
                if _one(form, "action") == "unsubscribe":
                    reader = reader_status.unsubscribe(db, reader, origin)
                    return web.page("unsubscribe.html", token=token,
                                    masked=mask(reader.email), done=True)
                reader = reader_status.update_preferences(
                    db, web.config, reader, _one(form, "name"), form.get("topics", []), origin,
                    choice=topic_choice_from_form(web.config.topics, form))
            saved = True
        return web.page("manage.html", token=token, masked=mask(reader.email),
                        reader_name=reader.name, **_topics_shown(db, web, reader),
                        reader_status=reader.status, saved=saved)

    return await run_in_threadpool(run)


def _topics_shown(db: Any, web: Web, reader: Subscriber) -> dict[str, Any]:
    """What /manage ticks: exactly what the reader gets (everything, or the chosen topics)."""
    choice = topic_choice(db, reader.id, web.config.topics)
    return {"everything": choice.everything, "chosen": list(choice.chosen)}


def embed_snippet(settings: Settings, public_base: str | None = None) -> str:
    """The sign-up form as HTML to paste into any page (it posts to {base_url}/subscribe)."""
    web_env = make_environment(settings.layouts_dir)
    config = settings.web
    base = (public_base or settings.base_url or "http://127.0.0.1:8080").rstrip("/")
    return web_env.get_template("subscribe_form.html").render(
        action=f"{base}{paths.SUBSCRIBE}", topics=config.topics,
        default_topics=config.default_topics,
        consent=config.consent_text(settings), email="", name="", error="")
