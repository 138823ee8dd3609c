"""A first publish renders pages on every core (issue 21): the same bytes as one process.

Real worker processes, real files: a site published with two workers is compared file by
file with one published by a single process, and a broken draft found by a worker stops
the publish as it would without one, leaving the site as it was.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.errors import ContentError
from newsletter.settings import load_settings
from newsletter.writer.publish import MANIFEST, PARALLEL_FROM, publish
from tests.writer.test_publish import make_letter, site_files
from tests.writer.test_publish_incremental import photo, write_issue

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
COUNT = PARALLEL_FROM + 12


def letter(tmp_path: Path) -> Path:
    root = make_letter(tmp_path / "letter")
    with (root / "newsletter.toml").open("a") as f:
        f.write("feed_entries = 5\n")  # the feeds carry some pages' content, not all
    for i in range(3):
        (root / "drafts" / "images" / f"photo{i}.png").write_bytes(photo(i))
    for n in range(COUNT):
        # One kept off the web (its email's image stays), one with a footnote and a table.
        write_issue(root, n, extra="publish: false" if n == 7 else "")
    (root / "drafts" / "2026-03-01-extra.md").write_text(
        "---\ntitle: Extra\nsent: 2026-03-01\n---\nText[^1].\n\n| a | b |\n|---|---|\n"
        "| 1 | 2 |\n\n[^1]: A note.\n", encoding="utf-8")
    return root


def test_two_workers_write_the_bytes_one_process_writes(tmp_path: Path) -> None:
    root = letter(tmp_path)
    settings = load_settings(root)
    alone = publish(settings, tmp_path / "alone", now=NOW, workers=1)
    (root / ".newsletter-cache").rename(tmp_path / "cache-alone")  # the second starts cold
    both = publish(settings, tmp_path / "both", now=NOW, workers=2)
    # make_letter's three, COUNT less the one kept off, and extra
    assert both.issues == alone.issues and len(alone.issues) == 3 + COUNT - 1 + 1
    one, two = site_files(tmp_path / "alone"), site_files(tmp_path / "both")
    assert sorted(one) == sorted(two)
    for rel, data in one.items():
        assert two[rel] == data, f"{rel} differs between one process and two"
    # The cache the workers' pages left behind serves the next publish like any other.
    again = publish(settings, tmp_path / "both", now=NOW, workers=2)
    assert again.written == []


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: no pool by default")
def test_a_broken_draft_found_by_a_worker_leaves_the_site_as_it_was(tmp_path: Path) -> None:
    root = letter(tmp_path)
    settings = load_settings(root)
    site = tmp_path / "site"
    publish(settings, site, now=NOW, workers=1)
    before = site_files(site)
    (root / ".newsletter-cache").rename(tmp_path / "cache-old")  # everything renders again
    broken = write_issue(root, 30)
    broken.write_text(broken.read_text().replace("this is issue", "{{ nope.x }} issue"))
    with pytest.raises(ContentError, match=r"2026-02-03-issue-30\.md:\d+: .*nope"):
        publish(settings, site, now=NOW)  # workers: one per core
    assert site_files(site) == before
    assert not [p for p in site.rglob(".*.tmp")]
    assert (site / MANIFEST).is_file()


def test_a_page_edited_by_hand_to_the_same_size_is_rendered_again(tmp_path: Path) -> None:
    # Outputs were checked by existence and size only: a same-size edit stayed for good.
    root = make_letter(tmp_path / "letter")
    (root / "drafts" / "images" / "photo1.png").write_bytes(photo(1))
    write_issue(root, 1)
    settings = load_settings(root)
    site = tmp_path / "site"
    publish(settings, site, now=NOW)
    page = site / "2026-01-02-issue-1" / "index.html"
    good = page.read_bytes()
    page.write_bytes(good.replace(b"Issue 1", b"Issue X", 1))  # the same size
    os.utime(page, ns=(page.stat().st_atime_ns, page.stat().st_mtime_ns + 1_000_000_000))
    result = publish(settings, site, now=NOW)
    assert page.read_bytes() == good
    assert result.written == ["2026-01-02-issue-1/index.html"]
