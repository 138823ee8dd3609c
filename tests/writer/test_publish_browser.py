"""The published site in a real headless Chromium, served by a local http.server.

Every page loads with no broken image, every link or source inside the site
answers 200, and screenshots of the index and an issue page are not blank.
Set PUBLISH_SCREENSHOTS=DIR to keep the PNGs for a look.
"""

from __future__ import annotations

import functools
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from newsletter.settings import load_settings
from newsletter.writer.publish import publish
from tests.writer.pngs import read_png
from tests.writer.test_publish import FIRST_RUN, make_letter

pytestmark = pytest.mark.browser

# Every href/src in the page, resolved to absolute URLs, without the #fragment.
LINKS = ("return Array.from(document.querySelectorAll('[href], [src]'))"
         ".map(e => (e.href || e.src || '').split('#')[0]).filter(u => u)")
BROKEN_IMAGES = ("return Array.from(document.images)"
                 ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def served_site(newsletter_dir: Path) -> Iterator[str]:
    """The golden letter published for, and served at, http://127.0.0.1:<port>."""
    site = newsletter_dir / "site"
    site.mkdir()
    handler = functools.partial(_Quiet, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    make_letter(newsletter_dir, base_url=base)
    publish(load_settings(newsletter_dir), site, now=FIRST_RUN)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield base
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _load(browser: Any, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 10, poll_frequency=0.05).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def test_every_page_loads_with_no_broken_image_or_link(browser: Any, served_site: str) -> None:
    base = served_site
    todo, seen, pages = [f"{base}/"], set(), 0
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        assert _status(url) == 200, f"{url} is broken"
        if not url.endswith("/"):
            continue  # a feed, an image: it answered, that is all
        _load(browser, url)
        pages += 1
        assert browser.execute_script(BROKEN_IMAGES) == [], f"broken image on {url}"
        assert browser.execute_script("return document.documentElement.lang") == "en"
        assert browser.execute_script("return document.querySelectorAll('main').length") == 1
        assert browser.execute_script(
            "return Array.from(document.images).every(i => i.alt)"), f"an image without alt: {url}"
        todo += [link for link in browser.execute_script(LINKS) if link.startswith(base)]
    assert pages == 4  # the index and three issues
    assert f"{base}/feed.xml" in seen and f"{base}/rss.xml" in seen and f"{base}/feed.json" in seen


def _not_blank(png: bytes) -> None:
    width, height, pixels = read_png(png)
    assert width > 300 and height > 300
    assert len(set(pixels)) > 20, "the screenshot is (nearly) one colour"
    assert any(max(p[:3]) < 80 for p in pixels)  # text is drawn


@pytest.mark.parametrize("path", ["/", "/2026-10-01-first/"])
def test_screenshots_are_not_blank(browser: Any, served_site: str, path: str,
                                   tmp_path: Path) -> None:
    _load(browser, served_site + path)
    png = browser.get_screenshot_as_png()
    keep = os.environ.get("PUBLISH_SCREENSHOTS")
    name = "index.png" if path == "/" else "issue.png"
    Path(keep or tmp_path, name).write_bytes(png)
    _not_blank(png)
    if path != "/":
        pixels = read_png(png)[2]
        assert any(r > 180 and g < 80 and b < 80 for r, g, b, *_ in pixels)  # the red image


def test_the_subscribe_form_posts_to_the_server(browser: Any, served_site: str) -> None:
    from selenium.webdriver.common.by import By

    _load(browser, served_site + "/")
    form = browser.find_element(By.CSS_SELECTOR, "form")
    assert form.get_attribute("method") == "post"
    assert form.get_attribute("action") == f"{served_site}/subscribe"
    # The honeypot is not shown to people (off screen) nor to screen readers.
    trap = browser.find_element(By.NAME, "website")
    assert browser.execute_script(
        "var r = arguments[0].getBoundingClientRect(); return r.right < 0 || r.bottom < 0", trap)
    assert trap.find_element(By.XPATH, "..").get_attribute("aria-hidden") == "true"
    assert browser.find_element(By.NAME, "email").is_displayed()
