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

import re
import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from newsletter.delivery.providers.base import DeliveryResult, Outcome, Provider
from newsletter.delivery.providers.options import number_option
from newsletter.errors import ConfigError, ProviderError
from newsletter.redact import Redactor

if TYPE_CHECKING:
    from newsletter.compose.message import Message

_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
_QUEUED_AS = re.compile(rb"queued as ([A-Za-z0-9._@<>-]+)", re.IGNORECASE)
_LEADING_DOT = re.compile(rb"(?m)^\.")
MAX_RECONNECTS = 3  # per message, before giving up on the server
MAX_UNCONFIRMED = 2  # messages in a row left uncertain (no answer) before the send stops


class _Dropped(Exception):
    """The connection went away; `handed_over`: after the whole message was sent."""

    def __init__(self, reason: str, handed_over: bool):
        super().__init__(reason)
        self.reason = reason
        self.handed_over = handed_over


def _text(response: bytes | str) -> str:
    if isinstance(response, bytes):
        response = response.decode("utf-8", errors="replace")
    return " ".join(response.split())


def _answer(code: int, response: bytes | str) -> str:
    return f"{code} {_text(response)}".strip()


class SMTPProvider(Provider):
    """Send through an SMTP server (smtplib), reusing one connection per worker."""

    name = "smtp"
    description = "An SMTP server: starttls/tls/none, login from an env var, parallel connections"
    max_batch = 1
    idempotent = False  # SMTP has no idempotency key: a re-send may duplicate
    remote = True

    def __init__(self, settings, provider_settings):  # type: ignore[no-untyped-def]
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

    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

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

    def _connect(self) -> None:
        conn: smtplib.SMTP | None = None
        try:
            if self.security == "tls":
                conn = smtplib.SMTP_SSL(timeout=self.timeout, context=self._tls_context())
                self._greeted(conn)
            else:
                conn = smtplib.SMTP(timeout=self.timeout)
                self._greeted(conn)
            conn.ehlo()
            if self.security == "starttls":
                if not conn.has_extn("starttls"):
                    raise ProviderError(
                        f"the SMTP server {self._where()} does not offer STARTTLS: use "
                        'security = "tls" (port 465), or "none" only for a server on this machine'
                    )
                conn.starttls(context=self._tls_context())
                conn.ehlo()
            if self.username:
                conn.login(self.username, self._password or "")
        except ProviderError:
            _quietly_close(conn)
            raise
        except smtplib.SMTPAuthenticationError as exc:
            _quietly_close(conn)
            raise ProviderError(
                f"the SMTP server {self._where()} refused the login for {self.username} "
                f"({_answer(exc.smtp_code, exc.smtp_error)}): check [provider] username and "
                "the password in the variable named by password_env"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            _quietly_close(conn)
            reason = _text(str(exc)) or type(exc).__name__
            raise ProviderError(
                f"cannot connect to the SMTP server {self._where()} ({reason}): check that it "
                "is running and [provider] host, port and security; unsent messages stay queued"
            ) from None
        self.conn = conn
        self._features = {name.lower() for name in (conn.esmtp_features or {})}
        if self.pipelining_setting == "auto":
            self.pipelining = "pipelining" in self._features
        else:
            self.pipelining = bool(self.pipelining_setting)

    def _greeted(self, conn: smtplib.SMTP) -> None:
        """Connect and read the greeting; a server that stays silent is named for what it is."""
        conn._host = self.host  # type: ignore[attr-defined]  # smtplib keeps it for STARTTLS
        try:
            code, reply = conn.connect(self.host, self.port)
        except smtplib.SMTPServerDisconnected as exc:
            # smtplib reports a silent peer as a disconnect; the cause says which it was.
            if not isinstance(exc.__context__, socket.timeout | TimeoutError):
                raise
            raise ProviderError(
                f"{self._where()} accepted the connection but sent nothing in "
                f"{self.timeout:g} s: it is not an SMTP server (or not a working one); check "
                "[provider] host, port and security; unsent messages stay queued"
            ) from None
        if code != 220:
            raise ProviderError(
                f"{self._where()} did not greet like an SMTP server ({_answer(code, reply)}): "
                "check [provider] host, port and security; unsent messages stay queued"
            )

    def _drop(self) -> None:
        _quietly_close(self.conn)
        self.conn = None

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
            except _Dropped as dropped:
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

    def _transaction(self, conn: smtplib.SMTP, message: Message) -> DeliveryResult:
        key = message.key
        options: list[str] = []
        sender, recipient = message.sender, message.recipient
        if "smtputf8" in self._features:
            if not (sender + recipient).isascii():
                options.append("SMTPUTF8")
        else:
            # Without SMTPUTF8 an IDN domain goes as its ASCII form (xn--…); a non-ASCII
            # local part cannot go at all: fail that reader, not the whole send.
            sender, recipient = _ascii_address(sender), _ascii_address(recipient)
            if not sender.isascii():
                raise ProviderError(
                    f"the From address {sender} needs SMTPUTF8, which the SMTP server "
                    f"{self._where()} does not offer: use an ASCII address; unsent messages "
                    "stay queued"
                )
            if not recipient.isascii():
                return DeliveryResult(
                    key, Outcome.FAILED,
                    error=f"the address {recipient} needs SMTPUTF8, which the SMTP server "
                    f"{self._where()} does not offer",
                )
        raw = message.as_bytes()
        if "8bitmime" in self._features and not raw.isascii():
            options.append("BODY=8BITMIME")
        try:
            if self.pipelining:
                refused = self._envelope_pipelined(conn, key, sender, recipient, options)
            else:
                refused = self._envelope(conn, key, sender, recipient, options)
            if refused is not None:
                return refused
            # Dot-stuffing (RFC 5321 4.5.2); the scan is skipped when no line starts with a dot.
            payload = _LEADING_DOT.sub(b"..", raw) if b"\n." in raw or raw[:1] == b"." else raw
            if not payload.endswith(b"\r\n"):
                payload += b"\r\n"
            conn.send(payload + b".\r\n")
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _Dropped(_text(str(exc)) or type(exc).__name__, handed_over=False) from None
        try:
            code, response = conn.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _Dropped(_text(str(exc)) or type(exc).__name__, handed_over=True) from None
        if code == 250:
            found = _QUEUED_AS.search(response)
            provider_id = found.group(1).decode() if found else message.header("Message-ID")
            return DeliveryResult(key, Outcome.SENT, provider_id=provider_id)
        if code == 421:  # refused and closing: not delivered
            self._drop()
            return DeliveryResult(key, Outcome.RETRY, error=_answer(code, response))
        return self._classified(key, code, response)

    def _envelope(
        self, conn: smtplib.SMTP, key: str, sender: str, recipient: str, options: list[str]
    ) -> DeliveryResult | None:
        """MAIL, RCPT, DATA one at a time; a result when the server refused, None at 354."""
        code, response = conn.mail(sender, options)
        if code == 421:
            raise _Dropped(_answer(code, response), handed_over=False)
        if code != 250:
            return self._refused(conn, key, code, response)
        code, response = conn.rcpt(recipient)
        if code == 421:
            raise _Dropped(_answer(code, response), handed_over=False)
        if code not in (250, 251):
            return self._refused(conn, key, code, response)
        code, response = conn.docmd("DATA")
        if code == 421:
            raise _Dropped(_answer(code, response), handed_over=False)
        if code != 354:
            return self._refused(conn, key, code, response)
        return None

    def _envelope_pipelined(
        self, conn: smtplib.SMTP, key: str, sender: str, recipient: str, options: list[str]
    ) -> DeliveryResult | None:
        """MAIL, RCPT and DATA in one write (RFC 2920): two round trips a message, not four."""
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
        extra = "".join(" " + o for o in options)
        commands = (
            f"MAIL FROM:{smtplib.quoteaddr(sender)}{extra}\r\n"
            f"RCPT TO:{smtplib.quoteaddr(recipient)}\r\n"
            "DATA\r\n"
        )
        conn.send(commands.encode(encoding))
        replies = [conn.getreply() for _ in range(3)]
        (mail_code, _), (rcpt_code, _), (data_code, _) = replies
        if 421 in (mail_code, rcpt_code, data_code):
            code, response = next(r for r in replies if r[0] == 421)
            raise _Dropped(_answer(code, response), handed_over=False)
        if mail_code == 250 and rcpt_code in (250, 251) and data_code == 354:
            return None
        if data_code == 354:  # DATA accepted although the envelope was not: send nothing
            conn.send(b".\r\n")
            conn.getreply()
        code, response = next(
            r for r, ok in zip(replies, ((250,), (250, 251), (354,)), strict=True)
            if r[0] not in ok
        )
        return self._refused(conn, key, code, response)

    def _refused(
        self, conn: smtplib.SMTP, key: str, code: int, response: bytes
    ) -> DeliveryResult:
        try:
            conn.rset()  # the transaction is half-open: start clean for the next message
        except (smtplib.SMTPException, OSError):
            self._drop()
        return self._classified(key, code, response)

    @staticmethod
    def _classified(key: str, code: int, response: bytes) -> DeliveryResult:
        if 400 <= code < 500:
            return DeliveryResult(key, Outcome.RETRY, error=_answer(code, response))
        return DeliveryResult(key, Outcome.FAILED, error=_answer(code, response))


def _ascii_address(address: str) -> str:
    """`address` with an IDN domain in its ASCII form (xn--…); the local part as it is."""
    if address.isascii():
        return address
    local, at, domain = address.rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return address
    return f"{local}{at}{domain}"


def _quietly_close(conn: smtplib.SMTP | None) -> None:
    if conn is None:
        return
    try:
        conn.close()
    except OSError:
        pass
