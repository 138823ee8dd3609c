"""Amazon SES through SNS: Bounce, Complaint and Delivery notifications, SNS-signed.

SNS signs a canonical string of the message's fields with RSA (SignatureVersion 1: SHA1,
2: SHA256); the certificate comes from SigningCertURL, accepted only over https from
sns.<region>.amazonaws.com, and is cached. A SubscriptionConfirmation is confirmed by
GETting its SubscribeURL (same host rule), or logged with the URL to open.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from newsletter.audience.engagement import CLICK, OPEN, ProviderEvent
from newsletter.audience.policy import Feedback
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
from .verification import Refused, Verified

log = logging.getLogger(__name__)
SOURCE = "webhook:ses"
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
# SNS's own retries end within an hour; an older signed message is treated as replayed.
MAX_AGE_SECONDS = 3600
_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_certs: dict[str, x509.Certificate] = {}
_certs_lock = threading.Lock()


def allowed_url(url: str, cfg: WebhookSettings) -> bool:
    """True for an https URL on sns.<region>.amazonaws.com (or the explicit test host)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        return False
    if parts.scheme == "https" and parts.port is None and _SNS_HOST.fullmatch(parts.hostname or ""):
        return True
    test = cfg.insecure_test_only_sns_host
    return test is not None and parts.scheme in ("http", "https") and parts.netloc == test


def _certificate(url: str, cfg: WebhookSettings) -> x509.Certificate:
    if not allowed_url(url, cfg) or not urlsplit(url).path.endswith(".pem"):
        raise Refused("SigningCertURL is not an SNS certificate URL")
    with _certs_lock:
        cached = _certs.get(url)
    if cached is not None:
        return cached
    try:
        response = httpx.get(url, timeout=10, follow_redirects=False)
        response.raise_for_status()
        cert = x509.load_pem_x509_certificate(response.content)
    except (httpx.HTTPError, ValueError) as exc:
        raise Refused(f"cannot fetch the SNS certificate: {exc}") from None
    with _certs_lock:
        _certs[url] = cert
    return cert


def string_to_sign(message: dict[str, Any]) -> bytes:
    """The canonical "Name\\nvalue\\n" string SNS signs for this message type."""
    fields = _FIELDS.get(message.get("Type", ""))
    if fields is None:
        raise Refused("unknown SNS message type")
    out = []
    for name in fields:
        if name not in message:
            if name == "Subject":  # optional: left out of the string when absent
                continue
            raise Refused(f"SNS message without {name}")
        out.append(f"{name}\n{message[name]}\n")
    return "".join(out).encode("utf-8")


def verify(request: Any, cfg: WebhookSettings) -> Verified:
    message = load_json(request.body)
    if not isinstance(message, dict) or not message.get("Signature"):
        raise Refused("unsigned SNS message", 401)
    version = str(message.get("SignatureVersion", ""))
    algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(version)
    if algorithm is None:
        raise Refused("unknown SNS SignatureVersion")
    signed = string_to_sign(message)
    key = _certificate(str(message.get("SigningCertURL", "")), cfg).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refused("the SNS certificate has no RSA key")
    try:
        key.verify(base64.b64decode(message["Signature"]), signed, padding.PKCS1v15(), algorithm)
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused("bad SNS signature") from None
    sent = iso(message.get("Timestamp"))
    if sent is None:
        raise Refused("SNS message without a readable Timestamp")
    age = time.time() - datetime.strptime(sent, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=UTC).timestamp()
    if age > MAX_AGE_SECONDS or age < -300:
        raise Refused(f"stale SNS message ({int(age)} s old)")
    if cfg.ses_topic_arns and message.get("TopicArn") not in cfg.ses_topic_arns:
        raise Refused("SNS topic not in webhooks.ses_topic_arns")
    confirm = None
    if message["Type"] == "SubscriptionConfirmation":
        confirm = str(message.get("SubscribeURL", ""))
        if not allowed_url(confirm, cfg):
            raise Refused("SubscribeURL is not on an SNS host")
    return Verified(message, nonce=None, confirm_url=confirm)


