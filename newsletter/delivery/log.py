"""The delivery log: campaigns and their `deliveries` rows, counts, resend guard, requeue."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from newsletter import changes
from newsletter.audience.events import now_iso
from newsletter.delivery.recipients import Audience, audience_where
from newsletter.errors import DeliveryError

STATES = ("queued", "sending", "sent", "failed", "uncertain", "skipped")

# The outbox writes .eml files and mails nobody: a send through it is a rehearsal, which
# never makes a draft "sent to the list" (the writer's `drafts` listing says "rehearsed").
REHEARSAL_PROVIDER = "outbox"


@dataclass
class Counts:
    """Delivery rows per state."""

    queued: int = 0
    sending: int = 0
    sent: int = 0
    failed: int = 0
    uncertain: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, s) for s in STATES)

    @property
    def finished(self) -> int:
        """Rows that reached a final state (sent, failed, skipped)."""
        return self.sent + self.failed + self.skipped

    def as_dict(self) -> dict[str, int]:
        return {s: getattr(self, s) for s in STATES}


@dataclass
class Campaign:
    id: int
    slug: str
    draft_path: str
    subject: str
    audience: str
    kind: str
    provider: str
    created_at: str
    finished_at: str | None
    status: str
    counts: Counts = field(default_factory=Counts)

    @property
    def label(self) -> str:
        """A folder-safe name: the outbox writes this campaign under outbox/<label>/."""
        return f"{self.id}-{self.slug}"


def count_states(db: sqlite_utils.Database, campaign_id: int) -> Counts:
    """Delivery rows of one campaign per state."""
    counts = Counts()
    for state, n in db.execute(
        "SELECT state, count(*) FROM deliveries WHERE campaign_id = ? GROUP BY state",
        [campaign_id],
    ).fetchall():
        setattr(counts, state, n)
    return counts


_CAMPAIGN_COLUMNS = (
    "id, slug, draft_path, subject, audience, kind, provider, created_at, finished_at, status"
)


def get_campaign(db: sqlite_utils.Database, campaign_id: int) -> Campaign:
    """One campaign with its counts; DeliveryError when there is no such campaign."""
    row = db.execute(
        f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?", [campaign_id]
    ).fetchone()
    if row is None:
        raise DeliveryError(
            f"there is no campaign {campaign_id}: `newsletter campaigns` lists them"
        )
    campaign = Campaign(*row)
    campaign.counts = count_states(db, campaign_id)
    return campaign


def list_campaigns(db: sqlite_utils.Database, limit: int | None = None) -> list[Campaign]:
    """Campaigns, newest first, each with its counts per state."""
    sql = f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns ORDER BY id DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    campaigns = [Campaign(*row) for row in db.execute(sql).fetchall()]
    counts: dict[int, Counts] = {c.id: Counts() for c in campaigns}
    if campaigns:
        for cid, state, n in db.execute(
            "SELECT campaign_id, state, count(*) FROM deliveries GROUP BY campaign_id, state"
        ).fetchall():
            if cid in counts:
                setattr(counts[cid], state, n)
    for c in campaigns:
        c.counts = counts[c.id]
    return campaigns


@dataclass(frozen=True)
class Problem:
    """A delivery that did not go out cleanly: failed, uncertain or skipped."""

    email: str
    state: str
    attempts: int
    error: str | None


def campaign_problems(
    db: sqlite_utils.Database, campaign_id: int, states: Sequence[str] = ("failed", "uncertain")
) -> list[Problem]:
    """The deliveries of a campaign in `states`, with their reasons."""
    marks = ",".join("?" for _ in states)
    return [
        Problem(*row)
        for row in db.execute(
            f"SELECT email, state, attempts, error FROM deliveries "
            f"WHERE campaign_id = ? AND state IN ({marks}) ORDER BY id",
            [campaign_id, *states],
        ).fetchall()
    ]


def latest_campaign(
    db: sqlite_utils.Database, slug: str, kind: str, audience: str | None = None,
    *, rehearsal: bool | None = None,
) -> Campaign | None:
    """The newest campaign of this draft (and audience, when given); only the outbox's
    rehearsals when `rehearsal` is True, only real sends when it is False."""
    sql = f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE slug = ? AND kind = ?"
    params: list[Any] = [slug, kind]
    if rehearsal is not None:
        sql += " AND provider = ?" if rehearsal else " AND provider != ?"
        params.append(REHEARSAL_PROVIDER)
    if audience is not None:
        # tag:Friends from before tags ignored case; a segment's values keep their case
        # (city=Oslo is not city=oslo), so only a spec without `=` is compared ignoring it.
        sql += " AND (audience = ? OR (lower(audience) = lower(?) AND instr(audience, '=') = 0))"
        params += [audience, audience]
    row = db.execute(sql + " ORDER BY id DESC LIMIT 1", params).fetchone()
    if row is None:
        return None
    campaign = Campaign(*row)
    campaign.counts = count_states(db, campaign.id)
    return campaign


def send_command(slug: str, audience: str, *extra: str) -> str:
    """The `newsletter send` line a message suggests, quoted so it can be pasted into a
    shell as it is (a segment like `city!=Oslo` or `city="New York"` needs quotes)."""
    return shlex.join(["newsletter", "send", slug, "--to", audience, *extra])


def body_hash(text: str) -> str:
    """What identifies an issue's content across file names: a hash of its text part."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def _same_content(
    db: sqlite_utils.Database, slug: str, subject: str | None, hashed: str | None
) -> Campaign | None:
    """The newest real list campaign of another draft with this subject or this body."""
    if subject is None and hashed is None:
        return None
    row = db.execute(
        f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE kind = 'list' AND slug != ? "
        "AND provider != ? AND (subject = ? OR body_hash = ?) ORDER BY id DESC LIMIT 1",
        [slug, REHEARSAL_PROVIDER, subject, hashed],
    ).fetchone()
    if row is None:
        return None
    campaign = Campaign(*row)
    campaign.counts = count_states(db, campaign.id)
    return campaign


