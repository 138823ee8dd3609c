"""The bounce and complaint rules, on a real database."""

from __future__ import annotations

import pytest

from newsletter.audience import subscribers
from newsletter.audience.policy import BouncePolicy, Feedback, apply, means_no_such_address
from newsletter.errors import ConfigError


def status(db, email: str) -> str:
    return subscribers.get(db, email).status


def test_a_hard_bounce_stops_mail_at_once(db):
    subscribers.add_subscriber(db, "gone@example.com")
    done = apply(db, Feedback("hard_bounce", "Gone@Example.com", "webhook:postmark",
                              external_id="pm:1", detail="550 5.1.1 user unknown"))
    assert (done.outcome, status(db, "gone@example.com")) == ("stopped", "bounced")


def test_a_complaint_stops_mail_and_a_replay_changes_nothing(db):
    subscribers.add_subscriber(db, "angry@example.com")
    report = Feedback("complaint", "angry@example.com", "sync:ses", "ses:9")
    assert apply(db, report).outcome == "stopped"
    assert apply(db, report).outcome == "duplicate"
    assert status(db, "angry@example.com") == "complained"


def test_soft_bounces_stop_only_after_the_limit_on_distinct_sends(db):
    subscribers.add_subscriber(db, "full@example.com")
    policy = BouncePolicy(soft_limit=3)
    # Two reports about the same send count once.
    for n, campaign in enumerate([1, 1, 2]):
        out = apply(db, Feedback("soft_bounce", "full@example.com", "webhook:mailgun",
                                 f"mg:{n}", campaign_id=campaign), policy)
        assert out.outcome == "counted"
    assert status(db, "full@example.com") == "active"
    out = apply(db, Feedback("soft_bounce", "full@example.com", "webhook:mailgun", "mg:9",
                             campaign_id=3), policy)
    assert (out.outcome, status(db, "full@example.com")) == ("stopped", "bounced")


def test_a_delivery_resets_the_soft_bounce_count(db):
    subscribers.add_subscriber(db, "flaky@example.com")
    policy = BouncePolicy(soft_limit=2)
    apply(db, Feedback("soft_bounce", "flaky@example.com", "w", "1", campaign_id=1), policy)
    apply(db, Feedback("delivered", "flaky@example.com", "w", "2", campaign_id=2), policy)
    apply(db, Feedback("soft_bounce", "flaky@example.com", "w", "3", campaign_id=3), policy)
    assert status(db, "flaky@example.com") == "active"


def test_a_report_about_someone_not_on_the_list_changes_nothing(db):
    assert apply(db, Feedback("hard_bounce", "stranger@example.com", "w")).outcome == "unknown"
    assert db.execute("SELECT count(*) FROM events").fetchone() == (0,)


@pytest.mark.parametrize("table", [{"soft_limit": 0}, {"soft_limit": "3"}, {"softlimit": 3}])
def test_bad_bounce_settings_say_what_to_write(table):
    with pytest.raises(ConfigError, match="bounces"):
        BouncePolicy.from_table(table)


def test_soft_bounces_from_before_a_reader_came_back_do_not_count(db):
    """A first sync reads months of a provider's history: only what came after counts."""
    from newsletter.audience.events import now_iso

    subscribers.add_subscriber(db, "back@example.com")  # joins now
    policy = BouncePolicy(soft_limit=3)
    for n, day in enumerate(["2025-01-10", "2025-02-10", "2025-03-10"]):
        out = apply(db, Feedback("soft_bounce", "back@example.com", "sync:sendgrid", f"sg:{n}",
                                 at=f"{day}T10:00:00Z"), policy)
        assert out.outcome == "counted"
    assert status(db, "back@example.com") == "active"
    # A delivery reported late (about an older send) does not wipe newer soft bounces.
    today = now_iso()[:10]
    apply(db, Feedback("soft_bounce", "back@example.com", "w", "n1", at=f"{today}T23:59:58Z",
                       campaign_id=7), policy)
    apply(db, Feedback("delivered", "back@example.com", "w", "d1", at="2025-06-01T10:00:00Z",
                       campaign_id=6), policy)
    apply(db, Feedback("soft_bounce", "back@example.com", "w", "n2", at=f"{today}T23:59:59Z",
                       campaign_id=8), policy)
    out = apply(db, Feedback("soft_bounce", "back@example.com", "w", "n3",
                             at=f"{today}T23:59:59Z", campaign_id=9), policy)
    assert (out.outcome, status(db, "back@example.com")) == ("stopped", "bounced")


@pytest.mark.parametrize(("reason", "hard"), [
    ("550 5.1.1 <a@example.org>: Recipient address rejected: User unknown", True),
    ("550 5.1.10 recipient address has null MX", True),
    ("The address does not exist (Postmark: ErrorCode 406 inactive recipient)", True),
    ("Mailbox does not exist", True),
    ("550 5.7.1 relaying denied", False),
    ("552 5.2.2 mailbox full", False),
    ("450 4.1.1 user unknown, try later", False),  # temporary, whatever the words
    (None, False),
])
def test_which_refusals_mean_the_address_does_not_exist(reason: str | None, hard: bool) -> None:
    assert means_no_such_address(reason) is hard
