"""Issue + Recipient → Message: cheap per recipient.

INTERFACE (fixed; other packages build against it). The implementation is
owned by the compose work: per-recipient values are spliced into HTML, text
and MIME bytes prepared once per issue, never by re-running Markdown,
Jinja2 or premailer.

How the splice stays valid MIME: both parts are quoted-printable. Once per
issue the HTML and text are cut at the per-recipient markers, and each static
piece is QP-encoded on its own (binascii, in C) and ends with a soft line
break (`=` CRLF). Per recipient only the short values are escaped, QP-encoded
and placed between those pieces, each ending with a soft break too, so a
value always starts a fresh line: the decoded part is exactly piece + value +
piece, and no line exceeds 76 characters whatever the value's length.

The message is multipart/alternative, text first and HTML last; with embedded
images the HTML part is a multipart/related holding the HTML and the images.
"""

from __future__ import annotations

import binascii
import hashlib
import html as html_lib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime, parseaddr
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from newsletter.compose.layout import Slot
from newsletter.compose.parts import (
    InlineImage,
    MessageTemplate,
    Pieces,
    escape_html,
    unsubscribe_mailto,
)
from newsletter.compose.tokens import (
    Kind,
    TokenMaker,
    TrackingTokens,
    click_url,
    manage_url,
    open_url,
    unsubscribe_url,
)
from newsletter.errors import ContentError, SubscriberError

if TYPE_CHECKING:
    from newsletter.compose.issue import Issue
    from newsletter.settings import Settings


@dataclass(frozen=True)
class Recipient:
    """Who one message is for. Built from a subscriber row, or from a bare address."""

    email: str
    name: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    # Stable identity the unsubscribe token is made over (the subscriber's
    # normalized address); defaults to the email.
    key: str = ""


