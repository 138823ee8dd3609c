"""The provider interface: open, send a batch of messages → one result each, close.

Providers turn Messages into DeliveryResults. They know nothing of drafts or
SQLite: the campaign code owns the delivery log, retries of transient
results, pacing across batches and resume.

A provider reports outcomes two ways:
- per message, in the returned list (same order and length as the batch):
  SENT (with the provider's id), FAILED (permanent, with the reason),
  RETRY (transient for that message: 4xx, 429, throttled; `retry_after`
  seconds when the provider said) or UNCERTAIN (handed over, answer lost);
- for the whole provider, by raising: `ProviderError` when nothing more can
  go out (auth refused, server unreachable after retries, bad settings): the
  campaign stops and leaves the unsent rows queued (a provider that sends a
  batch one message at a time sets `exc.results` to the results of the
  messages it got through first, so they are recorded, not sent again);
  `TransientBatchError`
  when the whole batch should be retried later and cannot have been taken
  (429 for the request, 503, no connection made) — the campaign backs off and
  re-sends the same batch. A batch that may have been taken (no answer after
  it was sent, an unreadable answer) is never a TransientBatchError: its
  messages are UNCERTAIN (HTTP adapters stop the send with a ProviderError
  carrying those results).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from newsletter.errors import ProviderError
from newsletter.settings import Option

if TYPE_CHECKING:
    from newsletter.compose.message import Message
    from newsletter.settings import ProviderSettings, Settings


class Outcome(enum.StrEnum):
    SENT = "sent"
    FAILED = "failed"
    RETRY = "retry"
    # The message may or may not have gone out (the connection dropped after the
    # whole message was handed over, before the answer): never retried silently.
    UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class DeliveryResult:
    key: str  # the Message.key it answers
    outcome: Outcome
    provider_id: str | None = None  # the provider's message id, stored in the log
    error: str | None = None  # the provider's reason, for FAILED and RETRY
    retry_after: float | None = None  # seconds, when the provider said


@dataclass(frozen=True)
class CredentialsAnswer:
    """What a provider's credentials check found: they work (`detail` says how it knows),
    with a `warning` when something still needs fixing before a real send."""

    detail: str
    warning: str | None = None


class TransientBatchError(Exception):
    """The whole batch should be retried after a pause: it was not taken (429, 503, …)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Provider:
    """Base class for adapters. Subclasses set the class attributes and implement send().

    A provider instance is used from one thread at a time; the campaign makes
    `concurrency` instances when it sends in parallel.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # How many messages one send() call takes at most (the API's batch limit).
    max_batch: ClassVar[int] = 1
    # Default cap when settings give none (None: no cap), in units of `rate_unit`:
    # "message" (messages per second, SMTP) or "request" (send() calls per
    # second, for HTTP APIs whose limits count requests, e.g. Resend's 2/s).
    default_rate: ClassVar[float | None] = None
    rate_unit: ClassVar[str] = "message"
    # True when re-sending a message with the same Message.key cannot
    # duplicate it (an idempotency key): uncertain rows may then be retried.
    idempotent: ClassVar[bool] = False
    # True when the provider delivers to the real world (needs base_url etc.).
    remote: ClassVar[bool] = True
    # The [provider] keys it reads beyond name/rate/concurrency/retry_delay/max_attempts:
    # settings refuse any other key, and a value of the wrong type, when they load.
    # None (a plug-in written before options were declared): its keys are not checked.
    options: ClassVar[Mapping[str, Option] | None] = None
    # What `newsletter doctor` looks for in the From domain's DNS, where every account of
    # the provider is the same: the host its SPF record should include, and the DKIM
    # selector it signs with (`[provider] dkim_selector` names an account's own).
    spf_include: ClassVar[str | None] = None
    default_dkim_selector: ClassVar[str | None] = None

    def __init__(self, settings: Settings, provider_settings: ProviderSettings):
        self.settings = settings
        self.provider_settings = provider_settings

    def open(self) -> None:
        """Connect, read secrets, check credentials where cheap. Raise ProviderError."""

    def send(self, messages: Sequence[Message]) -> list[DeliveryResult]:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections. Must be safe to call twice, or after a failed open()."""

    def check_credentials(self) -> CredentialsAnswer:
        """A harmless authenticated call that sends nothing (`newsletter doctor`).

        Raises ProviderError (or ConfigError) when the credentials do not work. This
        default opens and closes the provider; adapters with a read-only call override it.
        """
        self.open()
        self.close()
        return CredentialsAnswer(f"{self.name} opened (it has no read-only call to check "
                                 "its credentials further)")

    def __enter__(self) -> Provider:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "CredentialsAnswer",
    "DeliveryResult",
    "Option",
    "Outcome",
    "Provider",
    "ProviderError",
    "TransientBatchError",
]
