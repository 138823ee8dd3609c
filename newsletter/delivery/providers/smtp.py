"""The `smtp` provider: smtplib, one reused connection per worker.

Settings (`[provider]` in newsletter.toml): host, port, security
(starttls | tls | none), username, password_env (the environment variable
holding the password), timeout (seconds), tls_verify (default true),
pipelining ("auto": when the server offers it; true/false), batch (messages
claimed per round; default 1: the fewest left uncertain when the process dies).

Per recipient: 2xx → SENT (the server's queue id when it says one),
4xx → RETRY, 5xx → FAILED with the reply text. A dropped connection or a 421
before the message was handed over → reconnect and try again; a drop after the
whole message was handed over but before the reply → UNCERTAIN (it may have
been delivered: retrying silently could duplicate it); after two of those in a
row (a server slower than `timeout`) the send stops rather than leave the rest
of the list uncertain. A server that cannot be reached → ProviderError.
International addresses use SMTPUTF8 when the server offers it; otherwise an IDN
domain goes in its ASCII form (xn--…) and a non-ASCII local part fails that
recipient (with the reason), not the whole send.
"""

from __future__ import annotations

import smtplib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from newsletter.delivery.providers.base import (
    CredentialsAnswer,
    DeliveryResult,
    Outcome,
    Provider,
)
from newsletter.delivery.providers.options import number_option
from newsletter.delivery.providers.smtp_connect import SMTPConnection
from newsletter.delivery.providers.smtp_session import Dropped, SMTPTransaction
from newsletter.errors import ConfigError, ProviderError
from newsletter.redact import Redactor
from newsletter.settings import Option

if TYPE_CHECKING:
    from newsletter.compose.message import Message

_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
MAX_RECONNECTS = 3  # per message, before giving up on the server
MAX_UNCONFIRMED = 2  # messages in a row left uncertain (no answer) before the send stops


