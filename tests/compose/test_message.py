"""personalize(): valid MIME for every recipient, values spliced in safely."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

import pytest

from newsletter.compose.issue import build_issue
from newsletter.compose.message import Recipient, personalize
from newsletter.compose.tokens import verify_unsubscribe_token
from newsletter.errors import SubscriberError
from newsletter.settings import load_settings
from tests.compose.test_issue import PNG, no_base_url

BODY = """\
---
title: Café “news” 🙂
preheader: Peek inside
---
Hi {{ subscriber.name | default("friend") }} from {{ subscriber.city }}
({{ subscriber.email }}), {{ subscriber.name | upper }}.
"""


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    for part in msg.walk():
        assert part.defects == [], part.defects
    return msg


def structure(msg: EmailMessage) -> list:
    if msg.is_multipart():
        return [msg.get_content_type(), [structure(p) for p in msg.iter_parts()]]
    return msg.get_content_type()


@pytest.fixture
def issue_and_settings(write_draft):
    path = write_draft("2026-05-06-news.md", BODY)
    settings = load_settings()
    return build_issue(settings, path), settings


def test_a_message_parses_cleanly_with_every_header(issue_and_settings, newsletter_dir):
    issue, settings = issue_and_settings
    recipient = Recipient("ana@example.com", "Ana", {"city": "Lisboa"}, key="ana@example.com")
    message = personalize(issue, recipient, key="17", settings=settings)
    msg = parse(message.as_bytes())
    assert structure(msg) == ["multipart/alternative", ["text/plain", "text/html"]]
    assert msg["From"] == "Test Writer <writer@example.com>"
    assert msg["To"] == "Ana <ana@example.com>"
    assert msg["Subject"] == "Café “news” 🙂"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Date"] and msg["Message-ID"].endswith("@example.com>")
    assert msg["List-Id"] == "Test Letter <test-letter.example.com>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = message.unsubscribe_url
    assert url and url.startswith("https://example.com/news/unsubscribe?token=")
    assert msg["List-Unsubscribe"] == f"<{url}>"
    assert "ana" not in url  # no readable address in the URL
    token = url.split("token=")[1]
    key = verify_unsubscribe_token(settings.secret_key(), token, settings.base_url)
    assert key == "ana@example.com"
    assert msg["Reply-To"] is None  # not configured

    text_part, html_part = msg.iter_parts()
    assert text_part.get_content().replace("\r\n", "\n") == message.text
    assert html_part.get_content().replace("\r\n", "\n") == message.html
    assert "Hi Ana from Lisboa (ana@example.com), ANA." in message.text
    assert "Hi Ana from Lisboa" in message.html and f'href="{url}"' in message.html
    assert message.key == "17" and message.recipient == "ana@example.com"
    assert message.sender == "writer@example.com"
    assert [name for name, _ in message.headers] == [
        "Date", "Message-ID", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post"
    ]


def test_values_are_escaped_in_html_and_raw_in_text(issue_and_settings):
    issue, settings = issue_and_settings
    evil = 'Bob <script>alert("x")</script> & Co'
    message = personalize(issue, Recipient("b@example.com", evil), key="1", settings=settings)
    assert "<script>" not in message.html
    assert "Bob &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co" in message.html
    assert f"Hi {evil} from" in message.text
    msg = parse(message.as_bytes())
    assert msg.get_body(("html",)).get_content().count("<script>") == 0


def test_a_message_carries_its_issues_template_and_its_readers_values(issue_and_settings):
    issue, settings = issue_and_settings
    readers = [
        Recipient("ana@example.com", "Ana", {"city": "Lisboa"}),
        Recipient("b@example.com", 'Bob <script>"x"</script> & Co', {"city": "<Zürich>"}),
        Recipient("n@example.com", "", {}),
        Recipient("t@example.com", "%recipient.name% -name- %nl_name_0%", {"city": "山田 🙂"}),
    ]
    messages = [personalize(issue, r, key=str(i), settings=settings)
                for i, r in enumerate(readers)]
    template = messages[0].template
    assert template is not None and all(m.template is template for m in messages)  # one per issue
    assert template.subject == issue.subject
    assert template.variables == ("name_0", "city_1", "email_2", "name_upper_3",
                                  "unsubscribe_url_4", "manage_url_5")  # the footer's links
    # The shared fields hold no reader's value; the values render each message exactly.
    assert "Lisboa" not in "".join(template.html.pieces + template.text.pieces)
    for message in messages:
        assert template.render(message.reader_values) == (message.html, message.text)
    assert messages[0].reader_values == {
        "name_0": "Ana", "city_1": "Lisboa", "email_2": "ana@example.com", "name_upper_3": "ANA",
        "unsubscribe_url_4": messages[0].unsubscribe_url,
        "manage_url_5": messages[0].manage_url}
    assert messages[2].reader_values["name_0"] == "friend"  # the default, as the reader sees it


def test_defaults_and_missing_attributes(issue_and_settings):
    issue, settings = issue_and_settings
    message = personalize(issue, Recipient("x@example.com"), key="1", settings=settings)
    assert "Hi friend from  (x@example.com), ." in message.text


def test_token_is_made_over_the_recipient_key_defaulting_to_email(issue_and_settings):
    issue, settings = issue_and_settings
    m = personalize(issue, Recipient("X@Example.com"), key="1", settings=settings)
    token = m.unsubscribe_url.split("token=")[1]
    key = verify_unsubscribe_token(settings.secret_key(), token, settings.base_url)
    assert key == "X@Example.com"


def test_message_ids_are_unique(issue_and_settings):
    issue, settings = issue_and_settings
    ids = {
        personalize(issue, Recipient(f"r{i}@example.com"), key=str(i), settings=settings)
        .header("Message-ID")
        for i in range(200)
    }
    assert len(ids) == 200


def test_line_breaks_in_a_name_cannot_inject_headers(issue_and_settings):
    issue, settings = issue_and_settings
    name = "Eve\r\nBcc: everyone@example.com\nX-Evil: 1"
    message = personalize(issue, Recipient("eve@example.com", name), key="1", settings=settings)
    msg = parse(message.as_bytes())
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert msg["To"].addresses[0].addr_spec == "eve@example.com"
    assert "\n" not in message.to_header and "\r" not in message.to_header
    assert "Eve Bcc: everyone@example.com X-Evil: 1" in message.text


@pytest.mark.parametrize("bad", ["a@b.com\r\nBcc: x@y.com", "a@b.com>", "", "no-at-sign"])
def test_unusable_addresses_are_refused(issue_and_settings, bad):
    issue, settings = issue_and_settings
    with pytest.raises(SubscriberError, match="not a usable email address"):
        personalize(issue, Recipient(bad), key="1", settings=settings)


def test_non_ascii_names_are_encoded(issue_and_settings):
    issue, settings = issue_and_settings
    message = personalize(issue, Recipient("z@example.com", "Zoë Ñúñez 🙂"), key="1",
                          settings=settings)
    raw = message.as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and b"=?utf-8?" in head
    assert parse(raw)["To"] == "Zoë Ñúñez 🙂 <z@example.com>"


def test_no_line_exceeds_998_characters(write_draft):
    path = write_draft("long.md", "x" * 5000 + "\n\n{{ subscriber.bio }}\n\n" + "é" * 3000 + "\n")
    settings = load_settings()
    issue = build_issue(settings, path)
    recipient = Recipient("l@example.com", "L", {"bio": "y" * 3000})
    message = personalize(issue, recipient, key="1", settings=settings)
    raw = message.as_bytes()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    body = parse(raw).get_body(("html",)).get_content()
    assert "x" * 5000 in body and "y" * 3000 in body and "é" * 3000 in body


def test_inline_images_make_a_related_part(newsletter_dir, write_draft):
    no_base_url(newsletter_dir)
    (newsletter_dir / "drafts" / "pic.png").write_bytes(PNG)
    path = write_draft("x.md", "Look: ![pic](pic.png)\n")
    settings = load_settings()
    issue = build_issue(settings, path)
    message = personalize(issue, Recipient("a@example.com"), key="1", settings=settings)
    msg = parse(message.as_bytes())
    assert structure(msg) == [
        "multipart/alternative",
        ["text/plain", ["multipart/related", ["text/html", "image/png"]]],
    ]
    image = [p for p in msg.walk() if p.get_content_type() == "image/png"][0]
    assert image.get_content() == PNG
    assert image["Content-ID"] == f"<{issue.attachments[0].cid}>"
    assert f"cid:{issue.attachments[0].cid}" in msg.get_body(("html",)).get_content()
    # No base_url: no https unsubscribe link can be made.
    assert message.unsubscribe_url is None
    assert msg["List-Unsubscribe"] is None and msg["List-Unsubscribe-Post"] is None


def test_reply_to_and_mailto_unsubscribe(newsletter_dir, write_draft):
    (newsletter_dir / "newsletter.toml").write_text(
        '[newsletter]\nname = "Test Letter"\nfrom = "Test Writer <writer@example.com>"\n'
        'base_url = "https://example.com/news"\nreply_to = "Replies <replies@example.com>"\n'
        'unsubscribe_mailto = "leave@example.com"\nlist_id = "news.example.com"\n'
    )
    path = write_draft("x.md", "Hi\n")
    settings = load_settings()
    message = personalize(build_issue(settings, path), Recipient("a@example.com"), key="1",
                          settings=settings)
    msg = parse(message.as_bytes())
    assert msg["Reply-To"] == "Replies <replies@example.com>"
    assert msg["List-Id"] == "Test Letter <news.example.com>"
    token = message.unsubscribe_url.partition("token=")[2]
    assert msg["List-Unsubscribe"] == (
        f"<{message.unsubscribe_url}>, <mailto:leave@example.com?subject=unsubscribe%20{token}>"
    )
    assert message.header("reply-to") == "Replies <replies@example.com>"


def test_personalizing_never_re_renders(issue_and_settings, newsletter_dir):
    issue, settings = issue_and_settings
    first = personalize(issue, Recipient("a@example.com", "A"), key="1", settings=settings)
    # Changing the draft or a layout now changes nothing: the issue was rendered once.
    (newsletter_dir / "layouts").mkdir()
    (newsletter_dir / "layouts" / "default.html").write_text("changed")
    issue.source.write_text("changed")
    second = personalize(issue, Recipient("b@example.com", "B"), key="2", settings=settings)
    assert first.html.replace("Hi A", "Hi B").replace("(a@", "(b@").replace(", A.", ", B.") \
        .split("unsubscribe?token=")[0] == second.html.split("unsubscribe?token=")[0]


@pytest.mark.parametrize(
    "value",
    ["a=b", "trailing space ", "é" * 50, "x" * 200 + "=" + "ü" * 100, "tab\there", "🙂 = 😀",
     "a" * 69, "a" * 70 + " ", ".starts with a dot", "From the start"],
)
def test_any_value_round_trips_through_quoted_printable(write_draft, value):
    path = write_draft("x.md", "Start {{ subscriber.v }} end\n")
    settings = load_settings()
    issue = build_issue(settings, path)
    message = personalize(issue, Recipient("v@example.com", attributes={"v": value}), key="1",
                          settings=settings)
    msg = parse(message.as_bytes())
    expected = value.replace("\t", " ")
    assert f"Start {expected} end" in msg.get_body(("plain",)).get_content()
    assert f"Start {expected} end" in message.text
    assert max(len(line) for line in message.as_bytes().split(b"\r\n")) <= 998


@pytest.mark.parametrize("subject", ["word " * 40, "Émoji 🙂 and accents é " * 12])
def test_long_subjects_are_folded(write_draft, subject):
    subject = subject.strip()
    path = write_draft("x.md", f"---\nsubject: \"{subject}\"\n---\nBody\n")
    settings = load_settings()
    message = personalize(build_issue(settings, path), Recipient("s@example.com"), key="1",
                          settings=settings)
    head = message.as_bytes().split(b"\r\n\r\n", 1)[0]
    subject_lines = head.split(b"Subject: ", 1)[1].split(b"\r\nDate:", 1)[0].split(b"\r\n")
    assert len(subject_lines) > 1 and all(len(line) <= 78 for line in subject_lines)
    assert parse(message.as_bytes())["Subject"] == subject


@pytest.mark.parametrize("name", [
    "A" * 2000,  # one 2,000-character word: cannot be folded at spaces
    "Ana " * 500,
    "Zoë " * 400,
    'Dr. "Quoted", Esq. ' * 60,
])
def test_any_name_is_folded_and_accepted_by_a_real_smtp_server(issue_and_settings, name):
    import smtplib

    from tests.delivery.smtpserver import SMTPServer

    issue, settings = issue_and_settings
    message = personalize(issue, Recipient("ana@example.com", name=name), key="1",
                          settings=settings)
    raw = message.as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    to = re.search(r"^To: .*?(?=\r\n\S)", head, re.M | re.S).group(0)
    assert max(len(line) for line in to.split("\r\n")) <= 78
    assert max(len(line) for line in head.split("\r\n")) <= 998
    with SMTPServer() as server:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            refused = client.sendmail(message.sender, [message.recipient], raw)
        assert refused == {}
        assert len(server.received) == 1
        got = parse(server.received[0].data)
    from email.header import decode_header, make_header

    # The name is capped at 200 characters; RFC 2047 decoding gives it back whole
    # (whitespace between adjacent encoded-words is not part of the text).
    shown = " ".join(name.split())[:200].strip()
    raw_to = re.search(r"^To: (.*?)\r\n(?=\S)", server.received[0].data.decode("ascii"),
                       re.M | re.S).group(1)
    raw_to = raw_to.replace("\r\n", "")  # unfolding removes only the CRLF
    decoded = str(make_header(decode_header(raw_to.rpartition("<")[0].strip())))
    assert decoded.strip('"').replace('\\"', '"') == shown
    assert got["To"].addresses[0].addr_spec == "ana@example.com"


def test_a_long_subject_without_spaces_is_folded(write_draft):
    path = write_draft("2026-05-07-long.md", "---\ntitle: " + "x" * 1500 + "\n---\nHi\n")
    settings = load_settings()
    message = personalize(build_issue(settings, path), Recipient("a@example.com"), key="1",
                          settings=settings)
    head = message.as_bytes().split(b"\r\n\r\n", 1)[0].decode("ascii")
    subject = re.search(r"^Subject: .*?(?=\r\n\S)", head, re.M | re.S).group(0)
    assert max(len(line) for line in subject.split("\r\n")) <= 78
    assert parse(message.as_bytes())["Subject"] == "x" * 1500
