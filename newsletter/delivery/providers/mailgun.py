"""Mailgun: `POST /v3/{domain}/messages` (multipart form), Basic auth `api:KEY`, ≤1000 `to`.

Batch sending puts many `to` fields in one request. Without
`recipient-variables` Mailgun would send ONE message whose To lists everyone,
so every request here carries recipient-variables, keyed by address, and
Mailgun sends each reader a message addressed to them alone.

Per-reader values go through `%recipient.x%`: the request carries the
issue's template (html, text) with a variable wherever a reader's value goes
(unsubscribe link, address, name, any attribute the layout shows), and each
reader's values as personalize() filled them in (`merge.py`); headers that
differ between readers (List-Unsubscribe, Message-ID) become `h:` headers
whose values are variables too. A message the variables cannot express
exactly goes alone, without recipient-variables, so Mailgun sends it as it
is. Settings: `domain` (required), `region = "eu"` for the EU endpoint, or
`endpoint`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from newsletter.delivery.providers.base import CredentialsAnswer, DeliveryResult, Outcome
from newsletter.delivery.providers.fields import form_dict
from newsletter.delivery.providers.http import (
    HTTPProvider,
    attachment_key,
    custom_headers,
    reply_to,
    send_in_parts,
    unfold,
)
from newsletter.delivery.providers.merge import MergeGroup, TagSyntax, merge_groups
from newsletter.errors import ConfigError, ProviderError
from newsletter.settings import Option

if TYPE_CHECKING:
    import httpx

    from newsletter.compose.message import Message

ENDPOINTS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
# Any "%recipient." is a variable to Mailgun, ours or not: that is what must not occur
# where no variable of ours is.
SYNTAX = TagSyntax("%recipient.", prefix="nl_")


def tag(var: str) -> str:
    """How a per-recipient variable is written in the shared body."""
    return SYNTAX.tag(var)


def _header_holds_variable(message: Message) -> bool:
    """Per-reader headers become variables: one holding Mailgun's syntax goes whole."""
    return any(SYNTAX.opener in value for _, value in custom_headers(message))


