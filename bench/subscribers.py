"""Benchmark: import a generated Mailchimp-style export, against `sqlite-utils insert --csv`.

    .venv/bin/python bench/subscribers.py [--rows 1000000]

Generating the file is outside the timed part. The baseline is measured in the
same run: the `sqlite-utils insert --csv` CLI into a table with a unique index
on the email column (and, for reference, without the index). Then the real
`newsletter subscribers import` CLI imports the same file into a fresh
newsletter, and `export` / `list` stream the result. Prints wall time and peak
RSS of each child process, and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent

HEADER = [
    "Email Address", "First Name", "Last Name", "MEMBER_RATING", "OPTIN_TIME", "OPTIN_IP",
    "CONFIRM_TIME", "CONFIRM_IP", "LATITUDE", "LONGITUDE", "GMTOFF", "DSTOFF", "TIMEZONE",
    "CC", "REGION", "LAST_CHANGED", "LEID", "EUID", "NOTES", "TAGS",
]
FIRST = ["Ada", "Liu", "Sam", "Noor", "José", "Zoë", "Kwame", "Mia", "Ola", "Ravi"]
LAST = ["Lovelace", "Wei", "Okafor", "Haddad", "García", "Müller", "Mensah", "Rossi"]
DOMAINS = ["example.com", "Example.org", "mail.example.net", "EXAMPLE.co.uk", "post.example.de"]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """A Mailchimp 'subscribed' export: mixed case, a few bad and duplicate rows."""
    rnd = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(HEADER)
        for i in range(rows):
            if i % 500 == 499:
                email = f"broken{i}.example.com"  # no @: skipped
            elif i % 1000 == 998:
                email = f"Reader{i - 1}@{DOMAINS[(i - 1) % len(DOMAINS)]}".upper()  # duplicate
            else:
                email = f"Reader{i}@{DOMAINS[i % len(DOMAINS)]}"
            day = 1 + i % 28
            w.writerow([
                email, rnd.choice(FIRST), rnd.choice(LAST), str(1 + i % 5),
                f"2021-03-{day:02d} 10:{i % 60:02d}:00", f"203.0.113.{i % 250}",
                f"2021-03-{day:02d} 10:{i % 60:02d}:30", f"203.0.113.{i % 250}",
                "", "", "", "", "", "", "", f"2023-01-{day:02d} 08:00:00",
                str(100000 + i), f"e{i:08x}", "", '"Customer","2021"' if i % 3 else "",
            ])


def run(cmd: list[str], cwd: Path | None = None, stdout=subprocess.DEVNULL) -> tuple[float, int]:
    """Run a command; return (seconds, peak RSS in MiB) of that child."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err}")
    return seconds, usage.ru_maxrss // 1024


def baseline(csv_path: Path, work: Path, index: bool, batch: int | None = None
             ) -> tuple[float, int]:
    db = work / f"baseline_{'index' if index else 'plain'}_{batch}.db"
    conn = sqlite3.connect(db)
    cols = ", ".join(f'"{h}" TEXT' for h in HEADER)
    conn.execute(f"CREATE TABLE subs ({cols})")
    if index:
        conn.execute('CREATE UNIQUE INDEX subs_email ON subs ("Email Address")')
    conn.close()
    # --ignore: the file has duplicate rows, which the unique index refuses.
    extra = ["--batch-size", str(batch)] if batch else []
    return run([str(BIN / "sqlite-utils"), "insert", str(db), "subs", str(csv_path), "--csv",
                "--ignore", *extra])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-subscribers-"))
    csv_path = work / "subscribed_members_export.csv"
    t = time.perf_counter()
    generate(csv_path, args.rows)
    size = csv_path.stat().st_size / 2**20
    print(f"generated {args.rows:,} rows ({size:.0f} MiB) in {time.perf_counter() - t:.1f}s "
          f"(not timed) at {csv_path}")

    base_t, base_rss = baseline(csv_path, work, index=True)
    print(f"baseline  sqlite-utils insert --csv, unique index: {base_t:7.1f}s  {base_rss:5d} MiB")
    plain_t, plain_rss = baseline(csv_path, work, index=False)
    print(f"          sqlite-utils insert --csv, no index:     {plain_t:7.1f}s  {plain_rss:5d} MiB")
    # The default commits every 100 rows; where fsync is slow that dominates, so this
    # line shows the baseline without that cost, for an honest second ratio.
    big_t, big_rss = baseline(csv_path, work, index=True, batch=100_000)
    print(f"          same, unique index, --batch-size 100000: {big_t:7.1f}s  {big_rss:5d} MiB")

    letter = work / "letter"
    letter.mkdir()
    (letter / "newsletter.toml").write_text('[newsletter]\nname = "Bench"\n')
    cli = [str(BIN / "newsletter"), "--dir", str(letter), "subscribers"]
    imp_t, imp_rss = run([*cli, "import", str(csv_path)])
    print(f"newsletter subscribers import:                    {imp_t:7.1f}s  {imp_rss:5d} MiB"
          f"   ratio {imp_t / base_t:.2f}x baseline ({imp_t / big_t:.2f}x the big-batch one)")
    again_t, again_rss = run([*cli, "import", str(csv_path)])
    print(f"  the same file again (all unchanged):            {again_t:7.1f}s  {again_rss:5d} MiB")
    exp_t, exp_rss = run([*cli, "export", "-o", str(work / "export.csv")])
    print(f"newsletter subscribers export -o FILE:            {exp_t:7.1f}s  {exp_rss:5d} MiB")
    list_t, list_rss = run([*cli, "list", "--status", "active"])
    print(f"newsletter subscribers list --status active:      {list_t:7.1f}s  {list_rss:5d} MiB")

    conn = sqlite3.connect(letter / "newsletter.db")
    total = conn.execute("SELECT count(*) FROM subscribers").fetchone()[0]
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT id, email FROM subscribers WHERE status = 'active' ORDER BY id"
    ).fetchall()
    logged = conn.execute("SELECT count(*) FROM events WHERE source = 'import'").fetchone()[0]
    print(f"subscribers in the database: {total:,} (import events written: {logged:,})")
    print("selecting the active ones for a send: " + "; ".join(row[-1] for row in plan))
    if args.keep:
        print(f"kept {work}")
    else:
        for p in sorted(work.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
