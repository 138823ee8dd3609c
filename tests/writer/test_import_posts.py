"""`newsletter import-posts`: realistic exports made here → drafts that build and behave."""
# ruff: noqa: E501  (the Substack HTML below is kept as Substack writes it)

from __future__ import annotations

import csv
import html as html_lib
import http.server
import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from newsletter.compose.issue import build_issue
from newsletter.compose.source import parse_draft
from newsletter.settings import load_settings

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)

POST_HTML = """\
<div class="body markup" dir="auto">
<p>After 3,032 days, I left<a class="footnote-anchor" id="footnote-anchor-1"
 href="#footnote-1" target="_self">1</a>. Here is what I learned:</p>
<ol><li><p>Ship small things</p><ul><li><p>every week</p></li></ul></li>
<li><p>Write it down</p></li></ol>
<div class="captioned-image-container"><figure><a class="image-link image2 is-viewable-img"
 target="_blank" href="IMGURL"><div class="image2-inset"><picture>
<img src="IMGURL" width="1200" height="800" alt="My last day at the office"
 srcset="IMGURL 424w" sizes="100vw" data-attrs="{&quot;src&quot;:&quot;x&quot;}" loading="lazy">
</picture></div></a><figcaption class="image-caption">Badge handed in.</figcaption></figure></div>
<div class="subscription-widget-wrap" data-attrs="{}"><div class="subscription-widget show-subscribe">
<div class="preamble"><p class="cta-caption">Thanks for reading Liu's Log! Subscribe for free.</p>
</div><form class="subscription-widget-subscribe"><input type="email" name="email"></form></div></div>
<p class="button-wrapper" data-attrs="{&quot;url&quot;:&quot;https://liu.substack.com/p/x?utm_source=substack&amp;utm_medium=email&amp;utm_content=share&amp;action=share&quot;,&quot;text&quot;:&quot;Share&quot;}"
 data-component-name="ButtonCreateButton"><a class="button primary" href="https://liu.substack.com/p/x?action=share"><span>Share</span></a></p>
<div id="youtube2-dQw4w9WgXcQ" class="youtube-wrap" data-attrs="{&quot;videoId&quot;:&quot;dQw4w9WgXcQ&quot;,&quot;startTime&quot;:null,&quot;endTime&quot;:null}"
 data-component-name="Youtube2ToDOM"><div class="youtube-inner"><iframe src="https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ?rel=0" frameborder="0"></iframe></div></div>
<p>Welcome to Liu's Log.</p>
<div class="footnote" data-component-name="FootnoteToDOM"><a id="footnote-1" href="#footnote-anchor-1"
 class="footnote-number" contenteditable="false" target="_self">1</a><div class="footnote-content">
<p>Meta, in November.</p></div></div>
</div>
"""

POSTS_CSV = [
    ["post_id", "post_date", "is_published", "email_sent_at", "inbox_sent_at", "type",
     "audience", "title", "subtitle", "podcast_url"],
    ["151234567.leaving-meta", "2026-11-21T07:00:00.000Z", "true", "2026-11-21T07:00:12.000Z",
     "2026-11-21T07:00:12.000Z", "newsletter", "everyone", "Leaving Meta",
     "What 3,032 days taught me", ""],
    ["151234568.the-paid-one", "2026-11-28T07:00:00.000Z", "true", "2026-11-28T07:00:09.000Z",
     "", "newsletter", "only_paid", "For paying readers", "", ""],
    ["151234569.episode-1", "2026-11-30T07:00:00.000Z", "true", "", "", "podcast", "everyone",
     "Episode 1", "The first show", "https://example.com/ep1.mp3"],
    ["151234570.unfinished", "", "false", "", "", "newsletter", "everyone", "Unfinished", "", ""],
]


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def substack_zip(path: Path, image_url: str = "https://substack-post-media.s3.amazonaws.com/a.jpeg",
                 paid_html: str = "<p>Only for you.</p>", post_html: str = POST_HTML) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("posts.csv", _csv(POSTS_CSV))
        zf.writestr("posts/151234567.leaving-meta.html", post_html.replace("IMGURL", image_url))
        zf.writestr("posts/151234568.the-paid-one.html", paid_html)
        zf.writestr("posts/151234569.episode-1.html", "<p>Show notes.</p>")
        zf.writestr("posts/151234570.unfinished.html", "<p>TK</p>")
        zf.writestr("email_list.liu.csv",
                    "email,active_subscription,expiry,plan,email_disabled,created_at\n"
                    "reader@example.com,true,,other,false,2026-01-01T00:00:00.000Z\n")
    return path


