"""What every HTTP email API adapter shares: settings, secrets, the transport, batch parts.

An adapter subclasses `HTTPProvider`, names its default endpoint and key
variable, and turns a batch of Messages into requests. `newsletter.http`
sends them and says what a failure means; this module maps that onto the
provider interface the same way for every API:

- 401/403 → `ProviderError` (the send stops, the rest stays queued);
- not sent (connect timeout, 408/429/503/5xx) → `TransientBatchError`, with
  the wait the server asked for: the campaign sends the batch again;
- a server that cannot be reached at all (connection refused) → `ProviderError`;
- maybe sent (read timeout, connection dropped after the body went out, a
  gateway 502/504, a 2xx body the API does not document) → every message of
  that request is UNCERTAIN and the send stops (`ProviderError` carrying the
  results): it is never re-sent without `--retry-uncertain`;
- anything else is left to the adapter (per-message failures).

Keys never leave this module in text: every reason passes through the
provider's `Redactor` (exact, any case, URL-encoded, hex, base64), and the
client's repr carries no headers.

`factor_batch()` serves the APIs (SendGrid, Mailgun) whose batch form shares
one body between recipients: it turns personalized messages back into a shared
template plus per-recipient values, and proves the round trip exact.
"""

from __future__ import annotations

import base64
import email.utils
import html
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from email.header import decode_header, make_header
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from newsletter.delivery.providers.base import (
    DeliveryResult,
    Outcome,
    Provider,
    TransientBatchError,
)
from newsletter.errors import ConfigError, ProviderError
from newsletter.http import MaybeSent, NotSent, Transport, retry_after
from newsletter.redact import REDACTED, Redactor, one_line

if TYPE_CHECKING:
    from newsletter.compose.message import InlineImage, Message

__all__ = ["REDACTED", "HTTPProvider", "MaybeSent", "retry_after", "send_in_parts"]

# Headers an API sets itself or takes in a field of its own, never passed as custom headers.
# Date is left out so the provider stamps the real submission time.
FIELD_HEADERS = frozenset({"from", "to", "subject", "reply-to", "date", "cc", "bcc"})


class HTTPProvider(Provider):
    """Base class of the HTTP API adapters: settings, secrets, one transport, error mapping."""

    rate_unit: ClassVar[str] = "request"
    default_endpoint: ClassVar[str] = ""
    default_key_env: ClassVar[str] = ""
    # What the key is called in error messages ("server token", "API key").
    key_label: ClassVar[str] = "API key"

    _transport: Transport | None = None
    _redactor: Redactor | None = None

    @property
    def endpoint(self) -> str:
        """The API's base URL: the `endpoint` setting, else the provider's public one."""
        value = str(self.provider_settings.get("endpoint") or self.default_endpoint)
        return value.rstrip("/")

    @property
    def key_env(self) -> str:
        """The name (never the value) of the environment variable holding the key."""
        return str(self.provider_settings.get("api_key_env") or self.default_key_env)

    def read_key(self) -> str:
        """The API key from the environment; ConfigError naming the variable when unset."""
        key = self.provider_settings.secret("api_key_env", self.default_key_env)
        assert key is not None  # a default variable name always applies
        return key

    def auth_headers(self, key: str) -> dict[str, str]:
        """Headers that authenticate every request (Bearer by default)."""
        return {"Authorization": f"Bearer {key}"}

    def open(self) -> None:
        """Read the key and make the pooled client (no request yet: the first send checks auth)."""
        endpoint = self.endpoint
        if not endpoint.startswith(("https://", "http://")):
            raise ConfigError(
                f'provider.endpoint = "{endpoint}" is not a URL: write it like '
                f'"{self.default_endpoint or "https://api.example.com"}"'
            )
        try:
            timeout = float(self.provider_settings.get("timeout", 30))
        except (TypeError, ValueError):
            timeout = 0.0
        if timeout <= 0:
            raise ConfigError("provider.timeout must be a number of seconds, like 30")
        key = self.read_key()
        self.remember_secret(key)
        headers = {"Accept": "application/json", **self.auth_headers(key)}
        self._transport = Transport(self.name, endpoint, headers, timeout, self.redactor)

    def close(self) -> None:
        """Close the pooled connections; safe to call twice or after a failed open()."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._redactor is not None:
            self._redactor.clear()

    def __repr__(self) -> str:
        try:
            endpoint = self.endpoint
        except ConfigError:  # a repr must not raise, even with broken settings
            endpoint = "?"
        return f"<{type(self).__name__} endpoint={endpoint!r}>"

    # -- secrets ---------------------------------------------------------

    @property
    def redactor(self) -> Redactor:
        if self._redactor is None:
            self._redactor = Redactor()
        return self._redactor

    def remember_secret(self, *values: str) -> None:
        """Register values that redact() must hide, in every common encoding."""
        self.redactor.add(*values)

    def remember_login(self, user: str, password: str) -> None:
        """Register a password and its user:password (Basic) forms."""
        self.redactor.add_login(user, password)

    def redact(self, text: str) -> str:
        """`text` with every known secret replaced, on one line, cut to a readable length."""
        return one_line(self.redactor(text))

    # -- requests --------------------------------------------------------

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise ProviderError(f"the {self.name} provider is not open: call open() before send()")
        return self._transport

    @property
    def client(self) -> httpx.Client:
        return self.transport.client

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request: TransientBatchError when it was not taken, MaybeSent when it may
        have been, ProviderError when nothing can go out.

        Returns the response for every other status: the adapter reads 2xx and
        per-message 4xx itself (`answer()` for a 2xx body).
        """
        try:
            response = self.transport.request(method, path, **kwargs)
        except NotSent as exc:
            raise TransientBatchError(exc.reason, retry_after=exc.retry_after) from None
        self.raise_for_provider_status(response)
        return response

    def answer(self, response: httpx.Response, check: Callable[[Any], bool]) -> Any:
        """The JSON body of a 2xx answer; MaybeSent when it is not the documented one."""
        return self.transport.json_answer(response, check)

    def raise_for_provider_status(self, response: httpx.Response) -> None:
        """Map the statuses that mean the same on every API: auth."""
        status = response.status_code
        if status in (401, 403):
            what = "refused the" if status == 401 else "does not allow this send with the"
            raise ProviderError(
                f"{self.name} {what} {self.key_label} (HTTP {status}: "
                f"{self.reason(response)}): check ${self.key_env}, its permissions and the "
                "sender's domain; nothing more was sent and the rest stays queued"
            )

    def reason(self, response: httpx.Response) -> str:
        """The server's explanation of an error, redacted and short."""
        return self.transport.reason(response)


