"""The emails `serve` sends a reader itself: the sign-up confirmation and a fresh manage link."""

from __future__ import annotations

import dataclasses
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from newsletter import paths
from newsletter.audience.subscribers import Subscriber
from newsletter.compose import tokens
from newsletter.errors import NewsletterError
from newsletter.settings import Settings


def confirm_url(settings: Settings, public_base: str, reader: Subscriber) -> str:
    """The link that confirms `reader`'s sign-up, valid for a week."""
    token = tokens.make_token(settings, tokens.CONFIRM, reader.id, reader.key)
    return f"{public_base.rstrip('/')}{paths.CONFIRM}?token={token}"


def manage_url(settings: Settings, public_base: str, reader: Subscriber) -> str:
    """The reader's lasting /manage link (the same one every issue's footer carries)."""
    maker = tokens.TokenMaker(settings.secret_key(), settings.base_url)
    return tokens.manage_url(public_base, maker.make(reader.key, tokens.Kind.MANAGE))


def send_confirmation(settings: Settings, reader: Subscriber, url: str) -> None:
    """Build the confirmation email (layouts/confirm.html + .txt) and send it, once."""
    _send(settings, reader, "confirm", "confirmation",
          f"Confirm your subscription to {settings.name}",
          {"confirm_url": url, "days": tokens.CONFIRM_MAX_AGE // 86400})


def send_manage_link(settings: Settings, reader: Subscriber, url: str) -> None:
    """Email `reader` the link to their subscription (layouts/manage_link.html + .txt)."""
    _send(settings, reader, "manage_link", "manage link", f"Your subscription to {settings.name}",
          {"manage_url": url, "status": reader.status})


def _send(settings: Settings, reader: Subscriber, layout: str, what: str, subject: str,
          values: dict[str, Any]) -> None:
    from newsletter.compose.inline import inline_css
    from newsletter.compose.issue import Issue
    from newsletter.compose.layout import load_layout, make_environment, render_template
    from newsletter.compose.message import personalize
    from newsletter.delivery.providers.base import Outcome
    from newsletter.delivery.providers.registry import provider_class

    env = make_environment(settings.layouts_dir)
    context = {"newsletter": {"name": settings.name, "base_url": settings.base_url,
                              "address": settings.address},
               "subscriber": {"name": reader.name, "email": reader.email}, **values}
    where = f"layouts/{layout}"
    html = render_template(load_layout(env, f"{layout}.html"), context, where=f"{where}.html")
    text = render_template(load_layout(env, f"{layout}.txt"), context, where=f"{where}.txt")
    issue = Issue(source=Path(f"{where}.html"), slug=layout, title=subject,
                  subject=subject, preheader="", date=datetime.now(UTC).date(),
                  html=inline_css(html, where=f"{where}.html"), text=text)
    message = personalize(issue, reader.recipient(),
                          key=f"{reader.id}-{secrets.token_hex(4)}", settings=settings)
    # The outbox keeps these apart from issues: outbox/confirm/, outbox/manage/.
    campaign = "confirm" if layout == "confirm" else "manage"
    ps = dataclasses.replace(settings.provider,
                             options={**settings.provider.options, "campaign": campaign})
    provider = provider_class(ps.name)(settings, ps)
    try:
        provider.open()
        results = provider.send([message])
    finally:
        provider.close()
    if not results or results[0].outcome != Outcome.SENT:
        reason = getattr(results[0], "error", "") if results else "no result"
        raise NewsletterError(f"the {what} email was not accepted: {reason}")
