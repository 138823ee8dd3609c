"""Benchmark: `newsletter publish` over 1,000 issues, then re-publishing.

Prints, for N issues (~400 words each, every tenth with a local image, all
marked `sent:` as imported posts are):
- the first publish into an empty site: seconds, files written;
- a re-publish with nothing changed: seconds, files written (should be 0);
- re-publishes after one issue's text changed (an old one, then the newest):
  seconds and exactly which files were written (that issue's page, the
  sitemap, and the feeds when they carry it: they hold the newest 20);
and the ratio of the first publish to each re-publish. Only what changed is rendered
(publish keeps the hashes of each page's inputs), so a re-publish costs reading and
hashing the drafts plus rendering the pages that changed.

Run: .venv/bin/python bench/publish.py [--issues N]

With --peers, the same posts are also built by Hugo (Debian's `hugo`) and Pelican
(PyPI's `pelican`: `pip install pelican`, or --pelican PATH to its executable) in the
same run, rounds interleaved, and the issue 21 goals are checked (exit 1 when one is
missed): a re-publish after one issue changed within 2x Hugo's full build, a first
publish faster than Pelican's first build, and an unchanged archive in under 0.5 s.

With --memory, the first publish of --issues N (10,000 is the goal's size) runs in a
child process and its peak RSS is printed, with the largest of the processes that render
pages on the other cores; exit 1 when either reaches 200 MB.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
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


def peer_sites(root: Path, paths: list[Path]) -> tuple[Path, Path]:
    """The same posts (text and images) as a Hugo site and a Pelican site under `root`."""
    hugo, pelican = root / "hugo", root / "pelican"
    for folder in (hugo / "content" / "posts", hugo / "static" / "images",
                   hugo / "layouts" / "_default", pelican / "content" / "images"):
        folder.mkdir(parents=True)
    (hugo / "config.toml").write_text(
        'baseURL = "https://example.com/news/"\ntitle = "Bench Letter"\n'
        "disableKinds = ['taxonomy', 'term']\n")
    # The smallest layouts that make what publish makes: a page per post, a home listing
    # every post, and the RSS feed (Hugo's built-in template).
    (hugo / "layouts" / "_default" / "baseof.html").write_text(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{{ .Title }}'
        "</title></head><body>{{ block \"main\" . }}{{ end }}</body></html>\n")
    (hugo / "layouts" / "_default" / "single.html").write_text(
        '{{ define "main" }}<article><h1>{{ .Title }}</h1>{{ .Content }}</article>{{ end }}\n')
    (hugo / "layouts" / "_default" / "list.html").write_text(
        '{{ define "main" }}<ul>{{ range .Site.RegularPages }}<li><a href="{{ .RelPermalink }}">'
        "{{ .Title }}</a> {{ .Summary }}</li>{{ end }}</ul>{{ end }}\n")
    (pelican / "pelicanconf.py").write_text(
        'SITENAME = "Bench Letter"\nSITEURL = "https://example.com/news"\nPATH = "content"\n'
        'TIMEZONE = "UTC"\nDEFAULT_LANG = "en"\nSTATIC_PATHS = ["images"]\n'
        'FEED_ALL_ATOM = "feeds/all.atom.xml"\nCACHE_CONTENT = True\nLOAD_CONTENT_CACHE = True\n'
        'CACHE_PATH = "cache"\n')
    for image in (paths[0].parent / "images").iterdir():
        shutil.copy(image, hugo / "static" / "images" / image.name)
        shutil.copy(image, pelican / "content" / "images" / image.name)
    for i, path in enumerate(paths):
        body = path.read_text().split("---\n", 2)[2].replace(
            '{{ subscriber.name | default("reader") }}', "reader")
        day = path.name[:10]
        (hugo / "content" / "posts" / path.name).write_text(
            f'---\ntitle: "Issue {i}"\ndate: {day}\n---\n'
            + body.replace("](images/", "](/news/images/"))
        (pelican / "content" / path.name).write_text(
            f"Title: Issue {i}\nDate: {day}\nSlug: issue-{i}\n\n"
            + body.replace("](images/", "]({static}/images/"))
    return hugo, pelican


def run_timed(command: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def peers(root: Path, paths: list[Path], settings, pelican_bin: str,  # noqa: ANN001
          rounds: int) -> int:
    """Interleaved rounds of ours, Hugo and Pelican; the median of each; 1 if a goal is missed."""
    if shutil.which("hugo") is None:
        sys.exit("hugo is not installed: apt-get install hugo")
    if shutil.which(pelican_bin) is None:
        sys.exit(f"{pelican_bin} not found: pip install pelican, or pass --pelican PATH")
    hugo, pelican = peer_sites(root, paths)
    times: dict[str, list[float]] = {k: [] for k in (
        "ours first", "ours one changed", "ours unchanged", "hugo full", "pelican first",
        "pelican cached")}
    now = datetime(2026, 12, 1, tzinfo=UTC)
    for n in range(rounds):
        site = root / f"site-{n}"
        times["ours first"].append(timed(settings, site, now)[0])
        old = paths[len(paths) // 2]
        old.write_text(old.read_text().replace("Hello", f"Hello {n}", 1))
        times["ours one changed"].append(timed(settings, site, now)[0])
        times["ours unchanged"].append(timed(settings, site, now)[0])
        times["hugo full"].append(run_timed(
            ["hugo", "--quiet", "--destination", str(root / f"hugo-out-{n}")], hugo))
        shutil.rmtree(pelican / "cache", ignore_errors=True)
        out = root / f"pelican-out-{n}"
        times["pelican first"].append(run_timed(
            [pelican_bin, "content", "-s", "pelicanconf.py", "-o", str(out), "-q"], pelican))
        times["pelican cached"].append(run_timed(
            [pelican_bin, "content", "-s", "pelicanconf.py", "-o", str(out), "-q"], pelican))
    median = {k: statistics.median(v) for k, v in times.items()}
    for name, values in times.items():
        each = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:<18} median {median[name]:6.2f} s  ({each})")
    goals = [
        ("re-publish after one change within 2x Hugo's full build",
         median["ours one changed"], 2 * median["hugo full"]),
        ("first publish faster than Pelican's first build",
         median["ours first"], median["pelican first"]),
        ("an unchanged archive in under 0.5 s", median["ours unchanged"], 0.5),
    ]
    missed = 0
    for text, ours, limit in goals:
        ok = ours <= limit
        missed += not ok
        print(f"{'ok  ' if ok else 'MISS'} {text}: {ours:.2f} s vs {limit:.2f} s "
              f"({ours / limit:.2f}x of the limit)")
    return 1 if missed else 0


MEMORY_LIMIT = 200 * 1024 * 1024

CHILD = """
import resource, sys
from datetime import UTC, datetime
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from newsletter.settings import load_settings
from newsletter.writer.publish import publish
root = Path(sys.argv[2])
publish(load_settings(root), root / "site", now=datetime(2026, 12, 1, tzinfo=UTC))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def memory(root: Path, issues: int) -> int:
    """Peak RSS of a first publish of `issues` issues, in a process of its own."""
    write_letter(root, issues)
    repo = str(Path(__file__).resolve().parent.parent)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, repo, str(root)], check=True,
                          capture_output=True, text=True)
    took = time.perf_counter() - t0
    # publish's own process, and the largest of the worker processes that render pages.
    peak, worker = (int(n) for n in done.stdout.split()[-2:])
    ok = peak < MEMORY_LIMIT and worker < MEMORY_LIMIT
    print(f"{issues} issues, first publish: {took:.1f} s, peak RSS {peak / 1024 / 1024:.0f} MB, "
          f"largest worker {worker / 1024 / 1024:.0f} MB "
          f"({'ok' if ok else 'MISS'}: the goal is under {MEMORY_LIMIT // 1024 // 1024} MB each)")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--issues", type=int, default=1000)
    parser.add_argument("--peers", action="store_true",
                        help="also build the same posts with Hugo and Pelican; check the goals")
    parser.add_argument("--pelican", default="pelican", help="the pelican executable")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory", action="store_true",
                        help="peak RSS of a first publish of --issues (try 10000)")
    args = parser.parse_args()
    if args.memory:
        with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
            sys.exit(memory(Path(tmp), args.issues))
    if args.peers:
        with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
            root = Path(tmp)
            paths = write_letter(root, args.issues)
            print(f"{args.issues} issues, {args.rounds} interleaved rounds:")
            sys.exit(peers(root, paths, load_settings(root), args.pelican, args.rounds))
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
