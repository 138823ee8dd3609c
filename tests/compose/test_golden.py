"""The sample draft at the repository root, rendered, against committed golden files.

Regenerate on purpose only: UPDATE_GOLDEN=1 pytest tests/compose/test_golden.py
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
from pathlib import Path

import pytest

from newsletter.compose.issue import build_issue
from newsletter.compose.message import SAMPLE_RECIPIENT, personalize
from newsletter.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
SLUG = "2026-11-21-leaving-facebook-meta"


@pytest.fixture
def sample(tmp_path, monkeypatch):
    root = tmp_path / "example"
    root.mkdir()
    shutil.copy(REPO / "newsletter.toml", root)
    shutil.copytree(REPO / "drafts", root / "drafts")
    shutil.copytree(REPO / "layouts", root / "layouts")
    monkeypatch.setenv("NEWSLETTER_SECRET", "golden-secret-" + "g" * 40)  # fixed token
    settings = load_settings(root)
    issue = build_issue(settings, root / "drafts" / f"{SLUG}.md")
    return issue, personalize(issue, SAMPLE_RECIPIENT, key="golden", settings=settings)


@pytest.mark.parametrize("suffix", ["html", "txt"])
def test_sample_draft_matches_golden(sample, suffix):
    _, message = sample
    got = message.html if suffix == "html" else message.text
    path = GOLDEN / f"{SLUG}.{suffix}"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(got, encoding="utf-8")
    assert got == path.read_text(encoding="utf-8"), (
        f"{path.name} changed: review the diff, then UPDATE_GOLDEN=1 pytest {__file__}"
    )


def test_sample_draft_shows_every_feature(sample):
    issue, message = sample
    html, text = message.html, message.text
    assert issue.subject == "Leaving Facebook/Meta: why I’m going — and what’s next 🚀"
    assert issue.preheader and issue.preheader in html
    assert "Hi Sample Reader," in text  # personalization
    assert 'id="taking"' in html  # heading ids
    assert "[<sup" in html  # [[^2]]: a footnote reference in brackets
    assert "<table" in html and "<td" in html
    assert 'style="color:' in html or "<span style=" in html  # highlighted code, inline styles
    assert "“why” –" in html and "—" in html  # smart quotes and dashes
    assert "ça marche" in html  # raw HTML
    assert "https://example.com/news/images/dawn.png" in html  # local image under base_url
    assert "https://images.example.org/sunrise.jpg" in html  # remote image untouched
    assert "https://example.com/news/archive.html" in html  # relative link made absolute
    assert "- Write things down\n  - especially the decisions" in text  # 2-space nesting
    assert "1. Measure\n   1. before" in text  # 4-space nesting
    assert "Three things I learned, in the order I learned them:\n\n- Ship small" in text
    assert "[1] The short version" in text and "- no algorithm between us" in text
    assert "🎉" in text and "🙂" in issue.title


def test_sample_eml_parses_without_defects(sample):
    _, message = sample
    msg = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert [part.defects for part in msg.walk()] == [[], [], []]
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == message.text