def refuse_resend(
    db: sqlite_utils.Database, slug: str, audience: Audience, resend: bool,
    *, subject: str | None = None, body: str | None = None,
) -> None:
    """DeliveryError when a list send of `slug` would repeat an earlier one (unless `resend`).

    A repeat is an earlier list send of the same draft, or of another draft with
    the same `subject` or the same `body` hash (the post saved under another name).
    An unfinished campaign of the same audience is not a repeat: it is resumed. A
    rehearsal through the outbox mailed nobody, so it is never a send to repeat.
    """
    if audience.kind != "list" or resend:
        return
    same = latest_campaign(db, slug, "list", audience.spec, rehearsal=False)
    if same is not None and same.status != "done":
        return
    earlier = latest_campaign(db, slug, "list", rehearsal=False)
    if earlier is None:
        twin = _same_content(db, slug, subject, body)
        if twin is not None:
            what = "subject" if twin.subject == subject else "text"
            raise DeliveryError(
                f"{slug} has the same {what} as {twin.slug}, sent to the list already "
                f"(campaign {twin.id} on {twin.created_at[:10]}, {twin.counts.sent} sent): "
                "pass --resend to send it anyway"
            )
        return
    c = earlier.counts
    retry = (
        f", or --retry-failed {earlier.id} for its {c.failed} failed"
        if c.failed else ""
    )
    if earlier.status == "done":
        what = "was sent"
    elif c.queued or c.sending:
        # Unfinished, to another audience: say how to finish it rather than "being sent".
        retry += (
            f"; to finish that send instead, run `{send_command(slug, earlier.audience)}` "
            f"({c.queued + c.sending} not yet sent)"
        )
        what = "was partly sent"
    else:
        retry += (
            f"; its {c.uncertain} uncertain message(s) are settled with "
            f"`{send_command(slug, earlier.audience, '--retry-uncertain')}`"
        )
        what = "was sent"
    raise DeliveryError(
        f"{slug} {what} to the list already (campaign {earlier.id} to "
        f"{earlier.audience}, {c.sent} sent): pass --resend to send "
        f"it again{retry}"
    )


def next_number(db: sqlite_utils.Database) -> int:
    """The next free number for a campaign or a scheduled send: they share one numbering,
    so `send --at`, `campaigns` and `send --cancel` never mean two things by one number."""
    row = db.execute(
        "SELECT max(coalesce((SELECT max(id) FROM campaigns), 0), "
        "coalesce((SELECT max(id) FROM schedules), 0))"
    ).fetchone()
    return int(row[0]) + 1


def _number_for(db: sqlite_utils.Database, slug: str, audience: str) -> int:
    """A scheduled send being sent now keeps the number the writer was given for it."""
    row = db.execute(
        "SELECT id FROM schedules WHERE slug = ? AND audience = ? AND status = 'sending' "
        "AND campaign_id IS NULL AND id NOT IN (SELECT id FROM campaigns) "
        "ORDER BY id LIMIT 1", [slug, audience],
    ).fetchone()
    return int(row[0]) if row is not None else next_number(db)


