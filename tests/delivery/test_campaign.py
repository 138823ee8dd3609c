"""The campaign engine and the delivery log, with a real SQLite file.

Providers here are small real Provider subclasses that behave as a provider
might (refuse, throttle, crash); the engine under test is never patched.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from newsletter import store
from newsletter.compose.message import Message
from newsletter.delivery.journal import journal_paths
from newsletter.delivery.lock import CampaignLock, is_being_sent
from newsletter.delivery.log import find_or_create_campaign, get_campaign
from newsletter.delivery.providers.base import (
    DeliveryResult,
    Outcome,
    Provider,
    TransientBatchError,
)
from newsletter.delivery.rate import RateLimiter
from newsletter.delivery.recipients import parse_audience
from newsletter.delivery.recovery import recover_interrupted
from newsletter.delivery.runner import CampaignRunner
from newsletter.delivery.sending import run_campaign
from newsletter.errors import DeliveryError, ProviderError, SubscriberError
from newsletter.settings import Settings

from .contract import add_subscribers, emails, new_campaign, rows, write_letter
from .messages import make_test_message
from .smtpserver import SMTPServer


@pytest.fixture
def letter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 40)
    return write_letter(tmp_path / "letter", {"name": "outbox"})


class Scripted(Provider):
    """A provider whose answer per message comes from `script(message, attempt)`."""

    name = "scripted"
    description = "test provider"
    remote = False

    def __init__(self, script: Callable[[Message, int], DeliveryResult | Exception],
                 max_batch: int = 1):
        self.script = script
        self.max_batch = max_batch  # type: ignore[misc]
        self.attempts: dict[str, int] = {}
        self.batches: list[int] = []
        self.threads: set[int] = set()
        self.opened = self.closed = False

    def open(self) -> None:
        self.opened = True

    def close(self) -> None:
        self.closed = True

    def send(self, messages: Sequence[Message]) -> list[DeliveryResult]:
        self.batches.append(len(messages))
        self.threads.add(threading.get_ident())
        out = []
        for m in messages:
            self.attempts[m.recipient] = self.attempts.get(m.recipient, 0) + 1
            answer = self.script(m, self.attempts[m.recipient])
            if isinstance(answer, Exception):
                raise answer
            out.append(answer)
        return out


def sent(m: Message, attempt: int) -> DeliveryResult:
    return DeliveryResult(m.key, Outcome.SENT, provider_id=f"id-{m.key}")


def runner(letter: Settings, campaign_id: int, *providers: Provider, **kw) -> CampaignRunner:
    pool = list(providers)
    kw.setdefault("retry_delay", 0.01)
    return CampaignRunner(letter.database, campaign_id, pool.pop, make_test_message,
                          concurrency=len(providers), **kw)


def states(letter: Settings, campaign_id: int) -> dict[str, str]:
    return {r["email"]: r["state"] for r in rows(letter, campaign_id)}


# --- campaigns and audiences ---------------------------------------------------------------


def test_audience_parsing() -> None:
    assert parse_audience("subscribers").kind == "list"
    tag = parse_audience("tag:friends")
    assert (tag.kind, tag.tag, tag.spec) == ("list", "friends", "tag:friends")
    test = parse_audience("A@Example.ORG, b@example.org,a@example.org")
    assert test.kind == "test"
    assert [a.lower() for a in test.addresses] == ["a@example.org", "b@example.org"]
    with pytest.raises(SubscriberError):
        parse_audience("not-an-address")
    with pytest.raises(SubscriberError):
        parse_audience("tag:")


def test_campaign_and_every_row_exist_before_anything_is_sent(letter: Settings) -> None:
    add_subscribers(letter, emails(5))
    add_subscribers(letter, ["off@example.org"], status="unsubscribed")
    campaign_id = new_campaign(letter)
    assert {r["state"] for r in rows(letter, campaign_id)} == {"queued"}
    assert sorted(r["email"] for r in rows(letter, campaign_id)) == emails(5)


def test_tag_audience_selects_only_active_tagged(letter: Settings) -> None:
    add_subscribers(letter, emails(3))
    conn = sqlite3.connect(letter.database)
    with conn:
        conn.execute("UPDATE subscribers SET tags = '[\"friends\"]' WHERE email != ?",
                     [emails(3)[0]])
        conn.execute("UPDATE subscribers SET status = 'bounced' WHERE email = ?",
                     [emails(3)[2]])
    conn.close()
    campaign_id = new_campaign(letter, "tag:friends")
    assert [r["email"] for r in rows(letter, campaign_id)] == [emails(3)[1]]


def test_no_active_subscribers_is_an_error_and_leaves_no_campaign(letter: Settings) -> None:
    add_subscribers(letter, ["off@example.org"], status="unsubscribed")
    with pytest.raises(DeliveryError, match="no active subscribers"):
        new_campaign(letter)
    db = store.connect(letter.database)
    assert db.execute("SELECT count(*) FROM campaigns").fetchone()[0] == 0


def test_unfinished_campaign_is_resumed_and_a_finished_one_is_not_resent(
    letter: Settings, tmp_path: Path
) -> None:
    server = SMTPServer()  # a real send: one through the outbox is a rehearsal
    with server:
        letter = write_letter(tmp_path / "smtp-letter", {
            "name": "smtp", "host": "127.0.0.1", "port": server.port, "security": "none"})
        add_subscribers(letter, emails(3))
        first = new_campaign(letter)
        assert new_campaign(letter) == first  # unfinished: the same campaign continues
        run_campaign(letter, first, make_test_message)
        with pytest.raises(DeliveryError, match="sent to the list already.*--resend"):
            new_campaign(letter)
        with pytest.raises(DeliveryError, match="--resend"):
            new_campaign(letter, "tag:anything")  # any list send of the same draft
        db = store.connect(letter.database)
        again, created = find_or_create_campaign(
            db, slug="contract", draft_path="d.md", subject="s",
            audience=parse_audience("subscribers"), provider="outbox", resend=True,
        )
        assert created and again.id != first
        # Test sends never count as list sends, and may repeat.
        test_id = new_campaign(letter, "me@example.org")
        run_campaign(letter, test_id, make_test_message)
        assert new_campaign(letter, "me@example.org") != test_id


# --- the runner ----------------------------------------------------------------------------


def test_batches_respect_max_batch_and_each_row_is_sent_once(letter: Settings) -> None:
    add_subscribers(letter, emails(23))
    campaign_id = new_campaign(letter)
    provider = Scripted(sent, max_batch=5)
    result = runner(letter, campaign_id, provider).run()
    assert result.sent == 23 and result.error is None
    assert max(provider.batches) == 5 and sum(provider.batches) == 23
    assert set(provider.attempts.values()) == {1}
    assert provider.opened and provider.closed
    assert all(r["provider_message_id"] == f"id-{r['id']}" for r in rows(letter, campaign_id))


def test_each_worker_uses_its_own_provider_from_one_thread(letter: Settings) -> None:
    add_subscribers(letter, emails(60))
    campaign_id = new_campaign(letter)
    pool = [Scripted(sent) for _ in range(3)]
    result = runner(letter, campaign_id, *pool).run()
    assert result.sent == 60
    assert all(len(p.threads) <= 1 for p in pool)
    seen: dict[str, int] = {}
    for p in pool:
        for address, n in p.attempts.items():
            seen[address] = seen.get(address, 0) + n
    assert seen == {a: 1 for a in emails(60)}


def test_transient_results_back_off_then_give_up_after_max_attempts(letter: Settings) -> None:
    add_subscribers(letter, emails(3))
    campaign_id = new_campaign(letter)
    busy, never = emails(3)[0], emails(3)[1]

    def script(m: Message, attempt: int) -> DeliveryResult:
        if m.recipient == never or (m.recipient == busy and attempt < 3):
            return DeliveryResult(m.key, Outcome.RETRY, error="451 try later")
        return sent(m, attempt)

    provider = Scripted(script)
    result = runner(letter, campaign_id, provider, max_attempts=4).run()
    assert result.error is None
    by_email = {r["email"]: r for r in rows(letter, campaign_id)}
    assert by_email[busy]["state"] == "sent" and by_email[busy]["attempts"] == 3
    assert by_email[never]["state"] == "failed"
    assert by_email[never]["error"] == "gave up after 4 attempts: 451 try later"
    assert provider.attempts[never] == 4


def test_transient_batch_error_retries_the_whole_batch(letter: Settings) -> None:
    add_subscribers(letter, emails(4))
    campaign_id = new_campaign(letter)
    calls = []

    def script(m: Message, attempt: int) -> DeliveryResult | Exception:
        calls.append(m.recipient)
        if len(calls) == 1:
            return TransientBatchError("429 slow down", retry_after=0.01)
        return sent(m, attempt)

    provider = Scripted(script, max_batch=4)
    result = runner(letter, campaign_id, provider).run()
    # Every message of the refused batch (its size depends on how many messages the
    # feeder had built when it was claimed) is sent again, and each arrives once.
    assert result.sent == 4 and result.retried == provider.batches[0]
    assert sum(provider.batches[1:]) == 4
    assert set(states(letter, campaign_id).values()) == {"sent"}


def test_provider_error_stops_and_leaves_the_rest_queued(letter: Settings) -> None:
    add_subscribers(letter, emails(6))
    campaign_id = new_campaign(letter)

    def script(m: Message, attempt: int) -> DeliveryResult | Exception:
        if m.recipient == emails(6)[2]:
            return ProviderError("auth refused: check the key")
        return sent(m, attempt)

    result = runner(letter, campaign_id, Scripted(script)).run()
    assert isinstance(result.error, ProviderError)
    got = states(letter, campaign_id)
    assert [got[a] for a in emails(6)] == ["sent", "sent", "queued", "queued", "queued", "queued"]


def test_crash_inside_send_marks_the_batch_uncertain(letter: Settings) -> None:
    add_subscribers(letter, emails(3))
    campaign_id = new_campaign(letter)

    def script(m: Message, attempt: int) -> DeliveryResult | Exception:
        if m.recipient == emails(3)[1]:
            return ConnectionResetError("peer went away")
        return sent(m, attempt)

    result = runner(letter, campaign_id, Scripted(script)).run()
    assert isinstance(result.error, ConnectionResetError)
    got = rows(letter, campaign_id)
    assert [r["state"] for r in got] == ["sent", "uncertain", "queued"]
    assert "peer went away" in got[1]["error"]


def test_missing_result_is_uncertain_and_bad_recipient_data_fails_one_row(
    letter: Settings,
) -> None:
    add_subscribers(letter, emails(3))
    campaign_id = new_campaign(letter)

    class Forgetful(Scripted):
        def send(self, messages: Sequence[Message]) -> list[DeliveryResult]:
            return [sent(m, 1) for m in messages if m.recipient != emails(3)[0]]

    def make(row):  # noqa: ANN001, ANN202
        if row.email == emails(3)[2]:
            raise ValueError("attribute 'city' is not text")
        return make_test_message(row)

    result = CampaignRunner(letter.database, campaign_id, lambda: Forgetful(sent), make).run()
    assert result.error is None
    got = rows(letter, campaign_id)
    assert [r["state"] for r in got] == ["uncertain", "sent", "failed"]
    assert "city" in got[2]["error"]


@pytest.mark.parametrize("max_batch", [1, 2])
def test_subscriber_who_unsubscribes_mid_send_is_skipped(letter: Settings, max_batch: int) -> None:
    """The leaver's row is already claimed (same chunk) when the first batch goes out."""
    add_subscribers(letter, emails(5))
    campaign_id = new_campaign(letter)
    leaver = emails(5)[3]

    def script(m: Message, attempt: int) -> DeliveryResult:
        if m.recipient == emails(5)[0]:  # another command changes the list meanwhile
            from newsletter.audience.subscribers import unsubscribe

            other = store.connect(letter.database)
            unsubscribe(other, leaver)
            other.conn.close()
        return sent(m, attempt)

    provider = Scripted(script, max_batch=max_batch)
    result = runner(letter, campaign_id, provider).run()
    assert result.skipped == 1 and result.sent == 4
    assert leaver not in provider.attempts
    assert states(letter, campaign_id)[leaver] == "skipped"


