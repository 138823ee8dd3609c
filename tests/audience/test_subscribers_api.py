"""The library: add, unsubscribe, remove, get, count, iterate, on a real SQLite file."""

from __future__ import annotations

import pytest

from newsletter.audience import subscribers as subs
from newsletter.compose.message import Recipient
from newsletter.errors import SubscriberError


def test_add_normalizes_and_refuses_the_same_person_twice(db) -> None:
    first = subs.add_subscriber(db, "  Liu@Example.COM ", name="Liu", tags=["friends"])
    assert first.email == "Liu@example.com"  # domain lower-cased, local part kept
    assert first.status == "active" and first.source == "cli"
    assert first.created_at.endswith("Z") and first.confirmed_at == first.created_at
    again = subs.add_or_update(db, "LIU@EXAMPLE.COM", tags=["beta"])
    assert again.outcome == "updated"
    assert again.subscriber.id == first.id
    assert again.subscriber.tags == ["friends", "beta"]
    assert subs.add_or_update(db, "liu@example.com", tags=["beta"]).outcome == "unchanged"
    assert db.execute("SELECT count(*) FROM subscribers").fetchone()[0] == 1


def test_idn_domains_are_normalized_to_one_person(db) -> None:
    a = subs.add_subscriber(db, "reader@BÜCHER.example")
    b = subs.add_or_update(db, "reader@xn--bcher-kva.example")
    assert a.email == "reader@bücher.example"
    assert b.subscriber.id == a.id and b.outcome == "unchanged"


@pytest.mark.parametrize("bad,reason", [
    ("no-at-sign", "must have an @-sign"),
    ("two@@example.com", "invalid characters"),
    ("a@localhost", "should have a period"),
    ("a@example.invalid", "special-use"),
    ("a..b@example.com", "two periods"),
    ("", "empty"),
])
def test_a_bad_address_is_refused_with_the_reason(db, bad: str, reason: str) -> None:
    with pytest.raises(SubscriberError, match=reason):
        subs.add_subscriber(db, bad)
    assert subs.count_by_status(db)["active"] == 0


def test_recipient_carries_the_key_for_unsubscribe_tokens(db) -> None:
    sub = subs.add_subscriber(db, "Ada@Example.com", name="Ada", attributes={"city": "London"})
    assert sub.recipient() == Recipient(
        "Ada@example.com", "Ada", {"city": "London"}, key="ada@example.com"
    )


def test_unsubscribe_keeps_the_row_and_consent_is_only_given_back_explicitly(db) -> None:
    subs.add_subscriber(db, "ada@example.com")
    stopped = subs.unsubscribe(db, "ADA@example.com")
    assert stopped.status == "unsubscribed" and stopped.unsubscribed_at
    assert subs.unsubscribe(db, "ada@example.com").unsubscribed_at == stopped.unsubscribed_at
    with pytest.raises(SubscriberError, match="--resubscribe"):
        subs.add_subscriber(db, "ada@example.com", tags=["x"])
    assert subs.get(db, "ada@example.com").tags == []  # the refused add changed nothing
    back = subs.add_or_update(db, "ada@example.com", resubscribe=True)
    assert back.outcome == "resubscribed"
    assert back.subscriber.status == "active" and back.subscriber.unsubscribed_at is None


def test_set_status_records_bounces_and_complaints(db) -> None:
    subs.add_subscriber(db, "ada@example.com")
    assert subs.set_status(db, "ada@example.com", "bounced").status == "bounced"
    with pytest.raises(SubscriberError, match="--resubscribe"):
        subs.set_status(db, "ada@example.com", "active")
    with pytest.raises(SubscriberError, match="unknown status"):
        subs.set_status(db, "ada@example.com", "gone")


SECRET = b"s" * 40


def test_remove_deletes_the_row_even_with_past_deliveries(db) -> None:
    sub = subs.add_subscriber(db, "ada@example.com")
    db.execute(
        "INSERT INTO campaigns (slug, draft_path, subject, audience, kind, provider, created_at)"
        " VALUES ('one', 'drafts/one.md', 'One', 'subscribers', 'list', 'outbox', 'now')"
    )
    db.execute(
        "INSERT INTO deliveries (campaign_id, subscriber_id, email, updated_at) "
        "VALUES (1, ?, 'ada@example.com', 'now')", [sub.id]
    )
    db.conn.commit()
    assert subs.remove(db, "Ada@example.com", secret=SECRET).subscriber.id == sub.id
    assert subs.get(db, "ada@example.com") is None
    # The delivery stays (the campaign's counts), its address only as a keyed hash.
    [(sub_id, email)] = db.execute("SELECT subscriber_id, email FROM deliveries").fetchall()
    assert sub_id is None
    assert email == "forgotten:" + subs.address_hash(SECRET, "ada@example.com")
    assert "ada" not in email
    with pytest.raises(SubscriberError, match="not on the list"):
        subs.remove(db, "ada@example.com")


def test_count_and_iterate_with_filters(db) -> None:
    for i in range(5):
        subs.add_subscriber(db, f"r{i}@example.com", name=f"Reader {i}",
                            tags=["even"] if i % 2 == 0 else ["odd"])
    subs.unsubscribe(db, "r1@example.com")
    assert subs.count_by_status(db) == {
        "active": 4, "unsubscribed": 1, "bounced": 0, "complained": 0, "pending": 0
    }
    emails = lambda **kw: [s.email for s in subs.iter_subscribers(db, **kw)]  # noqa: E731
    assert emails() == [f"r{i}@example.com" for i in range(5)]
    assert emails(status="active", tag="odd") == ["r3@example.com"]
    assert emails(search="READER 2") == ["r2@example.com"]
    assert emails(search="%") == []  # LIKE wildcards are taken literally
    assert emails(limit=2) == ["r0@example.com", "r1@example.com"]
    with pytest.raises(SubscriberError, match="unknown status"):
        emails(status="gone")


def test_names_stay_on_one_line(db) -> None:
    assert subs.add_subscriber(db, "a@example.com", name=" Jane\r\n  Doe ").name == "Jane Doe"
