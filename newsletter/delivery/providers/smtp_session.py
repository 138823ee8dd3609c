"""One SMTP transaction on an open connection: MAIL, RCPT, DATA (pipelined or not), the reply.

A mixin of the smtp provider (it needs `_features`, `pipelining`, `_where()`
and `_drop()`); what a reply means is decided here: 2xx SENT, 4xx RETRY,
5xx FAILED, 421 or a drop before the message was handed over `Dropped`
(reconnect and try again), a drop after it `Dropped(handed_over=True)`.
"""

from __future__ import annotations

import re
import smtplib
from typing import TYPE_CHECKING

from newsletter.delivery.providers.base import DeliveryResult, Outcome
from newsletter.errors import ProviderError

if TYPE_CHECKING:
    from newsletter.compose.message import Message

_QUEUED_AS = re.compile(rb"queued as ([A-Za-z0-9._@<>-]+)", re.IGNORECASE)
_LEADING_DOT = re.compile(rb"(?m)^\.")
_DOT_LINE = re.compile(rb"\n\.")
# local@domain with nothing smtplib's address parser would change (no spaces, quotes,
# brackets, comments): written as <local@domain> without parsing it per message.
_PLAIN_ADDRESS = re.compile(r"[^\s<>()\[\]\",;:\\@]+@[^\s<>()\[\]\",;:\\@]+\Z")


class Dropped(Exception):
    """The connection went away; `handed_over`: after the whole message was sent."""

    def __init__(self, reason: str, handed_over: bool):
        super().__init__(reason)
        self.reason = reason
        self.handed_over = handed_over


def reply_text(response: bytes | str) -> str:
    if isinstance(response, bytes):
        response = response.decode("utf-8", errors="replace")
    return " ".join(response.split())


def reply_summary(code: int, response: bytes | str) -> str:
    return f"{code} {reply_text(response)}".strip()


class SMTPTransaction:
    """The per-message half of the smtp provider."""

    pipelining: bool
    _features: set[str]

    def _where(self) -> str:
        raise NotImplementedError

    def _drop(self) -> None:
        raise NotImplementedError

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
            # Dot-stuffing (RFC 5321 4.5.2), only when a line starts with a dot (the regex
            # finds that in a third of the time `b"\n." in raw` takes on a 20 KB message).
            stuff = raw[:1] == b"." or _DOT_LINE.search(raw) is not None
            payload = _LEADING_DOT.sub(b"..", raw) if stuff else raw
            if not payload.endswith(b"\r\n"):
                payload += b"\r\n"
            conn.send(payload + b".\r\n")
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise Dropped(reply_text(str(exc)) or type(exc).__name__, handed_over=False) from None
        try:
            code, response = conn.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise Dropped(reply_text(str(exc)) or type(exc).__name__, handed_over=True) from None
        if code == 250:
            found = _QUEUED_AS.search(response)
            provider_id = found.group(1).decode() if found else message.header("Message-ID")
            return DeliveryResult(key, Outcome.SENT, provider_id=provider_id)
        if code == 421:  # refused and closing: not delivered
            self._drop()
            return DeliveryResult(key, Outcome.RETRY, error=reply_summary(code, response))
        return self._classified(key, code, response)

    def _envelope(
        self, conn: smtplib.SMTP, key: str, sender: str, recipient: str, options: list[str]
    ) -> DeliveryResult | None:
        """MAIL, RCPT, DATA one at a time; a result when the server refused, None at 354."""
        code, response = conn.mail(sender, options)
        if code == 421:
            raise Dropped(reply_summary(code, response), handed_over=False)
        if code != 250:
            return self._refused(conn, key, code, response)
        code, response = conn.rcpt(recipient)
        if code == 421:
            raise Dropped(reply_summary(code, response), handed_over=False)
        if code not in (250, 251):
            return self._refused(conn, key, code, response)
        code, response = conn.docmd("DATA")
        if code == 421:
            raise Dropped(reply_summary(code, response), handed_over=False)
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
            f"MAIL FROM:{_quoted(sender)}{extra}\r\n"
            f"RCPT TO:{_quoted(recipient)}\r\n"
            "DATA\r\n"
        )
        conn.send(commands.encode(encoding))
        replies = [conn.getreply() for _ in range(3)]
        (mail_code, _), (rcpt_code, _), (data_code, _) = replies
        if 421 in (mail_code, rcpt_code, data_code):
            code, response = next(r for r in replies if r[0] == 421)
            raise Dropped(reply_summary(code, response), handed_over=False)
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
            return DeliveryResult(key, Outcome.RETRY, error=reply_summary(code, response))
        return DeliveryResult(key, Outcome.FAILED, error=reply_summary(code, response))


def _quoted(address: str) -> str:
    """The address as MAIL FROM / RCPT TO write it (smtplib.quoteaddr, fast for plain ones)."""
    if _PLAIN_ADDRESS.match(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


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
