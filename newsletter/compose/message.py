"""Issue + Recipient → Message: cheap per recipient.

INTERFACE (fixed; other packages build against it). The implementation is
owned by the compose work: per-recipient values are spliced into HTML, text
and MIME bytes prepared once per issue, never by re-running Markdown,
Jinja2 or premailer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipient:
    """Who one message is for. Built from a subscriber row, or from a bare address."""

    email: str
    name: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    # Stable identity the unsubscribe token is made over (the subscriber's
    # normalized address); defaults to the email.
    key: str = ""


@dataclass(frozen=True)
class InlineImage:
    cid: str
    filename: str
    content_type: str  # e.g. "image/png"
    data: bytes


@dataclass
class Message:
    """One personalized message, ready for any provider.

    SMTP/SES/outbox use `as_bytes()`; HTTP APIs use the structured fields.
    `headers` holds every header except From/To/Subject/MIME/Content-*, in
    order: Date, Message-ID, Reply-To (when set), List-Id, List-Unsubscribe,
    List-Unsubscribe-Post. Values are already checked: no CR/LF.
    """

    key: str  # the delivery row id (as text): maps results back, idempotency key
    sender: str  # envelope sender, bare address
    recipient: str  # envelope recipient, bare address
    from_header: str
    to_header: str
    subject: str
    headers: list[tuple[str, str]]
    html: str
    text: str
    attachments: tuple[InlineImage, ...] = ()
    unsubscribe_url: str | None = None
    raw: bytes | None = None  # set by personalize(); built lazily otherwise

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def as_bytes(self) -> bytes:
        """The whole RFC 5322 message, CRLF line ends."""
        if self.raw is None:
            raise NotImplementedError("personalize() sets raw")
        return self.raw
