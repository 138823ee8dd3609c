"""No writer-side value puts a line break or control character in a header.

Python's email package (and other mail software) also splits lines at \\v, \\f,
\\x1c-\\x1e, \\x85, U+2028 and U+2029; a \\v is what Word leaves for a manual line
break, U+2028 comes with text copied from web pages.
"""

from __future__ import annotations

import email
import email.policy
import html
import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from newsletter.compose.issue import build_issue
from newsletter.compose.message import Recipient, personalize
from newsletter.compose.tokens import verify_unsubscribe_token
from newsletter.errors import ConfigError, ContentError
from newsletter.settings import load_settings

BREAKS = ["\x0b", "\x0c", "\x1c", "\x1e", "\x85", "\u2028", "\u2029", "\x00"]
READER = Recipient("ana@example.com", "Ana", key="ana@example.com")


def headers_after_a_round_trip(raw: bytes) -> list[str]:
    """The header names a mail program sees after parsing and writing the message again."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for part in msg.walk():
        assert part.defects == [], part.defects
    again = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    return list(again.keys())


@pytest.mark.parametrize("brk", BREAKS)
def test_a_title_heading_with_a_pasted_line_break_gives_a_one_line_subject(
    write_draft, cli, newsletter_dir, brk
):
    write_draft("2026-11-21-news.md", f"# Leaving{brk}Meta\n\nHello.\n")
    result = cli("build", "news")
    assert result.exit_code == 0, result.stderr
    raw = (newsletter_dir / "build" / "2026-11-21-news.eml").read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == "Leaving Meta"
    assert "List-Unsubscribe" in headers_after_a_round_trip(raw)
    assert brk.encode("utf-8") not in raw.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize("key", ["subject", "title"])
@pytest.mark.parametrize("brk", BREAKS)
def test_a_front_matter_subject_with_a_line_break_is_refused(write_draft, cli, brk, key):
    value = json.dumps(f"Hi{brk}Bcc: all@example.com")  # YAML reads JSON escapes
    write_draft("2026-11-21-news.md", f"---\n{key}: {value}\n---\nHello.\n")
    result = cli("build", "news")
    assert result.exit_code == 3
    assert f"2026-11-21-news.md:2: the {key} holds a line break" in result.stderr


@pytest.mark.parametrize("brk", BREAKS)
def test_an_issue_whose_subject_holds_a_line_break_is_never_personalized(write_draft, brk):
    issue = build_issue(load_settings(), write_draft("2026-11-21-news.md", "# Hi\n\nHello.\n"))
    issue.subject = f"Hi{brk}Bcc: all@example.com"  # built by other code than parse_draft
    with pytest.raises(ContentError, match="the subject holds a line break"):
        personalize(issue, READER, key="1", settings=load_settings())


@pytest.mark.parametrize(
    "setting", ["name", "list_id", "from", "reply_to", "unsubscribe_mailto", "base_url"]
)
@pytest.mark.parametrize("brk", BREAKS)
def test_header_settings_with_a_line_break_are_refused(newsletter_dir, setting, brk):
    value = {
        "from": "Liu{} <liu@example.com>",
        "reply_to": "Liu{} <liu@example.com>",
        "base_url": "https://example.com/{}x",
    }.get(setting, "x{}X-Evil: 1")
    toml = newsletter_dir / "newsletter.toml"
    lines = [line for line in toml.read_text().splitlines()  # keep [provider] name
             if not line.startswith(f"{setting} =") or line == 'name = "outbox"']
    escaped = json.dumps(value.format(brk))  # TOML basic strings take the same \uXXXX
    lines.insert(lines.index("[newsletter]") + 1, f"{setting} = {escaped}")
    toml.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=f"newsletter.{setting} must be one line"):
        load_settings()


def test_a_message_with_every_header_setting_used_round_trips(newsletter_dir, write_draft):
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(toml.read_text().replace(
        "[newsletter]\n",
        '[newsletter]\nreply_to = "Liu Reply <reply@example.com>"\n'
        'unsubscribe_mailto = "leave@example.com"\nlist_id = "Liu\'s Log <log.example.com>"\n',
    ))
    settings = load_settings()
    issue = build_issue(settings, write_draft("2026-11-21-news.md", "# Caf\u00e9\n\nHello.\n"))
    raw = personalize(issue, READER, key="1", settings=settings).as_bytes()
    assert headers_after_a_round_trip(raw) == [
        "From", "To", "Subject", "Date", "Message-ID", "Reply-To", "List-Id",
        "List-Unsubscribe", "List-Unsubscribe-Post", "MIME-Version", "Content-Type",
    ]


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://example.com/news", "https://example.com/news"),
        ("https://bücher.example/café", "https://xn--bcher-kva.example/caf%C3%A9"),
    ],
)
def test_list_unsubscribe_is_the_body_link_and_verifies_for_that_reader_only(
    newsletter_dir, write_draft, cli, base_url, expected
):
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(toml.read_text().replace(
        'base_url = "https://example.com/news"',
        f'base_url = "{base_url}"\nunsubscribe_mailto = "désabonner@bücher.example"',
    ))
    write_draft("2026-11-21-news.md", "# News\n\nHello {{ subscriber.name }}.\n")
    for address in ("ana@example.com", "Bo@Example.COM"):
        assert cli("subscribers", "add", address).exit_code == 0
    result = cli("send", "news", "--to", "subscribers", "--yes")
    assert result.exit_code == 0, result.stderr
    secret = load_settings().secret_key()
    seen = set()
    for eml in sorted((newsletter_dir / "outbox").rglob("*.eml")):
        raw = eml.read_bytes()
        headers_after_a_round_trip(raw)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        header = str(msg["List-Unsubscribe"])
        web, mailto = re.findall(r"<([^>]*)>", header)
        assert web.startswith(f"{expected}/unsubscribe?token=")
        # The mailto's subject carries the same reader token (sync reads the replies).
        query = parse_qs(urlsplit(web).query)
        token = query["token"][0]
        assert query["c"] == ["1"]  # the campaign the link came in (newsletter stats)
        assert mailto == ("mailto:d%C3%A9sabonner@xn--bcher-kva.example?subject=unsubscribe"
                          f"%20{token}")
        html_part = msg.get_body(("html",)).get_content()
        links = {html.unescape(u) for u in re.findall(r'href="([^"]*/unsubscribe\?[^"]*)"',
                                                       html_part)}
        assert links == {web}
        assert web in msg.get_body(("plain",)).get_content()
        reader = verify_unsubscribe_token(secret, token, expected)
        assert reader == str(msg["To"]).lower()
        seen.add(reader)
    assert seen == {"ana@example.com", "bo@example.com"}