def front(path: Path) -> dict:
    text = path.read_text()
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture
def drafts(newsletter_dir: Path) -> Path:
    return newsletter_dir / "drafts"


def test_a_substack_export_becomes_drafts_that_build_like_the_post(newsletter_dir, drafts, cli):
    export = substack_zip(newsletter_dir / "export.zip")
    run = cli("import-posts", str(export))
    assert run.exit_code == 0, run.stderr
    assert "substack: 4 post(s): 4 new" in run.stderr
    draft = drafts / "2026-11-21-leaving-meta.md"
    meta = front(draft)
    assert meta["title"] == "Leaving Meta"
    assert meta["preheader"] == "What 3,032 days taught me"
    assert meta["sent"] == "2026-11-21T07:00:12Z"
    assert meta["audience"] == "everyone" and "publish" not in meta
    body = draft.read_text()
    # Widgets gone, embeds as links, the image and its caption kept, the footnote kept.
    assert "Subscribe for free" not in body and "Share" not in body
    assert "[Watch the video on YouTube](https://www.youtube.com/watch?v=dQw4w9WgXcQ)" in body
    assert "![My last day at the office](https://substack-post-media.s3.amazonaws.com/a.jpeg)" \
        in body
    assert "*Badge handed in.*" in body
    assert "Welcome to Liu's Log." in body

    issue = build_issue(load_settings(newsletter_dir), draft)
    assert 'class="footnote' in issue.html and "Meta, in November." in issue.html
    assert issue.subject == "Leaving Meta"
    assert "<ol" in issue.html and "every week" in issue.html  # the list: see the next test

    paid = front(drafts / "2026-11-28-the-paid-one.md")
    assert paid["audience"] == "only_paid" and paid["publish"] is False
    podcast = front(drafts / "2026-11-30-episode-1.md")
    assert podcast["podcast_url"] == "https://example.com/ep1.mp3" and "sent" not in podcast
    assert podcast["publish"] is True  # public on Substack, never emailed: still archived
    assert "[Listen to the episode](https://example.com/ep1.mp3)" in \
        (drafts / "2026-11-30-episode-1.md").read_text()
    unfinished = front(drafts / "unfinished.md")
    assert unfinished["publish"] is False and "sent" not in unfinished


def bare(html: str) -> str:
    """The HTML's tags without attributes (inlined CSS) or whitespace between them."""
    return re.sub(r">\s+<", "><", re.sub(r"<(\w+)\s[^>]*>", r"<\1>", html))


def test_an_imported_posts_nested_lists_stay_nested(newsletter_dir, drafts, cli):
    """markdownify nests the CommonMark way (3 spaces under "1. "), often after a blank line."""
    post = POST_HTML.replace("<p>Welcome to Liu's Log.</p>", (
        "<ul><li><p>a</p><ul><li><p>b</p><ul><li><p>c</p></li></ul></li><li><p>b2</p></li>"
        "</ul></li><li><p>d</p></li></ul>"))
    export = substack_zip(newsletter_dir / "export.zip", post_html=post)
    assert cli("import-posts", str(export)).exit_code == 0
    body = (drafts / "2026-11-21-leaving-meta.md").read_text()
    assert "1. Ship small things\n\n   - every week\n2. Write it down" in body  # as converted
    run = cli("build", "leaving-meta")
    assert run.exit_code == 0, run.stderr
    html = bare((newsletter_dir / "build" / "leaving-meta.html").read_text())
    text = (newsletter_dir / "build" / "leaving-meta.txt").read_text()
    assert ("<ol><li><p>Ship small things</p><ul><li>every week</li></ul></li>"
            "<li><p>Write it down</p></li></ol>") in html
    assert ("<ul><li><p>a</p><ul><li><p>b</p><ul><li>c</li></ul></li><li><p>b2</p></li></ul>"
            "</li><li><p>d</p></li></ul>") in html
    assert "1. Ship small things\n\n   - every week\n\n2. Write it down" in text
    assert "- a\n\n  - b\n\n    - c\n\n  - b2\n\n- d" in text