@dataclass
class Message:
    """One personalized message, ready for any provider.

    SMTP/SES/outbox use `as_bytes()`; HTTP APIs use the structured fields.
    `template` is the issue's shared subject, HTML and text with holes, and
    `reader_values` this reader's value for each of its variables:
    `template.render(reader_values)` gives exactly `html` and `text`. APIs that
    share one body between readers substitute those values themselves
    (a message without a template is sent as it is).
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
    manage_url: str | None = None  # the reader's /manage link, when the layout has one
    raw: bytes | None = None  # set by personalize(); built lazily otherwise
    template: MessageTemplate | None = None
    reader_values: Mapping[str, str] = field(default_factory=dict)  # variable → value, unescaped

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


# The one stand-in reader for build, preview, check and `draft`'s sample message.
SAMPLE_RECIPIENT = Recipient(email="reader@example.com", name="Sample Reader",
                             key="reader@example.com")


_SOFT = b"=\r\n"
_BAD_ADDRESS = re.compile(r"[\x00-\x20\x7f<>\"(),;:\\\[\]]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# What may not appear in a header value at all: also the breaks str.splitlines() and
# some mail software honour (\x85, U+2028, U+2029), which \s-based cleaning misses.
_BREAK_OR_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_NEEDS_QUOTES = re.compile(r"[()<>\[\]:;@\\,.\"]")


def personalize(issue: Issue, recipient: Recipient, *, key: str, settings: Settings,
                campaign: int | None = None) -> Message:
    """The message for one recipient: values spliced into templates prepared once per issue.

    `campaign`, when the message belongs to one, goes into its unsubscribe and manage
    links so that `newsletter stats` can tell which issue a reader left from.
    """
    prep = _prepared(issue, settings, campaign)
    email = recipient.email.strip()
    if not email or "@" not in email or _BAD_ADDRESS.search(email):
        raise SubscriberError(
            f"{email!r} is not a usable email address: fix or remove this subscriber"
        )
    name = " ".join(_CONTROL.sub(" ", recipient.name).split()) if recipient.name else ""
    name = name[:NAME_MAX_CHARS]
    unsub = manage = None
    mailto = prep.mailto
    if prep.tokens is not None:
        token = prep.tokens.make(recipient.key or email)
        if prep.server_url:  # none without a server: the mailto alone unsubscribes
            unsub = unsubscribe_url(prep.server_url, token, campaign)
            if prep.has_manage:  # a token of its own kind: it opens /manage, nothing else
                manage = manage_url(prep.server_url,
                                    prep.tokens.make(recipient.key or email, Kind.MANAGE),
                                    campaign)
        if mailto and mailto.endswith("?subject=unsubscribe"):
            # The reader's token in the subject: `newsletter sync` reads the mailbox and
            # knows whom a reply is from, whatever address it was sent from.
            mailto = f"{mailto}%20{token}"

    ref = ""
    if prep.tracking is not None and prep.campaign is not None:
        # What every tracked link of this message carries: a pseudonym for this send (or,
        # with per_reader, a token naming the reader). The same in each link: unique counts.
        reader_key = recipient.key or email
        ref = (prep.tracking.reader_token(prep.campaign, reader_key)
               if settings.analytics.per_reader
               else prep.tracking.pseudonym(prep.salt, prep.campaign, reader_key))

    # Each distinct slot is computed, escaped and encoded once, then put at its positions.
    plain = []
    for slot in prep.slots:
        value = slot.value(email, name, recipient.attributes, unsub or "", manage or "", ref)
        plain.append(_CONTROL.sub(" ", value) if value else "")
    escaped = [escape_html(v) for v in plain]

    html = prep.html.fill(escaped)
    text = prep.text.fill(plain)

    to_header = _display(name, email)
    msg_id = f"<{time.time_ns():x}.{secrets.token_hex(6)}@{prep.domain}>"
    date = _now()
    headers = [("Date", date), ("Message-ID", msg_id)]
    headers.extend(prep.static_headers)
    if unsub or mailto:
        parts = [f"<{u}>" for u in (unsub, mailto) if u]
        headers.append(("List-Unsubscribe", ", ".join(parts)))
        if unsub:
            headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))

    raw = b"".join(
        [
            prep.from_line,
            b"To: ",
            _encode_address(name, email),
            b"\r\n",
            prep.subject_line,
            b"Date: ",
            date.encode("ascii"),
            b"\r\nMessage-ID: ",
            msg_id.encode("ascii"),
            b"\r\n",
            prep.static_lines,
            _list_unsubscribe_lines(unsub, mailto),
            prep.head_tail,
            prep.text_qp.fill([_qp_value(v) for v in plain]),
            prep.between,
            prep.html_qp.fill([_qp_value(v) for v in escaped]),
            prep.tail,
        ]
    )
    return Message(
        key=key,
        sender=prep.sender,
        recipient=email,
        from_header=prep.from_display,
        to_header=to_header,
        subject=issue.subject,
        headers=headers,
        html=html,
        text=text,
        attachments=issue.attachments,
        unsubscribe_url=unsub,
        manage_url=manage,
        raw=raw,
        template=prep.template,
        reader_values=dict(zip(prep.template.variables, plain, strict=True)),
    )


# --- per-issue preparation ------------------------------------------------------------


class _Prepared:
    """Everything about an issue's messages that does not depend on the recipient."""

    def __init__(self, issue: Issue, settings: Settings, campaign: int | None = None):
        self.settings = settings
        # Reader links go to the server (base_url, or [server] url); tokens stay bound to
        # the newsletter's identity, its base_url (see tokens.py), wherever the server is.
        self.server_url = settings.server_url if settings.base_url else None
        self.tokens = (
            TokenMaker(settings.secret_key(), context=settings.base_url)
            if settings.base_url else None
        )
        self.mailto = unsubscribe_mailto(settings)
        if self.mailto and _CONTROL.search(self.mailto):
            raise ContentError("newsletter.unsubscribe_mailto must be one line")
        if _BREAK_OR_CONTROL.search(issue.subject):
            raise ContentError(
                f"{issue.source}: the subject holds a line break or control character: write "
                "it on one line"
            )

        sender_name, sender_addr = parseaddr(settings.sender) if settings.sender else ("", "")
        if not sender_addr:
            sender_name, sender_addr = settings.name, "newsletter@example.invalid"
        self.sender = sender_addr
        self.domain = sender_addr.rpartition("@")[2] or "newsletter.invalid"
        self.from_display = _display(sender_name, sender_addr)
        self.from_line = b"From: " + _encode_address(sender_name, sender_addr) + b"\r\n"
        self.subject_line = _header_line("Subject", issue.subject)

        static: list[tuple[str, str]] = []
        lines = [b""]
        if settings.reply_to:
            rname, raddr = parseaddr(settings.reply_to)
            static.append(("Reply-To", _display(rname, raddr)))
            lines.append(b"Reply-To: " + _encode_address(rname, raddr) + b"\r\n")
        list_id_name, list_id = _list_id(settings, self.domain)
        static.append(("List-Id", f"{list_id_name} {list_id}".strip()))
        lines.append(b"List-Id: " + _encode_phrase(list_id_name, "List-Id") + list_id.encode()
                     + b"\r\n")
        self.static_headers = static
        self.static_lines = b"".join(lines)

        # [analytics]: links and the open image go through serve, for this campaign only.
        self.campaign = _tracked_campaign(settings, campaign)
        self.tracking: TrackingTokens | None = None
        self.salt = b""
        html, slots = issue.html, issue.slots
        if self.campaign is not None and self.server_url:
            self.tracking = TrackingTokens(settings.secret_key(), settings.base_url)
            # Random per send and never stored: pseudonyms cannot be traced to an address.
            self.salt = secrets.token_bytes(16)
            marker = _fresh_marker(issue.html + issue.text)
            slots = {**issue.slots, marker: Slot("reader_ref")}
            html = _tracked_html(html, settings, self.server_url, self.tracking, self.campaign,
                                 marker, list(issue.slots))

        html_pieces, html_slots = _cut(html, slots)
        text_pieces, text_slots = _cut(issue.text, slots)
        self.slots: list[Slot] = list(dict.fromkeys(html_slots + text_slots))
        self.has_manage = any(slot.field == "manage_url" for slot in self.slots)
        index = {slot: i for i, slot in enumerate(self.slots)}
        html_index = [index[s] for s in html_slots]
        text_index = [index[s] for s in text_slots]
        self.html = Pieces(html_pieces, html_index)
        self.text = Pieces(text_pieces, text_index)
        self.template = MessageTemplate(issue.subject, self.html, self.text,
                                        _variable_names(self.slots))
        self.html_qp = Pieces(_qp_pieces(html_pieces), html_index)
        self.text_qp = Pieces(_qp_pieces(text_pieces), text_index)

        # Boundaries start with "=_": QP and base64 bodies can never contain that.
        digest = hashlib.sha256(issue.html.encode("utf-8", "replace")).hexdigest()[:24]
        alt, rel = f"=_alt_{digest}", f"=_rel_{digest}"
        qp_head = (
            b'Content-Type: %s; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable'
            b"\r\n\r\n"
        )
        self.head_tail = (
            b"MIME-Version: 1.0\r\n"
            + f'Content-Type: multipart/alternative; boundary="{alt}"\r\n\r\n'.encode()
            + b"This is a multi-part message in MIME format.\r\n"
            + f"--{alt}\r\n".encode()
            + qp_head % b"text/plain"
        )
        if issue.attachments:
            self.between = (
                f"\r\n--{alt}\r\n".encode()
                + f'Content-Type: multipart/related; type="text/html"; boundary="{rel}"\r\n\r\n'
                .encode()
                + f"--{rel}\r\n".encode()
                + qp_head % b"text/html"
            )
            images = b"".join(_image_part(rel, image) for image in issue.attachments)
            self.tail = b"\r\n" + images + f"--{rel}--\r\n\r\n--{alt}--\r\n".encode()
        else:
            self.between = f"\r\n--{alt}\r\n".encode() + qp_head % b"text/html"
            self.tail = f"\r\n--{alt}--\r\n".encode()


