"""Postmark: `POST /email/batch` (≤500 messages, ≤50 MB), header `X-Postmark-Server-Token`.

The batch endpoint answers 200 even when some messages fail: each entry of
the answer carries its own `ErrorCode` (0 = accepted, 406 = inactive
recipient, …), read one by one. A whole request refused with 422 carries one
ErrorCode for all. Newsletters belong on a broadcast stream: set
`message_stream` (default "broadcast").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from newsletter.delivery.providers.base import (
    CredentialsAnswer,
    DeliveryResult,
    Outcome,
    TransientBatchError,
)
from newsletter.delivery.providers.http import (
    HTTPProvider,
    b64,
    custom_headers,
    reply_to,
    send_in_parts,
    unfold,
)
from newsletter.errors import ProviderError
from newsletter.settings import Option

if TYPE_CHECKING:
    import httpx

    from newsletter.compose.message import Message

MAX_BATCH_BYTES = 50 * 1024 * 1024
# ErrorCodes that are about the account or sender, not the recipient: every
# message would fail the same way, so the send stops and the rest stays queued.
ACCOUNT_CODES = {10: "bad or missing server token", 400: "sender signature not found",
                 401: "sender signature not confirmed", 405: "account not allowed to send",
                 412: "account is pending", 413: "account may not send"}
TRANSIENT_CODES = {429}  # rate limited inside a batch answer


class PostmarkProvider(HTTPProvider):
    """Postmark's batch email API (https://postmarkapp.com)."""

    name = "postmark"
    description = "Postmark HTTP API: /email/batch, up to 500 messages a request"
    max_batch: ClassVar[int] = 500
    default_rate: ClassVar[float | None] = None  # Postmark documents no fixed request rate
    default_endpoint = "https://api.postmarkapp.com"
    default_key_env = "POSTMARK_SERVER_TOKEN"
    options: ClassVar[Mapping[str, Option]] = {
        **HTTPProvider.options,
        "message_stream": Option(str, "broadcast", "the Postmark message stream"),
        "track_opens": Option(bool, False, "the provider's open tracking"),
        "track_clicks": Option(bool, False, "the provider's click tracking"),
    }
    key_label = "server token"
    credentials_path = "/server"  # "Get the server": read-only, with the server token
    spf_include = "spf.mtasv.net"

    def read_credentials_answer(self, path: str, response: httpx.Response) -> CredentialsAnswer:
        answer = super().read_credentials_answer(path, response)
        try:
            name = response.json().get("Name")
        except (ValueError, AttributeError):
            name = None
        if name:
            return CredentialsAnswer(f"postmark server {str(name)!r} accepted the server token "
                                     f"(GET {path})")
        return answer

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"X-Postmark-Server-Token": key}

    def payload(self, message: Message) -> dict[str, Any]:
        """One message in Postmark's JSON form."""
        item: dict[str, Any] = {
            "From": unfold(message.from_header),
            "To": unfold(message.to_header),
            "Subject": unfold(message.subject),
            "Headers": [{"Name": k, "Value": v} for k, v in custom_headers(message)],
            "MessageStream": str(self.provider_settings.get("message_stream", "broadcast")),
            # Tracking rewrites links (the unsubscribe link too): off unless asked for.
            "TrackOpens": bool(self.provider_settings.get("track_opens", False)),
            "TrackLinks": "HtmlAndText" if self.provider_settings.get("track_clicks") else "None",
        }
        if message.html:
            item["HtmlBody"] = message.html
        if message.text:
            item["TextBody"] = message.text
        if (value := reply_to(message)) is not None:
            item["ReplyTo"] = value
        if message.attachments:
            item["Attachments"] = [
                {"Name": a.filename, "Content": b64(a.data), "ContentType": a.content_type,
                 "ContentID": f"cid:{a.cid}"}
                for a in message.attachments
            ]
        return item

    def build_request(self, messages: Sequence[Message]) -> bytes:
        """The JSON body of one /email/batch request."""
        return json.dumps([self.payload(m) for m in messages], ensure_ascii=False).encode()

    def send(self, messages: Sequence[Message]) -> list[DeliveryResult]:
        """Send up to 500 messages in as few requests as 50 MB allows; one result each, in order."""
        return send_in_parts(messages, self.split(list(messages)), self.send_request, self.name)

    def split(self, messages: list[Message]) -> list[tuple[list[Message], bytes]]:
        """(messages, body) parts: halves until each body fits (only with big inline images)."""
        if not messages:
            return []
        body = self.build_request(messages)
        if len(body) > MAX_BATCH_BYTES and len(messages) > 1:
            half = len(messages) // 2
            return self.split(messages[:half]) + self.split(messages[half:])
        return [(messages, body)]

    def send_request(self, part: tuple[list[Message], bytes]) -> list[DeliveryResult]:
        """POST one /email/batch body; map the answer onto its messages."""
        messages, body = part
        response = self.request(
            "POST", "/email/batch", content=body, headers={"Content-Type": "application/json"}
        )
        if response.status_code == 200:
            # One entry per message, in order: anything else cannot say which went out.
            answer = self.answer(response, lambda a: isinstance(a, list) and len(a) == len(
                messages) and all(isinstance(e, dict) and "ErrorCode" in e for e in a))
            return self.read_batch_answer(messages, answer)
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        code = answer.get("ErrorCode") if isinstance(answer, dict) else None
        reason = self.reason(response)
        if code in ACCOUNT_CODES:
            raise ProviderError(
                f"postmark refused the send (ErrorCode {code}, {ACCOUNT_CODES[code]}: {reason}): "
                "fix the sender or account in Postmark, then run the send again to resume"
            )
        if code in TRANSIENT_CODES:
            raise TransientBatchError(f"postmark ErrorCode {code}: {reason}")
        # Any other refusal of the whole request (413 too large, 422 invalid): each message failed.
        error = f"postmark HTTP {response.status_code} (ErrorCode {code}): {reason}"
        return [DeliveryResult(m.key, Outcome.FAILED, error=error) for m in messages]

    def read_batch_answer(self, messages: Sequence[Message], answer: Any) -> list[DeliveryResult]:
        """Map the batch answer (one entry per message, same order) to results."""
        codes = [entry.get("ErrorCode") for entry in answer]
        if all(code in ACCOUNT_CODES for code in codes) and codes:
            code = codes[0]
            raise ProviderError(
                f"postmark refused every message (ErrorCode {code}, {ACCOUNT_CODES[code]}: "
                f"{self.redact(str(answer[0].get('Message', '')))}): fix the sender or account "
                "in Postmark, then run the send again to resume"
            )
        results = []
        for message, entry in zip(messages, answer, strict=True):
            code = entry.get("ErrorCode")
            text = self.redact(str(entry.get("Message", "")))
            if code == 0:
                results.append(DeliveryResult(message.key, Outcome.SENT,
                                              provider_id=str(entry.get("MessageID") or "")))
            elif code in TRANSIENT_CODES:
                results.append(DeliveryResult(message.key, Outcome.RETRY,
                                              error=f"postmark ErrorCode {code}: {text}"))
            else:
                results.append(DeliveryResult(message.key, Outcome.FAILED,
                                              error=f"postmark ErrorCode {code}: {text}"))
        return results
