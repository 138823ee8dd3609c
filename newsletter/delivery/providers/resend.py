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

A request that may have gone out (no answer in time, the connection dropped
after sending, a 200 that is not Resend's answer) is not retried at once
under its key either: Resend answers a repeat of a request still in progress
with 409, and a slow API would turn each retry into another wait. Its rows
become uncertain and the send stops. `--retry-uncertain` re-queues them in
their order, so the stopped batch usually regroups as it was and carries the
same key: Resend then replays its first answer instead of sending again.

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
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from newsletter.delivery.providers.base import CredentialsAnswer, DeliveryResult, Outcome
from newsletter.delivery.providers.bisect import Refused, bisect_batch
from newsletter.delivery.providers.http import (
    HTTPProvider,
    b64,
    custom_headers,
    reply_to,
    send_in_parts,
    unfold,
)
from newsletter.settings import Option

if TYPE_CHECKING:
    import httpx

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
    options: ClassVar[Mapping[str, Option]] = HTTPProvider.options
    credentials_path = "/domains"  # the account's domains: read-only
    spf_include = "amazonses.com"  # Resend sends through SES (its send subdomain's record)
    default_dkim_selector = "resend"

    def read_credentials_answer(self, path: str, response: httpx.Response) -> CredentialsAnswer:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 401 and isinstance(body, dict) and \
                body.get("name") == "restricted_api_key":
            # A "sending access" key may not list domains: it is valid, which is the question.
            return CredentialsAnswer(f"resend accepted the API key (a sending-only key: GET "
                                     f"{path} is not allowed to it)")
        answer = super().read_credentials_answer(path, response)
        domains = body.get("data") if isinstance(body, dict) else None
        mine = self.settings.sender_address.rpartition("@")[2].lower()
        if not isinstance(domains, list) or not mine:
            return answer
        for domain in domains:
            if isinstance(domain, dict) and str(domain.get("name", "")).lower() == mine:
                status = domain.get("status")
                if status != "verified":
                    return CredentialsAnswer(answer.detail, f"Resend says the domain {mine} is "
                                             f"{status}: finish its DNS records in Resend")
                return answer
        return CredentialsAnswer(answer.detail, f"the From domain {mine} is not among this "
                                 "Resend account's domains: add and verify it in Resend")

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
        return send_in_parts(messages, parts, self.send_part, self.name)

    def send_part(self, part: list[Message] | Message) -> list[DeliveryResult]:
        if isinstance(part, list):
            return self.send_batch(part)
        return self.send_single(part)

    def send_single(self, message: Message) -> list[DeliveryResult]:
        """POST /emails for one message (with attachments)."""
        response = self.post_json("/emails", self.payload(message), idempotency_key([message]))
        if response.status_code == 200:
            body = self.answer(response, lambda b: isinstance(b, dict) and "id" in b)
            return [DeliveryResult(message.key, Outcome.SENT, provider_id=str(body["id"] or ""))]
        return [self.refused(message, response)]

    def send_batch(self, messages: list[Message]) -> list[DeliveryResult]:
        """POST /emails/batch; a refused batch is split to find the messages at fault."""
        return bisect_batch(messages, self.post_batch)

    def post_batch(self, messages: list[Message]) -> list[DeliveryResult]:
        """One /emails/batch request; Refused when it is refused as a whole (to split)."""
        body = [self.payload(m) for m in messages]
        response = self.post_json("/emails/batch", body, idempotency_key(messages))
        if response.status_code == 200:
            # Resend documents {"data": [{"id": …}, …]}, one entry per email, in order.
            data = self.answer(response, lambda b: isinstance(b, dict)
                               and isinstance(b.get("data"), list))["data"]
            ids = [str(item.get("id") or "") if isinstance(item, dict) else "" for item in data]
            if len(ids) != len(messages):
                ids = [""] * len(messages)
            return [DeliveryResult(m.key, Outcome.SENT, provider_id=i)
                    for m, i in zip(messages, ids, strict=True)]
        results = [self.refused(m, response) for m in messages]
        if response.status_code in (400, 422) and len(messages) > 1:
            raise Refused(results)
        return results

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
