"""Benchmark: `newsletter publish` over 1,000 issues, then re-publishing.

Prints, for N issues (~400 words each, every tenth with a local image, all
marked `sent:` as imported posts are):
- the first publish into an empty site: seconds, files written;
- a re-publish with nothing changed: seconds, files written (should be 0);
- re-publishes after one issue's text changed (an old one, then the newest):
  seconds and exactly which files were written (that issue's page, the
  sitemap, and the feeds when they carry it: they hold the newest 20);
and the ratio of the first publish to each re-publish. Every run renders every
issue (what changed is found by comparing bytes), so re-publishing saves the
disk writes, not the rendering: the ratio says how much that is.

Run: .venv/bin/python bench/publish.py [--issues N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsletter.settings import load_settings  # noqa: E402
from newsletter.writer.publish import publish  # noqa: E402
from tests.writer.pngs import make_png  # noqa: E402

PARAGRAPH = (
    "Leaving a big company is mostly a matter of paperwork and a little courage. What "
    "surprised me was how much of my writing had lived inside other people's platforms, "
    "and how little of it I could take with me when I left. "
)


def write_letter(root: Path, issues: int) -> list[Path]:
    (root / "drafts" / "images").mkdir(parents=True)
    (root / "newsletter.toml").write_text(
        '[newsletter]\nname = "Bench Letter"\nfrom = "Bench <bench@example.com>"\n'
        'base_url = "https://example.com/news"\naddress = "1 Bench Street"\n\n[server]\n'
    )
    for i in range(issues // 10 + 1):
        png = make_png(32, 16, lambda x, y, i=i: ((x * 8 + i) % 256, (y * 16) % 256, 90))
        (root / "drafts" / "images" / f"photo{i}.png").write_bytes(png)
    paths = []
    start = date(2020, 1, 1)
    for i in range(issues):
        day = start + timedelta(days=2 * i)
        image = f"\n\n![Photo {i}](images/photo{i // 10}.png)\n" if i % 10 == 0 else ""
        body = "\n\n".join(f"## Part {p}\n\n{PARAGRAPH * 3}" for p in range(1, 4))
        path = root / "drafts" / f"{day.isoformat()}-issue-{i}.md"
        path.write_text(
            f"---\ntitle: Issue {i}\npreheader: Notes number {i}\nsent: {day.isoformat()}\n---\n"
            f'Hello {{{{ subscriber.name | default("reader") }}}},{image}\n\n{body}\n'
        )
        paths.append(path)
    return paths


def timed(settings, site: Path, now: datetime):  # noqa: ANN001, ANN201
    t0 = time.perf_counter()
    result = publish(settings, site, now=now)
    return time.perf_counter() - t0, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--issues", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        root = Path(tmp)
        paths = write_letter(root, args.issues)
        settings = load_settings(root)
        site = root / "site"
        now = datetime(2026, 12, 1, tzinfo=UTC)

        first, result = timed(settings, site, now)
        files = sum(1 for p in site.rglob("*") if p.is_file())
        print(f"{args.issues} issues, first publish: {first:.2f} s, "
              f"{len(result.written)} files written ({files} in the site), "
              f"{first / args.issues * 1000:.1f} ms per issue")

        same, result = timed(settings, site, now)
        print(f"re-publish, nothing changed: {same:.2f} s, {len(result.written)} files written, "
              f"{result.unchanged} unchanged (first / this = {first / same:.2f}x)")

        for which, path in (("an old issue (not in the feeds)", paths[len(paths) // 2]),
                            ("the newest issue (in the feeds)", paths[-1])):
            path.write_text(path.read_text().replace("Hello", "Hello again"))
            one, result = timed(settings, site, now + timedelta(days=1))
            print(f"re-publish, {which} changed: {one:.2f} s, {len(result.written)} files "
                  f"written: {', '.join(result.written)} (first / this = {first / one:.2f}x)")


if __name__ == "__main__":
    main()
