"""How fast the HTTP providers send: 10,000 readers through Postmark and SendGrid to a local API.

    python bench/send_http.py                      # 10,000 readers
    python bench/send_http.py --subscribers 2000   # quicker
    python bench/send.py --mode http               # the same, from the send benchmark
    python bench/send_http.py --latency 20         # the API answers after 20 ms, like a
                                                   # real one over the internet

The API is a bare HTTP server in a subprocess on 127.0.0.1 that answers at
once in each provider's form (Postmark: one ErrorCode per message; SendGrid:
202). Printed, for each provider:

- adapter alone: prebuilt personalized messages handed to `send()` in
  batches of `max_batch`; messages per second, and the share of that time
  spent building the requests (JSON bodies, SendGrid's shared-body factoring);
- whole send: `send_draft()` as `newsletter send` runs it (campaign and
  delivery rows in SQLite, personalization, the provider, results recorded);
- the baseline, measured in the same run: the Postmark adapter sending one
  message per request, which is what an API without a batch form costs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from letter import write_letter  # noqa: E402  (bench/letter.py)

# -- the fake API (run in its own process so it does not share our GIL) ---------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real APIs
    # Headers and body go out in separate writes: without this, Nagle's algorithm and
    # the client's delayed ACK add ~40 ms to every answer.
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 -- http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.server.latency:  # type: ignore[attr-defined]
            time.sleep(self.server.latency)  # type: ignore[attr-defined]
        if self.path == "/email/batch":
            batch = json.loads(body)
            answer = json.dumps([
                {"ErrorCode": 0, "Message": "OK", "MessageID": f"m-{i}", "To": m["To"]}
                for i, m in enumerate(batch)
            ]).encode()
            self._reply(200, answer, len(batch))
        elif self.path == "/v3/mail/send":
            count = len(json.loads(body)["personalizations"])
            self._reply(202, b"", count, {"X-Message-Id": "sg-bench"})
        else:
            self._reply(404, b"{}", 0)

    def _reply(self, status: int, body: bytes, count: int,
               headers: dict[str, str] | None = None) -> None:
        self.server.received += count  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        body = str(self.server.received).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(port: int, latency: float) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.received = 0  # type: ignore[attr-defined]
    server.latency = latency  # type: ignore[attr-defined]
    server.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port),
                             "--latency", str(latency_ms)])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("the fake API did not start") from None
            time.sleep(0.05)


def received(url: str) -> int:
    import httpx

    return int(httpx.get(url + "/count").text)


# -- the benchmark ------------------------------------------------------------------------


def make_letter(root: Path, n: int) -> None:
    """A newsletter folder with a ~1,000-word draft and `n` active subscribers."""
    write_letter(root, n, newsletter='reply_to = "replies@example.com"\n')


def timed_classes():
    """The two adapters with a stopwatch around the code that builds their requests."""
    from newsletter.delivery.providers.postmark import PostmarkProvider
    from newsletter.delivery.providers.sendgrid import SendGridProvider

    class TimedPostmark(PostmarkProvider):
        build_seconds = 0.0

        def build_request(self, messages):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return super().build_request(messages)
            finally:
                TimedPostmark.build_seconds += time.perf_counter() - start

    class TimedSendGrid(SendGridProvider):
        build_seconds = 0.0

        def build_requests(self, messages):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return super().build_requests(messages)
            finally:
                TimedSendGrid.build_seconds += time.perf_counter() - start

    return {"postmark": TimedPostmark, "sendgrid": TimedSendGrid}


def adapter_alone(cls, settings, messages, batch: int) -> tuple[float, float]:
    """(messages per second, share of the time building requests) for prebuilt messages."""
    from newsletter.delivery.providers.base import Outcome

    cls.build_seconds = 0.0
    provider = cls(settings, settings.provider)
    provider.open()
    try:
        start = time.perf_counter()
        for i in range(0, len(messages), batch):
            results = provider.send(messages[i:i + batch])
            assert all(r.outcome is Outcome.SENT for r in results), results[:3]
        took = time.perf_counter() - start
    finally:
        provider.close()
    return len(messages) / took, cls.build_seconds / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=1_000,
                        help="messages sent one per request for the baseline")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="milliseconds the fake API waits before each answer (default 0)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    # bench/send.py passes its own --subscribers first, then what followed its "--".
    args = parser.parse_args([a for a in sys.argv[1:] if a != "--"])
    if args.serve:
        serve(args.serve, args.latency / 1000)
        return

    from newsletter.compose.issue import build_issue
    from newsletter.compose.message import Recipient, personalize
    from newsletter.compose.source import resolve_draft
    from newsletter.delivery.sending import send_draft
    from newsletter.settings import ProviderSettings, load_settings
    from newsletter.writer.check import pre_send_errors

    n = args.subscribers
    os.environ.setdefault("NEWSLETTER_SECRET", "bench-secret-" + "b" * 40)
    os.environ["POSTMARK_SERVER_TOKEN"] = "bench-token"
    os.environ["SENDGRID_API_KEY"] = "bench-key"
    proc, url = start_server(args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "letter"
            make_letter(root, n)
            base = load_settings(root)
            issue = build_issue(base, root / "drafts" / "bench.md")
            start = time.perf_counter()
            messages = [
                personalize(issue, Recipient(f"reader{i}@example.org", f"Reader {i}"),
                            key=str(i + 1), settings=base)
                for i in range(n)
            ]
            per_message = (time.perf_counter() - start) / n
            size = sum(len(m.html) + len(m.text) for m in messages) // n
            answering = f"after {args.latency:g} ms" if args.latency else "at once"
            print(f"{n:,} readers, {size / 1024:.1f} KB of HTML+text each, fake API on "
                  f"127.0.0.1 answering {answering}, {os.cpu_count()} CPUs "
                  f"(personalize: {per_message * 1e6:.0f} µs/message, not counted below)")

            def with_provider(name: str):  # type: ignore[no-untyped-def]
                from dataclasses import replace

                return replace(base, provider=ProviderSettings(
                    name=name, options={"endpoint": url}))

            classes = timed_classes()
            figures = {}
            for name, cls in classes.items():
                settings = with_provider(name)
                rate, share = adapter_alone(cls, settings, messages, cls.max_batch)
                figures[name] = rate
                print(f"{name:9} adapter alone: {rate:9,.0f} msg/s in batches of "
                      f"{cls.max_batch:>4}; building requests {share:5.1%} of the time")

            sample = messages[: args.baseline]
            single, share = adapter_alone(classes["postmark"], with_provider("postmark"),
                                          sample, 1)
            print(f"baseline  one message per request (postmark, {len(sample):,} messages): "
                  f"{single:9,.0f} msg/s; building requests {share:5.1%} of the time")
            for name, rate in figures.items():
                print(f"ratio {name} batched / one per request: {rate / single:6.1f}×")

            for name in classes:
                (root / "newsletter.toml").write_text(
                    (root / "newsletter.toml").read_text().split("[provider]")[0]
                    + f'[provider]\nname = "{name}"\nendpoint = "{url}"\n'
                )
                settings = load_settings(root)
                before = received(url)
                start = time.perf_counter()
                # As `newsletter send` runs it: the draft built once, the check handed in.
                issue = build_issue(settings, resolve_draft(settings, "bench"))
                report = send_draft(settings, issue, "subscribers", check=pre_send_errors,
                                    resend=True, force=True)
                took = time.perf_counter() - start
                assert report.error is None, report.error
                assert report.campaign.counts.sent == n, report.campaign.counts
                assert received(url) - before == n
                print(f"{name:9} whole send (send_draft: SQLite, personalize, provider): "
                      f"{n / took:9,.0f} msg/s")
    finally:
        proc.terminate()
        proc.wait(5)


if __name__ == "__main__":
    main()
