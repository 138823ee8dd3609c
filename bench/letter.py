"""The newsletter folder both send benchmarks measure: a ~1,000-word draft, N readers.

Readers go in with one executemany (outside the timed part of every benchmark).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter import store  # noqa: E402

PARAGRAPH = (
    "Leaving a big company is mostly a matter of paperwork and a little courage. "
    "What surprised me was how much of my writing had lived inside other people's "
    "platforms, and how little of it I could take with me when I left. "
)


def write_letter(root: Path, subscribers: int, *, newsletter: str = "",
                 provider: str = "") -> Path:
    """Make the folder at `root`; extra `[newsletter]` lines and a `[provider]` table as text."""
    (root / "drafts").mkdir(parents=True)
    (root / "newsletter.toml").write_text(
        '[newsletter]\nname = "Bench Letter"\nfrom = "Bench <bench@example.com>"\n'
        'base_url = "https://example.com/news"\naddress = "1 Bench Street"\n'
        f"{newsletter}\n{provider}"
    )
    body = "\n\n".join(f"## Part {i}\n\n{PARAGRAPH * 4}" for i in range(1, 9))
    draft = root / "drafts" / "bench.md"
    draft.write_text(
        f"---\ntitle: Bench issue\nsubject: The bench issue\n---\nHello {{{{ subscriber.name }}}},"
        f"\n\n{body}\n"
    )
    add_subscribers(root, subscribers)
    return draft


def add_subscribers(root: Path, n: int) -> None:
    db = store.connect(root / "newsletter.db")
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        db.conn.executemany(
            "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at) "
            "VALUES (?, ?, ?, 'active', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')",
            ((f"reader{i}@example.org", f"reader{i}@example.org", f"Reader {i}")
             for i in range(n)),
        )
    db.conn.close()
