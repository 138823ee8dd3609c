"""Nested lists indented the CommonMark way, in what a reader gets: build, preview, send.

Writers (and markdownify, for imported posts) put a nested item under its parent's text:
2 spaces after "- ", 3 after "1. ". With a blank line before the nested list,
Python-Markdown used to swallow the next item into the nested one.
"""

from __future__ import annotations

import email
import email.policy
import http.client
import re
from urllib.parse import urlsplit

from newsletter.settings import load_settings
from newsletter.writer.preview import Preview

DRAFT = """\
---
title: Lessons
---
What I learned:

1. Ship small things

   - every week
2. Write it down

And what I kept:

- one
- two

  1. a
  2. b
- three
"""

LISTS = ("<ol><li><p>Ship small things</p><ul><li>every week</li></ul></li>"
         "<li><p>Write it down</p></li></ol>",
         "<ul><li>one</li><li><p>two</p><ol><li>a</li><li>b</li></ol></li>"
         "<li><p>three</p></li></ul>")
TEXT = ("1. Ship small things\n\n   - every week\n\n2. Write it down",
        "- one\n\n- two\n\n  1. a\n  2. b\n\n- three")


def bare(html: str) -> str:
    """The HTML's tags without attributes (inlined CSS) or whitespace between them."""
    html = re.sub(r"<(\w+)\s[^>]*>", r"<\1>", html)
    return re.sub(r">\s+<", "><", html)


def assert_nested(html: str, text: str) -> None:
    for expected in LISTS:
        assert expected in bare(html)
    text = text.replace("\r\n", "\n")
    for expected in TEXT:
        assert expected in text
    assert "every week 2." not in text and "b - three" not in text


def test_build_shows_the_nesting_in_html_and_text(write_draft, newsletter_dir, cli):
    write_draft("2026-03-02-lessons.md", DRAFT)
    run = cli("build", "lessons")
    assert run.exit_code == 0, run.stderr
    out = newsletter_dir / "build" / "2026-03-02-lessons"
    assert_nested(out.with_suffix(".html").read_text(), out.with_suffix(".txt").read_text())


def test_preview_shows_the_nesting(write_draft, newsletter_dir):
    path = write_draft("2026-03-02-lessons.md", DRAFT)
    preview = Preview(load_settings(newsletter_dir), path, poll_seconds=0.1)
    preview.start()
    try:
        url = urlsplit(preview.url)
        pages = []
        for page in ("/email.html", "/text.txt"):
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            try:
                conn.request("GET", page)
                response = conn.getresponse()
                assert response.status == 200
                pages.append(response.read().decode())
            finally:
                conn.close()
    finally:
        preview.stop()
    assert_nested(*pages)


def test_a_sent_issue_shows_the_nesting(write_draft, newsletter_dir, cli):
    write_draft("2026-03-02-lessons.md", DRAFT)
    assert cli("subscribers", "add", "liu@example.com").exit_code == 0
    run = cli("send", "lessons", "--to", "subscribers", "--yes")
    assert run.exit_code == 0, run.stderr
    (eml,) = (newsletter_dir / "outbox").rglob("*.eml")
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert_nested(msg.get_body(("html",)).get_content(), msg.get_body(("plain",)).get_content())
