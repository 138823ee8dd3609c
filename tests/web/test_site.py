"""`newsletter serve` answers the published site at base_url, beside the reader routes."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.web.conftest import BIN, Site, start_site, stop_site, wait_for
from tests.writer.pngs import make_png

SLUG = "2026-12-01-first"
DRAFT = """\
    ---
    title: The first issue
    publish: true
    ---
    Hello, reader.

    ![A red square](images/red.png)
    """


def write_draft(root: Path, slug: str = SLUG, text: str = DRAFT) -> None:
    images = root / "drafts" / "images"
    images.mkdir(parents=True, exist_ok=True)
    (images / "red.png").write_bytes(make_png(8, 8, lambda x, y: (200, 30, 40)))
    (root / "drafts" / f"{slug}.md").write_text(textwrap.dedent(text), encoding="utf-8")


def publish(site: Site) -> None:
    done = site.cli("publish")
    assert done.returncode == 0, done.stderr


def image_path(site: Site) -> str:
    files = json.loads((site.root / "site" / ".newsletter-publish.json").read_text())["files"]
    return next(f for f in files if f.endswith(".png"))


@pytest.fixture
def published(tmp_path: Path) -> Iterator[Site]:
    s = start_site(tmp_path / "site", "[server]\n")
    try:
        write_draft(s.root)
        publish(s)
        yield s
    finally:
        stop_site(s)


def test_home_issue_image_feeds_and_sitemap_are_served_with_their_types(
        published: Site) -> None:
    with published.client() as c:
        home = c.get("/")
        assert home.status_code == 200 and "The first issue" in home.text
        assert home.headers["content-type"] == "text/html; charset=utf-8"
        page = c.get(f"/{SLUG}/")
        assert page.status_code == 200 and "Hello, reader." in page.text
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "public, max-age=300"
        image = c.get("/" + image_path(published))
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        assert image.headers["content-type"] == "image/png"
        assert image.headers["cache-control"] == "public, max-age=31536000, immutable"
        types = {"/feed.xml": "application/atom+xml; charset=utf-8",
                 "/rss.xml": "application/rss+xml; charset=utf-8",
                 "/feed.json": "application/feed+json; charset=utf-8",
                 "/sitemap.xml": "application/xml; charset=utf-8"}
        for path, kind in types.items():
            r = c.get(path)
            assert (r.status_code, r.headers["content-type"]) == (200, kind), path
            assert SLUG in r.text, path


def test_head_etag_and_if_modified_since_answer_304(published: Site) -> None:
    with published.client() as c:
        full = c.get(f"/{SLUG}/")
        head = c.head(f"/{SLUG}/")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["etag"] == full.headers["etag"]
        assert head.headers["content-length"] == str(len(full.content))
        again = c.get(f"/{SLUG}/", headers={"If-None-Match": full.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == full.headers["etag"]
        since = c.get(f"/{SLUG}/", headers={"If-Modified-Since": full.headers["last-modified"]})
        assert since.status_code == 304
        stale = c.get(f"/{SLUG}/", headers={"If-None-Match": '"not-this-one"'})
        assert stale.status_code == 200 and stale.content == full.content
        assert c.head("/").status_code == 200


def test_missing_page_is_the_styled_404_with_links_home_and_to_subscribe(
        published: Site) -> None:
    with published.client() as c:
        r = c.get("/no-such-issue/")
        assert r.status_code == 404
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert "Page not found" in r.text and "Field Notes" in r.text
        assert f'href="{published.url}/"' in r.text
        assert f'href="{published.url}/subscribe"' in r.text


def test_nothing_outside_the_site_folder_is_served(published: Site, tmp_path: Path) -> None:
    out = published.root / "site"
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    (out / "leak.txt").symlink_to(secret)
    (out / "leakdir").symlink_to(tmp_path)
    (out / ".hidden").mkdir()
    (out / ".hidden" / "a.txt").write_text("a dotfile body")
    (out / "inside.txt").symlink_to(out / "index.html")  # a symlink that stays inside is fine
    tricks = ["/../newsletter.toml", "/%2e%2e/newsletter.toml", "/%2E%2E/newsletter.toml",
              f"/{SLUG}/%2e%2e/%2e%2e/newsletter.toml", "/..%2fnewsletter.toml",
              "/%2fetc%2fpasswd", "//etc/passwd", "/.newsletter-publish.json",
              "/.hidden/a.txt", "/leak.txt", "/leakdir/secret.txt", "/%5c..%5cnewsletter.toml",
              "/newsletter.db", "/subscribe/x"]
    # httpx would normalise `..` itself: send the raw target over a plain socket-level request.
    with httpx.Client(base_url=published.url, timeout=30) as c:
        for target in tricks:
            request = c.build_request("GET", published.url)
            request.url = request.url.copy_with(raw_path=target.encode())
            r = c.send(request)
            assert r.status_code == 404, (target, r.status_code)
            assert "do not serve" not in r.text and "a dotfile body" not in r.text
        assert c.get("/inside.txt").status_code == 200


def test_a_slug_without_its_slash_redirects(published: Site) -> None:
    with published.client() as c:
        r = c.get(f"/{SLUG}")
        assert r.status_code == 301 and r.headers["location"] == f"{SLUG}/"
        assert c.get(f"/{SLUG}", follow_redirects=True).url.path == f"/{SLUG}/"


def test_reader_routes_still_win_and_answer(published: Site) -> None:
    (published.root / "site" / "healthz").write_text("a file named like a route")
    with published.client() as c:
        assert c.get("/healthz").text == "ok\n"
        r = c.get("/subscribe")
        assert r.status_code == 200 and 'name="email"' in r.text
        assert c.get("/unsubscribe?token=bad").status_code == 400


def test_an_issue_published_later_is_served_without_a_restart(published: Site) -> None:
    with published.client() as c:
        assert c.get("/2026-12-08-second/").status_code == 404
        write_draft(published.root, "2026-12-08-second",
                    DRAFT.replace("The first issue", "The second issue"))
        publish(published)
        r = c.get("/2026-12-08-second/")
        assert r.status_code == 200 and "The second issue" in r.text
        assert "The second issue" in c.get("/").text


def test_before_anything_is_published_home_is_the_subscribe_form(site: Site) -> None:
    with site.client() as c:
        r = c.get("/")
        assert r.status_code == 200 and 'name="email"' in r.text


def test_a_base_url_with_a_path_answers_with_and_without_the_prefix(published: Site) -> None:
    # Behind Caddy's `handle_path /news/*` the prefix is stripped; behind `handle` it is not.
    stop_site(published)
    toml = published.root / "newsletter.toml"
    toml.write_text(toml.read_text().replace(f'base_url = "{published.url}"',
                                             f'base_url = "{published.url}/news"'))
    publish(published)
    port = published.url.rsplit(":", 1)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(published.env)
    published.process = subprocess.Popen([str(BIN), "serve", "--port", port],
                                         cwd=published.root, env=env,
                                         stdout=published.log.open("wb"),
                                         stderr=subprocess.STDOUT)

    def up() -> bool:
        try:
            return httpx.get(f"{published.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 20, "/healthz")
    with published.client() as c:
        for prefix in ("/news", ""):
            home = c.get(prefix + "/")
            assert home.status_code == 200 and "The first issue" in home.text, prefix
            page = c.get(f"{prefix}/{SLUG}/")
            assert page.status_code == 200 and "Hello, reader." in page.text, prefix
            assert c.get(prefix + "/feed.xml").status_code == 200, prefix
            assert c.get(prefix + "/healthz").text == "ok\n", prefix
            assert c.get(prefix + "/subscribe").status_code == 200, prefix
            r = c.get(f"{prefix}/{SLUG}", follow_redirects=True)
            assert r.status_code == 200 and r.url.path == f"{prefix}/{SLUG}/", prefix
        assert c.get("/news").status_code == 200
        # A webhook under the prefix has the webhook body limit (1 MB), not the form's 64 KB.
        hook = c.post("/news/webhooks/nosuch", content=b"{" + b" " * 100_000 + b"}")
        assert hook.status_code != 413 and hook.status_code == c.post(
            "/webhooks/nosuch", content=b"{" + b" " * 100_000 + b"}").status_code
        assert f"{published.url}/news/{SLUG}/" in c.get("/news/").text  # links carry the path
