"""The provider contract run against the built-in providers: outbox and smtp (real aiosmtpd)."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from tests.conftest import dead_port

from .contract import Delivered, Harness, ProviderContract
from .smtpserver import SMTPServer


class TestSMTPContract(ProviderContract):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        with SMTPServer() as server:

            def received() -> list[Delivered]:
                with server.lock:
                    got = list(server.received)
                out = []
                for r in got:
                    parsed = r.parsed()
                    out.append(Delivered(r.recipient, str(parsed["Subject"]),
                                         str(parsed["List-Unsubscribe"])))
                return out

            def fail(address: str, kind: str) -> None:
                if kind == "transient":
                    server.fail(address, "451 4.3.0 mailbox busy, try later", times=1)
                else:
                    server.fail(address, "550 5.1.1 no such mailbox here")

            def slow(seconds: float) -> None:
                server.delay = seconds

            yield Harness(
                options={"name": "smtp", "host": "127.0.0.1", "port": server.port,
                         "security": "none", "timeout": 5},
                received=received,
                fail=fail,
                slow=slow,
                down_options={"name": "smtp", "host": "127.0.0.1", "port": dead_port(),
                              "security": "none", "timeout": 2},
                permanent_reason="550 5.1.1 no such mailbox here",
            )


class TestSMTPPipelinedContract(TestSMTPContract):
    """The same, with MAIL/RCPT/DATA sent in one write (RFC 2920 PIPELINING)."""

    retry_options = {**ProviderContract.retry_options, "pipelining": True}


class TestOutboxContract(ProviderContract):
    """The outbox cannot refuse anyone: failures are simulated by an unwritable folder."""

    @pytest.fixture
    def harness(self, tmp_path: Path) -> Iterator[Harness]:
        outbox = tmp_path / "out"

        def received() -> list[Delivered]:
            out = []
            for path in sorted(outbox.glob("*/*.eml")):
                parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
                out.append(Delivered(str(parsed["To"]).split("<")[-1].rstrip(">"),
                                     str(parsed["Subject"]), str(parsed["List-Unsubscribe"])))
            return out

        yield Harness(
            options={"name": "outbox", "directory": str(outbox)},
            received=received,
            fail=lambda address, kind: pytest.skip("the outbox never refuses a recipient"),
            slow=lambda seconds: None,
            down_options={"name": "outbox", "directory": "/proc/no-such-outbox"},
        )

    def test_killed_send_resumes_without_duplicates(self, *args, **kwargs) -> None:  # type: ignore[override]
        pytest.skip("the outbox writes faster than a kill can land (its resume: test_campaign.py)")
