"""One-click unsubscribes through `newsletter serve` while a big send runs.

    .venv/bin/python bench/serve.py [--readers 10000] [--posts 2000] [--clients 50]
                                    [--workers 1]

A newsletter with --readers active readers sends to Postfix's smtp-sink on 127.0.0.1
(aiosmtpd's Sink when smtp-sink is absent) with `newsletter send`, in its own process.
Once the send is under way, --clients concurrent HTTP clients POST --posts RFC 8058
one-click unsubscribes (List-Unsubscribe=One-Click) to a real `newsletter serve`, for
readers spread over the whole list, last first. Prints requests/s and p50/p99 latency, then checks:
0 errors, every unsubscribe recorded (a `web` event), and nobody sent to after they
unsubscribed (the send skips readers it had not reached). Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import httpx  # noqa: E402
from send import free_port, make_letter, start_server  # noqa: E402  (bench/send.py)

from newsletter import store  # noqa: E402
from newsletter.compose.tokens import TokenMaker  # noqa: E402

SECRET = "bench-secret-" + "s" * 40
BIN = Path(sys.executable).parent / "newsletter"


def wait(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def sent_count(root: Path) -> int:
    db = store.connect(root / "newsletter.db")
    try:
        return db.execute("SELECT count(*) FROM deliveries WHERE state = 'sent'").fetchone()[0]
    finally:
        db.conn.close()


async def hammer(url: str, paths: list[str], clients: int) -> tuple[list[float], list[str]]:
    """POST every path once from `clients` concurrent connections; latencies and errors."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for path in paths:
        queue.put_nowait(path)
    latencies: list[float] = []
    errors: list[str] = []

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            while not queue.empty():
                path = queue.get_nowait()
                start = time.perf_counter()
                try:
                    r = await c.post(path, content=b"List-Unsubscribe=One-Click", headers={
                        "Content-Type": "application/x-www-form-urlencoded"})
                    if r.status_code != 200:
                        errors.append(f"{r.status_code}")
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)
                latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--posts", type=int, default=2_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    sink, smtp_port, sink_name = start_server()
    root = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    make_letter(root, smtp_port, args.readers)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_SECRET"] = SECRET
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(BIN), "serve", "--port", str(port), "--workers",
                               str(args.workers)], cwd=root, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    send = None
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait(healthy, 30, "/healthz")
        step = max(1, args.readers // args.posts)
        # The end of the list first: those are readers the send has not reached yet.
        chosen = [f"reader{i}@example.org" for i in range(0, args.readers, step)][:args.posts]
        chosen.reverse()
        # Bound to the letter's base_url, as the links in a sent issue are.
        tokens = TokenMaker(SECRET.encode(), context="https://example.com/news")
        paths = [f"/unsubscribe?token={tokens.make(a)}" for a in chosen]

        send_start = time.perf_counter()
        send = subprocess.Popen([str(BIN), "send", "bench", "--to", "subscribers", "--yes"],
                                cwd=root, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        wait(lambda: sent_count(root) > 0, 120, "the send to start")
        start = time.perf_counter()
        latencies, errors = asyncio.run(hammer(url, paths, args.clients))
        elapsed = time.perf_counter() - start
        sent_during = sent_count(root)
        _, send_err = send.communicate(timeout=600)
        send_time = time.perf_counter() - send_start
    finally:
        if send is not None and send.poll() is None:
            send.kill()
        server.terminate()
        server.wait(20)
        sink.terminate()

    db = store.connect(root / "newsletter.db")
    recorded = db.execute("SELECT count(DISTINCT subscriber_id) FROM events WHERE "
                          "kind = 'unsubscribed' AND source = 'web'").fetchone()[0]
    states = dict(db.execute(
        "SELECT d.state, count(*) FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
        "WHERE s.status = 'unsubscribed' GROUP BY d.state").fetchall())
    late = db.execute(
        "SELECT count(*) FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
        "WHERE s.status = 'unsubscribed' AND d.state = 'sent' AND d.sent_at > s.unsubscribed_at"
    ).fetchone()[0]
    total_sent = db.execute("SELECT count(*) FROM deliveries WHERE state = 'sent'").fetchone()[0]
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"server: newsletter serve --workers {args.workers}; send to {sink_name}, "
          f"{args.readers} readers ({send_time:.1f}s, {sent_during} sent when the posts ended)")
    print(f"{len(paths)} one-click POSTs from {args.clients} clients: {len(paths) / elapsed:.0f} "
          f"requests/s, p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms")
    print(f"errors: {len(errors)}; unsubscribes recorded: {recorded}/{len(paths)}; "
          f"their deliveries: {states}; sent after unsubscribing: {late}; "
          f"messages sent: {total_sent}")
    locked = "locked" in (send_err or "") + server.stderr.read()
    ok = (not errors and recorded == len(paths) and late == 0 and not locked
          and send.returncode == 0)
    print("OK" if ok else f"FAILED{' (database is locked)' if locked else ''}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
