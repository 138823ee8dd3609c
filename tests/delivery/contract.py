"""The provider contract: the tests every provider must pass, run against a real server.

Each provider's test module subclasses `ProviderContract` and supplies one
fixture, `harness`, that starts a server on 127.0.0.1 standing in for the
provider and yields a `Harness` describing it:

    import pytest
    from tests.delivery.contract import Delivered, Harness, ProviderContract

    class TestPostmarkContract(ProviderContract):
        @pytest.fixture
        def harness(self):
            with FakePostmark() as server:                  # your local HTTP server
                yield Harness(
                    options={"name": "postmark", "endpoint": server.url,
                             "api_key_env": "POSTMARK_SERVER_TOKEN"},
                    env={"POSTMARK_SERVER_TOKEN": "test-token"},
                    received=lambda: [Delivered(m["To"], m["Subject"],
                                                m["Headers"].get("List-Unsubscribe"))
                                      for m in server.messages],
                    fail=server.fail,        # fail("a@x.org", "transient" | "permanent")
                    slow=server.slow,        # slow(0.5): seconds per message or request
                    down_options={"name": "postmark", "endpoint": "http://127.0.0.1:9",
                                  "api_key_env": "POSTMARK_SERVER_TOKEN"},
                    permanent_reason="Inactive recipient",
                )

What the server must do for the harness:
- `received()` lists every message the provider would deliver, one entry per
  recipient, in arrival order. A server honouring idempotency keys lists a
  repeated key once (that is what makes a provider `idempotent`).
- `fail(address, "transient")` makes the server refuse the next attempt for that
  address transiently (SMTP 4xx, HTTP 429/503 or a per-message "retry later"),
  then accept; `fail(address, "permanent")` refuses it for good with a reason
  containing `permanent_reason`.
- `slow(seconds)` delays each accepted message (or request); the kill test uses it.
- `down_options` is a `[provider]` table pointing at a server that does not
  answer (nothing listening): the send must stop with ProviderError.
- `after_accept(kind, late_by)` (optional; HTTP fakes have it) makes the next
  request that the server accepts and delivers go wrong afterwards: "late"
  (the answer comes `late_by` seconds later, past the client's timeout),
  "reset" (the connection drops, no answer) or "garbled" (200 with a page
  that is not the API's answer). Those messages must end `uncertain`, never
  be re-sent by a plain resume, and be sent once more by --retry-uncertain
  (at most once more when `replays_idempotent`: the server gives back its
  first answer for a repeated idempotency key, as Resend does).

The tests drive the real campaign engine (`newsletter.delivery.sending.run_campaign`)
with a real SQLite file; the kill test runs the engine in a subprocess and
kill -9s it part-way. Messages come from `tests.delivery.messages` (not the compose
package), so the contract checks providers, not rendering.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from newsletter import store
from newsletter.delivery.log import find_or_create_campaign
from newsletter.delivery.providers.base import Provider
from newsletter.delivery.providers.registry import provider_class
from newsletter.delivery.recipients import parse_audience
from newsletter.delivery.sending import SendReport, run_campaign
from newsletter.errors import ProviderError
from newsletter.settings import Settings, load_settings

from .messages import SUBJECT, make_test_message, unsubscribe_url_for

HERE = Path(__file__).resolve().parent
SECRET = "contract-secret-" + "y" * 40


@dataclass
class Delivered:
    """One message as the server received it."""

    recipient: str
    subject: str | None = None  # None when the server cannot tell
    list_unsubscribe: str | None = None  # the List-Unsubscribe header, when it can tell


@dataclass
class Harness:
    """What a provider's test module supplies; see the module docstring."""

    options: dict[str, Any]
    received: Callable[[], list[Delivered]]
    fail: Callable[[str, str], None]
    slow: Callable[[float], None]
    down_options: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    permanent_reason: str = ""
    after_accept: Callable[[str, float], None] | None = None
    replays_idempotent: bool = False


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_letter(root: Path, options: dict[str, Any]) -> Settings:
    """A newsletter folder at `root` whose [provider] table is `options`."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [
        "[newsletter]",
        'name = "Contract Letter"',
        'from = "Test Writer <writer@example.com>"',
        'base_url = "https://example.com/news"',
        "",
        "[provider]",
        *(f"{key} = {_toml_value(value)}" for key, value in options.items()),
    ]
    (root / "newsletter.toml").write_text("\n".join(lines) + "\n")
    return load_settings(root)


def add_subscribers(settings: Settings, emails: list[str], status: str = "active") -> None:
    """Insert subscribers with plain SQL (the subscribers module is not under test here)."""
    db = store.connect(settings.database)
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        for email in emails:
            db.execute(
                "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, datetime('now'), datetime('now'))",
                [email, email.lower(), email.split("@")[0].title(), status],
            )
    db.conn.close()


def new_campaign(settings: Settings, audience: str = "subscribers") -> int:
    db = store.connect(settings.database)
    try:
        campaign, _ = find_or_create_campaign(
            db, slug="contract", draft_path="drafts/contract.md", subject=SUBJECT,
            audience=parse_audience(audience), provider=settings.provider.name,
        )
    finally:
        db.conn.close()
    return campaign.id


def rows(settings: Settings, campaign_id: int) -> list[sqlite3.Row]:
    conn = sqlite3.connect(settings.database)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(
            "SELECT * FROM deliveries WHERE campaign_id = ? ORDER BY id", [campaign_id]
        ).fetchall()
    finally:
        conn.close()


def emails(n: int, prefix: str = "reader") -> list[str]:
    return [f"{prefix}{i:04d}@example.org" for i in range(n)]


class ProviderContract:
    """Subclass and supply a `harness` fixture; every test here then runs against it."""

    retry_options = {"retry_delay": 0.05, "max_attempts": 4}

    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        raise NotImplementedError("a provider's contract test supplies the harness fixture")

    @pytest.fixture
    def env(self, harness: Harness, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
        for name, value in harness.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
        return dict(harness.env)

    @pytest.fixture
    def letter(self, harness: Harness, env: dict[str, str], tmp_path: Path) -> Settings:
        return write_letter(tmp_path / "letter", {**harness.options, **self.retry_options})

    def send(self, settings: Settings, campaign_id: int, **kw: Any) -> SendReport:
        return run_campaign(settings, campaign_id, make_test_message, **kw)

    # -- the contract ---------------------------------------------------------------------

    def test_provider_is_registered_and_well_formed(self, harness: Harness) -> None:
        cls = provider_class(harness.options["name"])
        assert issubclass(cls, Provider)
        assert cls.name == harness.options["name"]
        assert cls.description
        assert cls.max_batch >= 1
        assert cls.rate_unit in ("message", "request")

    def test_close_is_safe_twice_and_without_open(self, harness: Harness, letter: Settings) -> None:
        provider = provider_class(letter.provider.name)(letter, letter.provider)
        provider.close()
        provider.close()
        with provider:
            pass
        provider.close()

    def test_every_active_subscriber_gets_one_message(
        self, harness: Harness, letter: Settings
    ) -> None:
        active = emails(7)
        add_subscribers(letter, active)
        add_subscribers(letter, ["gone@example.org"], status="unsubscribed")
        campaign_id = new_campaign(letter)

        report = self.send(letter, campaign_id)

        assert report.error is None
        assert report.campaign.status == "done"
        assert report.campaign.counts.sent == len(active)
        got = harness.received()
        assert sorted(d.recipient.lower() for d in got) == sorted(active)
        for d in got:
            if d.subject is not None:
                assert d.subject == SUBJECT
            if d.list_unsubscribe is not None:  # each reader's own link
                assert unsubscribe_url_for(d.recipient.lower()) in d.list_unsubscribe
        assert all(r["state"] == "sent" and r["sent_at"] for r in rows(letter, campaign_id))

    def test_parallel_workers_send_each_message_once(
        self, harness: Harness, letter: Settings
    ) -> None:
        active = emails(40)
        add_subscribers(letter, active)
        campaign_id = new_campaign(letter)
        settings = write_letter(letter.root, {**harness.options, **self.retry_options,
                                              "concurrency": 3})

        report = self.send(settings, campaign_id)

        assert report.error is None
        counted = collections.Counter(d.recipient.lower() for d in harness.received())
        assert counted == collections.Counter(active)

    def test_transient_refusal_is_retried_then_delivered(
        self, harness: Harness, letter: Settings
    ) -> None:
        active = emails(5)
        add_subscribers(letter, active)
        harness.fail(active[2], "transient")
        campaign_id = new_campaign(letter)

        report = self.send(letter, campaign_id)

        assert report.error is None
        assert report.campaign.counts.sent == 5
        assert sorted(d.recipient.lower() for d in harness.received()) == sorted(active)
        retried = [r for r in rows(letter, campaign_id) if r["email"] == active[2]][0]
        assert retried["attempts"] >= 2

    def test_permanent_refusal_fails_that_recipient_with_the_reason(
        self, harness: Harness, letter: Settings
    ) -> None:
        active = emails(5)
        add_subscribers(letter, active)
        harness.fail(active[1], "permanent")
        campaign_id = new_campaign(letter)

        report = self.send(letter, campaign_id)

        assert report.error is None
        assert report.campaign.counts.sent == 4
        assert report.campaign.counts.failed == 1
        failed = [r for r in rows(letter, campaign_id) if r["state"] == "failed"]
        assert [r["email"] for r in failed] == [active[1]]
        assert harness.permanent_reason in failed[0]["error"]
        assert sorted(d.recipient.lower() for d in harness.received()) == sorted(
            a for a in active if a != active[1]
        )

    def test_server_down_stops_with_a_clear_error_and_keeps_rows_queued(
        self, harness: Harness, letter: Settings
    ) -> None:
        active = emails(4)
        add_subscribers(letter, active)
        campaign_id = new_campaign(letter)
        down = write_letter(letter.root, {**harness.down_options, **self.retry_options})

        report = self.send(down, campaign_id)

        assert isinstance(report.error, ProviderError)
        message = str(report.error)
        assert "\n" not in message and len(message) < 400
        assert {r["state"] for r in rows(letter, campaign_id)} == {"queued"}
        assert report.campaign.status == "stopped"

        # The server is back: the same campaign resumes and delivers each message once.
        report = self.send(letter, campaign_id)
        assert report.error is None
        assert sorted(d.recipient.lower() for d in harness.received()) == sorted(active)

    def test_killed_send_resumes_without_duplicates(
        self, harness: Harness, letter: Settings, env: dict[str, str]
    ) -> None:
        cls = provider_class(harness.options["name"])
        per_batch = cls.max_batch
        n = max(30, 3 * per_batch)
        active = emails(n)
        add_subscribers(letter, active)
        campaign_id = new_campaign(letter)
        harness.slow(0.05 if per_batch == 1 else 0.5)

        child_env = {**os.environ, **env, "NEWSLETTER_SECRET": SECRET}
        child = subprocess.Popen(
            [sys.executable, str(HERE / "contract_send.py"), str(letter.root), str(campaign_id)],
            env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            threshold = max(per_batch, n // 3)
            deadline = time.monotonic() + 60
            while len(harness.received()) < threshold:
                assert child.poll() is None, child.stderr.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the send never got going"
                time.sleep(0.01)
            os.kill(child.pid, signal.SIGKILL)  # no chance to clean up
        finally:
            child.wait(10)
            child.stdout.close()  # type: ignore[union-attr]
            child.stderr.close()  # type: ignore[union-attr]
        assert child.returncode == -signal.SIGKILL
        harness.slow(0)
        before = collections.Counter(d.recipient.lower() for d in harness.received())
        assert len(before) < n, "the send finished before it was killed"

        report = self.send(letter, campaign_id)

        assert report.error is None
        counts = report.campaign.counts
        got = collections.Counter(d.recipient.lower() for d in harness.received())
        assert max(got.values()) == 1, "somebody got the issue twice"
        if cls.idempotent:  # rows caught mid-send were safely re-sent
            assert counts.sent == n and report.campaign.status == "done"
            assert sorted(got) == sorted(active)
        else:  # rows caught mid-send are reported, not silently re-sent
            assert report.interrupted_rows == counts.uncertain
            assert counts.uncertain <= per_batch  # only what was in the provider's hands
            assert counts.sent + counts.uncertain == n
            uncertain = {r["email"] for r in rows(letter, campaign_id) if r["state"] == "uncertain"}
            assert set(active) - set(got) <= uncertain
            if counts.uncertain:
                assert report.campaign.status == "stopped"

    @pytest.mark.parametrize("trouble", ["late", "reset", "garbled"])
    def test_request_that_may_have_gone_out_is_uncertain_and_never_resent(
        self, harness: Harness, letter: Settings, trouble: str
    ) -> None:
        if harness.after_accept is None:
            pytest.skip("this harness cannot misbehave after accepting a request")
        active = emails(5)
        add_subscribers(letter, active)
        campaign_id = new_campaign(letter)
        quick = write_letter(letter.root, {**harness.options, **self.retry_options, "timeout": 1})
        harness.after_accept(trouble, 3.0)

        report = self.send(quick, campaign_id)

        def received() -> collections.Counter[str]:
            return collections.Counter(d.recipient.lower() for d in harness.received())

        got = received()
        assert max(got.values()) == 1, "somebody got the issue twice"
        state = {r["email"]: r["state"] for r in rows(letter, campaign_id)}
        uncertain = {e for e, s in state.items() if s == "uncertain"}
        assert uncertain, f"nobody is uncertain after a {trouble} answer: {state}"
        assert uncertain <= set(got)  # they did reach the server
        assert {e for e, s in state.items() if s == "sent"} <= set(got)
        assert {e for e, s in state.items() if s == "queued"}.isdisjoint(got)
        # The send stopped and says why, on one line.
        assert isinstance(report.error, ProviderError)
        assert "uncertain" in str(report.error) and "\n" not in str(report.error)
        assert report.campaign.status == "stopped"

        # A plain re-run sends the rest, and the uncertain readers nothing.
        report = self.send(letter, campaign_id)
        assert report.error is None
        again = received()
        assert again == collections.Counter(active), again
        assert {r["email"] for r in rows(letter, campaign_id) if r["state"] == "uncertain"} == (
            uncertain)

        # --retry-uncertain settles them: each is sent once more (or replayed by its key).
        report = self.send(letter, campaign_id, retry_uncertain=True)
        assert report.error is None
        assert report.campaign.status == "done"
        assert {r["state"] for r in rows(letter, campaign_id)} == {"sent"}
        extra = received() - again
        if harness.replays_idempotent:
            # Regrouped as before, a batch carries its old key and is replayed, not sent;
            # the engine may regroup (batches fill on a deadline), then at most once more.
            assert set(extra) <= uncertain and max(extra.values(), default=1) == 1, extra
        else:
            assert extra == collections.Counter(uncertain)