# --- resume and locking --------------------------------------------------------------------


def _simulate_crash(letter: Settings, campaign_id: int, n: int) -> None:
    """What kill -9 leaves: n rows `sending`, the campaign `sending`, no lock held."""
    conn = sqlite3.connect(letter.database)
    with conn:
        conn.execute(
            "UPDATE deliveries SET state = 'sending' WHERE id IN (SELECT id FROM deliveries "
            "WHERE campaign_id = ? ORDER BY id LIMIT ?)", [campaign_id, n],
        )
    conn.close()


def test_idempotent_provider_resends_rows_caught_mid_send(letter: Settings) -> None:
    add_subscribers(letter, emails(4))
    campaign_id = new_campaign(letter)
    _simulate_crash(letter, campaign_id, 2)
    report = run_campaign(letter, campaign_id, make_test_message)
    assert report.interrupted_rows == 2 and report.interrupted_requeued
    assert report.campaign.status == "done" and report.campaign.counts.sent == 4
    files = sorted(p.name for p in (letter.outbox_dir / report.campaign.label).iterdir())
    assert len(files) == 4  # one file per recipient: a re-send overwrote, not duplicated


def test_journal_tells_what_a_killed_sender_did(letter: Settings) -> None:
    """kill -9 mid-chunk: 5 rows claimed; 2 answered, 1 handed over, 2 never reached."""
    add_subscribers(letter, emails(6))
    campaign_id = new_campaign(letter)
    _simulate_crash(letter, campaign_id, 5)
    ids = [r["id"] for r in rows(letter, campaign_id)]
    name = f".{letter.database.name}.campaign-{campaign_id}.w0.journal"
    journal = letter.database.with_name(name)
    journal.write_text(
        f"H\t{ids[0]}\nH\t{ids[1]}\nR\t{ids[0]}\tsent\tQ-1\t\n"
        f"R\t{ids[1]}\tfailed\t\t550 no such user\nH\t{ids[2]}\n"
    )
    assert journal_paths(letter.database, campaign_id) == [journal]
    db = store.connect(letter.database)
    recovery = recover_interrupted(db, campaign_id, requeue_them=False,
                                   journals=journal_paths(letter.database, campaign_id))
    assert (recovery.recorded, recovery.in_flight, recovery.never_sent) == (2, 1, 2)
    got = rows(letter, campaign_id)
    assert [r["state"] for r in got] == ["sent", "failed", "uncertain", "queued", "queued",
                                         "queued"]
    assert got[0]["provider_message_id"] == "Q-1" and got[1]["error"] == "550 no such user"
    assert not journal.exists()