def _variable_names(slots: list[Slot]) -> tuple[str, ...]:
    """A name for each slot's value, as APIs take variable names: `<field>[_<filters>]_<n>`.

    Ending in the slot's number keeps them distinct, and distinct from any name an
    adapter derives by adding a suffix (`name_0_html`).
    """
    names = []
    for number, slot in enumerate(slots):
        words = [slot.field.removeprefix("attr:"), *slot.transforms]
        base = re.sub(r"[^a-z0-9]+", "_", "_".join(words).lower()).strip("_")
        names.append(f"{base}_{number}" if base else f"value_{number}")
    return tuple(names)


def _prepared(issue: Issue, settings: Settings, campaign: int | None = None) -> _Prepared:
    prep = issue.prepared
    if (prep is None or (prep.settings is not settings and prep.settings != settings)
            or prep.campaign != _tracked_campaign(settings, campaign)):
        prep = _Prepared(issue, settings, campaign)
        issue.prepared = prep
    return prep


def _tracked_campaign(settings: Settings, campaign: int | None) -> int | None:
    """The campaign whose links are tracked; None when [analytics] is off (or no campaign:
    preview, build and check show the real links)."""
    return campaign if settings.analytics.tracking and settings.base_url else None


def _fresh_marker(content: str) -> str:
    n = 0
    while (marker := f"zqtrack{n}qz") in content:
        n += 1
    return marker