def test_line_breaks_in_an_imported_post_stay_line_breaks(newsletter_dir, drafts, cli):
    """<br> (poems, addresses, sign-offs) becomes a backslash break, which editors keep."""
    post = POST_HTML.replace("<p>Welcome to Liu's Log.</p>", (
        "<p>Line one<br>line two</p>"
        "<blockquote><p>Roses are red,<br>violets are blue.</p></blockquote>"
        "<p>Yours,<br>\n<strong>Liu</strong><br></p>"
        "<pre><code>first<br>second</code></pre>"))
    assert cli("import-posts", str(substack_zip(newsletter_dir / "export.zip",
                                                post_html=post))).exit_code == 0
    body = (drafts / "2026-11-21-leaving-meta.md").read_text()
    assert "Line one\\\nline two" in body and "  \n" not in body
    run = cli("build", "leaving-meta")
    assert run.exit_code == 0, run.stderr
    html = bare((newsletter_dir / "build" / "leaving-meta.html").read_text())
    text = (newsletter_dir / "build" / "leaving-meta.txt").read_text()
    assert "<p>Line one<br>line two</p>" in html.replace("<br>\n", "<br>")
    assert "<p>Roses are red,<br>violets are blue.</p>" in html.replace("<br>\n", "<br>")
    assert "<p>Yours,<br><strong>Liu</strong></p>" in html.replace("<br>\n", "<br>")
    assert "\\" not in html  # no backslash shows, in the code block neither
    assert "Line one\nline two" in text and "> Roses are red,\n> violets are blue." in text
    assert "Yours,\nLiu" in text and "    first\n    second" in text


def test_an_emailed_post_is_refused_as_sent_when_listed(newsletter_dir, drafts, cli):
    cli("import-posts", str(substack_zip(newsletter_dir / "export.zip")))
    draft = parse_draft(drafts / "2026-11-21-leaving-meta.md")
    assert draft.extra["sent"] == "2026-11-21T07:00:12Z"
    assert draft.extra["imported_from"] == "substack:151234567.leaving-meta"


def test_re_running_keeps_edited_and_deleted_drafts_and_duplicates_nothing(
    newsletter_dir, drafts, cli
):
    export = substack_zip(newsletter_dir / "export.zip")
    assert cli("import-posts", str(export)).exit_code == 0
    edited = drafts / "2026-11-21-leaving-meta.md"
    edited.write_text(edited.read_text() + "\nA line I added.\n")
    (drafts / "2026-11-30-episode-1.md").unlink()
    before = sorted(p.name for p in drafts.iterdir())

    again = cli("import-posts", str(export))
    assert again.exit_code == 0, again.stderr
    assert sorted(p.name for p in drafts.iterdir()) == [n for n in before]
    assert edited.read_text().endswith("A line I added.\n")
    assert "edited since the last import" in again.stdout
    assert "deleted since the last import" in again.stdout
    assert "0 new" in again.stderr


def test_a_writers_own_draft_of_the_same_name_is_left_alone(newsletter_dir, drafts, cli):
    mine = drafts / "2026-11-21-leaving-meta.md"
    mine.write_text("# My own version\n")
    run = cli("import-posts", str(substack_zip(newsletter_dir / "export.zip")))
    assert run.exit_code == 0
    assert mine.read_text() == "# My own version\n"
    assert "a draft of that name exists" in run.stdout