def uncertain(messages: Iterable[Message], reason: str) -> list[DeliveryResult]:
    """UNCERTAIN results for messages a request may or may not have delivered."""
    return [DeliveryResult(m.key, Outcome.UNCERTAIN, error=reason) for m in messages]


def stop_uncertain(name: str, exc: MaybeSent, results: list[DeliveryResult]) -> ProviderError:
    """The ProviderError that stops a send after a maybe-sent request, carrying `results`."""
    count = sum(r.outcome is Outcome.UNCERTAIN for r in results)
    error = ProviderError(
        f"{exc.reason}: {count} message(s) may or may not have gone out and are marked "
        f"uncertain (check {name}'s activity log; `--retry-uncertain` sends them again); "
        "nothing more was sent and the rest stays queued"
    )
    error.results = results  # type: ignore[attr-defined]  # read by the campaign
    return error


def send_in_parts(
    messages: Sequence[Message],
    parts: Sequence[Any],
    send_part: Callable[[Any], list[DeliveryResult]],
    name: str = "the provider",
) -> list[DeliveryResult]:
    """Send a batch that takes several requests; results in the order of `messages`.

    Once one request went through, a later one that fails as a whole must not
    make the campaign re-send the batch: its messages (and those after it)
    become RETRY results instead of an exception. Failing on the first
    request raises as usual.

    A request that may have gone out (MaybeSent) stops the send: its messages
    are UNCERTAIN, those answered before keep their results, the later parts
    stay queued (ProviderError carrying the results).
    """
    results: dict[str, DeliveryResult] = {}
    stopped: DeliveryResult | None = None  # the RETRY every later message gets
    for index, part in enumerate(parts):
        if stopped is None:
            try:
                for result in send_part(part):
                    results[result.key] = result
                continue
            except MaybeSent as exc:
                found = getattr(exc, "results", None) or uncertain(part_messages(part),
                                                                   exc.reason)
                done = [*results.values(), *found]
                raise stop_uncertain(name, exc, done) from None
            except (TransientBatchError, ProviderError) as exc:
                if index == 0:
                    raise
                if isinstance(exc, TransientBatchError):
                    stopped = DeliveryResult("", Outcome.RETRY, error=exc.reason,
                                             retry_after=exc.retry_after)
                else:
                    stopped = DeliveryResult("", Outcome.RETRY, error=str(exc))
        for message in part_messages(part):
            results[message.key] = replace(stopped, key=message.key)
    return [results[m.key] for m in messages]


def part_messages(part: Any) -> list[Message]:
    """The messages one part of a batch carries: a Message, or (messages, body…)."""
    if isinstance(part, tuple):
        first = part[0]
        return list(first) if isinstance(first, list | tuple) else [first]
    if isinstance(part, list):
        return part
    return [part]


# -- message helpers shared by the adapters ---------------------------------


def unfold(value: str) -> str:
    """A header value as readable Unicode: RFC 2047 encoded words decoded."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError):
        return value


def split_address(value: str) -> tuple[str, str]:
    """("Name", "addr@example.com") from a From/To header value."""
    name, addr = email.utils.parseaddr(unfold(value))
    return name, addr


def custom_headers(message: Message, skip: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The message's headers an API takes as custom headers (List-Unsubscribe, Message-ID, …)."""
    skipped = FIELD_HEADERS | {name.lower() for name in skip}
    return [(k, unfold(v)) for k, v in message.headers if k.lower() not in skipped]


def reply_to(message: Message) -> str | None:
    """The Reply-To header's value, if the message has one."""
    value = message.header("Reply-To")
    return unfold(value) if value else None


