"""Resend: email.bounced, email.complained, email.delivered, Svix-signed.

Svix signs `{svix-id}.{svix-timestamp}.{body}` with HMAC-SHA256 under the base64 key after
`whsec_`; svix-signature lists one or more `v1,<base64>` (several while a secret rotates).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from typing import Any

from newsletter.audience.engagement import CLICK, OPEN, ProviderEvent
from newsletter.audience.policy import Feedback
from newsletter.errors import ConfigError
from newsletter.settings import WebhookSettings

from .payload import (
    BadPayload,
    agent_of,
    iso,
    load_json,
    moment,
    recipients_ids,
    text_or_none,
)
from .verification import Refused, Verified, check_fresh

log = logging.getLogger(__name__)
SOURCE = "webhook:resend"


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.strip().removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            "the Resend signing secret is not a whsec_… key: copy it from the webhook's page"
        ) from None


def verify(request: Any, cfg: WebhookSettings) -> Verified:
    msg_id = request.headers.get("svix-id", "")
    timestamp = request.headers.get("svix-timestamp", "")
    header = request.headers.get("svix-signature", "")
    if not (msg_id and timestamp and header):
        raise Refused("unsigned Resend request", 401)
    key = _key(cfg.secret("resend_secret_env"))
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    candidates = [part.partition(",") for part in header.split()]
    if not any(v == "v1" and hmac.compare_digest(sig, expected) for v, _, sig in candidates):
        raise Refused("bad Resend (Svix) signature")
    check_fresh(timestamp, cfg.tolerance_seconds)
    return Verified(load_json(request.body), nonce=msg_id)


def feedback(verified: Verified, cfg: WebhookSettings) -> list[Feedback]:
    payload = verified.payload
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise BadPayload("a Resend webhook body is an object with type and data")
    data = payload["data"]
    name = payload.get("type")
    if name == "email.bounced":
        bounce = data.get("bounce") or {}
        soft = isinstance(bounce, dict) and bounce.get("type") in ("Transient", "Undetermined")
        kind = "soft_bounce" if soft else "hard_bounce"
        detail = str(bounce.get("message", "")) if isinstance(bounce, dict) else ""
    elif name == "email.complained":
        kind, detail = "complaint", "spam complaint"
    elif name == "email.delivered":
        kind, detail = "delivered", ""
    else:
        return []
    to = data.get("to")
    emails = [to] if isinstance(to, str) else to
    if not isinstance(emails, list) or not emails or not all(isinstance(e, str) for e in emails):
        raise BadPayload("a Resend event names no recipient (data.to)")
    ident = verified.nonce or str(data.get("email_id", ""))
    at = iso(payload.get("created_at"))
    return [Feedback(kind, email, SOURCE, ext, detail[:500], at,
                     message_id=text_or_none(data.get("email_id")))
            for email, ext in recipients_ids("resend", f"{ident}:{name}", emails)]


def engagement(verified: Verified) -> list[ProviderEvent]:
    """email.opened and email.clicked (Resend's open and click tracking)."""
    payload = verified.payload
    name = payload.get("type") if isinstance(payload, dict) else None
    if name not in ("email.opened", "email.clicked") or not isinstance(payload.get("data"), dict):
        return []
    data = payload["data"]
    to = data.get("to")
    emails = [to] if isinstance(to, str) else to
    email_id = text_or_none(data.get("email_id"))
    if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails) \
            or email_id is None:
        # Acknowledged, not refused: nothing to count it against, and a 400 would be retried.
        log.warning("Resend %s event without data.to or data.email_id ignored", name)
        return []
    click = data.get("click") if name == "email.clicked" else None
    click = click if isinstance(click, dict) else {}
    at = click.get("timestamp") or payload.get("created_at")
    # The event itself, not the Svix delivery: a re-signed copy of it counts once too.
    ident = f"{name}:{email_id}:{at}:{click.get('link', '')}"
    # Resend's open events report no user agent (agent None): only a click's can be judged.
    return [ProviderEvent(CLICK if name == "email.clicked" else OPEN, tuple(emails),
                          email_id, ident, url=text_or_none(click.get("link")),
                          agent=agent_of(click.get("userAgent")),
                          ip=text_or_none(click.get("ipAddress")), at=moment(at))]