def test_dry_run_writes_nothing(newsletter_dir, drafts, cli):
    run = cli("import-posts", str(substack_zip(newsletter_dir / "export.zip")), "--dry-run")
    assert run.exit_code == 0 and "would write" in run.stdout
    assert list(drafts.iterdir()) == []
    assert not (newsletter_dir / "newsletter.db").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"), "is a damaged ZIP"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00binary"), "neither a ZIP nor UTF-8 JSON"),
        (lambda p: p.write_text("{\"db\": []}"), "not a Ghost export"),
        (lambda p: p.write_text("{not json"), "is not valid JSON"),
        (lambda p: _zip(p, {"posts.csv": "id,name\n1,x\n"}), "no post_id, title columns"),
        (lambda p: _zip(p, {"readme.txt": "hi"}), "neither posts.csv"),
        (lambda p: _zip(p, {"posts.csv": _csv([POSTS_CSV[0], ["1.a", "yesterday", "true", "",
                                                              "", "", "", "A", "", ""]]),
                            "posts/1.a.html": "<p>a</p>"}), "line 2"),
        (lambda p: _zip(p, {"posts.csv/": "", "posts/1.a.html": "<p>a</p>"}), "neither posts.csv"),
        # Hostile or damaged JSON: right outline, wrong types inside.
        (lambda p: p.write_text('{"db": [{"data": {"posts": ["not a post"]}}]}'),
         "not shaped like a Ghost export"),
        (lambda p: p.write_text('{"db": [{"data": {"posts": [{"id": "1", "slug": "a", '
                                '"title": "A", "html": 5}]}}]}'), "not shaped like a Ghost"),
        (lambda p: p.write_text('{"db": [{"data": {"posts": [{"id": "1", "slug": "a"}], '
                                '"emails": {"x": 1}}}]}'), "not shaped like a Ghost export"),
    ],
)
def test_a_malformed_export_is_one_error_and_writes_nothing(
    newsletter_dir, drafts, cli, make, message
):
    export = newsletter_dir / "export.bin"
    make(export)
    run = cli("import-posts", str(export))
    assert run.exit_code != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], run.stderr
    assert list(drafts.iterdir()) == []


def _zip(path: Path, members: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)


def ghost_export(path: Path) -> Path:
    mobiledoc = {
        "version": "0.3.1", "atoms": [], "markups": [["a", ["href", "https://example.org"]],
                                                     ["strong"]],
        "cards": [["image", {"src": "https://example.org/cat.jpg", "alt": "A cat",
                             "caption": "Our cat"}],
                  ["markdown", {"markdown": "A **markdown** card[^1]\n\n[^1]: its note"}]],
        "sections": [[1, "p", [[0, [0], 1, "A link"], [0, [], 0, " and "],
                               [0, [1], 1, "bold"]]],
                     [10, 0], [10, 1], [3, "ul", [[[0, [], 0, "one"]], [[0, [], 0, "two"]]]]],
    }
    lexical = {"root": {"type": "root", "children": [
        {"type": "heading", "tag": "h2", "children": [{"type": "text", "text": "Lexical"}]},
        {"type": "paragraph", "children": [
            {"type": "text", "text": "Hello ", "format": 0},
            {"type": "link", "url": "https://example.com", "children": [
                {"type": "text", "text": "there", "format": 2}]}]},
    ]}}
    data = {"db": [{"meta": {}, "data": {
        "posts": [
            {"id": "g1", "slug": "mobiledoc-post", "title": "Old editor", "type": "post",
             "status": "published", "visibility": "public", "published_at": 1700000000000,
             "mobiledoc": json.dumps(mobiledoc), "lexical": None, "html": None},
            {"id": "g2", "slug": "lexical-post", "title": "New editor", "type": "post",
             "status": "published", "visibility": "paid",
             "published_at": "2025-05-01T10:00:00.000Z",
             "lexical": json.dumps(lexical), "html": None, "custom_excerpt": "Fresh"},
            {"id": "g3", "slug": "about", "title": "About", "type": "page", "status": "published",
             "html": "<p>page</p>"},
        ],
        "emails": [{"post_id": "g1", "status": "submitted",
                    "submitted_at": "2023-11-14T22:13:25.000Z"}],
    }}]}
    path.write_text(json.dumps(data))
    return path


