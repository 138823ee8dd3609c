"""What signing costs an SES send: botocore's SigV4 signer against the hand-written one.

    python bench/ses_signing.py                    # 10,000 signatures, 6 rounds of 1,000 sends
    python bench/ses_signing.py --sends 300 --rounds 4   # quicker

The hand-written signer (`newsletter/sigv4.py`, replaced by `newsletter/aws.py`)
is read from git at --baseline-rev, so both are measured in the same run.
Printed:

- µs per signature of one real SendRawEmail request (the bench issue, ~20 KB
  of MIME, base64 in JSON), each way, over --signatures signatures;
- that cost as a share of one SES send: the SES adapter sending prebuilt
  messages, one request each, to a bare local SES stand-in (a subprocess on
  127.0.0.1 that answers at once), in interleaved rounds, A-B then B-A,
  so drift on a shared machine hits both alike; the median per way;
- the same extra cost as a share of a whole send (`send_draft()`: SQLite,
  personalization, the SES adapter) of --sends readers, signed by botocore.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from letter import write_letter  # noqa: E402  (bench/letter.py)

BASELINE_REV = "3d6f382"  # the last commit with newsletter/sigv4.py


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 -- http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ok = self.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 Credential=")
        body = json.dumps({"MessageId": "0102-bench"} if ok else {"message": "unsigned"}).encode()
        self.send_response(200 if ok else 403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("the SES stand-in did not start") from None
            time.sleep(0.05)


def hand_written(rev: str) -> types.ModuleType:
    """newsletter/sigv4.py as it was at `rev`."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:newsletter/sigv4.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("sigv4_hand_written")
    exec(compile(source, "sigv4.py@" + rev, "exec"), module.__dict__)  # noqa: S102
    return module


