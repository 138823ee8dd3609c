"""Tiny but real messages for provider and engine tests, independent of the compose package.

`make_test_message(row)` builds what `personalize()` would: one message per
delivery row, key = the row id, its own unsubscribe URL and List-Unsubscribe
header, raw MIME bytes from the email package, and (for the APIs that share
one body between readers) the issue's template and the reader's values.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from functools import lru_cache

from newsletter.compose.message import Message
from newsletter.compose.parts import MessageTemplate, Pieces
from newsletter.delivery.recipients import DeliveryRow

SENDER = "writer@example.com"
SUBJECT = "Issue #1: a test — with ünïcode"


def unsubscribe_url_for(key: str) -> str:
    return f"https://example.com/news/unsubscribe?token=t-{key}"


@lru_cache(maxsize=16)  # one per issue (subject), shared by its messages
def template(subject: str) -> MessageTemplate:
    html = Pieces(["<p>Hello ", ',</p><p>The body.</p><p><a href="', '">Unsubscribe</a></p>'],
                  [0, 1])
    text = Pieces(["Hello ", ",\n\nThe body.\n\nUnsubscribe: ", "\n"], [0, 1])
    return MessageTemplate(subject, html, text, ("name_0", "unsubscribe_url_1"))


def make_message(key: str, recipient: str, name: str = "", subject: str = SUBJECT) -> Message:
    """A personalized multipart message for `recipient` with delivery key `key`."""
    url = unsubscribe_url_for(recipient.lower())
    headers = [
        ("Date", formatdate(localtime=False)),
        ("Message-ID", make_msgid(domain="example.com")),
        ("List-Id", "Test Letter <test.example.com>"),
        ("List-Unsubscribe", f"<{url}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]
    text = f"Hello {name or 'reader'},\n\nThe body.\n\nUnsubscribe: {url}\n"
    html = (
        f"<p>Hello {name or 'reader'},</p><p>The body.</p>"
        f'<p><a href="{url}">Unsubscribe</a></p>'
    )
    values = {"name_0": name or "reader", "unsubscribe_url_1": url}
    # The name goes into this HTML unescaped: with HTML specials in it the template
    # (which escapes) would not give it, so such a message carries none.
    shared = template(subject) if template(subject).render(values) == (html, text) else None
    mime = EmailMessage()
    mime["From"] = f"Test Writer <{SENDER}>"
    mime["To"] = f"{name} <{recipient}>" if name else recipient
    mime["Subject"] = subject
    for header, value in headers:
        mime[header] = value
    mime.set_content(text)
    mime.add_alternative(html, subtype="html")
    return Message(
        key=key,
        sender=SENDER,
        recipient=recipient,
        from_header=f"Test Writer <{SENDER}>",
        to_header=str(mime["To"]),
        subject=subject,
        headers=headers,
        html=html,
        text=text,
        unsubscribe_url=url,
        raw=mime.as_bytes(policy=mime.policy.clone(linesep="\r\n")),
        template=shared,
        reader_values=values if shared else {},
    )


def make_test_message(row: DeliveryRow) -> Message:
    """The message factory the engine calls: one Message per delivery row."""
    return make_message(str(row.id), row.email, row.name)
