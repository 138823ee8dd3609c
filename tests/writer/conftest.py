"""Fixtures for the writer's tools: a sample letter with an image, a running preview, Chromium."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from newsletter.settings import load_settings
from newsletter.writer.preview import Preview
from tests.writer.pngs import make_png

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

LONG_BODY = "\n\n".join(
    f"Paragraph {n}: the long middle of the essay, so there is something to scroll past."
    for n in range(1, 41)
)

SAMPLE_DRAFT = f"""\
---
subject: Notes from the workshop
preheader: What I learned building a bicycle
---
# Notes from the workshop

The first line of the essay, with [a link](https://example.org/bikes).

![A red square](images/red.png)

{LONG_BODY}

The end.
"""


def red_png() -> bytes:
    return make_png(40, 30, lambda x, y: (220, 30, 30) if (x + y) % 7 else (250, 250, 250))


@pytest.fixture
def sample_draft(write_draft: Callable[..., Path], newsletter_dir: Path) -> Path:
    """drafts/workshop.md with a local image at drafts/images/red.png."""
    (newsletter_dir / "drafts" / "images").mkdir()
    (newsletter_dir / "drafts" / "images" / "red.png").write_bytes(red_png())
    return write_draft("workshop.md", SAMPLE_DRAFT)


@pytest.fixture
def running_preview(sample_draft: Path, newsletter_dir: Path) -> Iterator[Preview]:
    """A started preview server for the sample draft, polling fast."""
    preview = Preview(load_settings(newsletter_dir), sample_draft, poll_seconds=0.1)
    preview.start()
    try:
        yield preview
    finally:
        preview.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium for the whole module (starting one takes a second or two)."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}): .ci/run installs it")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="newsletter-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1100,900"):
        options.add_argument(flag)
    # Service with an explicit path: Selenium Manager never tries to download a driver.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
