"""Postmark: Bounce, SpamComplaint, SubscriptionChange and Delivery webhooks.

Postmark has no signature; the webhook URL carries basic-auth credentials
(https://user:password@host/webhooks/postmark), sent as an Authorization header.
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
from newsletter.settings import WebhookSettings

from .payload import BadPayload, agent_of, iso, load_json, moment, text_or_none
from .verification import Refused, Verified

log = logging.getLogger(__name__)
SOURCE = "webhook:postmark"
# Bounce types (https://postmarkapp.com/developer/api/bounce-api#bounce-types).
# Others (AutoResponder, DMARCPolicy, SMTPApiError, …) are about the message or the sender,
# not the reader's address, and are ignored.
HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
SOFT = {"SoftBounce", "Transient", "DnsError", "Blocked", "SpamNotification"}


def verify(request: Any, cfg: WebhookSettings) -> Verified:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        raise Refused("no basic-auth credentials", 401)
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        raise Refused("unreadable basic-auth header", 401) from None
    want_user = cfg.secret("postmark_user_env").encode()
    want_password = cfg.secret("postmark_password_env").encode()
    # Digests first so compare_digest sees equal lengths; both compared, always.
    ok_user = hmac.compare_digest(hashlib.sha256(user).digest(), hashlib.sha256(want_user).digest())
    ok_password = hmac.compare_digest(
        hashlib.sha256(password).digest(), hashlib.sha256(want_password).digest()
    )
    if not (ok_user and ok_password):
        raise Refused("wrong basic-auth credentials", 401)
    return Verified(load_json(request.body))


def feedback(verified: Verified, cfg: WebhookSettings) -> list[Feedback]:
    payload = verified.payload
    if not isinstance(payload, dict):
        raise BadPayload("a Postmark webhook body is one JSON object")
    record = payload.get("RecordType")
    if record == "Bounce":
        kind = {**dict.fromkeys(HARD, "hard_bounce"), **dict.fromkeys(SOFT, "soft_bounce"),
                "SpamComplaint": "complaint", "Unsubscribe": "unsubscribe"}.get(
                    payload.get("Type", ""))
        if kind is None:  # AutoResponder, OpenRelayTest, … say nothing about the address
            return []
        return [_one(payload, kind, payload.get("Email"), f"bounce:{payload.get('ID')}",
                     payload.get("Description") or payload.get("Type", ""),
                     payload.get("BouncedAt"))]
    if record == "SpamComplaint":
        return [_one(payload, "complaint", payload.get("Email"), f"complaint:{payload.get('ID')}",
                     "spam complaint", payload.get("BouncedAt"))]
    if record == "SubscriptionChange" and payload.get("SuppressSending") is True:
        reason = payload.get("SuppressionReason", "")
        kind = {"HardBounce": "hard_bounce", "SpamComplaint": "complaint"}.get(
            reason, "unsubscribe")
        changed = payload.get("ChangedAt", "")
        return [_one(payload, kind, payload.get("Recipient"),
                     f"subscription:{payload.get('MessageID')}:{changed}",
                     f"suppressed: {reason}", changed)]
    if record == "Delivery":
        return [_one(payload, "delivered", payload.get("Recipient"),
                     f"delivery:{payload.get('MessageID')}", "", payload.get("DeliveredAt"))]
    return []


def _one(
    payload: dict[str, Any], kind: str, email: Any, event_id: str, detail: str, at: Any
) -> Feedback:
    if not isinstance(email, str) or "@" not in email:
        raise BadPayload(f"the Postmark {payload.get('RecordType')} event names no address")
    return Feedback(kind, email, SOURCE, f"postmark:{event_id}", str(detail)[:500], iso(at),
                    message_id=text_or_none(payload.get("MessageID")))


def engagement(verified: Verified) -> list[ProviderEvent]:
    """Open and Click webhooks (Postmark's open and link tracking)."""
    payload = verified.payload
    if not isinstance(payload, dict) or payload.get("RecordType") not in ("Open", "Click"):
        return []
    email, message_id = payload.get("Recipient"), text_or_none(payload.get("MessageID"))
    if not isinstance(email, str) or message_id is None:
        # Acknowledged, not refused: nothing to count it against, and a 400 would be retried.
        log.warning("Postmark %s event without Recipient or MessageID ignored",
                    payload["RecordType"])
        return []
    click = payload["RecordType"] == "Click"
    url = text_or_none(payload.get("OriginalLink")) if click else None
    # Postmark gives these events no id: the message, the kind, the time and the link are one.
    ident = f"{payload['RecordType']}:{message_id}:{payload.get('ReceivedAt')}:{url or ''}"
    return [ProviderEvent(CLICK if click else OPEN, (email,), message_id, ident, url=url,
                          agent=agent_of(payload.get("UserAgent")),
                          at=moment(payload.get("ReceivedAt")))]
