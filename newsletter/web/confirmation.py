"""The confirmation email a sign-up on the form is sent: its link and the sending of it."""

from __future__ import annotations

import dataclasses
import secrets
from datetime import UTC, datetime
from pathlib import Path

from newsletter import paths
from newsletter.audience.subscribers import Subscriber
from newsletter.compose import tokens
from newsletter.errors import NewsletterError
from newsletter.settings import Settings


def confirm_url(settings: Settings, public_base: str, reader: Subscriber) -> str:
    """The link that confirms `reader`'s sign-up, valid for a week."""
    token = tokens.make_token(settings, tokens.CONFIRM, reader.id, reader.key)
    return f"{public_base.rstrip('/')}{paths.CONFIRM}?token={token}"


def send_confirmation(settings: Settings, reader: Subscriber, url: str) -> None:
    """Build the confirmation email (layouts/confirm.html + .txt) and send it, once."""
    from newsletter.compose.inline import inline_css
    from newsletter.compose.issue import Issue
    from newsletter.compose.layout import load_layout, make_environment, render_template
    from newsletter.compose.message import personalize
    from newsletter.delivery.providers.base import Outcome
    from newsletter.delivery.providers.registry import provider_class

    env = make_environment(settings.layouts_dir)
    context = {"newsletter": {"name": settings.name, "base_url": settings.base_url,
                              "address": settings.address},
               "subscriber": {"name": reader.name, "email": reader.email},
               "confirm_url": url, "days": tokens.CONFIRM_MAX_AGE // 86400}
    html = render_template(load_layout(env, "confirm.html"), context, where="layouts/confirm.html")
    text = render_template(load_layout(env, "confirm.txt"), context, where="layouts/confirm.txt")
    subject = f"Confirm your subscription to {settings.name}"
    issue = Issue(source=Path("layouts/confirm.html"), slug="confirm", title=subject,
                  subject=subject, preheader="", date=datetime.now(UTC).date(),
                  html=inline_css(html, where="layouts/confirm.html"), text=text)
    message = personalize(issue, reader.recipient(),
                          key=f"{reader.id}-{secrets.token_hex(4)}", settings=settings)
    ps = dataclasses.replace(settings.provider,
                             options={**settings.provider.options, "campaign": "confirm"})
    provider = provider_class(ps.name)(settings, ps)
    try:
        provider.open()
        results = provider.send([message])
    finally:
        provider.close()
    if not results or results[0].outcome != Outcome.SENT:
        reason = getattr(results[0], "error", "") if results else "no result"
        raise NewsletterError(f"the confirmation email was not accepted: {reason}")

