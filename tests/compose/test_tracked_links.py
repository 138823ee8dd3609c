"""Issue 22: [analytics] in the composed message, and the shared-body batching kept exact."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter.compose.issue import build_issue
from newsletter.compose.message import Recipient, personalize
from newsletter.errors import ConfigError
from newsletter.settings import load_settings

DRAFT = """\
---
subject: Tracked
---
Hi {{ subscriber.name | default("friend") }}: [a link](https://example.org/x?a=1&b=2) and
[yours](https://example.org/p?c={{ subscriber.city }}).
"""


def test_each_readers_values_still_rebuild_their_message_exactly(
        newsletter_dir: Path, write_draft: Callable[..., Path]) -> None:
    (newsletter_dir / "newsletter.toml").write_text(
        (newsletter_dir / "newsletter.toml").read_text()
        + "\n[analytics]\nclicks = true\nopens = true\n")
    settings = load_settings(newsletter_dir)
    issue = build_issue(settings, write_draft("t.md", DRAFT))
    messages = [personalize(issue, Recipient(f"r{i}@example.org", f"R <{i}>", {"city": "Oslo"},
                                             key=f"r{i}@example.org"),
                            key=str(i), settings=settings, campaign=7) for i in range(3)]
    refs = set()
    for m in messages:
        assert m.template is not None
        assert m.template.render(m.reader_values) == (m.html, m.text)
        mime = email.message_from_bytes(m.as_bytes(), policy=email.policy.default)
        assert mime.get_body(("html",)).get_content().replace("\r\n", "\n") == (
            m.html.replace("\r\n", "\n"))
        assert "https://example.com/news/c/" in m.html and "/o/" in m.html
        # A link holding a reader's own value is left as it is.
        assert "https://example.org/p?c=Oslo" in m.html
        refs.add(next(v for k, v in m.reader_values.items() if k.startswith("reader_ref")))
    assert len(refs) == 3 and not any("r0" in r or "example" in r for r in refs)
    # No campaign (preview, build): the real links.
    preview = personalize(issue, Recipient("a@example.org"), key="0", settings=settings)
    assert "/c/" not in preview.html and "https://example.org/x?a=1&amp;b=2" in preview.html


def test_analytics_settings_are_checked(newsletter_dir: Path) -> None:
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(toml.read_text() + "\n[analytics]\nclicks = 1\nkeep_dayz = 3\n")
    with pytest.raises(ConfigError) as err:
        load_settings(newsletter_dir)
    assert "analytics.clicks must be true or false" in str(err.value)
    assert "unknown setting analytics.keep_dayz" in str(err.value)
    assert "did you mean keep_days?" in str(err.value)
