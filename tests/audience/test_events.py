"""Every change of a reader's status is one `events` row, with its source."""

from __future__ import annotations

import sqlite_utils

from newsletter.audience import events, subscribers
from newsletter.audience.events import Origin


def kinds(db: sqlite_utils.Database, email: str) -> list[tuple[str, str | None, str | None, str]]:
    sub = subscribers.get(db, email)
    assert sub is not None
    return [(e.kind, e.status_before, e.status_after, e.source)
            for e in events.history(db, sub.id)]


def test_add_unsubscribe_and_resubscribe_are_each_recorded_with_their_source(db):
    subscribers.add_subscriber(db, "liu@example.com", name="Liu")
    subscribers.unsubscribe(db, "liu@example.com", origin=Origin("web", ip="203.0.113.9"))
    subscribers.unsubscribe(db, "liu@example.com")  # already stopped: nothing new
    subscribers.add_subscriber(db, "liu@example.com", resubscribe=True)
    assert kinds(db, "liu@example.com") == [
        ("subscribed", None, "active", "cli"),
        ("unsubscribed", "active", "unsubscribed", "web"),
        ("resubscribed", "unsubscribed", "active", "cli"),
    ]
    sub = subscribers.get(db, "liu@example.com")
    assert events.history(db, sub.id)[1].ip == "203.0.113.9"


def test_a_second_stop_keeps_the_first_reason_and_date_but_is_recorded(db):
    sub = subscribers.add_subscriber(db, "a@example.com")
    first = events.change_status(db, sub.id, "unsubscribed", Origin("web"),
                                 at="2026-01-01T00:00:00Z")
    later = events.change_status(db, sub.id, "bounced", Origin("webhook:postmark"))
    assert first.changed and not later.changed
    again = subscribers.get(db, "a@example.com")
    assert (again.status, again.unsubscribed_at) == ("unsubscribed", "2026-01-01T00:00:00Z")
    assert [k[0] for k in kinds(db, "a@example.com")][-1] == "bounced"


def test_the_same_provider_event_is_applied_once(db):
    sub = subscribers.add_subscriber(db, "b@example.com")
    once = events.change_status(db, sub.id, "complained", Origin("webhook:x"), external_id="x:1")
    twice = events.change_status(db, sub.id, "complained", Origin("webhook:x"), external_id="x:1")
    assert once.recorded and not twice.recorded
    assert len(events.history(db, sub.id)) == 2  # subscribed + complained


def test_removing_a_reader_erases_their_history(db):
    sub = subscribers.add_subscriber(db, "c@example.com")
    subscribers.unsubscribe(db, "c@example.com")
    subscribers.remove(db, "c@example.com")
    left = db.execute("SELECT count(*) FROM events WHERE subscriber_id = ?", [sub.id]).fetchone()
    assert left == (0,)


def test_change_status_inside_a_callers_transaction_commits_or_rolls_back_with_it(db):
    sub = subscribers.add_subscriber(db, "inner@example.com")
    origin = events.Origin("test")
    try:
        with events.transaction(db):
            events.change_status(db, sub.id, "unsubscribed", origin)
            assert db.conn.in_transaction  # the inner call did not commit the outer one
            raise RuntimeError("the caller fails after it")
    except RuntimeError:
        pass
    assert subscribers.get(db, "inner@example.com").status == "active"
    assert [e.kind for e in events.history(db, sub.id)] == ["subscribed"]
    with events.transaction(db):
        events.change_status(db, sub.id, "unsubscribed", origin)
        db.execute("UPDATE subscribers SET name = 'Ina' WHERE id = ?", [sub.id])
    got = subscribers.get(db, "inner@example.com")
    assert (got.status, got.name) == ("unsubscribed", "Ina")