def test_a_finished_run_leaves_no_journal_or_lock(letter: Settings) -> None:
    add_subscribers(letter, emails(3))
    campaign_id = new_campaign(letter)
    run_campaign(letter, campaign_id, make_test_message)
    leftovers = [p.name for p in letter.database.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_lock_keeps_a_second_sender_out(letter: Settings) -> None:
    add_subscribers(letter, emails(2))
    campaign_id = new_campaign(letter)
    assert not is_being_sent(letter.database, campaign_id)
    with CampaignLock(letter.database, campaign_id):
        assert is_being_sent(letter.database, campaign_id)
        with pytest.raises(DeliveryError, match=r"being sent right now by pid \d+"):
            run_campaign(letter, campaign_id, make_test_message)
    assert not is_being_sent(letter.database, campaign_id)
    assert run_campaign(letter, campaign_id, make_test_message).campaign.status == "done"


def test_retry_failed_requeues_only_failed_rows(letter: Settings) -> None:
    add_subscribers(letter, emails(3))
    campaign_id = new_campaign(letter)
    conn = sqlite3.connect(letter.database)
    with conn:
        conn.execute("UPDATE deliveries SET state = 'sent' WHERE email = ?", [emails(3)[0]])
        conn.execute("UPDATE deliveries SET state = 'failed', error = 'x' WHERE email = ?",
                     [emails(3)[1]])
        conn.execute("UPDATE deliveries SET state = 'uncertain' WHERE email = ?", [emails(3)[2]])
    conn.close()
    report = run_campaign(letter, campaign_id, make_test_message, retry_failed=True)
    assert report.failed_requeued == 1
    assert report.run is not None and report.run.sent == 1
    assert states(letter, campaign_id)[emails(3)[2]] == "uncertain"
    assert get_campaign(store.connect(letter.database), campaign_id).status == "stopped"


class Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_spaces_reservations_across_callers() -> None:
    clock = Clock()
    limiter = RateLimiter(10, clock=clock)  # 10 units a second: one every 0.1 s
    waits = [limiter.reserve(1) for _ in range(4)]
    assert waits[0] == 0
    assert waits[1:] == pytest.approx([0.1, 0.2, 0.3], abs=1e-9)
    assert limiter.reserve(5) == pytest.approx(0.4, abs=1e-9)
    assert limiter.reserve(1) == pytest.approx(0.9, abs=1e-9)  # the 5 took half a second
    clock.now += 0.5  # time passes: the next free slot is that much nearer
    assert limiter.reserve(1) == pytest.approx(0.5, abs=1e-9)
    clock.now += 10  # idle longer than the queue: no debt, no credit
    assert limiter.reserve(1) == 0
    free = RateLimiter(None, clock=clock)
    assert [free.reserve(100) for _ in range(3)] == [0, 0, 0]
    free.pause(5)
    assert free.reserve(1) == pytest.approx(5, abs=1e-9)
    clock.now += 2
    free.pause(1)  # a shorter pause does not cut the longer one short
    assert free.reserve(1) == pytest.approx(3, abs=1e-9)
    clock.now += 3
    assert free.reserve(1) == 0


@pytest.mark.parametrize("audience", [
    "subscribers", "tag:friends", 'city="New York"+plan!=free', "a@example.com,b@example.com",
])
def test_a_suggested_send_command_can_be_pasted_into_a_shell(audience: str) -> None:
    import shlex

    from newsletter.delivery.log import send_command

    line = send_command("2026-12-01-news", audience, "--retry-uncertain")
    # What the shell hands the program is exactly the slug and the expression.
    assert shlex.split(line) == ["newsletter", "send", "2026-12-01-news", "--to", audience,
                                 "--retry-uncertain"]
