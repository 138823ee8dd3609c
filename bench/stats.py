"""Benchmark: `newsletter stats` over 1,000 campaigns and 1,000,000 readers (goal: under 2 s).

    .venv/bin/python bench/stats.py [--readers 1000000] [--campaigns 1000] [--rounds 3]

The database is made directly with SQLite (outside the timed part): readers who joined over
five years (a tenth of them left, a few bounced or complained), 1,000 list campaigns of
1,000 deliveries each, and the events a real list leaves (sign-ups, confirmations, leaves,
bounces and complaints attributed to campaigns). Then the real `newsletter stats --json`
CLI runs against it, and `--html`: wall time of each (median of --rounds, each a fresh
process, as a writer runs it). Exits 1 when the JSON run misses the 2 s goal.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

BIN = Path(sys.executable).parent / "newsletter"
GOAL = 2.0


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def make(root: Path, readers: int, campaigns: int, seed: int = 11) -> None:
    (root / "newsletter.toml").write_text(
        '[newsletter]\nname = "Bench"\nfrom = "Bench <b@example.com>"\n'
        'base_url = "https://example.com"\naddress = "1 Bench Street"\n')
    # The real schema: let the CLI create and migrate the database.
    subprocess.run([str(BIN), "subscribers", "count"], cwd=root, check=True,
                   capture_output=True)
    rnd = random.Random(seed)
    start = datetime(2021, 1, 1, tzinfo=UTC)
    span = int((datetime(2026, 12, 1, tzinfo=UTC) - start).total_seconds())
    conn = sqlite3.connect(root / "newsletter.db")
    conn.execute("PRAGMA synchronous=OFF")
    rows, events = [], []
    for i in range(readers):
        joined = start + timedelta(seconds=rnd.randrange(span))
        roll = rnd.random()
        status = ("unsubscribed" if roll < 0.10 else "bounced" if roll < 0.12
                  else "complained" if roll < 0.121 else "active")
        left = joined + timedelta(days=rnd.randrange(1, 400)) if status != "active" else None
        rows.append((f"r{i}@example.com", f"r{i}@example.com", status,
                     '["friends"]' if i % 7 == 0 else "[]", iso(joined), iso(joined),
                     iso(joined), iso(left) if left else None))
        events.append((i + 1, f"r{i}@example.com", "subscribed", None, "active", "import",
                       iso(joined)))
        if left:
            events.append((i + 1, f"r{i}@example.com", "unsubscribed", "active", status, "web",
                           iso(left)))
    conn.executemany(
        "INSERT INTO subscribers (email, email_key, status, tags, created_at, updated_at, "
        "confirmed_at, unsubscribed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.executemany(
        "INSERT INTO events (subscriber_id, email, kind, status_before, status_after, source, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)", events)
    per = 1000
    for c in range(1, campaigns + 1):
        sent = iso(start + timedelta(days=2 * c))
        conn.execute(
            "INSERT INTO campaigns (id, slug, draft_path, subject, audience, kind, provider, "
            "created_at, finished_at, status) VALUES (?, ?, ?, ?, 'subscribers', 'list', "
            "'smtp', ?, ?, 'done')", (c, f"issue-{c}", f"drafts/issue-{c}.md", f"Issue {c}",
                                      sent, sent))
        picked = rnd.sample(range(1, readers + 1), per)
        conn.executemany(
            "INSERT INTO deliveries (campaign_id, subscriber_id, email, state, updated_at, "
            "sent_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(c, sid, f"r{sid - 1}@example.com", "sent" if k % 97 else "failed", sent, sent)
             for k, sid in enumerate(picked)])
        conn.executemany(
            "INSERT INTO events (subscriber_id, email, kind, status_before, status_after, "
            "source, campaign_id, created_at) VALUES (?, ?, ?, 'active', ?, 'webhook:ses', ?, ?)",
            [(sid, f"r{sid - 1}@example.com", kind, after, c, sent) for sid, kind, after in (
                (picked[0], "hard_bounce", "bounced"), (picked[1], "soft_bounce", "active"),
                (picked[2], "complaint", "complained"), (picked[3], "unsubscribed",
                                                          "unsubscribed"))])
    conn.commit()
    conn.close()


def timed(root: Path, *args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(BIN), "stats", *args], cwd=root, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", type=int, default=1_000_000)
    parser.add_argument("--campaigns", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="Make the database in DIR and keep it; reuse it when it is there "
                             "(its schema is brought up to date by the first run).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-stats-") as tmp:
        root = args.keep or Path(tmp)
        if args.keep is not None and (root / "newsletter.db").exists():
            print(f"reusing {root / 'newsletter.db'}")
            # Its schema is brought up to date here, outside the timed runs.
            subprocess.run([str(BIN), "subscribers", "count"], cwd=root, check=True,
                           capture_output=True)
        else:
            root.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            make(root, args.readers, args.campaigns)
            print(f"{args.readers:,} readers, {args.campaigns:,} campaigns made in "
                  f"{time.perf_counter() - t0:.1f} s (not timed)")
        json_runs, html_runs = [], []
        for _ in range(args.rounds):  # interleaved, each a fresh process
            json_runs.append(timed(root, "--json"))
            html_runs.append(timed(root, "--html", str(root / "report.html")))
        j, h = statistics.median(json_runs), statistics.median(html_runs)
        print(f"stats --json: median {j:.2f} s ({', '.join(f'{t:.2f}' for t in json_runs)})")
        print(f"stats --html: median {h:.2f} s ({', '.join(f'{t:.2f}' for t in html_runs)})")
        ok = j <= GOAL
        print(f"{'ok  ' if ok else 'MISS'} stats answers in under {GOAL:.0f} s: {j:.2f} s")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
