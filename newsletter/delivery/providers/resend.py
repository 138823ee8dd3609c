"""Resend: `POST /emails/batch` (≤100 emails), Bearer key, `Idempotency-Key` (kept 24 h).

Every request carries an Idempotency-Key made from its messages' delivery
keys (plus recipient and subject, so two newsletters sharing an API key
cannot collide): the same batch sent again (a retry after a timeout, a
resume that regroups nothing) gets Resend's first answer back instead of
going out twice.

That key covers a request, not a message, and the campaign may regroup rows
when it resumes after a crash: a row caught mid-send could then travel in a
batch with another key and go out twice. So the adapter does not claim to be
`idempotent`: such rows are reported uncertain, as with SMTP, and re-sent
only with `--retry-uncertain`. (One request per message would make every
delivery idempotent, at 2 messages a second.)

Resend validates a batch as a whole: one bad address refuses all of it. A
refused batch is split in halves to find the messages at fault (each half
under its own key); when the first half fails for the same reason as the
whole, and that reason names none of the readers, the fault is the
request's, not a reader's, and everything fails without more requests.
Messages with inline images go one by one to `/emails` (the batch endpoint
takes no attachments). Default pace: 2 requests a second, Resend's
documented limit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from newsletter.delivery.providers.base import DeliveryResult, Outcome, TransientBatchError
from newsletter.delivery.providers.http import (
    HTTPProvider,
    b64,
    custom_headers,
    reply_to,
    send_in_parts,
    unfold,
)
from newsletter.errors import ProviderError

if TYPE_CHECKING:
    from newsletter.compose.message import Message


def idempotency_key(messages: Sequence[Message]) -> str:
    """A key that names exactly these deliveries, in this order (≤256 characters)."""
    digest = hashlib.sha256()
    for message in messages:
        digest.update(f"{message.key}\0{message.recipient}\0{message.subject}\n".encode())
    return f"newsletter-{len(messages)}-{digest.hexdigest()}"


class ResendProvider(HTTPProvider):
    """Resend's email API (https://resend.com)."""

    name = "resend"
    description = "Resend API: /emails/batch, 100 a request, idempotency keys"
    max_batch: ClassVar[int] = 100
    default_rate: ClassVar[float | None] = 2.0  # requests per second, Resend's default limit
    idempotent: ClassVar[bool] = False  # per request, not per message: see above
    default_endpoint = "https://api.resend.com"
    default_key_env = "RESEND_API_KEY"

    def payload(self, message: Message) -> dict[str, Any]:
        """One email in Resend's JSON form."""
        item: dict[str, Any] = {
            "from": unfold(message.from_header),
            "to": [unfold(message.to_header)],
            "subject": unfold(message.subject),
        }
        if message.html:
            item["html"] = message.html
        if message.text:
            item["text"] = message.text
        # Message-ID is left to Resend: a generated one would change between a send and
        # its resume, and the same Idempotency-Key with another payload is refused (409).
        headers = dict(custom_headers(message, skip=("Message-ID",)))
        if headers:
            item["headers"] = headers
        if (value := reply_to(message)) is not None:
            item["reply_to"] = value
        if message.attachments:
            item["attachments"] = [
                {"filename": a.filename, "content": b64(a.data), "content_type": a.content_type,
                 "content_id": a.cid}
                for a in message.attachments
            ]
        return item

    def send(self, messages: Sequence[Message]) -> list[DeliveryResult]:
        """Batch what the batch endpoint takes; inline images go one by one."""
        plain = [m for m in messages if not m.attachments]
        parts: list[Any] = [plain] if plain else []
        parts += [m for m in messages if m.attachments]
        return send_in_parts(messages, parts, self.send_part)

    def send_part(self, part: list[Message] | Message) -> list[DeliveryResult]:
        if isinstance(part, list):
            return self.send_batch(part)
        return self.send_single(part)

    def send_single(self, message: Message) -> list[DeliveryResult]:
        """POST /emails for one message (with attachments)."""
        response = self.post_json("/emails", self.payload(message), idempotency_key([message]))
        if response.status_code == 200:
            return [DeliveryResult(message.key, Outcome.SENT,
                                   provider_id=str(response.json().get("id") or ""))]
        return [self.refused(message, response)]

    def send_batch(self, messages: list[Message]) -> list[DeliveryResult]:
        """POST /emails/batch; a refused batch is split to find the messages at fault.

        When a later request of the search is throttled or refused as a whole,
        the search stops: what was settled stays settled, the rest is RETRY
        (raised as usual when nothing was settled yet).
        """
        settled: dict[str, DeliveryResult] = {}
        try:
            self._search(messages, settled)
        except (TransientBatchError, ProviderError) as exc:
            if not settled:
                raise
            wait = exc.retry_after if isinstance(exc, TransientBatchError) else None
            reason = exc.reason if isinstance(exc, TransientBatchError) else str(exc)
            for m in messages:
                settled.setdefault(m.key, DeliveryResult(m.key, Outcome.RETRY, error=reason,
                                                         retry_after=wait))
        return [settled[m.key] for m in messages]

    def _search(self, messages: list[Message], settled: dict[str, DeliveryResult]) -> None:
        body = [self.payload(m) for m in messages]
        response = self.post_json("/emails/batch", body, idempotency_key(messages))
        if response.status_code == 200:
            data = response.json().get("data") or []
            ids = [str(item.get("id") or "") for item in data]
            if len(ids) != len(messages):
                ids = [""] * len(messages)
            for m, i in zip(messages, ids, strict=True):
                settled[m.key] = DeliveryResult(m.key, Outcome.SENT, provider_id=i)
            return
        if len(messages) == 1 or response.status_code not in (400, 422):
            for m in messages:
                settled[m.key] = self.refused(m, response)
            return
        whole = self.refused(messages[0], response).error
        half = len(messages) // 2
        self._search(messages[:half], settled)
        blames_nobody = not any(m.recipient.lower() in (whole or "").lower() for m in messages)
        if half > 1 and blames_nobody and all(
            settled[m.key].outcome is Outcome.FAILED and settled[m.key].error == whole
            for m in messages[:half]
        ):
            # The request itself is wrong (sender, fields): no reader is to blame.
            for m in messages[half:]:
                settled[m.key] = DeliveryResult(m.key, Outcome.FAILED, error=whole)
            return
        self._search(messages[half:], settled)

    def post_json(self, path: str, body: Any, key: str) -> Any:
        return self.request(
            "POST", path, content=json.dumps(body, ensure_ascii=False).encode(),
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
        )

    def refused(self, message: Message, response: Any) -> DeliveryResult:
        """A per-message refusal (400/409/422/…) as a FAILED or RETRY result."""
        reason = self.reason(response)
        try:
            name = str(response.json().get("name", ""))
        except (ValueError, AttributeError):
            name = ""
        if name == "concurrent_idempotent_requests":
            return DeliveryResult(message.key, Outcome.RETRY, retry_after=1.0,
                                  error=f"resend: {reason}")
        if name == "invalid_idempotent_request":
            reason += (" (the same delivery was sent before with other content: check "
                       "Resend's log before sending it again)")
        return DeliveryResult(message.key, Outcome.FAILED,
                              error=f"resend HTTP {response.status_code}: {reason}")
