"""Every page a reader can see passes axe-core, at a phone's width and a desktop's.

A real `newsletter serve` answers the published site (the archive home, an issue's page)
and the reader pages (subscribe, check your inbox, confirm, subscribed, unsubscribe,
unsubscribed, manage, the invalid link, the manage link sent, 404, 413, busy); a real
headless Chromium loads each one and runs axe-core (WCAG 2.0 and 2.1 A and AA, and best
practice) at 375 px and 1280 px. Each page's screenshot at both widths is kept: under
artifacts/screenshots/ (gitignored), or the folder A11Y_SCREENSHOTS names
(scripts/screenshots.py copies a few to docs/screenshots/ for the README).

axe-core comes from the npm registry at the version tests/a11y/package-lock.json pins:
`npm ci --prefix tests/a11y` (.ci/run does it).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from newsletter.compose.tokens import Kind, TokenMaker
from tests.web.conftest import SECRET, Site, start_site, stop_site, wait_for
from tests.writer.conftest import browser  # noqa: F401  (the shared headless Chromium)

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
AXE = REPO / "tests" / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
WIDTHS = {375: 812, 1280: 900}
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]

DESCRIPTION = "Notes from the field, on birds, weather and the people who count them."
ISSUE = """\
---
title: Counting swifts at dusk
subject: Counting swifts at dusk
date: 2026-10-01
sent: 2026-10-01
---
The swifts came back on the first warm evening. We counted **214** over the roofs,
which is more than last year and [the year before](https://example.com/2025).

## What we saw

- Screaming parties over the old mill
- A late brood under the church eaves

> Count what you see, not what you expect.

Until next time.
"""


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.is_file():
        pytest.skip(f"axe-core is not installed ({AXE}): run npm ci --prefix tests/a11y "
                    "(.ci/run does)")
    return AXE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The newsletter with a published archive, served by `newsletter serve`."""
    root = tmp_path_factory.mktemp("a11y") / "site"
    site = start_site(root, f'[publish]\ndescription = "{DESCRIPTION}"\n')
    try:
        (root / "drafts" / "2026-10-01-swifts.md").write_text(ISSUE)
        for n, day in enumerate(("09-03", "09-17", "08-20"), 1):
            (root / "drafts" / f"2026-{day}-notes-{n}.md").write_text(
                f"---\ntitle: Field notes, part {n}\ndate: 2026-{day}\nsent: 2026-{day}\n---\n"
                f"Short notes from week {n}: rain, then the long dry spell.\n")
        published = site.cli("publish")
        assert published.returncode == 0, published.stderr
        for address in ("una@example.com", "vic@example.com", "wes@example.com"):
            added = site.cli("subscribers", "add", address)
            assert added.returncode == 0, added.stderr
        yield site
    finally:
        stop_site(site)


def shots_dir() -> Path:
    folder = Path(os.environ.get("A11Y_SCREENSHOTS") or REPO / "artifacts" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def token_url(site: Site, path: str, address: str, kind: Kind) -> str:
    return f"{site.url}{path}?token={TokenMaker(SECRET.encode(), site.url).make(address, kind)}"


def heading(driver: Any) -> str:
    return driver.execute_script(
        "var h = document.querySelector('h1'); return h ? h.textContent.trim() : ''")


def submit(driver: Any, selector: str, title: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, selector).click()
    wait_for(lambda: heading(driver) == title, 70, f"the page {title!r}")


def fill(driver: Any, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).send_keys(text)


def audit(driver: Any, axe: str, name: str) -> list[str]:
    """axe's violations on the loaded page at each width, and a screenshot at each."""
    problems = []
    for width, height in WIDTHS.items():
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
        try:
            overflow = driver.execute_script(
                "return document.documentElement.scrollWidth > window.innerWidth")
            if overflow:
                problems.append(f"{name} at {width} px: wider than the screen")
            if not driver.execute_script("return typeof axe === 'object'"):
                driver.execute_script(axe)
            result = driver.execute_async_script(
                "var done = arguments[arguments.length - 1];"
                "axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}})"
                ".then(r => done(JSON.stringify(r.violations)), e => done('error: ' + e));",
                TAGS)
            assert not result.startswith("error:"), result
            for v in json.loads(result):
                where = "; ".join(n["target"][0] if isinstance(n["target"][0], str)
                                  else str(n["target"]) for n in v["nodes"][:3])
                problems.append(f"{name} at {width} px: {v['id']} ({v['help']}): {where}")
            (shots_dir() / f"{name}-{width}.png").write_bytes(driver.get_screenshot_as_png())
        finally:
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return problems


def pages(site: Site) -> list[tuple[str, str, Callable[[Any], None]]]:
    """(name, the h1 expected, how the browser gets there) for every page a reader sees."""

    def go(url: str) -> Callable[[Any], None]:
        return lambda d: d.get(url)

    def subscribed(d: Any) -> None:
        d.get(site.url + "/subscribe")
        fill(d, "nl-email", "sam@example.com")
        submit(d, "form button[type=submit]", "Check your inbox")

    def confirmed(d: Any) -> None:
        d.get(site.confirm_link("sam@example.com"))
        submit(d, "form button[type=submit]", "You are subscribed")

    def unsubscribed(d: Any) -> None:
        d.get(token_url(site, "/unsubscribe", "vic@example.com", Kind.UNSUBSCRIBE))
        submit(d, "form button[type=submit]", "You are unsubscribed")

    def link_sent(d: Any) -> None:
        d.get(site.url + "/manage?token=not-a-token")
        fill(d, "link-email", "una@example.com")
        submit(d, "form button[type=submit]", "Check your inbox")

    def too_large(d: Any) -> None:
        d.get(site.url + "/subscribe")
        d.execute_script("var n = document.getElementById('nl-name');"
                         "n.removeAttribute('maxlength'); n.value = 'x'.repeat(70000);")
        fill(d, "nl-email", "long@example.com")
        submit(d, "form button[type=submit]", "Too much text")

    return [
        ("home", "Field Notes", go(site.url + "/")),
        ("issue", "Counting swifts at dusk", go(site.url + "/2026-10-01-swifts/")),
        ("subscribe", "Subscribe to Field Notes", go(site.url + "/subscribe")),
        ("subscribed", "Check your inbox", subscribed),
        ("confirm", "Confirm your subscription", lambda d: d.get(site.confirm_link(
            "sam@example.com"))),
        ("confirmed", "You are subscribed", confirmed),
        ("unsubscribe", "Unsubscribe",
         go(token_url(site, "/unsubscribe", "una@example.com", Kind.UNSUBSCRIBE))),
        ("unsubscribed", "You are unsubscribed", unsubscribed),
        ("manage", "Your subscription",
         go(token_url(site, "/manage", "wes@example.com", Kind.MANAGE))),
        ("invalid-link", "This link is not valid", go(site.url + "/confirm?token=garbage")),
        ("manage-link-sent", "Check your inbox", link_sent),
        ("not-found", "Page not found", go(site.url + "/no-such-issue/")),
        ("too-large", "Too much text", too_large),
    ]


def test_every_page_passes_axe_at_both_widths(browser: Any, served: Site,  # noqa: F811
                                              axe_source: str) -> None:
    problems: list[str] = []
    seen = []
    for name, title, reach in pages(served):
        reach(browser)
        wait_for(lambda: browser.execute_script("return document.readyState") == "complete",
                 10, f"{name} to load")
        assert heading(browser) == title, f"{name}: {browser.page_source[:400]}"
        # One look: the newsletter's name (a link home) and its description on every page.
        text = browser.execute_script("return document.body.innerText")
        assert "Field Notes" in text and DESCRIPTION in text, name
        assert browser.execute_script(
            "return [...document.querySelectorAll('header a')].some("
            "a => a.href === arguments[0])", served.url + "/"), f"{name}: no link home"
        assert browser.execute_script("return document.scripts.length") == 0, name
        problems += audit(browser, axe_source, name)
        seen.append(name)
    assert not problems, "\n".join(problems)
    assert len(seen) == 13


def test_axe_can_fail(browser: Any, served: Site, axe_source: str) -> None:  # noqa: F811
    # The audit is not vacuous: an image without alt text and a field without a label fail.
    browser.get(served.url + "/")
    browser.execute_script("document.querySelector('main').insertAdjacentHTML('beforeend', "
                           "'<img src=\"data:,\"><input type=\"text\">')")
    problems = "\n".join(audit(browser, axe_source, "broken"))
    assert "image-alt" in problems and "label" in problems
    for width in WIDTHS:
        (shots_dir() / f"broken-{width}.png").unlink()


@pytest.mark.slow
def test_the_busy_page_passes_axe(browser: Any, served: Site,  # noqa: F811
                                  axe_source: str) -> None:
    # Another process holds the write lock past the server's 30 s busy timeout.
    browser.get(served.url + "/subscribe")
    fill(browser, "nl-email", "busy@example.com")
    holder = sqlite3.connect(served.root / "newsletter.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    browser.set_page_load_timeout(70)  # the answer comes after the server's 30 s wait
    try:
        submit(browser, "form button[type=submit]", "Busy")
    finally:
        browser.set_page_load_timeout(20)
        holder.rollback()
        holder.close()
    problems = audit(browser, axe_source, "busy")
    assert not problems, "\n".join(problems)
    assert re.search("busy for a moment", browser.page_source)
