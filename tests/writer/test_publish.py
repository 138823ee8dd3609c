"""`newsletter publish`: the golden site, the feeds in real parsers, re-publishing, bad input.

Regenerate the golden site on purpose only:
UPDATE_GOLDEN=1 pytest tests/writer/test_publish.py -k golden
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import feedparser
import pytest
import xmlschema

from newsletter.settings import load_settings
from newsletter.store import connect
from newsletter.writer.check import check_draft
from newsletter.writer.publish import MANIFEST, publish
from tests.conftest import REPO
from tests.writer.pngs import make_png

GOLDEN = REPO / "tests" / "golden" / "site"
ATOM_XSD = REPO / "tests" / "data" / "atom" / "atom.xsd"
FIRST_RUN = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LATER = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)

TOML = """\
[newsletter]
name = "Golden Letter"
from = "Ada Writer <ada@example.com>"
base_url = "{base_url}"
address = "1 Test Street, Testville"

[provider]
name = "outbox"

[server]

[publish]
description = "Notes on building things, every other week."
"""

DRAFTS = {
    # Sent to the list (a campaign with deliveries sent), with a local image and a name slot.
    "2026-10-01-first.md": """\
        ---
        title: The first issue
        preheader: Where this letter starts <and why>
        ---
        Hello {{ subscriber.name | default("reader") }} & welcome.

        ![A red square, our logo](images/red.png)

        Read [the second issue](2026-10-15-second/) next.
        """,
    # An imported post: `sent:` says it went to the list elsewhere.
    "2026-10-15-second.md": """\
        ---
        title: Second, imported
        sent: 2026-10-15
        audience: everyone
        preheader: From the old platform
        ---
        An issue sent before this tool, with a [link](https://example.org/a?b=1&c=2).
        """,
    "2026-11-01-third.md": """\
        ---
        title: Third time
        preheader: Footnotes and a list
        ---
        Three things:[^1]

        - one
        - two

        [^1]: A footnote.
        """,
    # Never sent: stays off the web.
    "2026-11-10-unsent.md": """\
        ---
        title: Not yet
        ---
        Work in progress.
        """,
    # Sent, but the writer keeps it off the web.
    "2026-11-12-private.md": """\
        ---
        title: Members only
        publish: false
        ---
        Not for the archive.
        """,
}


def red_png() -> bytes:
    return make_png(24, 16,
                    lambda x, y: (200, 30, 40) if (x // 4 + y // 4) % 2 else (250, 250, 250))


def send_to_list(root: Path, slug: str, sent_at: str, *, kind: str = "list",
                 state: str = "sent") -> None:
    """A campaign row with one delivery, as `newsletter send` leaves them."""
    db = connect(root / "newsletter.db")
    conn = db.conn
    cur = conn.execute(
        "INSERT INTO campaigns (slug, draft_path, subject, audience, kind, provider, created_at, "
        "finished_at, status) VALUES (?, ?, ?, 'subscribers', ?, 'outbox', ?, ?, 'done')",
        (slug, f"drafts/{slug}.md", slug, kind, sent_at, sent_at),
    )
    conn.execute(
        "INSERT INTO deliveries (campaign_id, email, state, updated_at, sent_at) "
        "VALUES (?, 'reader@example.com', ?, ?, ?)",
        (cur.lastrowid, state, sent_at, sent_at if state == "sent" else None),
    )
    conn.close()


def make_letter(root: Path, base_url: str = "https://example.com/news") -> Path:
    """The golden newsletter: three sent issues, one unsent draft, one `publish: false`."""
    (root / "drafts" / "images").mkdir(parents=True, exist_ok=True)
    (root / "newsletter.toml").write_text(TOML.format(base_url=base_url))
    (root / "drafts" / "images" / "red.png").write_bytes(red_png())
    for name, text in DRAFTS.items():
        (root / "drafts" / name).write_text(textwrap.dedent(text), encoding="utf-8")
    send_to_list(root, "2026-10-01-first", "2026-10-01T07:00:05Z")
    send_to_list(root, "2026-11-01-third", "2026-11-01T07:30:00Z")
    send_to_list(root, "2026-11-01-third", "2026-10-31T20:00:00Z", kind="test")  # a test send
    send_to_list(root, "2026-11-10-unsent", "2026-11-09T10:00:00Z", kind="test")
    send_to_list(root, "2026-11-12-private", "2026-11-12T07:00:00Z")
    return root


@pytest.fixture
def letter(newsletter_dir: Path) -> Path:
    return make_letter(newsletter_dir)


def site_files(site: Path) -> dict[str, bytes]:
    return {p.relative_to(site).as_posix(): p.read_bytes()
            for p in sorted(site.rglob("*")) if p.is_file()}


def test_golden_site(letter: Path) -> None:
    result = publish(load_settings(letter), letter / "site", now=FIRST_RUN)
    assert result.issues == ["2026-11-01-third", "2026-10-15-second", "2026-10-01-first"]
    files = site_files(letter / "site")
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for rel, data in files.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_bytes(data)
    golden = site_files(GOLDEN)
    assert sorted(files) == sorted(golden)
    for rel, data in files.items():
        assert data == golden[rel], f"{rel} differs from tests/golden/site/{rel}"


def test_what_goes_on_the_web(letter: Path) -> None:
    publish(load_settings(letter), letter / "site", now=FIRST_RUN)
    site = letter / "site"
    assert not (site / "2026-11-10-unsent").exists()  # never sent (only a test send)
    assert not (site / "2026-11-12-private").exists()  # publish: false
    page = (site / "2026-10-01-first" / "index.html").read_text()
    # No personalization, no unsubscribe token, no tracking; reader-facing text escaped.
    assert "Hello reader &amp; welcome." in page
    assert "unsubscribe" not in page.lower() and "token=" not in page
    assert "Where this letter starts &lt;and why&gt;" in page
    assert '<link rel="canonical" href="https://example.com/news/2026-10-01-first/">' in page
    assert '<html lang="en">' in page
    # The image beside the page, named by its content; the email's own path is served too.
    [image] = [p.name for p in (site / "2026-10-01-first").iterdir() if p.suffix == ".png"]
    assert image.startswith("red.") and len(image) == len("red.0123456789.png")
    assert f'src="{image}"' in page
    og_image = f"https://example.com/news/2026-10-01-first/{image}"
    assert f'<meta property="og:image" content="{og_image}">' in page
    assert (site / "images" / "red.png").read_bytes() == red_png()
    index = (site / "index.html").read_text()
    assert index.index("Third time") < index.index("Second, imported") < index.index(
        "The first issue")
    assert "Not yet" not in index and "Members only" not in index
    assert '<form method="post" action="https://example.com/news/subscribe">' in index
    for field in ('name="email"', 'name="name"', 'name="website"'):
        assert field in index and field in page
    assert 'aria-hidden="true"' in index and 'tabindex="-1"' in index  # the honeypot


def test_feeds_parse_and_atom_validates(letter: Path) -> None:
    publish(load_settings(letter), letter / "site", now=FIRST_RUN)
    site = letter / "site"
    for name in ("feed.xml", "rss.xml"):
        parsed = feedparser.parse((site / name).read_bytes())
        assert not parsed.bozo, (name, parsed.get("bozo_exception"))
        assert [e.title for e in parsed.entries] == ["Third time", "Second, imported",
                                                     "The first issue"]
        first = parsed.entries[2]
        assert first.link == "https://example.com/news/2026-10-01-first/"
        assert first.id == "tag:example.com,2026-10-01:news/2026-10-01-first"
        html = first.content[0].value
        assert "Hello reader &amp; welcome." in html
        assert 'src="https://example.com/news/2026-10-01-first/red.' in html  # absolute
        assert 'href="https://example.com/news/2026-10-15-second/"' in html
    atom = feedparser.parse((site / "feed.xml").read_bytes())
    assert atom.entries[2].published == "2026-10-01T07:00:05Z"  # the first delivery sent
    assert atom.entries[1].published == "2026-10-15T00:00:00Z"  # sent: front matter
    assert atom.feed.author == "Ada Writer"
    xmlschema.XMLSchema11(ATOM_XSD).validate(str(site / "feed.xml"))
    # RSS 2.0 elements are in no namespace (only atom:link and content:encoded are).
    rss = ElementTree.parse(site / "rss.xml").getroot()
    assert rss.tag == "rss" and [c.tag for c in rss] == ["channel"]
    assert len(rss.findall("channel/item")) == 3
    assert rss.find("channel/{http://www.w3.org/2005/Atom}link").get("rel") == "self"
    data = json.loads((site / "feed.json").read_text())
    assert data["version"] == "https://jsonfeed.org/version/1.1"
    assert [i["url"] for i in data["items"]][0] == "https://example.com/news/2026-11-01-third/"
    assert data["items"][2]["image"].startswith("https://example.com/news/2026-10-01-first/red.")
    sitemap = (site / "sitemap.xml").read_text()
    assert sitemap.count("<loc>") == 4 and "<loc>https://example.com/news/</loc>" in sitemap


def test_the_atom_schema_can_fail(letter: Path) -> None:
    publish(load_settings(letter), letter / "site", now=FIRST_RUN)
    schema = xmlschema.XMLSchema11(ATOM_XSD)
    feed = (letter / "site" / "feed.xml").read_text()
    assert schema.is_valid(feed)
    assert not schema.is_valid(feed.replace("<id>https://example.com/news/</id>", ""))  # no id
    assert not schema.is_valid(feed.replace("T07:00:05Z", "T07:00:05", 1))  # no time zone


def test_republish_writes_only_what_changed_and_keeps_ids(letter: Path) -> None:
    settings = load_settings(letter)
    site = letter / "site"
    publish(settings, site, now=FIRST_RUN)
    mtimes = {p: p.stat().st_mtime_ns for p in site.rglob("*") if p.is_file()}
    again = publish(settings, site, now=LATER)
    assert again.written == [] and again.removed == []
    assert {p: p.stat().st_mtime_ns for p in site.rglob("*") if p.is_file()} == mtimes

    draft = letter / "drafts" / "2026-10-15-second.md"
    draft.write_text(draft.read_text().replace("An issue sent", "A corrected issue sent"))
    changed = publish(settings, site, now=LATER)
    # index.html shows titles, dates and preheaders only: none changed, so it stays.
    assert changed.written == ["2026-10-15-second/index.html", "feed.json", "feed.xml",
                               "rss.xml", "sitemap.xml"]
    entry = next(e for e in feedparser.parse((site / "feed.xml").read_bytes()).entries
                 if e.title == "Second, imported")
    assert entry.id == "tag:example.com,2026-10-15:news/2026-10-15-second"  # unchanged
    assert entry.updated == "2026-12-02T09:30:00Z" and entry.published == "2026-10-15T00:00:00Z"

    # Taken off the web: its page and its image go; the image the sent email links to
    # stays for the inboxes that have it; files publish did not make stay.
    (site / "CNAME").write_text("example.com\n")
    first = letter / "drafts" / "2026-10-01-first.md"
    first.write_text(first.read_text().replace("preheader:", "publish: false\npreheader:"))
    image = hashed_image(site)
    removed = publish(settings, site, now=LATER)
    assert sorted(removed.removed) == ["2026-10-01-first/index.html", f"2026-10-01-first/{image}"]
    assert not (site / "2026-10-01-first").exists()
    assert (site / "images" / "red.png").read_bytes() == red_png()
    assert (site / "CNAME").read_text() == "example.com\n"
    assert "2026-10-01-first/index.html" not in json.loads((site / MANIFEST).read_text())["files"]
    assert "2026-10-01-first" not in (site / "index.html").read_text()


def hashed_image(site: Path) -> str:
    files = json.loads((site / MANIFEST).read_text())["files"]
    return next(f for f in files if f.startswith("2026-10-01-first/red.")).split("/")[1]


def test_a_draft_put_online_early_and_taken_back_leaves_nothing(letter: Path) -> None:
    unsent = letter / "drafts" / "2026-11-10-unsent.md"
    text = unsent.read_text()
    unsent.write_text(text.replace("title:", "publish: true\ntitle:").replace(
        "Work in progress.", "![A red square](images/red.png)"))
    settings = load_settings(letter)
    site = letter / "site"
    publish(settings, site, now=FIRST_RUN)
    assert (site / "2026-11-10-unsent" / "index.html").is_file()
    unsent.write_text(text)
    removed = publish(settings, site, now=LATER)
    assert "2026-11-10-unsent/index.html" in removed.removed
    assert not (site / "2026-11-10-unsent").exists()
    assert (site / "images" / "red.png").exists()  # the first issue, sent, still links it


def test_a_publish_true_draft_goes_on_before_it_is_sent(letter: Path) -> None:
    unsent = letter / "drafts" / "2026-11-10-unsent.md"
    unsent.write_text(unsent.read_text().replace("title:", "publish: true\ntitle:"))
    result = publish(load_settings(letter), letter / "site", now=FIRST_RUN)
    assert "2026-11-10-unsent" in result.issues
    assert (letter / "site" / "2026-11-10-unsent" / "index.html").is_file()


def test_check_warns_until_the_issue_is_published(letter: Path) -> None:
    settings = load_settings(letter)
    first = letter / "drafts" / "2026-10-01-first.md"
    assert "not-published" not in [f.code for f in check_draft(settings, first).findings]
    unsent = letter / "drafts" / "2026-11-10-unsent.md"
    publish(settings, now=FIRST_RUN)  # [publish] out: the default site/
    assert "not-published" not in [f.code for f in check_draft(settings, first).findings]
    [finding] = [f for f in check_draft(settings, unsent).findings if f.code == "not-published"]
    assert finding.severity == "warning"
    assert "https://example.com/news/2026-11-10-unsent/" in finding.message
    private = letter / "drafts" / "2026-11-12-private.md"  # publish: false: no page to wait for
    assert "not-published" not in [f.code for f in check_draft(settings, private).findings]


def test_the_email_links_to_the_issue_page(letter: Path) -> None:
    from newsletter.compose.issue import build_issue

    issue = build_issue(load_settings(letter), letter / "drafts" / "2026-10-01-first.md")
    assert issue.web_url == "https://example.com/news/2026-10-01-first/"
    assert 'href="https://example.com/news/2026-10-01-first/"' in issue.html
    private = build_issue(load_settings(letter), letter / "drafts" / "2026-11-12-private.md")
    assert private.web_url is None and "View online" not in private.html  # no page to link


def test_build_writes_the_web_version(cli: Callable[..., object], letter: Path,
                                      tmp_path: Path) -> None:
    run = cli("build", "2026-10-01-first", "--out", str(tmp_path / "out"))
    assert run.exit_code == 0, run.stderr
    html = (tmp_path / "out" / "2026-10-01-first.html").read_text()
    assert "Hello reader &amp; welcome." in html and "unsubscribe" not in html.lower()
    eml = (tmp_path / "out" / "2026-10-01-first.eml").read_bytes()
    assert b"Sample Reader" in eml  # the email is still the sample reader's
    [image] = [p for p in (tmp_path / "out").iterdir() if p.name.startswith("red.")]
    assert f'src="{image.name}"' in html


def test_cli_prints_what_it_wrote(cli: Callable[..., object], letter: Path) -> None:
    run = cli("publish")
    assert run.exit_code == 0, run.stderr
    assert "wrote   site/2026-10-01-first/index.html" in run.stdout
    assert "3 issue(s) in site" in run.stderr
    again = cli("publish", "--out", "site")
    assert again.stdout == "" and "0 file(s) written" in again.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('base_url = "https://example.com/news"\n', ""),
         "publish needs base_url: set [newsletter] base_url"),
        (lambda t: t + 'lang = "en us"\nwide = 1\n',
         "[publish]: unknown key 'wide' (the keys are description, feed_entries, lang, out); "
         "lang 'en us' is not a language tag"),
    ],
)
def test_bad_settings_are_one_line(cli: Callable[..., object], letter: Path,
                                   edit: Callable[[str], str], message: str) -> None:
    toml = letter / "newsletter.toml"
    toml.write_text(edit(toml.read_text()))
    run = cli("publish")
    assert run.exit_code != 0
    assert run.stderr.startswith("Error: ") and run.stderr.count("\n") == 1, run.stderr
    assert message in run.stderr
    assert not (letter / "site").exists()


def test_a_broken_sent_draft_leaves_the_site_as_it_was(cli: Callable[..., object],
                                                       letter: Path) -> None:
    assert cli("publish").exit_code == 0
    before = site_files(letter / "site")
    third = letter / "drafts" / "2026-11-01-third.md"
    third.write_text(third.read_text() + "\n{{ issue.nope }}\n")
    run = cli("publish")
    assert run.exit_code != 0 and "issue.nope is undefined" in run.stderr
    assert run.stderr.count("\n") == 1
    assert site_files(letter / "site") == before


def test_bad_front_matter_values(cli: Callable[..., object], letter: Path) -> None:
    second = letter / "drafts" / "2026-10-15-second.md"
    second.write_text(second.read_text().replace("sent: 2026-10-15", "sent: last tuesday"))
    run = cli("publish")
    assert run.exit_code != 0 and "sent: 'last tuesday' is not a date" in run.stderr
    second.write_text(second.read_text().replace("sent: last tuesday", "publish: maybe"))
    run = cli("publish")
    assert "publish: 'maybe' must be true or false" in run.stderr


def test_out_is_a_file(cli: Callable[..., object], letter: Path) -> None:
    (letter / "site").write_text("not a folder")
    run = cli("publish")
    assert run.exit_code != 0 and "is a file: pass a folder to --out" in run.stderr


def test_no_database_means_only_front_matter_decides(newsletter_dir: Path) -> None:
    make_letter(newsletter_dir)
    (newsletter_dir / "newsletter.db").unlink()
    result = publish(load_settings(newsletter_dir), newsletter_dir / "site", now=FIRST_RUN)
    assert result.issues == ["2026-10-15-second"]
    assert not (newsletter_dir / "newsletter.db").exists()  # read-only: never created


def test_a_failed_delivery_is_not_sent(newsletter_dir: Path) -> None:
    make_letter(newsletter_dir)
    conn = sqlite3.connect(newsletter_dir / "newsletter.db")
    conn.execute("UPDATE deliveries SET state = 'failed' WHERE campaign_id = 1")
    conn.commit()
    conn.close()
    result = publish(load_settings(newsletter_dir), newsletter_dir / "site", now=FIRST_RUN)
    assert "2026-10-01-first" not in result.issues


def test_build_without_base_url_puts_embedded_images_beside_the_page(
        cli: Callable[..., object], letter: Path) -> None:
    toml = letter / "newsletter.toml"
    toml.write_text(toml.read_text().replace('base_url = "https://example.com/news"\n', ""))
    run = cli("build", "2026-10-01-first")
    assert run.exit_code == 0, run.stderr
    html = (letter / "build" / "2026-10-01-first.html").read_text()
    [image] = [p for p in (letter / "build").iterdir() if p.name.startswith("red.")]
    assert f'src="{image.name}"' in html and "cid:" not in html
    assert image.read_bytes() == red_png()
    assert '<link rel="canonical"' not in html  # no base_url, no address yet