class MailgunProvider(HTTPProvider):
    """Mailgun's messages API (https://www.mailgun.com)."""

    name = "mailgun"
    description = "Mailgun messages API: batch sending with recipient-variables, 1000 a request"
    max_batch: ClassVar[int] = 1000
    default_rate: ClassVar[float | None] = None  # limits depend on the plan; none documented
    default_key_env = "MAILGUN_API_KEY"
    options: ClassVar[Mapping[str, Option]] = {
        **HTTPProvider.options,
        "domain": Option(str, None, 'your sending domain, like domain = "mg.example.com"',
                         required=True),
        "region": Option(str, "us", "us or eu (ignored when endpoint is set)",
                         choices=tuple(ENDPOINTS)),
        "track_opens": Option(bool, False, "the provider's open tracking"),
        "track_clicks": Option(bool, False, "the provider's click tracking"),
    }

    @property
    def endpoint(self) -> str:
        explicit = self.provider_settings.get("endpoint")
        if explicit:
            return str(explicit).rstrip("/")
        region = str(self.provider_settings.get("region", "us")).lower()
        if region not in ENDPOINTS:
            raise ConfigError(
                f'provider.region = "{region}" is not a Mailgun region: use "us" or "eu"'
            )
        return ENDPOINTS[region]

    @property
    def domain(self) -> str:
        value = self.provider_settings.get("domain")
        if not value:
            raise ConfigError(
                "Mailgun needs your sending domain: set [provider] domain = \"mg.example.com\" "
                "in newsletter.toml"
            )
        return str(value)

    def open(self) -> None:
        self.domain  # noqa: B018 -- check the setting before anything goes out
        super().open()

    credentials_path = "/v3/domains/{domain}"  # the sending domain, read-only
    spf_include = "mailgun.org"

    def credentials_request_path(self) -> str:
        return self.credentials_path.format(domain=self.domain)

    def read_credentials_answer(self, path: str, response: httpx.Response) -> CredentialsAnswer:
        if response.status_code == 404:
            raise ProviderError(
                f"Mailgun accepted the API key but has no domain {self.domain} in this account "
                "(or region): check [provider] domain and region"
            )
        answer = super().read_credentials_answer(path, response)
        try:
            state = response.json().get("domain", {}).get("state")
        except (ValueError, AttributeError):
            state = None
        if state is not None and state != "active":
            return CredentialsAnswer(
                answer.detail, f"Mailgun says the domain {self.domain} is {state}: finish its "
                "DNS verification in Mailgun's Domains page")
        return answer

    def auth_headers(self, key: str) -> dict[str, str]:
        token = base64.b64encode(f"api:{key}".encode()).decode()
        self.remember_login("api", key)
        return {"Authorization": f"Basic {token}"}

    def build_requests(
        self, messages: Sequence[Message]
    ) -> list[tuple[list[Message], list[tuple[str, str]], list[Any]]]:
        """(messages, form fields, files) for each request of one batch."""
        by_envelope: dict[tuple[Any, ...], list[Message]] = {}
        for message in messages:
            header_names = tuple(k for k, _ in custom_headers(message))
            envelope = (message.from_header, message.subject, reply_to(message), header_names,
                        attachment_key(message.attachments))
            by_envelope.setdefault(envelope, []).append(message)
        requests = []
        for group_messages in by_envelope.values():
            for group in merge_groups(group_messages, SYNTAX,
                                      keep_whole=_header_holds_variable):
                for part in _unique_recipients(group):
                    data, files = self.form(part)
                    if part.whole:  # without recipient-variables Mailgun substitutes nothing
                        data = [(k, v) for k, v in data if k != "recipient-variables"]
                    requests.append((part.messages, data, files))
        return requests

    def form(self, group: MergeGroup) -> tuple[list[tuple[str, str]], list[Any]]:
        """The form fields and inline files of one request."""
        first = group.messages[0]
        html, text = group.html, group.text
        variables: dict[str, dict[str, str]] = {
            m.recipient: {f"nl_{k}": v for k, v in values.items()}
            for m, values in zip(group.messages, group.values, strict=True)
        }
        data: list[tuple[str, str]] = [
            ("from", unfold(first.from_header)),
            ("subject", unfold(first.subject)),
        ]
        data += [("to", unfold(m.to_header)) for m in group.messages]
        if html:
            data.append(("html", html))
        if text:
            data.append(("text", text))
        if (value := reply_to(first)) is not None:
            data.append(("h:Reply-To", value))
        # Headers equal for everyone are sent as they are; the others become variables.
        per_message = [custom_headers(m) for m in group.messages]
        for index, (header, value) in enumerate(per_message[0]):
            values = [headers[index][1] for headers in per_message]
            if all(v == value for v in values):
                data.append((f"h:{header}", value))
            else:
                var = f"nl_h{index}"
                data.append((f"h:{header}", f"%recipient.{var}%"))
                for message, v in zip(group.messages, values, strict=True):
                    variables[message.recipient][var] = v
        data.append(("recipient-variables", json.dumps(variables, ensure_ascii=False)))
        # Tracking rewrites links, the unsubscribe link too: off unless asked for.
        data.append(("o:tracking-clicks", "yes" if self.provider_settings.get("track_clicks")
                     else "no"))
        data.append(("o:tracking-opens", "yes" if self.provider_settings.get("track_opens")
                     else "no"))
        # Mailgun names an inline image by its file name: cid:<filename>.
        files = [("inline", (a.cid, a.data, a.content_type)) for a in first.attachments]
        return data, files

    def send(self, messages: Sequence[Message]) -> list[DeliveryResult]:
        """Send the batch in as few requests as its contents allow; one result per message."""
        parts = self.build_requests(messages)
        return send_in_parts(messages, parts, lambda part: self.send_request(*part), self.name)

    def send_request(self, group: list[Message], data: list[tuple[str, str]],
                     files: list[Any]) -> list[DeliveryResult]:
        """POST one form; map the answer onto each message it carried."""
        # httpx encodes multipart/form-data when there are inline images and a plain
        # urlencoded form otherwise; Mailgun documents both.
        response = self.request("POST", f"/v3/{self.domain}/messages", data=form_dict(data),
                                files=files or None)
        if response.status_code == 200:
            # Mailgun documents {"id": "<…>", "message": "Queued. Thank you."}.
            body = self.answer(response, lambda b: isinstance(b, dict) and "id" in b)
            message_id = str(body.get("id") or "")
            return [DeliveryResult(m.key, Outcome.SENT, provider_id=message_id) for m in group]
        error = f"mailgun HTTP {response.status_code}: {self.reason(response)}"
        named = [m for m in group if m.recipient.lower() in error.lower()]
        if response.status_code == 400 and named and len(named) < len(group):
            # Mailgun refuses the whole request for one bad address, and names it: that
            # reader fails, the others are handed back to go out again at once.
            return [
                DeliveryResult(m.key, Outcome.FAILED, error=error) if m in named
                else DeliveryResult(m.key, Outcome.RETRY, retry_after=0.0,
                                    error="mailgun refused another reader of the same request")
                for m in group
            ]
        return [DeliveryResult(m.key, Outcome.FAILED, error=error) for m in group]


def _unique_recipients(group: MergeGroup) -> list[MergeGroup]:
    """Split a group so no address appears twice (recipient-variables are keyed by address)."""
    parts: list[MergeGroup] = []
    holds: list[set[str]] = []  # the addresses each part has
    for message, values in zip(group.messages, group.values, strict=True):
        index = next((i for i, seen in enumerate(holds) if message.recipient not in seen), None)
        if index is None:
            index = len(parts)
            parts.append(group.same_body())
            holds.append(set())
        holds[index].add(message.recipient)
        parts[index].messages.append(message)
        parts[index].values.append(values)
    return parts
