"""A real issue (build_issue + personalize) through every HTTP adapter: what each reader gets."""

from __future__ import annotations

import email.utils
import html
from collections.abc import Callable
from pathlib import Path

from newsletter.compose.issue import build_issue
from newsletter.compose.message import Recipient, personalize
from newsletter.delivery.providers.base import Outcome
from newsletter.settings import load_settings
from tests.providers_http.conftest import API

DRAFT = """\
---
title: "Notes from the road — issue 3"
---
Hello {{ subscriber.name | default("friend") }},

This week: footnotes[^1] and a [link](https://example.com/a?b=1&c=2).

[^1]: A footnote for {{ subscriber.email }}.
"""

READERS = [Recipient(f"reader{i}@example.org", f"Reader {i}") for i in range(12)] + [
    Recipient("zoe@example.org", "Zoë Ångström"),
    Recipient("nameless@example.org", ""),
    Recipient("quote@example.org", 'Ann "Annie" O\'Neil, Jr.'),
]


def test_each_reader_gets_their_own_issue(api: API, newsletter_dir: Path,
                                          write_draft: Callable[..., Path]) -> None:
    draft = write_draft("2026-11-20-road.md", DRAFT)
    settings = load_settings(newsletter_dir)
    issue = build_issue(settings, draft)
    messages = [personalize(issue, r, key=str(i + 1), settings=settings)
                for i, r in enumerate(READERS)]

    results = api.provider().send(messages)

    assert all(r.outcome is Outcome.SENT for r in results), results
    got = {email.utils.parseaddr(d.to[0])[1]: d for d in api.fake.delivered}
    assert sorted(got) == sorted(r.email for r in READERS)
    for reader, message in zip(READERS, messages, strict=True):
        d = got[reader.email]
        assert len(d.to) == 1
        assert message.unsubscribe_url and message.unsubscribe_url in d.text
        assert html.escape(message.unsubscribe_url, quote=True) in d.html
        assert d.headers["List-Unsubscribe"] == f"<{message.unsubscribe_url}>"
        assert d.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert f"Hello {reader.name or 'friend'}," in d.text
        assert f"A footnote for {reader.email}." in d.text
        if api.name != "ses":  # SES carries the raw MIME: compared as a whole below
            assert d.html == message.html and d.text == message.text
        assert "%recipient." not in d.html + d.text and "%nl_" not in d.html + d.text
        assert d.subject == "Notes from the road — issue 3"
    if api.name in ("sendgrid", "mailgun", "postmark", "resend"):
        # Readers with a name share one body; the nameless one differs ("friend").
        assert len(api.fake.requests) <= 2
