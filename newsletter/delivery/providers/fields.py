"""Message fields as the JSON and form APIs want them: decoded headers, addresses, base64."""

from __future__ import annotations

import base64
import email.utils
import re
from collections.abc import Iterable, Sequence
from email.header import decode_header, make_header
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from newsletter.compose.message import Message
    from newsletter.compose.parts import InlineImage

# Headers an API sets itself or takes in a field of its own, never passed as custom headers.
# Date is left out so the provider stamps the real submission time.
FIELD_HEADERS = frozenset({"from", "to", "subject", "reply-to", "date", "cc", "bcc"})


def unfold(value: str) -> str:
    """A header value as readable Unicode: RFC 2047 encoded words decoded."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError):
        return value


# `Plain Name <addr@example.com>` in ASCII, nothing to unquote, decode or fold: parseaddr
# gives just these two parts (tested against it), ten times slower.
_PLAIN_ADDRESS = re.compile(
    r"([^\x00-\x20\x7f\"()<>\[\]:;@\\,.=?]+(?: [^\x00-\x20\x7f\"()<>\[\]:;@\\,.=?]+)*)"
    r" <([^\x00-\x20\x7f\"()<>\[\]:;@\\,]+@[^\x00-\x20\x7f\"()<>\[\]:;@\\,]+)>")


def split_address(value: str) -> tuple[str, str]:
    """("Name", "addr@example.com") from a From/To header value."""
    plain = _PLAIN_ADDRESS.fullmatch(value) if value.isascii() else None
    if plain is not None:
        return plain.group(1), plain.group(2)
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


def form_dict(data: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    """httpx form data: repeated fields (to) as lists, in order."""
    result: dict[str, str | list[str]] = {}
    for key, value in data:
        if key in result:
            existing = result[key]
            result[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            result[key] = value
    return result