class SMTPProvider(SMTPConnection, SMTPTransaction, Provider):
    """Send through an SMTP server (smtplib), reusing one connection per worker."""

    name = "smtp"
    description = "An SMTP server: starttls/tls/none, login from an env var, parallel connections"
    max_batch = 1
    idempotent = False  # SMTP has no idempotency key: a re-send may duplicate
    remote = True
    options: ClassVar[Mapping[str, Option]] = {
        "host": Option(str, "localhost", "the SMTP server"),
        "port": Option(int, None, "587 with starttls, 465 with tls, 25 with none", minimum=1),
        "security": Option(str, "starttls", "how the connection is encrypted",
                           choices=tuple(_DEFAULT_PORTS)),
        "username": Option(str, None, "the login; none: no AUTH"),
        "password_env": Option(str, "NEWSLETTER_SMTP_PASSWORD",
                               "the environment variable holding the password"),
        "timeout": Option(float, 30, "seconds to wait for the server", minimum=0.1),
        "tls_verify": Option(bool, True, "false accepts a self-signed certificate"),
        "batch": Option(int, 1, "messages one worker hands over between checks", minimum=1),
        "pipelining": Option((str, bool), "auto", "PIPELINING: auto uses it when offered",
                             choices=("auto",)),
        "dkim_selector": Option(str, None, "the DKIM selector your server signs with "
                                "(`newsletter doctor` looks up its key in DNS)"),
    }

    def __init__(self, settings, provider_settings):
        super().__init__(settings, provider_settings)
        opts = provider_settings
        self.security = str(opts.get("security", "starttls")).lower()
        if self.security not in _DEFAULT_PORTS:
            raise ConfigError(
                f'[provider] security = "{self.security}" is not one of starttls, tls, none'
            )
        self.host = str(opts.get("host", "localhost"))
        self.port = int(number_option(opts, "port", _DEFAULT_PORTS[self.security], int, 1))
        self.username = opts.get("username") or None
        self.timeout = number_option(opts, "timeout", 30, float, 0.1)
        self.tls_verify = bool(opts.get("tls_verify", True))
        self.max_batch = int(number_option(opts, "batch", 1, int, 1))  # type: ignore[misc]
        # PIPELINING: "auto" uses it when the server offers it; true/false force it.
        self.pipelining_setting = opts.get("pipelining", "auto")
        self.pipelining = False
        self.conn: smtplib.SMTP | None = None
        self._password: str | None = None
        # Replies may echo the login back (a 535 quoting AUTH PLAIN): every error text
        # that leaves this provider goes through it.
        self.redact = Redactor()
        self._features: set[str] = set()
        self._unconfirmed = 0  # messages in a row handed over without the server's answer
        self._last_unconfirmed = ""

    # -- connection -------------------------------------------------------------------

    def open(self) -> None:
        if self.username:
            self._password = self.provider_settings.secret(
                "password_env", default_env="NEWSLETTER_SMTP_PASSWORD"
            )
            self.redact.add_login(self.username, self._password)
        try:
            self._connect()
        except ProviderError as exc:
            raise self._redacted(exc) from None

    def check_credentials(self) -> CredentialsAnswer:
        """Connect, EHLO, STARTTLS when configured and AUTH, then QUIT: no MAIL, nothing sent."""
        self.open()
        self.close()
        steps = ["EHLO"]
        if self.security == "starttls":
            steps.append("STARTTLS")
        elif self.security == "tls":
            steps.insert(0, "TLS")
        if self.username:
            steps.append(f"AUTH as {self.username}")
        return CredentialsAnswer(f"the SMTP server {self._where()} accepted "
                                 f"{', '.join(steps)} (nothing was sent)")

    def _redacted(self, exc: Exception) -> Exception:
        """`exc` as an exception of the same meaning whose text and results hide the login.

        ProviderError stays ProviderError (rows queued); anything else stays an
        unexpected error (rows uncertain), as the campaign reads them.
        """
        clean: Exception = (ProviderError if isinstance(exc, ProviderError) else RuntimeError)(
            self.redact(str(exc) or type(exc).__name__))
        results = getattr(exc, "results", None)
        if isinstance(results, list):
            clean.results = [self._clean(r) for r in results]  # type: ignore[attr-defined]
        return clean

    def _clean(self, result: DeliveryResult) -> DeliveryResult:
        return replace(result, error=self.redact(result.error)) if result.error else result

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.quit()
            except (OSError, smtplib.SMTPException):
                pass
        self._drop()

    # -- sending ----------------------------------------------------------------------

    def send(self, messages: Sequence[Message]) -> list[DeliveryResult]:
        results: list[DeliveryResult] = []
        for message in messages:
            try:
                results.append(self._clean(self._send_one(message)))
            except Exception as exc:
                # The messages before this one did go out (or were refused): say so,
                # or the campaign would put them back in the queue and send them twice.
                exc.results = results  # type: ignore[attr-defined]
                raise self._redacted(exc) from None
        return results

    def _send_one(self, message: Message) -> DeliveryResult:
        if self._unconfirmed >= MAX_UNCONFIRMED:
            # A server that takes messages without confirming them (too slow for the
            # timeout, or dropping after DATA) would turn the rest of the list uncertain.
            raise ProviderError(
                f"the SMTP server {self._where()} took {self._unconfirmed} messages in a row "
                f"without confirming them ({self._last_unconfirmed}): it may be overloaded; "
                "check it, or raise [provider] timeout; unsent messages stay queued"
            )
        last = ""
        for _ in range(MAX_RECONNECTS + 1):
            if self.conn is None:
                self._connect()  # ProviderError when the server is gone for good
            try:
                result = self._transaction(self.conn, message)  # type: ignore[arg-type]
            except Dropped as dropped:
                self._drop()
                last = dropped.reason
                if dropped.handed_over:
                    self._unconfirmed += 1
                    self._last_unconfirmed = last
                    return DeliveryResult(
                        message.key, Outcome.UNCERTAIN,
                        error=f"the connection dropped before the server confirmed: {last}",
                    )
            else:
                self._unconfirmed = 0
                return result
        raise ProviderError(
            f"the SMTP server {self._where()} keeps closing the connection ({last}): "
            "try a lower rate or concurrency; unsent messages stay queued"
        )
