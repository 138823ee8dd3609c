"""Benchmark: what a tracked click costs `newsletter serve` ([analytics] clicks = true).

    .venv/bin/python bench/clicks.py [--clicks 2000] [--readers 20000] [--hold 4]

A real `newsletter serve` (uvicorn) on 127.0.0.1, with the click links of a real composed
email: an issue with three links is sent to the outbox, and its .eml files give the
`/c/<token>` links (each reader's own). One keep-alive client then clicks them in turn,
one at a time, and times each answer (a 302 to the writer's link), in three phases:
- quiet: nothing else runs;
- during a send: `newsletter send` of a ~1,000-word issue to --readers readers through
  Postfix's smtp-sink (aiosmtpd's Sink when absent), in its own process, on the same cores;
- while the write lock is held: another connection holds `BEGIN IMMEDIATE` for --hold
  seconds, as a long write would (the clicks are recorded once it lets go).

Prints p50/p99/max of each phase and checks that every click was recorded afterwards.
Goals (issue 22): p99 under 5 ms when quiet and while the lock is held (nothing a click
answers waits for the database); during a send, no click waits for it either: p99 under
50 ms on this 2-core machine, where the send takes a core. Exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import html
import http.client
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

# Not bench/click.py: a script's folder comes first on sys.path, so that name would stand in
# for the `click` package (typer's) in every bench here.
from letter import write_letter  # noqa: E402  (bench/letter.py)
from send import free_port, start_server  # noqa: E402  (bench/send.py)

from newsletter import store  # noqa: E402

SECRET = "bench-secret-" + "s" * 40
BIN = Path(sys.executable).parent / "newsletter"
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like "
           "Gecko) Version/17.4 Safari/605.1.15")
GOALS = {"quiet": 0.005, "during a send": 0.050, "lock held": 0.005}  # p99, seconds
LINKED = 50  # readers of the issue with links (their links are clicked in turn)
DRAFT = """---
subject: Links
---
Read [the essay](https://example.org/essay?a=1&b=2), [the notes](https://example.org/notes),
and [the map](https://example.org/map).
"""


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    background: str = ""

    def p(self, q: float) -> float:
        values = sorted(self.latencies)
        return values[min(len(values) - 1, int(len(values) * q))] if values else 0.0

    def missed(self) -> list[str]:
        out = []
        if not self.latencies:
            out.append("no click answered")
        elif self.p(0.99) > GOALS[self.name]:
            out.append(f"p99 {self.p(0.99) * 1000:.1f} ms > {GOALS[self.name] * 1000:.0f} ms")
        if self.errors:
            out.append(f"{len(self.errors)} errors ({sorted(set(self.errors))[:3]})")
        return out

    def line(self) -> str:
        missed = self.missed()
        p50 = statistics.median(self.latencies or [0]) * 1000
        return (f"{self.name:14}: {len(self.latencies):5} clicks, p50 {p50:5.2f} ms, "
                f"p99 {self.p(0.99) * 1000:6.2f} ms, max {max(self.latencies or [0]) * 1000:7.1f}"
                f" ms  " + ("OK" if not missed else "MISSED: " + "; ".join(missed)))


def settings_text(port: int, provider: str) -> str:
    return (f'[newsletter]\nname = "Bench Letter"\nfrom = "Bench <bench@example.com>"\n'
            f'base_url = "http://127.0.0.1:{port}"\naddress = "1 Bench Street"\n\n'
            f"[provider]\n{provider}\n\n[analytics]\nclicks = true\n")


def click_links(root: Path, env: dict[str, str]) -> list[tuple[str, str]]:
    """(path, where it goes) of every tracked link of the issue the first readers got."""
    (root / "drafts" / "links.md").write_text(DRAFT)
    db = store.connect(root / "newsletter.db")
    try:
        # The issue with links goes to the first LINKED readers only (a tag), to the outbox.
        db.execute("UPDATE subscribers SET tags = '[\"linked\"]' WHERE id <= ?", [LINKED])
    finally:
        db.conn.close()
    subprocess.run([str(BIN), "send", "links", "--to", "tag:linked", "--yes"], cwd=root,
                   env=env, check=True, capture_output=True)
    found = []
    for eml in sorted((root / "outbox").glob("*links*/*.eml")):
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        body = msg.get_body(("html",)).get_content()
        for href in re.findall(r'href="([^"]+)"', body):
            url = html.unescape(href)
            if "/c/" in url:
                parts = urlsplit(url)
                found.append((parts.path + (f"?{parts.query}" if parts.query else ""), url))
    if not found:
        raise SystemExit("the composed email has no tracked link: is [analytics] clicks on?")
    return found


def click(conn: http.client.HTTPConnection, path: str) -> tuple[float, str | None]:
    """One GET on the kept-alive connection: (seconds, error or None)."""
    start = time.perf_counter()
    conn.request("GET", path, headers={"User-Agent": BROWSER})
    answer = conn.getresponse()
    answer.read()
    took = time.perf_counter() - start
    if answer.status != 302 or not answer.getheader("Location", "").startswith("https://"):
        return took, f"{answer.status}"
    return took, None


def clicks(port: int, phase: Phase, links: list[tuple[str, str]], n: int,
           until: threading.Event | None = None) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for i in range(n):
            if until is not None and until.is_set():
                break
            took, error = click(conn, links[i % len(links)][0])
            phase.latencies.append(took)
            if error:
                phase.errors.append(error)
    finally:
        conn.close()


def recorded(root: Path) -> int:
    db = store.connect(root / "newsletter.db")
    try:
        return int(db.execute("SELECT count(*) FROM engagement WHERE kind = 'click'")
                   .fetchone()[0])
    finally:
        db.conn.close()


def run(args: argparse.Namespace) -> list[Phase]:
    sink, smtp_port, sink_name = start_server()
    root = Path(tempfile.mkdtemp(prefix="bench-click-"))
    port = free_port()
    write_letter(root, args.readers)
    (root / "newsletter.toml").write_text(settings_text(port, 'name = "outbox"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_SECRET"] = SECRET
    links = click_links(root, env)
    (root / "newsletter.toml").write_text(settings_text(
        port, f'name = "smtp"\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"'))
    # serve's log goes to a file: a pipe nobody reads while it runs could fill and stall it.
    serve_log = (root / "serve.log").open("w")
    server = subprocess.Popen([str(BIN), "serve", "--port", str(port)], cwd=root, env=env,
                              stdout=subprocess.DEVNULL, stderr=serve_log, text=True)
    busy: subprocess.Popen[str] | None = None
    phases = []
    sent = 0
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                probe.request("GET", "/healthz")
                if probe.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("newsletter serve did not answer /healthz")
            time.sleep(0.1)

        quiet = Phase("quiet")
        clicks(port, quiet, links, 50)  # warm up: first requests load code
        quiet.latencies.clear()
        clicks(port, quiet, links, args.clicks)
        sent += 50 + args.clicks
        phases.append(quiet)

        during = Phase("during a send")
        started = time.perf_counter()
        with (root / "send.log").open("w") as send_log:  # a file: see serve's log
            busy = subprocess.Popen([str(BIN), "send", "bench", "--to", "subscribers", "--yes"],
                                    cwd=root, env=env, stdout=subprocess.DEVNULL,
                                    stderr=send_log, text=True)
        while recorded_sent(root) == 0:  # the messages are going out
            if busy.poll() is not None:
                raise SystemExit("the send ended before it began: "
                                 + (root / "send.log").read_text()[-300:])
            time.sleep(0.05)
        ended = threading.Event()
        watcher = threading.Thread(target=lambda: (busy.wait(), ended.set()), daemon=True)
        watcher.start()
        clicks(port, during, links, 10 ** 9, until=ended)  # for as long as the send runs
        sent += len(during.latencies)
        busy.wait(1800)
        if busy.returncode != 0:
            during.errors.append("the send failed: "
                                 + (root / "send.log").read_text().strip()[-300:])
        during.background = (f"send of {args.readers:,} readers to {sink_name}: "
                             f"{time.perf_counter() - started:.1f} s")
        phases.append(during)

        held = Phase("lock held")
        holder = sqlite3.connect(root / "newsletter.db", isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")
        until = threading.Event()
        timer = threading.Timer(args.hold, until.set)
        timer.start()
        try:
            clicks(port, held, links, 10 ** 9, until=until)
        finally:
            timer.cancel()
            holder.execute("ROLLBACK")
            holder.close()
        sent += len(held.latencies)
        held.background = f"another connection held the write lock for {args.hold:.0f} s"
        phases.append(held)

        # Every click is recorded once the database is free (each after its answer).
        deadline = time.monotonic() + 60
        while recorded(root) < sent and time.monotonic() < deadline:
            time.sleep(0.2)
        got = recorded(root)
        if got != sent:
            held.errors.append(f"{sent - got} of {sent} clicks not recorded")
        print(f"  clicks recorded: {got:,} of {sent:,}", flush=True)
    finally:
        if busy is not None and busy.poll() is None:
            busy.kill()
            busy.wait()
        server.terminate()
        server.wait(20)
        sink.terminate()
        sink.wait(10)
        serve_log.close()
        logged = (root / "serve.log").read_text()
        shutil.rmtree(root, ignore_errors=True)
    for line in logged.splitlines():
        if "not recorded" in line or "Traceback" in line:
            phases[-1].errors.append(f"serve's log: {line.strip()[:200]}")
    return phases


def recorded_sent(root: Path) -> int:
    db = store.connect(root / "newsletter.db")
    try:
        return int(db.execute(
            "SELECT count(*) FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id "
            "WHERE c.slug = 'bench' AND d.state = 'sent'").fetchone()[0])
    finally:
        db.conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=2000, help="clicks in the quiet phase")
    parser.add_argument("--readers", type=int, default=20_000, help="readers of the send")
    parser.add_argument("--hold", type=float, default=4.0,
                        help="seconds another connection holds the write lock")
    args = parser.parse_args()
    print(f"newsletter serve, one keep-alive client, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    phases = run(args)
    for phase in phases:
        if phase.background:
            print(f"  {phase.background}")
        print(phase.line(), flush=True)
    failed = [p for p in phases if p.missed()]
    print("OK: every goal met" if not failed else f"FAILED: {len(failed)} phase(s) missed a goal")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