def confirm_subscription(url: str) -> None:
    """GET the SubscribeURL (already checked to be on an SNS host)."""
    response = httpx.get(url, timeout=10, follow_redirects=False)
    response.raise_for_status()


def feedback(verified: Verified, cfg: WebhookSettings) -> list[Feedback]:
    message = verified.payload
    if message.get("Type") != "Notification":
        return []
    try:
        body = json.loads(message["Message"])
    except (TypeError, json.JSONDecodeError):
        raise BadPayload("the SNS Message is not an SES notification (JSON)") from None
    if not isinstance(body, dict):
        raise BadPayload("the SNS Message is not an SES notification (JSON object)")
    # Notifications say notificationType; configuration-set event publishing says eventType.
    name = body.get("notificationType") or body.get("eventType")
    msg_id = str(message.get("MessageId"))
    if name == "Bounce":
        bounce = body.get("bounce") or {}
        kind = "hard_bounce" if bounce.get("bounceType") == "Permanent" else "soft_bounce"
        people = [(r.get("emailAddress"), r.get("diagnosticCode") or bounce.get("bounceSubType"))
                  for r in bounce.get("bouncedRecipients") or [] if isinstance(r, dict)]
        at = bounce.get("timestamp")
    elif name == "Complaint":
        complaint = body.get("complaint") or {}
        kind = "complaint"
        people = [(r.get("emailAddress"), complaint.get("complaintFeedbackType") or "complaint")
                  for r in complaint.get("complainedRecipients") or [] if isinstance(r, dict)]
        at = complaint.get("timestamp")
    elif name == "Delivery":
        delivery = body.get("delivery") or {}
        kind = "delivered"
        people = [(r, "") for r in delivery.get("recipients") or []]
        at = delivery.get("timestamp")
    else:
        return []
    if not people or not all(isinstance(email, str) for email, _ in people):
        raise BadPayload(f"the SES {name} notification names no recipient")
    details = dict(people)
    mail = body.get("mail")
    message_id = text_or_none(mail.get("messageId")) if isinstance(mail, dict) else None
    return [Feedback(kind, email, SOURCE, ext, str(details[email] or "")[:500], iso(at),
                     message_id=message_id)
            for email, ext in recipients_ids("ses", msg_id, [str(e) for e, _ in people])]


def engagement(verified: Verified) -> list[ProviderEvent]:
    """Open and Click events (a configuration set's event publishing to SNS)."""
    message = verified.payload
    if message.get("Type") != "Notification":
        return []
    try:
        body = json.loads(message["Message"])
    except (TypeError, KeyError, json.JSONDecodeError):
        return []  # feedback() has said 400 already
    name = body.get("eventType") if isinstance(body, dict) else None
    if name not in ("Open", "Click"):
        return []
    mail = body.get("mail")
    detail = body.get(name.lower())
    message_id = text_or_none(mail.get("messageId")) if isinstance(mail, dict) else None
    emails = mail.get("destination") if isinstance(mail, dict) else None
    if message_id is None or not isinstance(detail, dict) or not isinstance(emails, list) \
            or not all(isinstance(e, str) for e in emails):
        # Acknowledged, not refused: nothing to count it against, and a 400 would be retried.
        log.warning("SES %s event without mail.messageId, destination or %s ignored", name,
                    name.lower())
        return []
    click = name == "Click"
    return [ProviderEvent(
        CLICK if click else OPEN, tuple(emails), message_id, str(message.get("MessageId")),
        url=text_or_none(detail.get("link")) if click else None,
        agent=agent_of(detail.get("userAgent")), ip=text_or_none(detail.get("ipAddress")),
        at=moment(detail.get("timestamp")))]
