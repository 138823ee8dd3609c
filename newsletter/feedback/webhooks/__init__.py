"""Provider webhooks: verify a signed request, turn its events into Feedback, apply them.

`newsletter serve` mounts `POST /webhooks/{provider}` and hands every request to
`handle()`; this package knows the providers, the web app knows only this function.
The verifiers for each provider live in modules named after it; each has
`verify(request, cfg) -> Verified` (raises Refused), `feedback(verified, cfg)` (bounces,
complaints, unsubscribes, deliveries) and `engagement(verified)`: the opens and clicks the
provider's own tracking reports, recorded as serve's /c/ and /o/ are (audience/engagement.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType

import httpx
import sqlite_utils

from newsletter.audience import engagement, events
from newsletter.audience.policy import BouncePolicy, apply
from newsletter.errors import ConfigError
from newsletter.settings import MissingSecret, Settings, WebhookSettings

from . import mailgun, postmark, resend, sendgrid, ses
from .payload import BadPayload
from .verification import Refused, remember_token

log = logging.getLogger(__name__)
PROVIDERS: dict[str, ModuleType] = {
    "postmark": postmark, "sendgrid": sendgrid, "mailgun": mailgun, "resend": resend, "ses": ses,
}
REFUSED = "refused\n"  # the same short answer for every refusal: it tells a forger nothing


@dataclass(frozen=True)
class WebhookRequest:
    provider: str  # the {provider} part of the path
    url: str  # the full URL as the provider called it (scheme, host, path, query)
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    client_ip: str | None = None


@dataclass(frozen=True)
class WebhookResponse:
    status: int
    text: str  # a short plain-text answer; never echoes secrets or addresses


def handle(
    request: WebhookRequest, settings: Settings, db: sqlite_utils.Database
) -> WebhookResponse:
    """Verify and apply one webhook request; the answer tells the provider whether to retry.

    200: applied (or acknowledged and ignored: unknown event types, duplicates);
    401/403: unsigned, badly signed, stale or replayed — nothing changed; 400: signed but
    unreadable; 404: provider unknown or not turned on; 413: body too large;
    503: a secret the settings name is not set on the server (the provider retries later).
    The [webhooks] and [bounces] tables were checked when the settings loaded.
    """
    module = PROVIDERS.get(request.provider)
    cfg = settings.webhooks
    policy = BouncePolicy(soft_limit=settings.bounces.soft_limit)
    if module is None or not cfg.enabled(request.provider):
        return WebhookResponse(404, "no such webhook\n")
    if len(request.body) > cfg.max_body_bytes:
        return WebhookResponse(413, "body too large\n")
    try:
        verified = module.verify(request, cfg)
        touches = module.engagement(verified)
        # Readers of provider events are pseudonyms keyed by the secret (not in the database);
        # per_reader names them as serve does.
        secret = None if settings.analytics.per_reader or not touches else settings.secret_key()
        with events.transaction(db):
            if verified.nonce is not None:
                remember_token(db, request.provider, verified.nonce, cfg.tolerance_seconds)
            outcomes = [apply(db, fb, policy).outcome for fb in module.feedback(verified, cfg)]
            outcomes += [_engage(db, request.provider, touch, secret) for touch in touches]
    except Refused as exc:
        log.warning("webhook %s refused from %s: %s", request.provider, request.client_ip, exc)
        return WebhookResponse(exc.status, REFUSED)
    except BadPayload as exc:
        log.warning("webhook %s: unreadable body: %s", request.provider, exc)
        return WebhookResponse(400, "unreadable body\n")
    except (MissingSecret, ConfigError) as exc:
        log.error("webhook %s cannot verify requests: %s", request.provider, exc)
        return WebhookResponse(503, "webhook not configured on this server\n")
    if verified.confirm_url:
        return _confirm(verified.confirm_url, cfg)
    return WebhookResponse(200, f"ok: {len(outcomes)} event(s)\n")


def _engage(db: sqlite_utils.Database, provider: str, touch: engagement.ProviderEvent,
            secret: bytes | None) -> str:
    outcome = engagement.record_provider(db, f"webhook:{provider}", touch, secret=secret)
    if outcome == "unknown":  # acknowledged: a message not sent from here, or its reader gone
        log.warning("webhook %s: %s for a message this newsletter has no delivery of: ignored",
                    provider, touch.kind)
    return outcome


def _confirm(url: str, cfg: WebhookSettings) -> WebhookResponse:
    if not cfg.ses_confirm_subscriptions:
        log.warning("SNS subscription to confirm: open %s", url)
        return WebhookResponse(200, "subscription confirmation logged\n")
    try:
        ses.confirm_subscription(url)
    except httpx.HTTPError as exc:
        log.warning("SNS subscription not confirmed (%s): open %s", exc, url)
        return WebhookResponse(502, "subscription not confirmed\n")
    log.info("SNS subscription confirmed")
    return WebhookResponse(200, "subscription confirmed\n")
