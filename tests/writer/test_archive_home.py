"""The archive home: name, description, recent issues with an excerpt, then all of them."""

from __future__ import annotations

import re
from pathlib import Path

from newsletter.settings import load_settings
from newsletter.writer.publish import RECENT, publish


def test_the_home_shows_recent_issues_with_excerpts_then_every_issue(
        newsletter_dir: Path) -> None:
    with (newsletter_dir / "newsletter.toml").open("a") as f:
        f.write('\n[publish]\ndescription = "Slow notes on fast birds."\n')
    for n in range(1, RECENT + 3):
        (newsletter_dir / "drafts" / f"2026-01-{n:02d}-issue-{n}.md").write_text(
            f"---\ntitle: Issue {n}\ndate: 2026-01-{n:02d}\nsent: 2026-01-{n:02d}\n---\n"
            f"# Opening {n}\n\nThe *first* words of issue {n}, with [a link](https://example.com)"
            f".\n\n{'More text here. ' * 30}\n")
    (newsletter_dir / "drafts" / "2026-02-01-with-preheader.md").write_text(
        "---\ntitle: With a preheader\ndate: 2026-02-01\nsent: 2026-02-01\n"
        "preheader: What this one is about.\n---\nBody text that is not the excerpt.\n")
    publish(load_settings(newsletter_dir), newsletter_dir / "site")
    home = (newsletter_dir / "site" / "index.html").read_text()
    assert "Slow notes on fast birds." in home and "Test Letter" in home
    recent, _, rest = home.partition('id="all-heading"')
    excerpts = re.findall(r'<p class="excerpt">(.*?)</p>', recent)
    assert len(excerpts) == RECENT
    assert excerpts[0] == "What this one is about."  # the preheader when there is one
    # Otherwise the text: blocks apart, inline markup joined, cut at a word.
    assert excerpts[1].startswith("Opening 12 The first words of issue 12, with a link. More")
    assert excerpts[1].endswith("…") and len(excerpts[1]) <= 221
    older = re.findall(r'<li><a href="([^"]+)">([^<]+)</a>', rest)
    assert [title for _, title in older] == ["Issue 3", "Issue 2", "Issue 1"]
    assert older[-1][0] == "https://example.com/news/2026-01-01-issue-1/"
    for feed in ("feed.xml", "rss.xml", "feed.json"):
        assert f'href="https://example.com/news/{feed}"' in home
