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

Message helpers (`fields.py`) are re-exported from here; the shared body for
SendGrid and Mailgun is built in `merge.py` from each Message's template.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from newsletter.delivery.providers.base import (
    CredentialsAnswer,
    DeliveryResult,
    Outcome,
    Provider,
    TransientBatchError,
)

# The message helpers live in their own module; they are re-exported here, where
# adapters (and plug-ins) have always imported them from.
from newsletter.delivery.providers.fields import (
    FIELD_HEADERS,
    attachment_key,
    b64,
    custom_headers,
    reply_to,
    split_address,
    unfold,
)
from newsletter.errors import ConfigError, ProviderError
from newsletter.http import MAYBE_SENT_STATUSES, MaybeSent, NotSent, Transport, retry_after
from newsletter.redact import REDACTED, Redactor, one_line
from newsletter.settings import Option

if TYPE_CHECKING:
    from newsletter.compose.message import Message

__all__ = [
    "FIELD_HEADERS", "REDACTED", "HTTPProvider", "MaybeSent", "attachment_key", "b64",
    "custom_headers", "reply_to", "retry_after", "send_in_parts", "split_address",
    "stop_uncertain", "uncertain", "unfold",
]


class HTTPProvider(Provider):
    """Base class of the HTTP API adapters: settings, secrets, one transport, error mapping."""

    rate_unit: ClassVar[str] = "request"
    default_endpoint: ClassVar[str] = ""
    default_key_env: ClassVar[str] = ""
    # What the key is called in error messages ("server token", "API key").
    key_label: ClassVar[str] = "API key"
    # Statuses after which the API may have taken the request (its documentation's
    # "may have been processed"): the batch is uncertain, not retried. Gateways by default.
    maybe_sent_statuses: ClassVar[frozenset[int]] = MAYBE_SENT_STATUSES
    # What every HTTP adapter reads; each adds its own (`{**HTTPProvider.options, …}`).
    options: ClassVar[Mapping[str, Option]] = {
        "endpoint": Option(str, None, "the API's base URL: EU region, proxy, local test server"),
        "api_key_env": Option(str, None, "the environment variable holding the API key"),
        "timeout": Option(float, 30, "seconds to wait for an answer", minimum=0.1),
        "dkim_selector": Option(str, None, "the DKIM selector your account signs with "
                                "(`newsletter doctor` looks up its key in DNS)"),
    }
    # The read-only GET the provider's documentation names: `newsletter doctor` calls it
    # to check the key without sending anything.
    credentials_path: ClassVar[str] = ""

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
        self._transport = Transport(self.name, endpoint, headers, timeout, self.redactor,
                                    self.maybe_sent_statuses)

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

    # -- the credentials check (newsletter doctor) ---------------------------

    def check_credentials(self) -> CredentialsAnswer:
        """GET `credentials_path` with the key: ProviderError when it is refused."""
        if not self.credentials_path:
            return super().check_credentials()
        self.open()
        try:
            path = self.credentials_request_path()
            try:
                response = self.transport.request(
                    "GET", path, headers=self.credentials_headers(path))
            except (NotSent, MaybeSent) as exc:
                raise ProviderError(f"{exc.reason}: try again in a minute; if it lasts, "
                                    f"check {self.name}'s status page") from None
            return self.read_credentials_answer(path, response)
        finally:
            self.close()

    def credentials_request_path(self) -> str:
        return self.credentials_path

    def credentials_headers(self, path: str) -> dict[str, str]:
        """Headers the credentials request needs beyond the key's (SES signs each request)."""
        return {}

    def read_credentials_answer(self, path: str, response: httpx.Response) -> CredentialsAnswer:
        """The answer to the credentials GET: 2xx works, 401/403 is a refused key."""
        status = response.status_code
        if status in (401, 403):
            raise ProviderError(
                f"{self.name} refused the {self.key_label} (HTTP {status}: "
                f"{self.reason(response)}): put a current key with access to this account "
                f"in ${self.key_env}"
            )
        if not 200 <= status < 300:
            raise ProviderError(
                f"{self.name} answered GET {path} with HTTP {status} ({self.reason(response)}): "
                "check [provider] endpoint and the account's settings"
            )
        return CredentialsAnswer(f"{self.name} accepted the {self.key_label} (GET {path})")

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
        "the send stopped and what was not sent stays queued"
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
