"""Benchmark: render a ~2,000-word issue once, then personalize it for 10,000 recipients.

Prints, in µs:
- building the issue (Markdown, Jinja2 layout, premailer), and its stages;
- per recipient: personalize() → Message with its MIME bytes;
- per recipient: the baseline, assembling each message from scratch with
  Python's email package (EmailMessage, set_content, add_alternative,
  as_bytes) from the same personalized HTML and text, measured in the same run;
and the ratio baseline / personalize.

Run: .venv/bin/python bench/render.py [--recipients N] [--baseline N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import newsletter.compose.issue as issue_module  # noqa: E402
from newsletter.compose.inline import inline_css  # noqa: E402
from newsletter.compose.issue import build_issue  # noqa: E402
from newsletter.compose.markdown import render_markdown  # noqa: E402
from newsletter.compose.message import Recipient, personalize  # noqa: E402
from newsletter.settings import load_settings  # noqa: E402

WORDS = (
    "the newsletter writer owns a list of readers and sends essays with footnotes links and "
    "nested lists every week from a folder of plain text files that live in git"
).split()


def make_draft(words: int = 1550) -> str:
    """A realistic ~2,000-word draft: headings, paragraphs, lists, a table, code, footnotes."""
    out = [
        "---",
        'title: "A benchmark issue — with “quotes” and café"',
        "preheader: What a typical issue costs to render",
        "date: 2026-11-21",
        "---",
        "",
        'Hi {{ subscriber.name | default("friend") }},',
        "",
    ]
    count = 0
    section = 0
    while count < words:
        section += 1
        out.append(f"## Section {section}")
        out.append("")
        for p in range(3):
            sentence = " ".join(WORDS[(section + p + i) % len(WORDS)] for i in range(60))
            out.append(f"{sentence.capitalize()}, see [a link](https://example.com/{section}/{p})"
                       f" and a note[^{section}-{p}].")
            out.append("")
            count += 64
        out.append("A list right after a paragraph:")
        for i in range(4):
            out.append(f"- item {i} with *emphasis*")
            out.append(f"  - nested {i}")
        out.append("")
        count += 16
        if section % 3 == 0:
            out.extend(["```python", "def f(x):", "    return x * 2  # double", "```", ""])
            out.extend(["| a | b |", "|---|--:|", "| 1 | 2 |", "| 3 | 4 |", ""])
    for s in range(1, section + 1):
        for p in range(3):
            out.append(f"[^{s}-{p}]: Footnote {s}.{p} for {{{{ subscriber.email }}}}.")
    out.append("")
    return "\n".join(out)


def timed(fn, repeat: int) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def from_scratch(message_html: str, message_text: str, recipient: Recipient, headers) -> bytes:
    """The baseline: one message assembled with the email package."""
    msg = EmailMessage()
    msg["From"] = "Bench Writer <writer@example.com>"
    msg["To"] = f"{recipient.name} <{recipient.email}>"
    msg["Subject"] = "A benchmark issue — with “quotes” and café"
    for name, value in headers:
        msg[name] = value
    msg.set_content(message_text)  # the email package picks the transfer encoding
    msg.add_alternative(message_html, subtype="html")
    return msg.as_bytes(policy=SMTP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=500,
                        help="messages built from scratch for the baseline (it is slow)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "drafts").mkdir()
        (root / "newsletter.toml").write_text(
            '[newsletter]\nname = "Bench"\nfrom = "Bench Writer <writer@example.com>"\n'
            'base_url = "https://example.com/news"\naddress = "1 Bench Street"\n'
        )
        os.environ.setdefault("NEWSLETTER_SECRET", "bench-secret-" + "b" * 40)
        draft = root / "drafts" / "2026-11-21-bench.md"
        source = make_draft()
        draft.write_text(source, encoding="utf-8")
        settings = load_settings(root)

        issue = build_issue(settings, draft)  # warm-up (imports, regexes)
        build_s = timed(lambda: build_issue(settings, draft), 5)
        # Stage figures: wrap the stages build_issue calls with a stopwatch.
        stages = {"markdown": [], "inline": []}

        def stopwatch(name, fn):
            def run(*a, **kw):
                start = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    stages[name].append(time.perf_counter() - start)
            return run

        issue_module.render_markdown = stopwatch("markdown", render_markdown)
        issue_module.inline_css = stopwatch("inline", inline_css)
        for _ in range(5):
            build_issue(settings, draft)
        issue_module.render_markdown, issue_module.inline_css = render_markdown, inline_css
        markdown_s = statistics.median(stages["markdown"])
        inline_s = statistics.median(stages["inline"])

        recipients = [
            Recipient(f"reader{i}@example.com", f"Reader {i}", {"city": "Lisboa"})
            for i in range(args.recipients)
        ]
        personalize(issue, recipients[0], key="0", settings=settings)  # per-issue preparation
        start = time.perf_counter()
        total_bytes = 0
        for i, r in enumerate(recipients):
            total_bytes += len(personalize(issue, r, key=str(i), settings=settings).raw or b"")
        ours = (time.perf_counter() - start) / len(recipients)

        sample = recipients[: args.baseline]
        prepared = [personalize(issue, r, key=str(i), settings=settings)
                    for i, r in enumerate(sample)]
        start = time.perf_counter()
        for r, m in zip(sample, prepared, strict=True):
            from_scratch(m.html, m.text, r, m.headers)
        baseline = (time.perf_counter() - start) / len(sample)

    words = len(issue.text.split())
    print(f"draft: {words:,} words; HTML part {len(issue.html.encode()) / 1024:.1f} KB, "
          f"text part {len(issue.text.encode()) / 1024:.1f} KB; "
          f"message {total_bytes / len(recipients) / 1024:.1f} KB")
    print(f"build_issue (once per issue):        {build_s * 1e6:10.0f} µs")
    print(f"  of which Markdown:                 {markdown_s * 1e6:10.0f} µs")
    print(f"  of which premailer inlining:       {inline_s * 1e6:10.0f} µs")
    rest = build_s - markdown_s - inline_s
    print(f"  the rest (Jinja2, URLs, text part): {rest * 1e6:9.0f} µs")
    print(f"personalize + MIME bytes, per recipient over {len(recipients):,}: "
          f"{ours * 1e6:8.1f} µs")
    print(f"email package from scratch, per message over {len(sample):,}:   "
          f"{baseline * 1e6:8.1f} µs")
    print(f"ratio (email package / personalize): {baseline / ours:.1f}x")


if __name__ == "__main__":
    main()
