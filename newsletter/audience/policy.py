"""Bounce and complaint rules: what a report from a provider or a mailbox does to a reader.

It sits below both delivery and feedback, which read the rules here and never import
each other. Every source of feedback (a webhook under `newsletter serve`, a pull by
`newsletter sync`, a bounce report in the mailbox, a permanent "user unknown" during a
send, as `means_no_such_address()` reads a refusal) turns what it read into `Feedback`
and calls `apply()`; the rules live only here:

- a hard bounce or a complaint stops mail to the reader at once;
- an unsubscribe reported by the provider (its own link, a suppression) stops it too;
- soft bounces are counted, and `soft_limit` of them in a row (default 3) stop it.
  "In a row" means on distinct sends since the reader last became active or a delivery
  was reported. A report names its send by campaign, or by the provider's message id
  (looked up in the delivery log); one that names neither counts once per day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import sqlite_utils

from newsletter.audience import events
from newsletter.audience.events import Origin
from newsletter.errors import ConfigError

KINDS = ("hard_bounce", "soft_bounce", "complaint", "unsubscribe", "delivered")
# What each kind of feedback stops a reader with.
_STOPS = {"hard_bounce": "bounced", "complaint": "complained", "unsubscribe": "unsubscribed"}
# Events after which soft bounces count from zero again.
_RESETS = ("delivered", "subscribed", "activated", "confirmed", "resubscribed")


@dataclass(frozen=True)
class Feedback:
    """One report about one address, as read from a provider or a mailbox."""

    kind: str  # one of KINDS
    email: str
    source: str  # webhook:postmark, sync:sendgrid, mailbox, send, …
    external_id: str | None = None  # the provider's event id: each is applied once
    detail: str = ""  # the provider's reason or diagnostic code
    at: str | None = None  # when the provider says it happened (ISO 8601 UTC)
    campaign_id: int | None = None
    # The provider's id of the message the report is about, as its send answered it:
    # it finds the campaign when the report does not name one.
    message_id: str | None = None


@dataclass(frozen=True)
class BouncePolicy:
    soft_limit: int = 3

    @classmethod
    def from_table(cls, table: dict[str, Any] | None) -> BouncePolicy:
        """From newsletter.toml's [bounces] table (`soft_limit = 3`)."""
        table = table or {}
        unknown = sorted(set(table) - {"soft_limit"})
        if unknown:
            raise ConfigError(f"unknown setting bounces.{unknown[0]}: [bounces] has soft_limit")
        limit = table.get("soft_limit", 3)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigError("bounces.soft_limit must be a whole number of 1 or more")
        return cls(soft_limit=limit)


@dataclass(frozen=True)
class Applied:
    """What `apply()` did with one report."""

    outcome: str  # stopped | counted | recorded | duplicate | unknown
    email: str
    status: str | None = None  # the reader's status afterwards (None: not on the list)


def _soft_bounces_in_a_row(db: sqlite_utils.Database, subscriber_id: int) -> int:
    # By when things happened (created_at is the provider's time when it gave one), not
    # by when they were recorded: a first sync reads months of history at once, and a
    # late "delivered" about an older send must not wipe newer soft bounces.
    # Within one second, the order they were recorded in.
    reset = db.execute(
        f"SELECT created_at, id FROM events WHERE subscriber_id = ? "
        f"AND kind IN ({','.join('?' * len(_RESETS))}) ORDER BY created_at DESC, id DESC "
        f"LIMIT 1",
        [subscriber_id, *_RESETS],
    ).fetchone() or ("", 0)
    return db.execute(
        "SELECT count(DISTINCT coalesce('c' || campaign_id, substr(created_at, 1, 10))) "
        "FROM events WHERE subscriber_id = ? AND kind = 'soft_bounce' "
        "AND (created_at, id) > (?, ?)",
        [subscriber_id, *reset],
    ).fetchone()[0]


