"""The shared provider contract (tests/delivery/contract.py) run against each HTTP adapter.

The real campaign engine, a real SQLite file, and each adapter talking to its
fake API on 127.0.0.1 — the kill-and-resume test included.
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterator

import pytest

from tests.conftest import refusing_port
from tests.delivery.contract import Delivered, Harness, ProviderContract
from tests.providers_http.conftest import FAKES, KEY_ENV
from tests.providers_http.fakes import FakeAPI, FakeMailgun, FakeSES

PERMANENT_REASON = {"postmark": "inactive", "sendgrid": "valid address",
                    "mailgun": "not a valid address", "resend": "Invalid `to` field",
                    "ses": "MessageRejected"}


def harness_for(name: str) -> Iterator[Harness]:
    # The "down" endpoint's port is held (refusing) for the test, so no other worker gets it.
    with FAKES[name]() as fake, refusing_port() as down_port:
        # No pacing: the contract is about outcomes, and SES's 14/s or Resend's 2/s only
        # make it slower (pacing is the campaign's, tested there).
        options = {"name": name, "endpoint": fake.url, "timeout": 10, "rate": 100000}
        env = {KEY_ENV[name]: fake.key}
        if isinstance(fake, FakeMailgun):
            options["domain"] = fake.domain
        if isinstance(fake, FakeSES):
            options["region"] = fake.region
            env["AWS_SECRET_ACCESS_KEY"] = fake.secret

        def received(fake: FakeAPI = fake) -> list[Delivered]:
            with fake._lock:
                got = list(fake.delivered)
            return [Delivered(email.utils.parseaddr(d.to[0])[1], d.subject,
                              d.headers.get("List-Unsubscribe")) for d in got]

        def fail(address: str, kind: str, fake: FakeAPI = fake) -> None:
            if kind == "transient":
                fake.busy_once(address)
            else:
                fake.reject(address)

        def slow(seconds: float, fake: FakeAPI = fake) -> None:
            fake.delay = seconds

        def after_accept(kind: str, late_by: float, fake: FakeAPI = fake) -> None:
            fake.after_accept(kind, late_by=late_by)

        yield Harness(
            options=options, env=env, received=received, fail=fail, slow=slow,
            after_accept=after_accept, replays_idempotent=name == "resend",
            down_options={**options, "endpoint": f"http://127.0.0.1:{down_port}"},
            permanent_reason=PERMANENT_REASON[name],
        )
        assert not fake.violations, fake.violations


class TestPostmarkContract(ProviderContract):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        yield from harness_for("postmark")

    @pytest.mark.slow  # 3 × max_batch messages, built by the contract's helper: ~10 s
    def test_killed_send_resumes_without_duplicates(self, harness, letter, env) -> None:
        super().test_killed_send_resumes_without_duplicates(harness, letter, env)


class TestSendGridContract(ProviderContract):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        yield from harness_for("sendgrid")

    @pytest.mark.slow  # 3 × max_batch messages, built by the contract's helper: ~10 s
    def test_killed_send_resumes_without_duplicates(self, harness, letter, env) -> None:
        super().test_killed_send_resumes_without_duplicates(harness, letter, env)


class TestMailgunContract(ProviderContract):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        yield from harness_for("mailgun")

    @pytest.mark.slow  # 3 × max_batch messages, built by the contract's helper: ~10 s
    def test_killed_send_resumes_without_duplicates(self, harness, letter, env) -> None:
        super().test_killed_send_resumes_without_duplicates(harness, letter, env)


class TestResendContract(ProviderContract):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        yield from harness_for("resend")


class TestSESContract(ProviderContract):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        yield from harness_for("ses")