def b64(data: bytes) -> str:
    """Base64 text, as the JSON APIs want attachment content."""
    return base64.b64encode(data).decode("ascii")


def attachment_key(images: Sequence[InlineImage]) -> tuple[tuple[str, str, str, int, int], ...]:
    """A cheap identity for a message's inline images, to group messages that share them."""
    return tuple((i.cid, i.filename, i.content_type, len(i.data), hash(i.data)) for i in images)


# -- shared body + per-recipient values (SendGrid substitutions, Mailgun %recipient.x%) ----


@dataclass
class TemplateGroup:
    """Messages of one batch that share one body once their personal values are taken out."""

    template: tuple[str, ...]  # the shared fields, with tags where personal values were
    messages: list[Message] = field(default_factory=list)
    values: list[dict[str, str]] = field(default_factory=list)  # per message: variable → value
    # Per field, the (variable, tag) pairs it holds: substituting skips the others.
    present: list[list[tuple[str, str]]] | None = field(default=None, repr=False, compare=False)


def personal_values(message: Message) -> dict[str, str]:
    """What differs between recipients of one issue: their unsubscribe link, address and name."""
    values: dict[str, str] = {}
    if message.unsubscribe_url:
        values["unsubscribe_url"] = message.unsubscribe_url
    values["email"] = message.recipient
    name, _addr = split_address(message.to_header)
    # Short names ("Al") would turn up inside ordinary words: leave them in the body.
    if len(name) >= 3:
        values["name"] = name
    return values


def factor_batch(
    messages: Sequence[Message],
    fields: Callable[[Message], tuple[str, ...]],
    tag: Callable[[str], str],
    html_fields: frozenset[int] = frozenset(),
) -> list[TemplateGroup]:
    """Group `messages` by shared template; each keeps the values that make its own body.

    Each message's `fields` (e.g. html and text) get its personal values
    replaced by `tag(variable)`; in the fields numbered in `html_fields` the
    values are looked for as HTML shows them (escaped), under variables named
    `<name>_html`. Messages whose templates are equal form one group. A
    message is kept whole (its own group, no variables) when a tag already
    occurs in its text or substituting back would not give its exact text:
    correctness first, batching second.
    """
    groups: dict[tuple[str, ...], TemplateGroup] = {}
    recent: list[TemplateGroup] = []  # groups with variables, most recently joined first
    for message in messages:
        original = fields(message)
        raw = personal_values(message)
        escaped = {f"{k}_html": html.escape(v, quote=True) for k, v in raw.items()}
        every = {**raw, **escaped}
        tags = {var: tag(var) for var in every}
        if any(t in value for t in tags.values() for value in every.values()):
            clean = False
        else:
            # Fast path: most messages of an issue fit a template already found. What the
            # provider will make of it is computed and compared: exact, or not taken.
            if _join_existing(recent, message, original, every, tag):
                continue
            clean = not any(t in text for t in tags.values() for text in original)
        template = original
        used: dict[str, str] = {}
        if clean:
            texts = []
            for index, text in enumerate(original):
                values = escaped if index in html_fields else raw
                # Longest values first, so a name inside the link is not split by a shorter one.
                for var in sorted(values, key=lambda v: len(values[v]), reverse=True):
                    value = values[var]
                    if value and value in text:
                        text = text.replace(value, tags[var])
                        used[var] = value
                texts.append(text)
            rebuilt = texts
            for var, value in used.items():
                rebuilt = [text.replace(tags[var], value) for text in rebuilt]
            if tuple(rebuilt) == original:
                template = tuple(texts)
            else:
                used = {}
        group_key = template if clean else ("\0unique", message.key, *template)
        group = groups.get(group_key)
        if group is None:
            group = groups[group_key] = TemplateGroup(template)
        group.messages.append(message)
        group.values.append(used)
        if used and not any(g is group for g in recent):
            recent.insert(0, group)
            del recent[4:]
    return list(groups.values())


def _join_existing(recent: list[TemplateGroup], message: Message, original: tuple[str, ...],
                   every: dict[str, str], tag: Callable[[str], str]) -> bool:
    """Add `message` to the first recent group whose template gives back its exact text."""
    for index, group in enumerate(recent):
        wanted = group.values[0].keys()
        if not wanted <= every.keys():
            continue
        if group.present is None:
            group.present = [[(v, tag(v)) for v in wanted if tag(v) in text]
                             for text in group.template]
        for text, mine, pairs in zip(group.template, original, group.present, strict=True):
            for var, var_tag in pairs:
                text = text.replace(var_tag, every[var])
            if text != mine:
                break
        else:
            values = {var: every[var] for var in wanted}
            group.messages.append(message)
            group.values.append(values)
            recent.insert(0, recent.pop(index))
            return True
    return False


def substitute(
    template: tuple[str, ...], values: dict[str, str], tag: Callable[[str], str]
) -> tuple[str, ...]:
    """What a recipient receives: the template with their values put back."""
    texts = list(template)
    for var, value in values.items():
        texts = [text.replace(tag(var), value) for text in texts]
    return tuple(texts)
