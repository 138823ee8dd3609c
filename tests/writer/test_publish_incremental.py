"""Incremental publish: after every kind of change, the site holds exactly the bytes a
publish from scratch writes, and an unchanged archive is not rendered again.

"From scratch" is a fresh folder holding only the site's history (the manifest before the
step: each issue's permanent id and dates, which a feed reader must keep seeing) and no
cache: every page, the index, the feeds and the sitemap are rendered anew there.
"""

from __future__ import annotations

import shutil
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from newsletter.compose import layout as layouts
from newsletter.settings import load_settings
from newsletter.writer.publish import MANIFEST, publish
from tests.writer.pngs import make_png
from tests.writer.test_publish import make_letter, site_files

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def write_issue(root: Path, n: int, title: str | None = None, extra: str = "") -> Path:
    day = f"2026-0{1 + n // 28}-{1 + n % 28:02d}"
    path = root / "drafts" / f"{day}-issue-{n}.md"
    path.write_text(textwrap.dedent(f"""\
        ---
        title: {title or f"Issue {n}"}
        preheader: Notes number {n}
        sent: {day}
        {extra}
        ---
        Hello {{{{ subscriber.name | default("reader") }}}}, this is issue {n}.

        ![Photo](images/photo{n % 3}.png)
        """), encoding="utf-8")
    return path


def photo(i: int, shade: int = 90) -> bytes:
    return make_png(12, 8, lambda x, y: ((x * 20 + i) % 256, (y * 30) % 256, shade))


def test_incremental_publish_writes_what_a_publish_from_scratch_writes(tmp_path: Path) -> None:
    root = make_letter(tmp_path / "letter")
    with (root / "newsletter.toml").open("a") as f:
        f.write("feed_entries = 4\n")  # so some issues are in the feeds and most are not
    for i in range(3):
        (root / "drafts" / "images" / f"photo{i}.png").write_bytes(photo(i))
    for n in range(12):
        write_issue(root, n)
    site = tmp_path / "site"
    step = 0

    def check(what: str, expect_written: set[str] | None = None) -> None:
        nonlocal step
        step += 1
        now = START + timedelta(days=step)
        scratch = tmp_path / f"scratch-{step}"
        scratch.mkdir()
        if (site / MANIFEST).exists():  # the history only, no cache, no pages
            shutil.copy(site / MANIFEST, scratch / MANIFEST)
        settings = load_settings(root)
        result = publish(settings, site, now=now)
        publish(settings, scratch, now=now)
        mine, fresh = site_files(site), site_files(scratch)
        assert sorted(mine) == sorted(fresh), what
        for rel, data in fresh.items():
            assert mine[rel] == data, f"after {what}: {rel} differs from a publish from scratch"
        if expect_written is not None:
            assert set(result.written) == expect_written, what

    check("the first publish")
    check("nothing changed", set())

    edited = write_issue(root, 3)
    edited.write_text(edited.read_text().replace("this is issue", "this was issue"))
    check("one old draft edited (not in the feeds)",
          {"2026-01-04-issue-3/index.html", "sitemap.xml"})

    newest = write_issue(root, 11)
    newest.write_text(newest.read_text().replace("this is issue", "this was issue"))
    check("the newest draft edited (in the feeds)")

    write_issue(root, 5, title="A new title the index shows")
    check("a title the index and feeds show")

    (root / "drafts" / "images" / "photo1.png").write_bytes(photo(1, shade=200))
    check("an image four issues use")

    (root / "layouts").mkdir(exist_ok=True)
    web = (layouts.BUILTIN_LAYOUTS / "web.html").read_text()
    (root / "layouts" / "web.html").write_text(web.replace("</body>", "<!-- mine --></body>"))
    check("a layout edited")
    (root / "layouts" / "web.html").write_text(web.replace("</body>", "<!-- ours --></body>"))
    check("the same layout edited again, same size, within the clock's tick")

    toml = root / "newsletter.toml"
    toml.write_text(toml.read_text().replace('name = "Golden Letter"', 'name = "Silver Letter"'))
    check("a setting every page shows")
    toml.write_text(toml.read_text().replace("feed_entries = 4", "feed_entries = 6"))
    check("how many issues the feeds carry")

    write_issue(root, 20)
    check("an issue added")
    write_issue(root, 0).unlink()
    check("an issue removed")
    write_issue(root, 7, extra="publish: false")
    check("an issue taken off the web (its images stay for the inboxes)")
    write_issue(root, 7)
    check("and put back")

    (site / "2026-01-05-issue-4" / "index.html").unlink()
    check("a page deleted from the site by hand", {"2026-01-05-issue-4/index.html"})

    shutil.rmtree(root / ".newsletter-cache")
    check("the cache lost", set())


def test_an_unchanged_archive_is_not_rendered_again(tmp_path: Path) -> None:
    root = make_letter(tmp_path / "letter")
    for i in range(3):
        (root / "drafts" / "images" / f"photo{i}.png").write_bytes(photo(i))
    for n in range(120):
        write_issue(root, n)
    settings = load_settings(root)
    t0 = time.perf_counter()
    publish(settings, root / "site", now=START)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = publish(load_settings(root), root / "site", now=START + timedelta(days=1))
    again = time.perf_counter() - t0
    assert result.written == [] and result.removed == []
    # Rendering 123 issues again took as long as the first time; reading hashes is far less.
    assert again < first / 4, f"first {first:.2f} s, unchanged {again:.2f} s"


def test_compiled_layouts_are_kept_until_a_layout_changes(tmp_path: Path) -> None:
    folder = tmp_path / "layouts"
    folder.mkdir()
    (folder / "web.html").write_text("<p>{{ 1 + 1 }} one</p>\n")
    env = layouts.make_environment(folder)
    template = layouts.load_layout(env, "web.html")
    assert layouts.make_environment(folder) is env
    assert layouts.load_layout(layouts.make_environment(folder), "web.html") is template
    # Edited at once, to the same size: seen all the same.
    (folder / "web.html").write_text("<p>{{ 2 + 2 }} two</p>\n")
    again = layouts.make_environment(folder)
    assert again is not env
    assert layouts.load_layout(again, "web.html").render() == "<p>4 two</p>\n"
    (folder / "index.html").write_text("added\n")  # a new layout may shadow a built-in
    assert layouts.make_environment(folder) is not again