def test_a_ghost_export_in_both_editor_formats(newsletter_dir, drafts, cli):
    run = cli("import-posts", str(ghost_export(newsletter_dir / "ghost.json")))
    assert run.exit_code == 0, run.stderr
    assert "ghost: 2 post(s)" in run.stderr  # the page is not a post
    old = drafts / "2023-11-14-mobiledoc-post.md"
    text = old.read_text()
    assert "[A link](https://example.org) and **bold**" in text
    assert "![A cat](https://example.org/cat.jpg)" in text and "*Our cat*" in text
    assert "A **markdown** card[^1]" in text and "[^1]: its note" in text
    assert front(old)["sent"] == "2023-11-14T22:13:25Z"
    new = drafts / "2025-05-01-lexical-post.md"
    meta = front(new)
    assert meta["preheader"] == "Fresh" and meta["publish"] is False and "sent" not in meta
    assert "## Lexical" in new.read_text()
    assert "Hello [*there*](https://example.com)" in new.read_text()
    build_issue(load_settings(newsletter_dir), old)  # builds


def test_a_buttondown_export(newsletter_dir, drafts, cli):
    export = newsletter_dir / "buttondown.zip"
    _zip(export, {
        "emails.csv": _csv([["id", "subject", "publish_date", "status", "slug"],
                            ["b1", "Issue one", "2025-01-05T09:00:00Z", "sent", "issue-one"],
                            ["b2", "Next time", "", "draft", "next-time"]]),
        "emails/issue-one.md": "Hello *readers* {{ not a template }}.\n",
        "emails/next-time.md": "---\nsubject: Next time\nstatus: draft\n---\nSoon.\n",
    })
    run = cli("import-posts", str(export))
    assert run.exit_code == 0, run.stderr
    one = drafts / "2025-01-05-issue-one.md"
    assert front(one)["sent"] == "2025-01-05T09:00:00Z"
    issue = build_issue(load_settings(newsletter_dir), one)
    assert "{{ not a template }}" in issue.text  # braces are text, not Jinja
    assert front(drafts / "next-time.md")["publish"] is False


class _Images(http.server.BaseHTTPRequestHandler):
    endless_sent = 0  # bytes /endless.png managed to send before the client hung up
    hits = 0

    def do_GET(self) -> None:  # noqa: N802
        type(self).hits += 1
        if self.path == "/endless.png":  # a hostile host: an image that never ends
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            chunk = b"\0" * 65536
            try:
                for _ in range(200 * 16):  # 200 MB at most, then it stops by itself
                    self.wfile.write(chunk)
                    type(self).endless_sent += len(chunk)
            except OSError:
                pass
            return
        if self.path == "/a.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)
        else:
            self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_images_copies_what_is_reachable_and_keeps_the_rest(
    newsletter_dir, drafts, cli, image_server
):
    export = substack_zip(newsletter_dir / "export.zip", image_url=f"{image_server}/a.png",
                          paid_html=f'<p><img src="{image_server}/missing.png" alt="gone"></p>')
    run = cli("import-posts", str(export), "--download-images")
    assert run.exit_code == 0, run.stderr
    text = (drafts / "2026-11-21-leaving-meta.md").read_text()
    local = [line for line in text.splitlines() if line.startswith("![My last day")]
    assert local and "](images/leaving-meta/" in local[0]
    image = drafts / local[0].split("](")[1].rstrip(")")
    assert image.read_bytes() == PNG
    assert "missing.png" in (drafts / "2026-11-28-the-paid-one.md").read_text()
    assert "warning: image" in run.stderr and "kept the remote URL" in run.stderr
    issue = build_issue(load_settings(newsletter_dir), drafts / "2026-11-21-leaving-meta.md")
    assert "images/leaving-meta/" in issue.html