def _campaign_of(db: sqlite_utils.Database, message_id: str, subscriber_id: int) -> int | None:
    """The campaign whose delivery to this reader the provider gave `message_id` (or None).

    Providers write the same id with or without angle brackets (Mailgun answers a send
    with `<id@domain>` and names `id@domain` in its events): both forms are looked up.
    """
    bare = message_id.strip().strip("<>")
    if not bare:
        return None
    row = db.execute(
        "SELECT campaign_id FROM deliveries WHERE provider_message_id IN (?, ?) "
        "AND subscriber_id = ? ORDER BY id DESC LIMIT 1",
        [bare, f"<{bare}>", subscriber_id],
    ).fetchone()
    return row[0] if row else None


def apply(
    db: sqlite_utils.Database, feedback: Feedback, policy: BouncePolicy = BouncePolicy()
) -> Applied:
    """Apply one report under the policy, in one transaction, recorded as an event."""
    if feedback.kind not in KINDS:
        raise ValueError(f"unknown feedback kind {feedback.kind!r}")
    key = feedback.email.strip().lower()
    origin = Origin(feedback.source)
    with events.transaction(db):
        row = db.execute("SELECT id, status FROM subscribers WHERE email_key = ?", [key]).fetchone()
        if row is None:
            return Applied("unknown", feedback.email)
        sub_id, status = row
        if feedback.external_id is not None and events.seen(db, feedback.external_id):
            return Applied("duplicate", feedback.email, status)
        if feedback.campaign_id is None and feedback.message_id:
            feedback = replace(feedback, campaign_id=_campaign_of(db, feedback.message_id, sub_id))
        stop = _STOPS.get(feedback.kind)
        if stop is not None:
            change = events.change_status(
                db, sub_id, stop, origin, kind=feedback.kind, detail=feedback.detail,
                campaign_id=feedback.campaign_id, external_id=feedback.external_id,
                at=feedback.at,
            )
            return Applied("stopped" if change.changed else "recorded", change.email,
                           change.after)
        events.record(
            db, subscriber_id=sub_id, email=feedback.email, kind=feedback.kind, origin=origin,
            before=status, after=status, detail=feedback.detail,
            campaign_id=feedback.campaign_id, external_id=feedback.external_id, at=feedback.at,
        )
        if feedback.kind == "soft_bounce" and status == "active":
            if _soft_bounces_in_a_row(db, sub_id) >= policy.soft_limit:
                change = events.change_status(
                    db, sub_id, "bounced", origin, kind="bounced",
                    detail=f"{policy.soft_limit} soft bounces in a row",
                    campaign_id=feedback.campaign_id,
                )
                return Applied("stopped", change.email, change.after)
            return Applied("counted", feedback.email, status)
        return Applied("recorded", feedback.email, status)


# Permanent refusals that mean the address does not exist (RFC 3463 5.1.x: bad
# mailbox 5.1.1, bad domain 5.1.2, null MX 5.1.10), or providers' words for it.
_NO_SUCH_ADDRESS = re.compile(
    r"\b5\.1\.(?:1|2|10)\b|user unknown|unknown user|no such (?:user|mailbox|recipient|address)"
    r"|unknown (?:recipient|mailbox)|mailbox (?:does not|doesn't) exist|not a valid mailbox"
    r"|(?:address|recipient|user|mailbox|account) (?:does not|doesn't) exist"
    r"|invalid (?:recipient|mailbox)\b|mailbox not found|no mailbox here|nonexistent",
    re.IGNORECASE,
)


def means_no_such_address(reason: str | None) -> bool:
    """True when a permanent failure's reason says the address does not exist (hard bounce)."""
    if not reason:
        return False
    code = re.match(r"\s*(\d{3})\b", reason)
    if code and not code.group(1).startswith("5"):
        return False  # a 4xx reply is temporary, whatever its words
    return _NO_SUCH_ADDRESS.search(reason) is not None