class HandWrittenSigner:
    """The old function behind the new signer's interface."""

    def __init__(self, module: types.ModuleType, credentials, region: str):  # type: ignore[no-untyped-def]
        self.sign_headers, self.credentials, self.region = module.sigv4_headers, credentials, region

    def headers(self, method: str, url: str, headers, body: bytes) -> dict[str, str]:  # type: ignore[no-untyped-def]
        c = self.credentials
        return self.sign_headers(method, url, headers, body, access_key=c.access_key,
                                 secret_key=c.secret_key, region=self.region,
                                 session_token=c.session_token)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signatures", type=int, default=10_000)
    parser.add_argument("--sends", type=int, default=1_000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per way, interleaved")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        ThreadingHTTPServer(("127.0.0.1", args.serve), _Handler).serve_forever()
        return

    from dataclasses import replace

    from newsletter.aws import AWSCredentials, SigV4Signer
    from newsletter.compose.issue import build_issue
    from newsletter.compose.message import Recipient, personalize
    from newsletter.delivery.providers.base import Outcome
    from newsletter.delivery.providers.ses import SEND_PATH, SESProvider
    from newsletter.settings import ProviderSettings, load_settings

    old = hand_written(args.baseline_rev)
    credentials = AWSCredentials("AKIDBENCH0123456789", "bench/secret+key0123456789", None)
    os.environ.setdefault("NEWSLETTER_SECRET", "bench-secret-" + "b" * 40)
    os.environ["AWS_ACCESS_KEY_ID"] = credentials.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = credentials.secret_key
    os.environ.pop("AWS_SESSION_TOKEN", None)
    region = "eu-west-1"
    proc, url = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "letter"
            write_letter(root, args.sends)
            base = load_settings(root)
            issue = build_issue(base, root / "drafts" / "bench.md")
            settings = replace(base, provider=ProviderSettings(
                name="ses", options={"endpoint": url, "region": region}))
            count = max(args.sends, 1)
            messages = [personalize(issue, Recipient(f"reader{i}@example.org", f"Reader {i}"),
                                    key=str(i + 1), settings=base) for i in range(count)]

            # 1. One signature of one real request, each way.
            provider = SESProvider(settings, settings.provider)
            provider.open()
            body, _ = provider.build_request(messages[0])
            provider.close()
            raw = len(messages[0].as_bytes())
            target = url + SEND_PATH
            headers = {"Content-Type": "application/json"}
            ways = {"hand-written": HandWrittenSigner(old, credentials, region),
                    "botocore": SigV4Signer(credentials, region)}
            n = args.signatures
            print(f"one SendRawEmail request: {raw / 1024:.1f} KB of MIME, {len(body) / 1024:.1f} "
                  f"KB of JSON body; {os.cpu_count()} CPUs")
            # Interleaved batches of 1/20th, each way in turn: the best batch of each is what
            # signing costs when the machine is not busy with something else.
            batches: dict[str, list[float]] = {name: [] for name in ways}
            size = max(n // 20, 1)
            for _ in range(20):
                for name, signer in ways.items():
                    took = timeit.timeit(
                        lambda s=signer: s.headers("POST", target, headers, body), number=size)
                    batches[name].append(took / size)
            per_signature = {name: min(b) for name, b in batches.items()}
            for name, best in per_signature.items():
                print(f"{name:13} {best * 1e6:7.1f} µs per signature (best of 20 interleaved "
                      f"batches of {size:,}; median {statistics.median(batches[name]) * 1e6:.1f})")
            extra = per_signature["botocore"] - per_signature["hand-written"]
            print(f"botocore costs {extra * 1e6:+.1f} µs per signature "
                  f"({per_signature['botocore'] / per_signature['hand-written']:.2f}x)")

            # 2. The SES adapter sending, one way then the other, interleaved.
            class Timed(SESProvider):
                way = "botocore"

                def signer(self):  # type: ignore[no-untyped-def, override]
                    if Timed.way == "botocore":
                        return super().signer()
                    return ways["hand-written"]

            rates: dict[str, list[float]] = {name: [] for name in ways}
            cpu: dict[str, list[float]] = {name: [] for name in ways}  # client CPU s/message
            order = list(ways)
            for number in range(args.rounds + 1):
                # A-B, B-A, A-B…: neither way always goes first; round 0 only warms up.
                for name in (order if number % 2 else order[::-1]):
                    Timed.way = name
                    sender = Timed(settings, settings.provider)
                    sender.open()
                    try:
                        start, start_cpu = time.perf_counter(), time.process_time()
                        results = sender.send(messages)
                        took = time.perf_counter() - start
                        took_cpu = time.process_time() - start_cpu
                    finally:
                        sender.close()
                    assert all(r.outcome is Outcome.SENT for r in results), results[:2]
                    if number:
                        rates[name].append(len(messages) / took)
                        cpu[name].append(took_cpu / len(messages))
            median = {name: statistics.median(r) for name, r in rates.items()}
            for name, rate in median.items():
                spread = ", ".join(f"{r:,.0f}" for r in rates[name])
                print(f"{name:13} SES adapter: best {max(rates[name]):7,.0f} msg/s, median "
                      f"{rate:,.0f}, of {args.rounds} rounds of {len(messages):,} ({spread})")
            per_send = 1 / max(rates["hand-written"])  # the best round: like per_signature
            # This process's CPU per message: what signing adds, less blurred by other load.
            cpu_median = {name: statistics.median(c) for name, c in cpu.items()}
            for name, seconds in cpu_median.items():
                print(f"{name:13} SES adapter: {seconds * 1e6:7.1f} µs of client CPU per message "
                      "(median)")
            print(f"client CPU per message botocore / hand-written: "
                  f"{cpu_median['botocore'] / cpu_median['hand-written']:.3f}x")
            paired = statistics.median(b / h for h, b in zip(rates["hand-written"],
                                                             rates["botocore"], strict=True))
            print(f"signing extra / one adapter send (hand-written): {extra / per_send:6.2%}; "
                  f"throughput botocore / hand-written: medians "
                  f"{median['botocore'] / median['hand-written']:.3f}x, "
                  f"median of the rounds' ratios {paired:.3f}x")

            # 3. A whole send, as `newsletter send` runs it.
            from newsletter.delivery.sending import send_draft

            toml = root / "newsletter.toml"
            toml.write_text(toml.read_text().split("[provider]")[0]
                            + f'[provider]\nname = "ses"\nendpoint = "{url}"\n'
                            f'region = "{region}"\nrate = 1000000\n')  # no pacing
            whole = []
            for _ in range(3):
                start = time.perf_counter()
                report = send_draft(load_settings(root), "bench", "subscribers", resend=True,
                                    force=True)
                whole.append(time.perf_counter() - start)
                assert report.error is None, report.error
                assert report.campaign.counts.sent == args.sends, report.campaign.counts
            per_message = min(whole) / args.sends
            print(f"whole send (send_draft, botocore): best of 3 {1 / per_message:7,.0f} msg/s; "
                  f"signing extra / one whole send: {extra / per_message:6.2%}")
    finally:
        proc.terminate()
        proc.wait(5)


if __name__ == "__main__":
    main()
