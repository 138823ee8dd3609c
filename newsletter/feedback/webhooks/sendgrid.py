"""SendGrid: the signed Event Webhook (a JSON array of events, ECDSA P-256 signature).

SendGrid signs `timestamp + body` with ECDSA over SHA-256 and sends the base64 DER signature
in X-Twilio-Email-Event-Webhook-Signature, the timestamp in -Timestamp; the verification key
is shown (base64 DER) on the webhook's settings page.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from newsletter.audience.engagement import CLICK, OPEN, ProviderEvent
from newsletter.audience.policy import Feedback
from newsletter.errors import ConfigError
from newsletter.settings import WebhookSettings

from .payload import BadPayload, agent_of, iso_from_unix, load_json, moment, text_or_none
from .verification import Refused, Verified, check_fresh

log = logging.getLogger(__name__)
SOURCE = "webhook:sendgrid"
SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"


def public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER), or a ConfigError."""
    try:
        key = load_der_public_key(base64.b64decode(text.strip()))
    except (ValueError, binascii.Error):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(
            "the SendGrid verification key is not a base64 ECDSA public key: copy it from "
            "Settings → Mail Settings → Event Webhook → Signature verification"
        )
    return key


def verify(request: Any, cfg: WebhookSettings) -> Verified:
    signature = request.headers.get(SIGNATURE, "")
    timestamp = request.headers.get(TIMESTAMP, "")
    if not signature or not timestamp:
        raise Refused("unsigned SendGrid request", 401)
    key = public_key(cfg.secret("sendgrid_public_key_env"))
    try:
        key.verify(
            base64.b64decode(signature), timestamp.encode() + request.body,
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused("bad SendGrid signature") from None
    check_fresh(timestamp, cfg.tolerance_seconds)
    return Verified(load_json(request.body))


def _kind(event: dict[str, Any]) -> str | None:
    name = event.get("event")
    if name == "bounce":  # type "blocked" is a refusal that may pass; "bounce" is permanent
        return "soft_bounce" if event.get("type") == "blocked" else "hard_bounce"
    if name == "dropped":  # not sent because SendGrid suppressed the address
        reason = str(event.get("reason", "")).lower()
        if "bounce" in reason or "invalid" in reason:
            return "hard_bounce"
        if "spam" in reason:
            return "complaint"
        if "unsubscribe" in reason:
            return "unsubscribe"
        return None
    return {"deferred": "soft_bounce", "spamreport": "complaint", "unsubscribe": "unsubscribe",
            "group_unsubscribe": "unsubscribe", "delivered": "delivered"}.get(str(name))


def feedback(verified: Verified, cfg: WebhookSettings) -> list[Feedback]:
    payload = verified.payload
    if not isinstance(payload, list):
        raise BadPayload("a SendGrid event webhook body is a JSON array")
    out = []
    for event in payload:
        if not isinstance(event, dict):
            raise BadPayload("each SendGrid event is a JSON object")
        kind = _kind(event)
        if kind is None:  # processed, open, click, … : acknowledged, ignored
            continue
        email, event_id = event.get("email"), event.get("sg_event_id")
        if not isinstance(email, str) or not isinstance(event_id, str):
            # Skipped, not refused: a 400 would make SendGrid retry the whole batch forever.
            log.warning("SendGrid %s event without email or sg_event_id skipped", kind)
            continue
        detail = str(event.get("reason") or event.get("response") or event.get("event"))
        sg_id = text_or_none(event.get("sg_message_id"))
        out.append(Feedback(kind, email, SOURCE, f"sendgrid:{event_id}", detail[:500],
                            iso_from_unix(event.get("timestamp")),
                            message_id=sg_id.split(".", 1)[0] if sg_id else None))
    return out


def engagement(verified: Verified) -> list[ProviderEvent]:
    """`open` and `click` events (SendGrid's open and click tracking)."""
    out = []
    for event in verified.payload if isinstance(verified.payload, list) else []:
        if not isinstance(event, dict) or event.get("event") not in ("open", "click"):
            continue
        email, event_id = event.get("email"), text_or_none(event.get("sg_event_id"))
        sg_id = text_or_none(event.get("sg_message_id"))
        if not isinstance(email, str) or event_id is None or sg_id is None:
            log.warning("SendGrid %s event without email, sg_event_id or sg_message_id skipped",
                        event.get("event"))
            continue
        click = event["event"] == "click"
        out.append(ProviderEvent(
            CLICK if click else OPEN, (email,), sg_id.split(".", 1)[0], event_id,
            url=text_or_none(event.get("url")) if click else None,
            agent=agent_of(event.get("useragent")), ip=text_or_none(event.get("ip")),
            at=moment(event.get("timestamp")), machine=event.get("sg_machine_open") is True))
    return out