def test_import_then_publish_makes_the_archive(newsletter_dir, cli):
    """The whole move: `import-posts substack.zip && publish`."""
    assert cli("import-posts", str(substack_zip(newsletter_dir / "export.zip"))).exit_code == 0
    run = cli("publish")
    assert run.exit_code == 0, run.stderr
    site = newsletter_dir / "site"
    pages = sorted(p.parent.name for p in site.glob("*/index.html"))
    # Emailed and public, or public on the web: archived; paid-only and unpublished: not.
    assert pages == ["episode-1", "leaving-meta"]
    feed = (site / "feed.xml").read_text()
    assert "Leaving Meta" in feed and "For paying readers" not in feed


def test_a_post_showing_template_code_builds_and_publishes(newsletter_dir, drafts, cli):
    """Substack HTML with {{ }} in code: the import wraps the body in raw, build keeps it."""
    post = POST_HTML.replace("<p>Welcome to Liu's Log.</p>", (
        "<p>Write <code>{{ name }}</code>.</p>"
        "<pre><code>{% for x in xs %}{{ x }}{% endfor %}</code></pre>"
        "<p>Close it: <code>{% endraw %}</code>, {%+ endraw %}{{ 7*7 }} and {{ 8*8 }}.</p>"))
    assert cli("import-posts", str(substack_zip(newsletter_dir / "export.zip",
                                                post_html=post))).exit_code == 0
    run = cli("build", "leaving-meta")
    assert run.exit_code == 0, run.stderr
    html = (newsletter_dir / "build" / "leaving-meta.html").read_text()
    text = (newsletter_dir / "build" / "leaving-meta.txt").read_text()
    assert re.search(r"<code[^>]*>\{\{ name \}\}</code>", html)
    assert "{% for x in xs %}{{ x }}{% endfor %}" in html_lib.unescape(html)
    assert re.search(r"<code[^>]*>\{% endraw %\}</code>", html)
    assert "Write {{ name }}." in text and "{% for x in xs %}{{ x }}{% endfor %}" in text
    assert "Close it: {% endraw %}, {%+ endraw %}{{ 7*7 }} and {{ 8*8 }}." in text
    assert "{% raw %}" not in html and "{% raw %}" not in text  # the import's own wrapping

    run = cli("publish")
    assert run.exit_code == 0, run.stderr
    page = (newsletter_dir / "site" / "leaving-meta" / "index.html").read_text()
    assert re.search(r"<code[^>]*>\{\{ name \}\}</code>", page)
    assert "{{ 7*7 }} and {{ 8*8 }}" in page and "{% raw %}" not in page


def test_an_emailed_imported_post_is_not_sent_to_the_list_again(newsletter_dir, cli):
    cli("import-posts", str(substack_zip(newsletter_dir / "export.zip")))
    assert cli("subscribers", "add", "reader@example.com").exit_code == 0
    refused = cli("send", "leaving-meta", "--to", "subscribers", "--yes", "--force")
    assert refused.exit_code == 5
    assert "already emailed to the list from Substack on 2026-11-21" in refused.stderr
    assert not (newsletter_dir / "outbox").exists()
    # A test send, or one the writer insists on, still goes.
    assert cli("send", "leaving-meta", "--to", "me@example.org", "--force").exit_code == 0
    again = cli("send", "leaving-meta", "--to", "subscribers", "--yes", "--force", "--resend")
    assert again.exit_code == 0, again.stderr
def _ghost_posts(path: Path, posts: list[dict]) -> Path:
    path.write_text(json.dumps({"db": [{"data": {"posts": posts, "emails": []}}]}))
    return path


def _ghost_post(n: int, slug: str, title: str, html: str, day: str = "2024-01-03") -> dict:
    return {"id": str(n), "slug": slug, "title": title, "status": "published",
            "published_at": f"{day}T10:00:00.000Z", "html": html}


