"""The preview in a real headless Chromium: what the writer sees and clicks."""

from __future__ import annotations

import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from newsletter.settings import load_settings
from newsletter.writer.preview import Preview
from tests.writer.pngs import read_png

pytestmark = pytest.mark.browser

# The email frame's text; '' while it is between two documents during a reload.
FRAME_TEXT = ("return (((document.getElementById('frame').contentDocument || {}).body || {})"
              ".innerText || '')")


def wait_until(driver: Any, script: str, timeout: float = 8.0) -> Any:
    """Run `script` (JS returning a value) until it is truthy; the value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: d.execute_script(script), message=f"never true: {script}"
    )


def open_preview(driver: Any, preview: Preview) -> None:
    driver.get(preview.url)
    wait_until(driver, f"return document.body.dataset.loadedVersion == '{preview.build.version}'")
    wait_until(driver, "var d = document.getElementById('frame').contentDocument;"
                       "return d && d.readyState == 'complete'")


def click(driver: Any, selector: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, selector).click()


def frame_text(driver: Any) -> str:
    return driver.execute_script(FRAME_TEXT) or ""


def test_page_shows_inbox_row_and_the_email_with_its_image(browser: Any,
                                                           running_preview: Preview) -> None:
    open_preview(browser, running_preview)
    assert browser.execute_script("return document.getElementById('subject').textContent") == \
        "Notes from the workshop"
    assert "What I learned building a bicycle" in browser.execute_script(
        "return document.getElementById('preheader').textContent")
    assert browser.execute_script("return document.getElementById('from').textContent") == \
        "Test Writer"
    assert "The first line of the essay" in frame_text(browser)
    # The toolbar's CSS does not reach the email: its text keeps the layout's serif font.
    assert "system-ui" in browser.execute_script(
        "return getComputedStyle(document.body).fontFamily")
    assert "system-ui" not in browser.execute_script(
        "var f = document.getElementById('frame'); var p = f.contentDocument.querySelector('p');"
        "return f.contentWindow.getComputedStyle(p).fontFamily")
    # The local image is really drawn: loaded, with its own 40×30 size.
    size = wait_until(browser, """
        var img = document.getElementById('frame').contentDocument
            .querySelector('img[alt="A red square"]');
        return img && img.complete && img.naturalWidth
            ? [img.naturalWidth, img.naturalHeight] : null;
    """)
    assert size == [40, 30]


def test_phone_width_text_and_source_views(browser: Any, running_preview: Preview) -> None:
    open_preview(browser, running_preview)
    desktop = browser.execute_script(
        "return document.getElementById('frame').getBoundingClientRect().width")
    click(browser, "button[data-width=phone]")
    wait_until(browser, "return document.getElementById('frame')"
                        ".getBoundingClientRect().width <= 377")
    assert desktop > 600
    # The email's own phone media query applies inside the narrow frame.
    assert browser.execute_script(
        "return document.getElementById('frame').contentWindow.innerWidth") <= 377

    click(browser, "button[data-view=text]")
    wait_until(browser, "return document.getElementById('frame').contentDocument"
                        ".contentType == 'text/plain'")
    text = frame_text(browser)
    assert "The first line of the essay" in text
    assert "<table" not in text and "<p>" not in text

    click(browser, "button[data-view=source]")
    wait_until(browser, FRAME_TEXT + ".indexOf('MIME-Version') >= 0")
    source = frame_text(browser)
    assert "Subject: Notes from the workshop" in source
    assert "List-Unsubscribe:" in source
    click(browser, "button[data-view=email]")
    click(browser, "button[data-width=desktop]")


def test_no_style_view_drops_style_blocks_but_keeps_inlined_css(browser: Any,
                                                                running_preview: Preview) -> None:
    open_preview(browser, running_preview)
    count_styles = ("return document.getElementById('frame').contentDocument"
                    ".querySelectorAll('style').length")
    assert browser.execute_script(count_styles) >= 1
    click(browser, "button[data-view=nostyle]")
    wait_until(browser, "return location.href && document.getElementById('frame')"
                        ".contentWindow.location.pathname == '/email-nostyle.html'")
    wait_until(browser, "return document.getElementById('frame').contentDocument"
                        ".readyState == 'complete'")
    assert browser.execute_script(count_styles) == 0
    assert browser.execute_script(
        "return document.getElementById('frame').contentDocument"
        ".querySelectorAll('[style]').length") > 5
    assert "The first line of the essay" in frame_text(browser)
    click(browser, "button[data-view=email]")


def test_dark_mode_reaches_the_emails_own_media_query(browser: Any,
                                                      running_preview: Preview) -> None:
    open_preview(browser, running_preview)
    body_colour = ("var f = document.getElementById('frame');"
                   "var b = f.contentDocument && f.contentDocument.body;"
                   "var c = b && f.contentWindow.getComputedStyle(b).backgroundColor;")
    light = browser.execute_script(body_colour + "return c;")
    click(browser, "button[data-scheme=dark]")
    assert wait_until(browser, "return document.getElementById('frame').contentWindow"
                               ".matchMedia('(prefers-color-scheme: dark)').matches")
    # The layout's own dark rule (a @media (prefers-color-scheme: dark) block) applies.
    dark = wait_until(browser, body_colour + f"return c && c != '{light}' && c;")
    assert dark and dark != light
    click(browser, "button[data-scheme=light]")
    assert wait_until(browser, "return !document.getElementById('frame').contentWindow"
                               ".matchMedia('(prefers-color-scheme: dark)').matches")


def test_screenshot_of_the_email_is_not_blank(browser: Any, running_preview: Preview) -> None:
    from selenium.webdriver.common.by import By

    open_preview(browser, running_preview)
    wait_until(browser, "var i = document.getElementById('frame').contentDocument"
                        ".querySelector('img'); return i && i.complete && i.naturalWidth > 0")
    shot = browser.find_element(By.ID, "frame").screenshot_as_png
    width, height, pixels = read_png(shot)
    assert width > 300 and height > 300
    colours = set(pixels)
    assert len(colours) > 20, "the screenshot is (nearly) one colour"
    # Text is drawn (dark pixels) and so is the red image.
    assert any(max(p) < 80 for p in pixels)
    assert any(r > 180 and g < 80 and b < 80 for r, g, b in pixels)


def test_saving_the_draft_updates_the_open_page_and_keeps_scroll(
    browser: Any, running_preview: Preview, sample_draft: Path
) -> None:
    open_preview(browser, running_preview)
    browser.execute_script("window.__samePage = 'yes';"
                           "document.getElementById('frame').contentWindow.scrollTo(0, 700);")
    wait_until(browser, "return document.getElementById('frame').contentWindow.scrollY >= 690")

    text = sample_draft.read_text()
    sample_draft.write_text(text.replace("Paragraph 25:", "Paragraph 25 (edited live):"))

    wait_until(browser, FRAME_TEXT + ".indexOf('edited live') >= 0", timeout=5)
    wait_until(browser, "return document.getElementById('frame').contentWindow.scrollY >= 690")
    # The toolbar page was not reloaded: only the email frame was.
    assert browser.execute_script("return window.__samePage") == "yes"


def test_a_build_error_shows_in_the_page_and_the_next_save_recovers(
    browser: Any, running_preview: Preview, sample_draft: Path
) -> None:
    open_preview(browser, running_preview)
    good = sample_draft.read_text()
    sample_draft.write_text(good.replace("subject: Notes", "subject: [Notes"))

    wait_until(browser, FRAME_TEXT + ".indexOf('does not build') >= 0", timeout=5)
    page = frame_text(browser)
    assert "workshop.md" in page and "line" in page
    assert "front matter" in page
    assert browser.execute_script(
        "return document.getElementById('status').className") == "error"

    sample_draft.write_text(good.replace("The end.", "The end, fixed."))
    wait_until(browser, FRAME_TEXT + ".indexOf('The end, fixed.') >= 0", timeout=5)
    assert browser.execute_script("return document.getElementById('status').className") == ""


def test_editing_settings_or_a_layout_reloads_too(
    browser: Any, running_preview: Preview, newsletter_dir: Path
) -> None:
    open_preview(browser, running_preview)
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(toml.read_text().replace('name = "Test Letter"', 'name = "Renamed Letter"'))
    wait_until(browser, FRAME_TEXT + ".indexOf('Renamed Letter') >= 0", timeout=5)

    layouts = newsletter_dir / "layouts"
    layouts.mkdir()
    builtin = resources.files("newsletter").joinpath("templates/layouts")
    for name in ("default.html", "default.txt"):
        (layouts / name).write_text(builtin.joinpath(name).read_text())
    html = layouts / "default.html"
    html.write_text(html.read_text().replace("<body>", "<body>\n<p>Custom layout banner</p>"))
    wait_until(browser, FRAME_TEXT + ".indexOf('Custom layout banner') >= 0", timeout=5)


NAMED_DRAFT = """\
---
subject: Hello
preheader: a short one
---
Hello {{ subscriber.name | default("friend") }}, welcome.
"""


def test_the_reader_with_no_name_toggle_shows_the_default_fallback(
    browser: Any, write_draft: Any, newsletter_dir: Path
) -> None:
    draft = write_draft("hello.md", NAMED_DRAFT)
    preview = Preview(load_settings(newsletter_dir), draft, poll_seconds=0.1)
    preview.start()
    try:
        open_preview(browser, preview)
        assert "Hello Sample Reader, welcome." in frame_text(browser)
        assert browser.execute_script(
            "return document.querySelector('a[data-reader=sample]')"
            ".getAttribute('aria-current')") == "page"

        # The toolbar's link: a plain link to ?reader=noname, the page's own address.
        click(browser, "a[data-reader=noname]")
        wait_until(browser, "return location.search == '?reader=noname'")
        open_preview_here(browser, preview)
        wait_until(browser, FRAME_TEXT + ".indexOf('Hello friend, welcome.') >= 0")
        assert "Sample Reader" not in frame_text(browser)
        assert browser.execute_script(
            "return document.querySelector('a[data-reader=noname]')"
            ".getAttribute('aria-current')") == "page"
        # The other views show the same reader.
        click(browser, "button[data-view=text]")
        wait_until(browser, FRAME_TEXT + ".indexOf('Hello friend, welcome.') >= 0")
        click(browser, "button[data-view=email]")
        wait_until(browser, FRAME_TEXT + ".indexOf('Hello friend, welcome.') >= 0")

        # No script needed: the page as served already frames the nameless email.
        with urllib.request.urlopen(preview.url + "?reader=noname") as answer:
            page = answer.read().decode()
        assert 'src="/email.html?reader=noname"' in page and 'href="/?reader=noname"' in page
        with urllib.request.urlopen(preview.url + "email.html?reader=noname") as answer:
            assert "Hello friend, welcome." in answer.read().decode()
    finally:
        preview.stop()


def open_preview_here(driver: Any, preview: Preview) -> None:
    """Wait for the page already open (at whatever address) to frame the current build."""
    wait_until(driver, f"return document.body.dataset.loadedVersion == '{preview.build.version}'")
    wait_until(driver, "var d = document.getElementById('frame').contentDocument;"
                       "return d && d.readyState == 'complete'")
