"""What every HTTP email API adapter shares: one pooled httpx client, error mapping, secrets.

An adapter subclasses `HTTPProvider`, names its default endpoint and key
variable, and turns a batch of Messages into requests. This module maps the
answers the same way for every API:

- 401/403 → `ProviderError` (the send stops, the rest stays queued);
- 408/429/5xx, timeouts and broken connections → `TransientBatchError`, with
  the wait the server asked for (`Retry-After`, `X-RateLimit-Reset`, `RateLimit-Reset`);
- a server that cannot be reached at all (connection refused) → `ProviderError`;
- anything else is left to the adapter (per-message failures).

Keys never leave this module in text: every reason taken from a server's
answer goes through `redact()`, and the client's repr carries no headers.

`factor_batch()` serves the APIs (SendGrid, Mailgun) whose batch form shares
one body between recipients: it turns personalized messages back into a shared
template plus per-recipient values, and proves the round trip exact.
"""

from __future__ import annotations

import base64
import email.utils
import html
import time
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

if TYPE_CHECKING:
    from newsletter.compose.message import InlineImage, Message

# Headers an API sets itself or takes in a field of its own, never passed as custom headers.
# Date is left out so the provider stamps the real submission time.
FIELD_HEADERS = frozenset({"from", "to", "subject", "reply-to", "date", "cc", "bcc"})

REDACTED = "[redacted]"
_REASON_LIMIT = 300
# Never wait longer than this for one Retry-After; the campaign may back off again.
MAX_RETRY_AFTER = 3600.0


class HTTPProvider(Provider):
    """Base class of the HTTP API adapters: settings, secrets, one client, error mapping."""

    rate_unit: ClassVar[str] = "request"
    default_endpoint: ClassVar[str] = ""
    default_key_env: ClassVar[str] = ""
    # What the key is called in error messages ("server token", "API key").
    key_label: ClassVar[str] = "API key"

    _client: httpx.Client | None = None
    _secrets: tuple[str, ...] = ()

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
        headers = {"Accept": "application/json", "User-Agent": "newsletter (+httpx)"}
        headers.update(self.auth_headers(key))
        self._client = httpx.Client(
            base_url=self.endpoint,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_keepalive_connections=4, max_connections=8),
            follow_redirects=False,
        )

    def close(self) -> None:
        """Close the pooled connections; safe to call twice or after a failed open()."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._secrets = ()

    def __repr__(self) -> str:
        try:
            endpoint = self.endpoint
        except ConfigError:  # a repr must not raise, even with broken settings
            endpoint = "?"
        return f"<{type(self).__name__} endpoint={endpoint!r}>"

    # -- secrets ---------------------------------------------------------

    def remember_secret(self, *values: str) -> None:
        """Register values (and their Basic/base64 forms) that redact() must hide."""
        extra = []
        for value in values:
            # A value this short is no real key; replacing it everywhere would garble text.
            if value and len(value) >= 6:
                extra.append(value)
                extra.append(base64.b64encode(value.encode()).decode())
        # Longest first, so a key is hidden before any shorter secret inside it.
        self._secrets = tuple(sorted({*self._secrets, *extra}, key=len, reverse=True))

    def redact(self, text: str) -> str:
        """`text` with every known secret replaced, on one line, cut to a readable length."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        text = " ".join(text.split())
        if len(text) > _REASON_LIMIT:
            text = text[: _REASON_LIMIT - 1] + "…"
        return text

    # -- requests --------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            raise ProviderError(f"the {self.name} provider is not open: call open() before send()")
        return self._client

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; network trouble becomes TransientBatchError, auth errors ProviderError.

        Returns the response for every other status: the adapter reads 2xx and
        per-message 4xx itself.
        """
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise TransientBatchError(
                f"{self.name}: no answer from {self.endpoint} in time (timeout)"
            ) from None
        except httpx.ConnectError as exc:
            # Nothing went out and nobody answers: stop, the rows stay queued for a resume.
            reason = self.redact(str(exc))
            raise ProviderError(
                f"{self.name}: cannot reach {self.endpoint} ({reason}): check the network "
                "and the endpoint setting, then run the send again to resume"
            ) from None
        except httpx.TransportError as exc:
            # The connection broke mid-request: like a timeout, worth another try.
            reason = self.redact(f"{type(exc).__name__}: {exc}")
            raise TransientBatchError(
                f"{self.name}: the connection to {self.endpoint} broke ({reason})"
            ) from None
        self.raise_for_provider_status(response)
        return response

    def raise_for_provider_status(self, response: httpx.Response) -> None:
        """Map the statuses that mean the same on every API: auth, throttling, server trouble."""
        status = response.status_code
        if status in (401, 403):
            what = "refused the" if status == 401 else "does not allow this send with the"
            raise ProviderError(
                f"{self.name} {what} {self.key_label} (HTTP {status}: "
                f"{self.reason(response)}): check ${self.key_env}, its permissions and the "
                "sender's domain; nothing more was sent and the rest stays queued"
            )
        if status in (408, 429) or status >= 500:
            raise TransientBatchError(
                f"{self.name} HTTP {status}: {self.reason(response)}",
                retry_after=retry_after(response.headers),
            )

    def reason(self, response: httpx.Response) -> str:
        """The server's explanation of an error, redacted and short."""
        text = ""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            for key in ("message", "Message", "error", "errors", "name"):
                if key in body and body[key]:
                    value = body[key]
                    text = value if isinstance(value, str) else _join_errors(value)
                    break
        if not text:
            text = response.text or response.reason_phrase
        return self.redact(str(text)) or f"HTTP {response.status_code}"


def _join_errors(value: Any) -> str:
    if isinstance(value, list):
        parts = []
        for item in value:
            if isinstance(item, dict):
                parts.append(str(item.get("message") or item))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(value)


def retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait, from `Retry-After` (seconds or HTTP date) or a rate-limit reset header.

    `X-RateLimit-Reset` is a Unix time on SendGrid and some others and a number
    of seconds elsewhere: values that look like a Unix time are read as one.
    """
    now = time.time() if now is None else now
    value = headers.get("retry-after")
    if value:
        seconds = _number(value)
        if seconds is None:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                seconds = when.timestamp() - now
        if seconds is not None:
            return _clamp(seconds)
    for name in ("x-ratelimit-reset", "ratelimit-reset", "x-ratelimit-reset-after"):
        seconds = _number(headers.get(name, ""))
        if seconds is not None:
            if seconds > 1_000_000_000:  # a Unix time, not a delay
                seconds -= now
            return _clamp(seconds)
    return None


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def _clamp(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def send_in_parts(
    messages: Sequence[Message],
    parts: Sequence[Any],
    send_part: Callable[[Any], list[DeliveryResult]],
) -> list[DeliveryResult]:
    """Send a batch that takes several requests; results in the order of `messages`.

    Once one request went through, a later one that fails as a whole must not
    make the campaign re-send the batch: its messages (and those after it)
    become RETRY results instead of an exception. Failing on the first
    request raises as usual.
    """
    results: dict[str, DeliveryResult] = {}
    stopped: DeliveryResult | None = None  # the RETRY every later message gets
    for index, part in enumerate(parts):
        if stopped is None:
            try:
                for result in send_part(part):
                    results[result.key] = result
                continue
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