def test_hostile_post_text_stays_text(newsletter_dir, drafts, cli):
    """Jinja that closes the raw block, escaped tags, a YAML-breaking title, javascript:."""
    export = _ghost_posts(newsletter_dir / "ghost.json", [_ghost_post(
        1, "jinja", "Lesson: {{ x }}\n---\nslug: evil",
        "<p>Close it: {% endraw %}{{ 7*7 }} then {{ subscriber.email }}.</p>"
        "<p>Tags as text: &lt;script&gt;alert(1)&lt;/script&gt;</p>"
        '<p><a href="javascript:alert(2)">click me</a> and <a href="https://ok.example/">ok</a></p>')])
    run = cli("import-posts", str(export))
    assert run.exit_code == 0, run.stderr
    (draft,) = drafts.glob("*.md")
    meta = front(draft)
    assert meta["title"] == "Lesson: {{ x }} --- slug: evil" and meta["slug"] == "jinja"
    issue = build_issue(load_settings(newsletter_dir), draft)
    assert "{% endraw %}{{ 7*7 }} then {{ subscriber.email }}." in issue.text
    assert "49" not in issue.text
    assert "<script>" not in issue.html and "&lt;script&gt;alert(1)" in issue.html
    assert "javascript:" not in issue.html and "click me" in issue.html
    assert 'href="https://ok.example/"' in issue.html


def test_posts_sharing_a_slug_get_distinct_slugs_that_stay_on_re_import(
        newsletter_dir, drafts, cli):
    """Two drafts with one slug would share a campaign's sent check and an archive page."""
    (drafts / "2023-05-01-dup.md").write_text("---\ntitle: My own\n---\nMine.\n")
    posts = [_ghost_post(1, "dup", "Dup A", "<p>A</p>", "2024-01-03"),
             _ghost_post(2, "dup", "Dup B", "<p>B</p>", "2024-01-03"),
             _ghost_post(3, "dup", "Dup C", "<p>C</p>", "2024-02-09"),
             _ghost_post(4, "ünïcødé-ø", "Ünïcødé", "<p>u</p>")]
    export = _ghost_posts(newsletter_dir / "ghost.json", posts)
    assert cli("import-posts", str(export)).exit_code == 0
    slugs = {front(p)["title"]: front(p)["slug"] for p in drafts.glob("2024-*.md")}
    assert slugs == {"Dup A": "dup-2", "Dup B": "dup-3", "Dup C": "dup-4", "Ünïcødé": "unicode-o"}
    again = cli("import-posts", str(export))
    assert again.exit_code == 0 and "4 unchanged" in again.stderr, again.stderr
    assert {front(p)["title"]: front(p)["slug"] for p in drafts.glob("2024-*.md")} == slugs


def test_a_run_killed_before_it_recorded_its_drafts_is_adopted_not_duplicated(
        newsletter_dir, drafts, cli):
    from newsletter import store

    export = substack_zip(newsletter_dir / "export.zip")
    assert cli("import-posts", str(export)).exit_code == 0
    names = sorted(p.name for p in drafts.glob("*.md"))
    db = store.connect(newsletter_dir / "newsletter.db")
    with db.conn:  # the drafts were written, the kill came before the records
        db.execute("DELETE FROM imported_posts")
    db.conn.close()
    again = cli("import-posts", str(export))
    assert again.exit_code == 0, again.stderr
    assert sorted(p.name for p in drafts.glob("*.md")) == names
    assert f"{len(names)} unchanged" in again.stderr and "kept" not in again.stdout
    (drafts / names[0]).unlink()  # recorded again: a deleted one stays deleted
    third = cli("import-posts", str(export))
    assert "deleted since the last import" in third.stdout
    assert not (drafts / names[0]).exists()


