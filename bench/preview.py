"""How quickly `newsletter preview` shows a save, and what `newsletter check` costs.

Prints medians, in ms, for a ~2,000-word draft with a local image:
- build: build_issue() + personalize() for one reader, the baseline every
  preview refresh and every check has to pay, measured in the same run;
- check: check_draft() on the same draft, and its ratio to the build;
- save → server: from writing the draft file until the preview's long-poll
  endpoint answers with the new version (the default 0.25 s mtime polling);
- save → browser: until headless Chromium shows the edited text in the open
  page (skipped when Chromium is not installed).
The promise is "within about a second".

Run: .venv/bin/python bench/preview.py [--saves N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsletter.compose.issue import build_issue  # noqa: E402
from newsletter.compose.message import personalize  # noqa: E402
from newsletter.settings import load_settings  # noqa: E402
from newsletter.writer.check import SAMPLE_READER, check_draft  # noqa: E402
from newsletter.writer.preview import Preview  # noqa: E402
from tests.writer.conftest import CHROMEDRIVER, CHROMIUM, red_png  # noqa: E402

WORDS = ("a writer sends essays with footnotes links and nested lists every week from a folder "
         "of plain text files kept in git").split()


def make_letter(root: Path) -> Path:
    (root / "drafts" / "images").mkdir(parents=True)
    (root / "newsletter.toml").write_text(
        '[newsletter]\nname = "Bench"\nfrom = "Bench <bench@example.com>"\n'
        'base_url = "https://example.com/news"\naddress = "1 Bench Road"\n')
    (root / "drafts" / "images" / "red.png").write_bytes(red_png())
    paragraphs = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(100)).capitalize() + "."
                  for i in range(20)]
    body = "\n\n".join(paragraphs[:10] + ["![A red square](images/red.png)"] + paragraphs[10:])
    draft = root / "drafts" / "bench.md"
    draft.write_text("---\nsubject: Bench\npreheader: Timing\n---\n# Bench\n\nMARKER 0\n\n"
                     f"{body}\n")
    return draft


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(fn, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def edit(draft: Path, n: int) -> None:
    text = draft.read_text()
    draft.write_text(text.replace(f"MARKER {n - 1}", f"MARKER {n}"))


def save_to_server(preview: Preview, draft: Path, saves: int) -> list[float]:
    url = urlsplit(preview.url)
    samples = []
    for n in range(1, saves + 1):
        version = preview.build.version
        answer: list[float] = []

        def listen(since: int = version, answer: list[float] = answer) -> None:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            conn.request("GET", f"/events?since={since}")
            json.loads(conn.getresponse().read())
            answer.append(time.perf_counter())
            conn.close()

        listener = threading.Thread(target=listen)
        listener.start()
        time.sleep(0.05)  # the page is waiting before the writer saves
        started = time.perf_counter()
        edit(draft, n)
        listener.join()
        samples.append(answer[0] - started)
        time.sleep(0.3)  # a writer does not save four times a second
    return samples


def save_to_browser(preview: Preview, draft: Path, saves: int, first: int) -> list[float] | None:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(preview.url)
        frame_text = ("return (((document.getElementById('frame').contentDocument || {}).body"
                      " || {}).innerText || '')")
        WebDriverWait(driver, 10, 0.01).until(
            lambda d: f"MARKER {first - 1}" in d.execute_script(frame_text))
        samples = []
        for n in range(first, first + saves):
            started = time.perf_counter()
            edit(draft, n)
            WebDriverWait(driver, 10, 0.01).until(
                lambda d, n=n: f"MARKER {n}" in d.execute_script(frame_text))
            samples.append(time.perf_counter() - started)
            time.sleep(0.3)
        return samples
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("NEWSLETTER_SECRET", "bench-secret-" + "x" * 40)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        draft = make_letter(root)
        settings = load_settings(root)

        def build() -> None:
            personalize(build_issue(settings, draft), SAMPLE_READER, key="b", settings=settings)

        build()  # warm caches
        build_s = timed(build, 15)
        check_s = timed(lambda: check_draft(settings, draft), 15)
        print(f"build (baseline)   {median_ms(build_s):8.1f} ms")
        print(f"check              {median_ms(check_s):8.1f} ms   "
              f"{median_ms(check_s) / median_ms(build_s):.2f}× the build")

        preview = Preview(settings, draft)
        preview.start()
        try:
            server_s = save_to_server(preview, draft, args.saves)
            print(f"save → server      {median_ms(server_s):8.1f} ms   "
                  f"(max {max(server_s) * 1000:.0f} ms; "
                  f"{median_ms(server_s) / median_ms(build_s):.1f}× the build)")
            browser_s = save_to_browser(preview, draft, args.saves, args.saves + 1)
            if browser_s is None:
                print("save → browser     skipped: Chromium is not installed")
            else:
                print(f"save → browser     {median_ms(browser_s):8.1f} ms   "
                      f"(max {max(browser_s) * 1000:.0f} ms; promise: about 1000 ms)")
        finally:
            preview.stop()


if __name__ == "__main__":
    main()