_HREF = re.compile(r"""(<a\b[^>]*?\shref\s*=\s*)(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _own(url: str, own: list[str]) -> bool:
    """True for a link to the newsletter's own site (base_url or the server)."""
    return any(url == base or url.startswith(base + "/") or url.startswith(base + "?")
               for base in own)


def _tracked_html(html: str, settings: Settings, server_url: str, tracking: TrackingTokens,
                  campaign: int, marker: str, markers: list[str]) -> str:
    """The issue's HTML with [analytics] applied: each http(s) link through `/c/<token>`,
    and the 1x1 open image before </body>.

    Left as they are: links holding a reader's own value (unsubscribe, manage, any
    `subscriber.*` in a URL: a per-campaign token must not carry one reader's data),
    mailto:, tel: and other schemes, in-page anchors, and links into the newsletter's own
    site (the web version, the archive's home: its furniture, not what the writer links
    to). The text part is never rewritten: it shows the real addresses.
    """
    own = [u.rstrip("/") for u in (settings.base_url, server_url) if u]
    if settings.analytics.clicks:
        def swap(m: re.Match[str]) -> str:
            raw = m.group(2) if m.group(2) is not None else m.group(3)
            url = html_lib.unescape(raw).strip()
            if any(mark in url for mark in markers):
                return m.group(0)
            if urlsplit(url).scheme.lower() not in ("http", "https") or _own(url, own):
                return m.group(0)
            tracked = f"{click_url(server_url, tracking.link(campaign, url))}?r={marker}"
            return f'{m.group(1)}"{html_lib.escape(tracked)}"'

        html = _HREF.sub(swap, html)
    if settings.analytics.opens:
        image = (f'<img src="{open_url(server_url, tracking.link(campaign, None))}?r={marker}" '
                 'width="1" height="1" alt="" style="display:block;border:0;width:1px;'
                 'height:1px">')
        ends = list(_BODY_END.finditer(html))
        html = (html[:ends[-1].start()] + image + html[ends[-1].start():]) if ends else (
            html + image)
    return html


def _cut(content: str, slots: Mapping[str, Slot]) -> tuple[list[str], list[Slot]]:
    """Split content at markers: pieces[0] slot[0] pieces[1] … pieces[-1]."""
    if not slots:
        return [content], []
    pattern = re.compile("|".join(re.escape(m) for m in sorted(slots, key=len, reverse=True)))
    pieces: list[str] = []
    found: list[Slot] = []
    pos = 0
    for m in pattern.finditer(content):
        pieces.append(content[pos : m.start()])
        found.append(slots[m.group(0)])
        pos = m.end()
    pieces.append(content[pos:])
    return pieces, found


def _qp_pieces(pieces: list[str]) -> list[bytes]:
    """QP-encode each static piece; all but the last end with a soft line break."""
    out = []
    last = len(pieces) - 1
    for i, piece in enumerate(pieces):
        data = piece.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
        if i == last and not data.endswith("\r\n"):
            data += "\r\n"
        encoded = _crlf(binascii.b2a_qp(data.encode("utf-8"), istext=True))
        out.append(encoded if i == last else encoded + _SOFT)
    return out


def _crlf(encoded: bytes) -> bytes:
    """b2a_qp breaks soft lines with the input's line end (LF when it has none): make it CRLF."""
    if b"\n" not in encoded:
        return encoded
    return encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _qp_value(value: str) -> bytes:
    """A spliced value, QP-encoded on lines of its own (a soft break after it)."""
    if not value:
        return b""
    if value.isascii() and len(value) < 70 and "=" not in value and value[-1] not in " \t":
        return value.encode("ascii") + _SOFT  # the common case: nothing to encode
    return _crlf(binascii.b2a_qp(value.encode("utf-8"), istext=True)) + _SOFT


def _image_part(boundary: str, image: InlineImage) -> bytes:
    data = binascii.b2a_base64(image.data, newline=False)
    lines = b"\r\n".join(data[i : i + 76] for i in range(0, len(data), 76))
    filename = re.sub(r'[\x00-\x1f\x7f"\\]', "_", image.filename)
    return (
        f"--{boundary}\r\n"
        f"Content-Type: {image.content_type}\r\n"
        f"Content-Transfer-Encoding: base64\r\n"
        f"Content-ID: <{image.cid}>\r\n"
        f'Content-Disposition: inline; filename="{filename}"\r\n\r\n'
    ).encode("ascii", "replace") + lines + b"\r\n"


# --- headers --------------------------------------------------------------------------

_date_cache: tuple[int, str] = (0, "")


def _now() -> str:
    global _date_cache
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache = (second, format_datetime(datetime.fromtimestamp(second, UTC)))
    return _date_cache[1]


def _quote_name(name: str) -> str:
    if _NEEDS_QUOTES.search(name):
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return name


def _display(name: str, addr: str) -> str:
    """`Name <addr>` for humans and HTTP APIs (Unicode kept, specials quoted)."""
    name = " ".join(_CONTROL.sub(" ", name or "").split())
    addr = _CONTROL.sub("", addr)
    return f"{_quote_name(name)} <{addr}>" if name else addr


def header_address(addr: str) -> str:
    """The address as a raw header carries it: an IDN domain in Punycode (IDNA), the local
    part as is (so `subscribers remove` finds the saved messages to a reader)."""
    addr = _CONTROL.sub("", addr)
    if not addr.isascii():
        local, _, domain = addr.rpartition("@")
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass
        addr = f"{local}@{domain}"
    return addr


def _encode_address(name: str, addr: str) -> bytes:
    """An address for a raw header: RFC 2047 for non-ASCII names, IDNA for domains."""
    name = " ".join(_CONTROL.sub(" ", name or "").split())
    addr = header_address(addr)
    if not name:
        return addr.encode("utf-8")
    phrase = _encode_phrase(name, "To")
    angle = b"<" + addr.encode("utf-8") + b">"
    if len(phrase.rsplit(b"\n", 1)[-1]) + len(angle) > 74:
        return phrase.rstrip(b" ") + b"\r\n " + angle  # fold before the address too
    return phrase + angle


# Past this many characters a display name is cut: no mailbox shows more, and a
# pasted essay in a name field should not make a megabyte of headers.
NAME_MAX_CHARS = 200


def _encode_phrase(name: str, header: str) -> bytes:
    """A display name, quoted or RFC 2047-encoded, followed by a space ('' → b'').

    Long names are folded into encoded-words on lines of at most 78 characters, so
    no header line nears the 998-character limit servers enforce (RFC 5322 2.1.1).
    """
    if not name:
        return b""
    name = name[:NAME_MAX_CHARS]
    if name.isascii() and len(name) + len(header) + 4 <= 60:
        return _quote_name(name).encode("ascii") + b" "
    # Specials (",", "<", '"', …) in a phrase must not reach the header bare: as
    # encoded-words they are q-encoded and cannot split the address list.
    return _fold(header, name, phrase=True).encode("ascii") + b" "


def _fold(header: str, value: str, phrase: bool = False) -> str:
    """`value` folded at 78: at spaces when it is plain ASCII with short words, else as
    RFC 2047 encoded-words (a long word without spaces can only be split that way)."""
    words_fit = value.isascii() and all(len(w) < 60 for w in value.split())
    if phrase and _NEEDS_QUOTES.search(value):
        words_fit = False
    charset = "us-ascii" if words_fit else "utf-8"
    return Header(value, charset, header_name=header).encode(linesep="\r\n", maxlinelen=78)


def _header_line(header: str, value: str) -> bytes:
    if value.isascii() and len(value) + len(header) + 2 <= 78:
        return f"{header}: {value}\r\n".encode("ascii")
    return f"{header}: {_fold(header, value)}\r\n".encode("ascii")


def _list_id(settings: Settings, domain: str) -> tuple[str, str]:
    """(phrase, <id>) for the List-Id header (RFC 2919)."""
    if settings.list_id:
        value = settings.list_id.strip()
        if "<" in value:
            phrase, _, rest = value.partition("<")
            return phrase.strip().strip('"'), "<" + rest.strip()
        return settings.name, f"<{value}>"
    host = domain
    if settings.base_url:
        host = urlsplit(settings.base_url).hostname or domain
    label = re.sub(r"[^a-z0-9]+", "-", settings.name.lower()).strip("-") or "newsletter"
    return settings.name, f"<{label}.{host}>"


def _list_unsubscribe_lines(unsub: str | None, mailto: str | None) -> bytes:
    if not unsub and not mailto:
        return b""
    parts = [f"<{u}>" for u in (unsub, mailto) if u]
    line = b"List-Unsubscribe: " + ",\r\n ".join(parts).encode("ascii", "replace") + b"\r\n"
    if unsub:
        line += b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    return line
