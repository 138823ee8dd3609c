"""SendGrid v3: `POST /v3/mail/send`, Bearer key, up to 1000 personalizations a request.

One request carries one body for all its personalizations. A newsletter's
messages differ per reader (the unsubscribe link, the address, the name, any
attribute the layout shows), so the request carries the issue's template
with SendGrid `substitutions` tags (`%nl_unsubscribe_url_1%` → that reader's
link), each personalization that reader's values as personalize() filled
them in (`merge.py`), and that reader's own headers (List-Unsubscribe,
Message-ID, …), which SendGrid allows per personalization. A message the
tags cannot express exactly goes out whole in its own request. So each
reader gets exactly the message that was personalized for them, and a
typical issue still needs one request per thousand readers.

202 means the whole request was accepted (id in `X-Message-Id`). A 400 names
the bad fields (`personalizations.3.to.0.email`): those messages fail and the
others of the request are retried at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from newsletter.delivery.providers.base import CredentialsAnswer, DeliveryResult, Outcome
from newsletter.delivery.providers.http import (
    HTTPProvider,
    attachment_key,
    b64,
    custom_headers,
    reply_to,
    send_in_parts,
    split_address,
    unfold,
)
from newsletter.delivery.providers.merge import MergeGroup, TagSyntax, merge_groups
from newsletter.errors import ProviderError
from newsletter.settings import Option

if TYPE_CHECKING:
    import httpx

    from newsletter.compose.message import Message

_FIELD_INDEX = re.compile(r"personalizations\.(\d+)")
MAX_SUBSTITUTION_BYTES = 10_000  # per personalization, as documented
SYNTAX = TagSyntax("%nl_")


def tag(var: str) -> str:
    """The substitution tag of one per-recipient variable."""
    return SYNTAX.tag(var)


def substitutions_fit(values: dict[str, str]) -> bool:
    """Whether one reader's substitutions stay within SendGrid's 10,000 bytes."""
    # Counted as JSON with every non-ASCII character escaped (at least what SendGrid
    # counts): at most 12 bytes a character, so only long values need counting.
    if sum(len(k) + len(v) + 8 for k, v in values.items()) * 12 <= MAX_SUBSTITUTION_BYTES:
        return True
    subs = {tag(k): v for k, v in values.items()}
    return len(json.dumps(subs).encode()) <= MAX_SUBSTITUTION_BYTES


class SendGridProvider(HTTPProvider):
    """SendGrid's v3 Mail Send API (https://sendgrid.com)."""

    name = "sendgrid"
    description = "SendGrid v3 Mail Send: personalizations, up to 1000 readers a request"
    max_batch: ClassVar[int] = 1000
    default_rate: ClassVar[float | None] = None  # SendGrid documents no fixed Mail Send rate
    default_endpoint = "https://api.sendgrid.com"
    default_key_env = "SENDGRID_API_KEY"
    options: ClassVar[Mapping[str, Option]] = {**HTTPProvider.options,
        "track_opens": Option(bool, False, "the provider's open tracking"),
        "track_clicks": Option(bool, False, "the provider's click tracking"),
    }

    credentials_path = "/v3/scopes"  # the key's permissions: read-only
    spf_include = "sendgrid.net"
    default_dkim_selector = "s1"  # domain authentication's s1._domainkey (and s2)

    def read_credentials_answer(self, path: str, response: httpx.Response) -> CredentialsAnswer:
        answer = super().read_credentials_answer(path, response)
        try:
            scopes = response.json().get("scopes")
        except (ValueError, AttributeError):
            scopes = None
        if isinstance(scopes, list) and "mail.send" not in scopes:
            raise ProviderError(
                f"the SendGrid key in ${self.key_env} works but lacks the Mail Send "
                "permission: give it \"Mail Send\" access in SendGrid's API key settings"
            )
        return answer

    def build_requests(self, messages: Sequence[Message]) -> list[tuple[list[Message], bytes]]:
        """The requests for one batch: (the messages each carries, its JSON body)."""
        requests = []
        # Messages can share a body only with the same sender, reply-to and images.
        by_envelope: dict[tuple[Any, ...], list[Message]] = {}
        for message in messages:
            envelope = (message.from_header, reply_to(message), attachment_key(message.attachments))
            by_envelope.setdefault(envelope, []).append(message)
        for group_messages in by_envelope.values():
            for group in merge_groups(group_messages, SYNTAX, fits=substitutions_fit):
                requests.append((group.messages, self.body(group)))
        return requests

    def body(self, group: MergeGroup) -> bytes:
        """One /v3/mail/send body for messages sharing one template."""
        first = group.messages[0]
        subject, html, text = unfold(group.subject), group.html, group.text
        personalizations = []
        for message, values in zip(group.messages, group.values, strict=True):
            name, addr = split_address(message.to_header)
            to: dict[str, str] = {"email": message.recipient or addr}
            if name:
                to["name"] = name
            item: dict[str, Any] = {"to": [to]}
            headers = dict(custom_headers(message))
            if headers:
                item["headers"] = headers
            if values:
                item["substitutions"] = {tag(k): v for k, v in values.items()}
            item["custom_args"] = {"newsletter_key": message.key}
            personalizations.append(item)
        from_name, from_addr = split_address(first.from_header)
        sender: dict[str, str] = {"email": from_addr}
        if from_name:
            sender["name"] = from_name
        content = []
        # SendGrid wants text/plain before text/html.
        if text:
            content.append({"type": "text/plain", "value": text})
        if html:
            content.append({"type": "text/html", "value": html})
        body: dict[str, Any] = {
            "personalizations": personalizations,
            "from": sender,
            "subject": subject,
            "content": content,
            # Click tracking would rewrite the unsubscribe link: off unless asked for.
            "tracking_settings": {
                "click_tracking": {"enable": bool(self.provider_settings.get("track_clicks",
                                                                             False))},
                "open_tracking": {"enable": bool(self.provider_settings.get("track_opens",
                                                                            False))},
            },
        }
        if (value := reply_to(first)) is not None:
            rname, raddr = split_address(value)
            body["reply_to"] = {"email": raddr, **({"name": rname} if rname else {})}
        if first.attachments:
            body["attachments"] = [
                {"content": b64(a.data), "type": a.content_type, "filename": a.filename,
                 "disposition": "inline", "content_id": a.cid}
                for a in first.attachments
            ]
        return json.dumps(body, ensure_ascii=False).encode()

    def send(self, messages: Sequence[Message]) -> list[DeliveryResult]:
        """Send the batch in as few requests as its contents allow; one result per message."""
        parts = self.build_requests(messages)
        return send_in_parts(messages, parts, lambda part: self.send_request(*part), self.name)

    def send_request(self, group: list[Message], body: bytes) -> list[DeliveryResult]:
        """POST one body; map the answer onto each message it carried."""
        response = self.request("POST", "/v3/mail/send", content=body,
                                headers={"Content-Type": "application/json"})
        if response.status_code in (200, 202):
            # SendGrid answers 202 (200 in sandbox mode) with an empty body; anything
            # else there is a proxy's page, not SendGrid's word that it took the mail.
            if response.content.strip():
                self.answer(response, lambda body: False)
            message_id = response.headers.get("x-message-id")
            return [DeliveryResult(m.key, Outcome.SENT, provider_id=message_id) for m in group]
        reason = self.reason(response)
        error = f"sendgrid HTTP {response.status_code}: {reason}"
        bad = self.bad_personalizations(response)
        if bad and len(group) > 1 and bad <= set(range(len(group))):
            # Only some readers were refused: fail those, retry the rest straight away.
            return [
                DeliveryResult(m.key, Outcome.FAILED, error=error) if i in bad
                else DeliveryResult(m.key, Outcome.RETRY, retry_after=0.0,
                                    error="sendgrid refused another reader of the same request")
                for i, m in enumerate(group)
            ]
        return [DeliveryResult(m.key, Outcome.FAILED, error=error) for m in group]

    @staticmethod
    def bad_personalizations(response: Any) -> set[int]:
        """Indexes of personalizations named by the `field`s of a 400 answer."""
        try:
            errors = response.json().get("errors", [])
        except (ValueError, AttributeError):
            return set()
        found = set()
        for error in errors if isinstance(errors, list) else []:
            match = _FIELD_INDEX.match(str(error.get("field") or "")) if isinstance(
                error, dict) else None
            if match is None:
                return set()  # an error about the whole request: it applies to everyone
            found.add(int(match.group(1)))
        return found
