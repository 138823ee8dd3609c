"""Requests signed as each provider signs them, with keys made here (for the webhook tests)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from newsletter.feedback.webhooks import WebhookRequest

URL = "https://letter.example/webhooks/"
POSTMARK_USER, POSTMARK_PASSWORD = "postmark-hook", "pm-" + "p" * 30
MAILGUN_KEY = "key-" + "m" * 32
RESEND_SECRET = "whsec_" + base64.b64encode(b"r" * 24).decode()
SENDGRID_PRIVATE = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_PRIVATE.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-feedback"

ENV = {
    "NL_POSTMARK_USER": POSTMARK_USER,
    "NL_POSTMARK_PASSWORD": POSTMARK_PASSWORD,
    "NL_SENDGRID_KEY": SENDGRID_PUBLIC,
    "NL_MAILGUN_KEY": MAILGUN_KEY,
    "NL_RESEND_SECRET": RESEND_SECRET,
}
TABLE: dict[str, Any] = {
    "postmark_user_env": "NL_POSTMARK_USER",
    "postmark_password_env": "NL_POSTMARK_PASSWORD",
    "sendgrid_public_key_env": "NL_SENDGRID_KEY",
    "mailgun_signing_key_env": "NL_MAILGUN_KEY",
    "resend_secret_env": "NL_RESEND_SECRET",
    "ses_enabled": True,
}


def request(provider: str, body: bytes, headers: dict[str, str] | None = None) -> WebhookRequest:
    return WebhookRequest(provider, URL + provider, headers or {}, body, "192.0.2.1")


def postmark(payload: dict[str, Any], password: str = POSTMARK_PASSWORD) -> WebhookRequest:
    auth = base64.b64encode(f"{POSTMARK_USER}:{password}".encode()).decode()
    return request("postmark", json.dumps(payload).encode(), {"authorization": f"Basic {auth}"})


def sendgrid(events: list[dict[str, Any]], timestamp: int | None = None,
             key: ec.EllipticCurvePrivateKey = SENDGRID_PRIVATE) -> WebhookRequest:
    body = json.dumps(events).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return request("sendgrid", body, {
        "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
        "x-twilio-email-event-webhook-timestamp": ts,
    })


def mailgun(event_data: dict[str, Any], timestamp: int | None = None, token: str | None = None,
            key: str = MAILGUN_KEY) -> WebhookRequest:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    body = {"signature": {"timestamp": ts, "token": token, "signature": signature},
            "event-data": event_data}
    return request("mailgun", json.dumps(body).encode())


def svix_signature(secret: str, msg_id: str, ts: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def resend(payload: dict[str, Any], msg_id: str | None = None, timestamp: int | None = None,
           extra_signatures: tuple[str, ...] = (), secret: str = RESEND_SECRET) -> WebhookRequest:
    body = json.dumps(payload).encode()
    msg_id = msg_id or "msg_" + secrets.token_hex(8)
    ts = str(int(time.time()) if timestamp is None else timestamp)
    header = " ".join([*extra_signatures, svix_signature(secret, msg_id, ts, body)])
    return request("resend", body, {"svix-id": msg_id, "svix-timestamp": ts,
                                    "svix-signature": header})


class SnsHost:
    """A local stand-in for sns.<region>.amazonaws.com: serves the signing certificate and
    answers SubscribeURL GETs, counting both."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=30))
                .sign(self.key, hashes.SHA256()))
        self.pem = cert.public_bytes(serialization.Encoding.PEM)
        self.cert_gets = 0
        self.confirmations: list[str] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.endswith(".pem"):
                    host.cert_gets += 1
                    body = host.pem
                else:
                    host.confirmations.append(self.path)
                    body = b"<ConfirmSubscriptionResponse/>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.netloc = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def cert_url(self) -> str:
        return f"http://{self.netloc}/SimpleNotificationService-test.pem"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def message(self, msg_type: str, fields: dict[str, str], version: str = "2",
                cert_url: str | None = None) -> dict[str, Any]:
        """An SNS message signed the way SNS signs it (SignatureVersion 1: SHA1, 2: SHA256)."""
        message = {
            "Type": msg_type, "MessageId": secrets.token_hex(16), "TopicArn": TOPIC,
            "Timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z",
            **fields, "SignatureVersion": version, "SigningCertURL": cert_url or self.cert_url,
        }
        order = ["Message", "MessageId", "Subject", "SubscribeURL", "Timestamp", "Token",
                 "TopicArn", "Type"]
        signed = "".join(f"{k}\n{message[k]}\n" for k in order if k in message).encode()
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(signed, padding.PKCS1v15(), algorithm)
        message["Signature"] = base64.b64encode(signature).decode()
        return message

    def notification(self, ses: dict[str, Any], version: str = "2") -> dict[str, Any]:
        return self.message("Notification", {"Message": json.dumps(ses)}, version)


def ses_request(message: dict[str, Any]) -> WebhookRequest:
    return request("ses", json.dumps(message).encode(),
                   {"x-amz-sns-message-type": message["Type"]})


def ses_bounce(email: str, bounce_type: str = "Permanent") -> dict[str, Any]:
    return {"notificationType": "Bounce", "mail": {"messageId": "m1"}, "bounce": {
        "bounceType": bounce_type, "bounceSubType": "General", "feedbackId": "fb1",
        "timestamp": "2026-12-01T10:00:00.000Z",
        "bouncedRecipients": [{"emailAddress": email, "diagnosticCode": "smtp; 550 5.1.1"}]}}
