"""Messages as personalize() makes them, built here with the email package for adapter tests.

Each reader's message differs the way a newsletter's do: their name, their
own unsubscribe link (in the body and in List-Unsubscribe), their Message-ID.
Like personalize()'s, each carries its issue's template and the reader's values.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formataddr, formatdate
from functools import lru_cache
from html import escape

from newsletter.compose.message import Message
from newsletter.compose.parts import InlineImage, MessageTemplate, Pieces

SENDER = "Liu <liu@example.com>"
REPLY_TO = "replies@example.com"
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


def unsubscribe_url(index: int) -> str:
    # An ampersand, so the link reads differently in HTML (&amp;) and in text.
    return f"https://example.com/news/unsubscribe?t=tok{index:05d}x&u={index}"


@lru_cache(maxsize=16)  # one template per issue, shared by its messages
def template(subject: str, image: bool) -> MessageTemplate:
    """The issue's template the messages below are filled from: a name and a link."""
    picture = '<img src="cid:photo1@example.com" alt="photo">' if image else ""
    html = Pieces(["<html><body><p>Hello ", f",</p><p>This week: footnotes.</p>{picture}"
                   '<p><a href="', '">Unsubscribe</a></p></body></html>'], [0, 1])
    text = Pieces(["Hello ", ",\n\nThis week: footnotes.\n\nUnsubscribe: ", "\n"], [0, 1])
    return MessageTemplate(subject, html, text, ("name_0", "unsubscribe_url_1"))


@lru_cache(maxsize=4096)  # building MIME is slow; tests only read messages
def make_message(index: int, name: str | None = None, address: str | None = None,
                 subject: str = "Issue 7: on footnotes", image: bool = False) -> Message:
    """Reader `index`'s personalized message; `image` adds an inline CID picture."""
    name = f"Reader Number{index}" if name is None else name
    address = address or f"reader{index}@example.org"
    url = unsubscribe_url(index)
    escaped = url.replace("&", "&amp;")
    picture = '<img src="cid:photo1@example.com" alt="photo">' if image else ""
    html = (f"<html><body><p>Hello {escape(name)},</p><p>This week: footnotes.</p>{picture}"
            f'<p><a href="{escaped}">Unsubscribe</a></p></body></html>')
    text = f"Hello {name},\n\nThis week: footnotes.\n\nUnsubscribe: {url}\n"
    to_header = formataddr((name, address)) if name else address
    headers = [
        ("Date", formatdate(1_790_000_000 + index, usegmt=True)),
        ("Message-ID", f"<issue7.{index}@example.com>"),
        ("Reply-To", REPLY_TO),
        ("List-Id", "Liu's Log <log.example.com>"),
        ("List-Unsubscribe", f"<{url}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]
    attachments = (InlineImage("photo1@example.com", "photo.png", "image/png", PIXEL),) if image \
        else ()
    shared = template(subject, image)
    values = {"name_0": name, "unsubscribe_url_1": url}
    assert shared.render(values) == (html, text)
    if not image:  # the common case, written out by hand: the email package is slow
        return Message(
            key=str(1000 + index), sender="liu@example.com", recipient=address,
            from_header=SENDER, to_header=to_header, subject=subject, headers=headers,
            html=html, text=text, unsubscribe_url=url,
            raw=_raw(to_header, subject, headers, text, html), template=shared,
            reader_values=values,
        )
    mime = EmailMessage()
    mime["From"] = SENDER
    mime["To"] = to_header
    mime["Subject"] = subject
    for key, value in headers:
        mime[key] = value
    mime.set_content(text)
    mime.add_alternative(html, subtype="html")
    if image:
        mime.get_payload()[1].add_related(PIXEL, "image", "png", cid="<photo1@example.com>")
    return Message(
        key=str(1000 + index), sender="liu@example.com", recipient=address,
        from_header=SENDER, to_header=to_header, subject=subject, headers=headers,
        html=html, text=text, attachments=attachments, unsubscribe_url=url,
        raw=mime.as_bytes(policy=mime.policy.clone(linesep="\r\n")), template=shared,
        reader_values=values,
    )


def make_batch(count: int, start: int = 0, **kwargs) -> list[Message]:
    return [make_message(i, **kwargs) for i in range(start, start + count)]


def _raw(to_header: str, subject: str, headers: list[tuple[str, str]], text: str,
         html: str) -> bytes:
    """multipart/alternative with 8-bit UTF-8 parts, CRLF line ends (ASCII headers)."""
    boundary = "=_newsletter_test_boundary"
    lines = [f"From: {SENDER}", f"To: {to_header}", f"Subject: {subject}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += ["MIME-Version: 1.0",
              f'Content-Type: multipart/alternative; boundary="{boundary}"', ""]
    for subtype, body in (("plain", text), ("html", html)):
        lines += [f"--{boundary}", f'Content-Type: text/{subtype}; charset="utf-8"',
                  "Content-Transfer-Encoding: 8bit", "", *body.splitlines(), ""]
    lines += [f"--{boundary}--", ""]
    return "\r\n".join(lines).encode("utf-8")