def test_html_nested_too_deep_to_convert_is_kept_as_its_text(newsletter_dir, drafts, cli):
    deep = "<div>" * 3000 + "<p>Still here.</p>" + "</div>" * 3000
    export = _ghost_posts(newsletter_dir / "ghost.json", [
        _ghost_post(1, "deep", "Deep", deep), _ghost_post(2, "fine", "Fine", "<p>ok</p>")])
    run = cli("import-posts", str(export))
    assert run.exit_code == 0 and run.exception is None, (run.stderr, run.exception)
    assert "2 new" in run.stderr
    (draft,) = drafts.glob("*-deep.md")
    assert "Still here." in draft.read_text()
    assert "Still here." in build_issue(load_settings(newsletter_dir), draft).text


def test_an_endless_image_is_cut_off_at_the_limit(newsletter_dir, drafts, cli, image_server):
    _Images.endless_sent = 0
    export = substack_zip(newsletter_dir / "export.zip", image_url=f"{image_server}/endless.png")
    run = cli("import-posts", str(export), "--download-images")
    assert run.exit_code == 0, run.stderr
    assert "endless.png" in run.stderr and "over 20 MB" in run.stderr
    assert _Images.endless_sent < 80 * 1024 * 1024  # it stopped reading, not after 200 MB
    assert f"{image_server}/endless.png" in (drafts / "2026-11-21-leaving-meta.md").read_text()


def test_a_draft_the_writer_renamed_is_followed_not_called_deleted(newsletter_dir, drafts, cli):
    export = substack_zip(newsletter_dir / "export.zip")
    assert cli("import-posts", str(export)).exit_code == 0
    old = drafts / "2026-11-21-leaving-meta.md"
    renamed = drafts / "leaving-meta-final.md"
    old.rename(renamed)
    edited = drafts / "2026-11-28-the-paid-one.md"
    moved_edited = drafts / "paid.md"
    edited.rename(moved_edited)
    moved_edited.write_text(moved_edited.read_text() + "\nMine now.\n")
    again = cli("import-posts", str(export))
    assert again.exit_code == 0, again.stderr
    assert "deleted since the last import" not in again.stdout
    assert "kept        drafts/paid.md: edited since the last import" in again.stdout
    assert not old.exists() and not edited.exists()  # nothing brought back beside them
    assert moved_edited.read_text().endswith("Mine now.\n")
    assert "0 new" in again.stderr and "3 unchanged" in again.stderr


def test_a_killed_run_of_posts_sharing_a_slug_is_adopted_too(newsletter_dir, drafts, cli):
    from newsletter import store

    posts = [_ghost_post(n, "dup", f"Dup {n}", f"<p>{n}</p>") for n in (1, 2, 3)]
    export = _ghost_posts(newsletter_dir / "ghost.json", posts)
    assert cli("import-posts", str(export)).exit_code == 0
    names = sorted(p.name for p in drafts.glob("*.md"))
    db = store.connect(newsletter_dir / "newsletter.db")
    with db.conn:
        db.execute("DELETE FROM imported_posts")
    db.conn.close()
    again = cli("import-posts", str(export))
    assert again.exit_code == 0, again.stderr
    assert sorted(p.name for p in drafts.glob("*.md")) == names
    assert "0 new" in again.stderr and "3 unchanged" in again.stderr, again.stderr


def test_a_dry_run_with_download_images_fetches_nothing(newsletter_dir, drafts, cli,
                                                        image_server):
    _Images.hits = 0
    export = substack_zip(newsletter_dir / "export.zip", image_url=f"{image_server}/a.png")
    run = cli("import-posts", str(export), "--download-images", "--dry-run")
    assert run.exit_code == 0, run.stderr
    assert _Images.hits == 0 and "1 image(s) to download" in run.stderr
    assert list(drafts.iterdir()) == []


def test_drafts_lists_an_imported_emailed_post_as_sent(newsletter_dir, cli):
    cli("import-posts", str(substack_zip(newsletter_dir / "export.zip")))
    listing = cli("drafts").stdout
    line = next(row for row in listing.splitlines() if "leaving-meta" in row)
    assert "sent 2026-11-21 (imported)" in line
    paid = next(row for row in listing.splitlines() if "the-paid-one" in row)
    assert "sent 2026-11-28 (imported)" in paid
