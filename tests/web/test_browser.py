"""A reader in a real headless Chromium: subscribe, confirm from the email, unsubscribe."""

from __future__ import annotations

import email
import email.policy
import html
import re
from typing import Any

import pytest

from tests.web.conftest import Site, wait_for
from tests.writer.conftest import browser  # noqa: F401  (the shared headless Chromium)

pytestmark = pytest.mark.browser


def heading(driver: Any) -> str:
    return driver.execute_script("var h = document.querySelector('h1'); "
                                 "return h ? h.textContent : ''")


def click_and_wait(driver: Any, selector: str, title: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, selector).click()
    wait_for(lambda: heading(driver) == title, 10, f"the page {title!r}")


def test_reader_subscribes_confirms_and_later_unsubscribes_in_the_browser(
        browser: Any, site: Site) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    browser.get(site.url + "/subscribe")
    assert browser.execute_script("return document.documentElement.lang") == "en"
    assert heading(browser) == "Subscribe to Field Notes"
    # Every visible field has a label a screen reader announces.
    unlabelled = browser.execute_script(
        "return [...document.querySelectorAll('main input:not([type=hidden])')]"
        ".filter(i => i.closest('.hp') === null && i.labels.length === 0).length")
    assert unlabelled == 0
    browser.find_element(By.ID, "nl-email").send_keys("Sam.Reader@example.com")
    browser.find_element(By.ID, "nl-name").send_keys("Sam <Reader>")
    browser.find_element(By.ID, "nl-topic-2").click()  # untick "links"
    click_and_wait(browser, "form button[type=submit]", "Check your inbox")
    reader = site.reader("sam.reader@example.com")
    assert (reader.status, reader.name, reader.tags) == ("pending", "Sam <Reader>", ["essays"])

    browser.get(site.confirm_link("sam.reader@example.com"))
    assert heading(browser) == "Confirm your subscription"
    assert site.reader("sam.reader@example.com").status == "pending"
    click_and_wait(browser, "form button[type=submit]", "You are subscribed")
    assert site.reader("sam.reader@example.com").status == "active"

    (site.root / "drafts" / "second.md").write_text(
        "---\nsubject: The second issue\n---\nHello {{ subscriber.name }}.\n")
    sent = site.cli("send", "second", "--to", "subscribers", "--yes")
    assert sent.returncode == 0, sent.stderr
    [eml] = list((site.root / "outbox").glob("*second*/*.eml"))
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    body = msg.get_body(("html",)).get_content()
    assert "Sam &lt;Reader&gt;" in body
    link = html.unescape(re.search(r'href="([^"]*/unsubscribe\?token=[^"]+)"', body).group(1))
    browser.get(link)
    assert heading(browser) == "Unsubscribe"
    assert "S***@example.com" in browser.find_element(By.TAG_NAME, "main").text
    click_and_wait(browser, "form button[type=submit]", "You are unsubscribed")
    assert site.reader("sam.reader@example.com").status == "unsubscribed"


def test_pages_fit_a_phone_screen(browser: Any, site: Site) -> None:  # noqa: F811
    browser.set_window_size(360, 740)
    try:
        browser.get(site.url + "/subscribe")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth > window.innerWidth")
        assert overflow is False
    finally:
        browser.set_window_size(1100, 900)
