"""Mailgun: webhooks (failed permanent/temporary, complained, unsubscribed, delivered).

The body's `signature` object holds timestamp, token and signature: the hex HMAC-SHA256 of
timestamp + token under the webhook signing key. Stale timestamps and reused tokens are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from newsletter.audience.engagement import CLICK, OPEN, ProviderEvent
from newsletter.audience.policy import Feedback
from newsletter.settings import WebhookSettings

from .payload import BadPayload, agent_of, iso_from_unix, load_json, moment, text_or_none
from .verification import Refused, Verified, check_fresh

log = logging.getLogger(__name__)
SOURCE = "webhook:mailgun"


def verify(request: Any, cfg: WebhookSettings) -> Verified:
    payload = load_json(request.body)
    sig = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(sig, dict) or not all(
        isinstance(sig.get(k), str) and sig.get(k) for k in ("timestamp", "token", "signature")
    ):
        raise Refused("unsigned Mailgun request", 401)
    key = cfg.secret("mailgun_signing_key_env").encode()
    expected = hmac.new(key, (sig["timestamp"] + sig["token"]).encode(), hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest(), sig["signature"].lower()):
        raise Refused("bad Mailgun signature")
    check_fresh(sig["timestamp"], cfg.tolerance_seconds)
    return Verified(payload, nonce=sig["token"])


def feedback(verified: Verified, cfg: WebhookSettings) -> list[Feedback]:
    payload = verified.payload
    data = payload.get("event-data")
    if not isinstance(data, dict):
        raise BadPayload("a Mailgun webhook body has an event-data object")
    name = data.get("event")
    kind: str | None
    if name == "failed":
        kind = "soft_bounce" if data.get("severity") == "temporary" else "hard_bounce"
    else:
        kind = {"complained": "complaint", "unsubscribed": "unsubscribe",
                "delivered": "delivered"}.get(str(name))
    if kind is None:
        return []
    email, event_id = data.get("recipient"), data.get("id")
    if not isinstance(email, str) or not isinstance(event_id, str):
        raise BadPayload("a Mailgun event has no recipient or id")
    status = data.get("delivery-status") or {}
    detail = str(data.get("reason") or "")
    if isinstance(status, dict) and (status.get("description") or status.get("message")):
        detail = f"{status.get('code', '')} {status.get('description') or status.get('message')}"
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    message_id = text_or_none(headers.get("message-id")) if isinstance(headers, dict) else None
    return [Feedback(kind, email, SOURCE, f"mailgun:{event_id}", detail.strip()[:500],
                     iso_from_unix(data.get("timestamp")), message_id=message_id)]


def engagement(verified: Verified) -> list[ProviderEvent]:
    """`opened` and `clicked` events (Mailgun's open and click tracking)."""
    data = verified.payload.get("event-data")
    if not isinstance(data, dict) or data.get("event") not in ("opened", "clicked"):
        return []
    email, event_id = data.get("recipient"), text_or_none(data.get("id"))
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    message_id = text_or_none(headers.get("message-id")) if isinstance(headers, dict) else None
    if not isinstance(email, str) or event_id is None or message_id is None:
        # Acknowledged, not refused: nothing to count it against, and a 400 would be retried.
        log.warning("Mailgun %s event without recipient, id or message-id ignored", data["event"])
        return []
    client = data.get("client-info")
    click = data["event"] == "clicked"
    return [ProviderEvent(
        CLICK if click else OPEN, (email,), message_id, event_id,
        url=text_or_none(data.get("url")) if click else None,
        agent=agent_of(client.get("user-agent")) if isinstance(client, dict) else None,
        ip=text_or_none(data.get("ip")), at=moment(data.get("timestamp")))]