def find_or_create_campaign(
    db: sqlite_utils.Database,
    *,
    slug: str,
    draft_path: str,
    subject: str,
    audience: Audience,
    provider: str,
    resend: bool = False,
    body: str | None = None,
) -> tuple[Campaign, bool]:
    """Resume the unfinished campaign of this draft and audience, or create a new one.

    Returns (campaign, created). A new campaign gets all its delivery rows in the
    same transaction. A list send of a draft already sent to the list is refused
    unless `resend`. Raises DeliveryError when there is nobody to send to.
    """
    with db.conn:
        db.execute("BEGIN IMMEDIATE")  # two sends starting at once are serialized here
        # A real send never finishes a rehearsal: the rows the outbox wrote to files
        # reached nobody. (The outbox may finish a real send: the writer is told.)
        same = latest_campaign(db, slug, audience.kind, audience.spec,
                               rehearsal=None if provider == REHEARSAL_PROVIDER else False)
        if same is not None and same.status != "done":
            return same, False
        refuse_resend(db, slug, audience, resend, subject=subject, body=body)
        created = now_iso()
        campaign_id = _number_for(db, slug, audience.spec)
        db.execute(
            "INSERT INTO campaigns (id, slug, draft_path, subject, audience, kind, provider, "
            "created_at, status, body_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'sending', ?)",
            [campaign_id, slug, draft_path, subject, audience.spec, audience.kind, provider,
             created, body],
        )
        if audience.kind == "test":
            for address in audience.addresses:
                db.execute(
                    "INSERT OR IGNORE INTO deliveries (campaign_id, subscriber_id, email, "
                    "updated_at) VALUES (?, (SELECT id FROM subscribers WHERE email_key = ?), "
                    "?, ?)",
                    [campaign_id, address.lower(), address, created],
                )
        else:
            where, params = audience_where(db, audience)
            db.execute(
                "INSERT OR IGNORE INTO deliveries (campaign_id, subscriber_id, email, updated_at) "
                f"SELECT ?, id, email, ? FROM subscribers WHERE {where} ORDER BY id",
                [campaign_id, created, *params],
            )
        total = db.execute(
            "SELECT count(*) FROM deliveries WHERE campaign_id = ?", [campaign_id]
        ).fetchone()[0]
        if total == 0:
            db.conn.rollback()
            raise nobody_to_send_to(audience)
        # The campaign and its rows go to the change journal: a restore from a snapshot taken
        # before knows the send, so it is never made twice.
        changes.append(db.conn, [changes.campaign_op(db.conn, campaign_id, deliveries=True)])
    return get_campaign(db, campaign_id), True


def nobody_to_send_to(audience: Audience) -> DeliveryError:
    """The error for a list send that would reach nobody."""
    where_text = f"with {audience.describe()}" if audience.segment or audience.topics else ""
    return DeliveryError(
        f"there are no active subscribers {where_text} to send to: add some with "
        "`newsletter subscribers add EMAIL` or import a list".replace("  ", " ")
    )


def requeue(db: sqlite_utils.Database, campaign_id: int, states: Sequence[str]) -> int:
    """Put the rows of a campaign in `states` back to `queued`; returns how many."""
    marks = ",".join("?" for _ in states)
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        ids = [r[0] for r in db.execute(
            f"UPDATE deliveries SET state = 'queued', updated_at = ? "
            f"WHERE campaign_id = ? AND state IN ({marks}) RETURNING id",
            [now_iso(), campaign_id, *states],
        ).fetchall()]
        n = len(ids)
        if n:
            db.execute(
                "UPDATE campaigns SET status = 'stopped', finished_at = NULL WHERE id = ?",
                [campaign_id],
            )
            changes.append(db.conn, [changes.campaign_op(db.conn, campaign_id),
                                     changes.deliveries_op(db.conn, ids)])
    return n


def finish_campaign(db: sqlite_utils.Database, campaign_id: int) -> Campaign:
    """Set the campaign's status from its rows: done when none is left to send or decide."""
    counts = count_states(db, campaign_id)
    done = counts.queued == 0 and counts.sending == 0 and counts.uncertain == 0
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "UPDATE campaigns SET status = ?, finished_at = ? WHERE id = ?",
            ["done" if done else "stopped", now_iso() if done else None, campaign_id],
        )
    return get_campaign(db, campaign_id)


def unsettled_campaigns(db: sqlite_utils.Database) -> list[Campaign]:
    """Campaigns not done that still hold uncertain or unsent (queued, sending) rows."""
    return [
        c for c in list_campaigns(db)
        if c.status != "done" and (c.counts.uncertain or c.counts.queued or c.counts.sending)
    ]


def mark_uncertain_sent(db: sqlite_utils.Database, campaign_id: int) -> int:
    """Mark the uncertain rows of a campaign sent (the writer knows they went out).

    Returns how many; the campaign is finished afterwards. Call while holding its lock.
    """
    stamp = now_iso()
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        ids = [r[0] for r in db.execute(
            "UPDATE deliveries SET state = 'sent', sent_at = coalesce(sent_at, ?), "
            "updated_at = ?, error = 'settled as sent by the writer (was uncertain: ' || "
            "coalesce(error, 'no reason given') || ')' "
            "WHERE campaign_id = ? AND state = 'uncertain' RETURNING id",
            [stamp, stamp, campaign_id],
        ).fetchall()]
        n = len(ids)
        if ids:
            changes.append(db.conn, [changes.deliveries_op(db.conn, ids)])
    if n:
        finish_campaign(db, campaign_id)
    return n
