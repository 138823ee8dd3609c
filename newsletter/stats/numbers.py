"""How each issue did and how the list grows, from records the newsletter keeps anyway.

Nothing here tracks a reader: per-issue results come from the delivery log (sent,
failed, uncertain) and the events record (bounces, complaints and unsubscribes a
provider or the issue's own links attributed to that campaign); list growth from each
reader's own dates (`created_at` keeps the sign-up date an import brought with it, not
the day of the import) and the status changes in the events record.

Clicks and opens exist only when the writer turned on [analytics] (audience/engagement.py
records them): people's unique opens and clicks, clicks per link, and the machine events
(scanners, pre-fetchers, Apple Mail Privacy Protection) counted apart, never in the
people's numbers.

`newsletter stats` only reads (opening the database brings its schema up to date, as
every command does). It stands above delivery and audience (it reads what both record),
like `newsletter run`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from newsletter import store
from newsletter.audience import segments
from newsletter.audience.events import STOPPED
from newsletter.delivery import welcome
from newsletter.delivery.log import REHEARSAL_PROVIDER, Campaign, get_campaign, list_campaigns
from newsletter.errors import ConfigError

PERIODS = ("week", "month")


@dataclass(frozen=True)
class IssueResult:
    """One campaign's results: what the delivery log and the events record say."""

    id: int
    slug: str
    subject: str
    audience: str
    kind: str  # list | test
    provider: str  # "outbox": a rehearsal, nobody was mailed
    created_at: str
    status: str
    sent: int
    failed: int
    uncertain: int
    skipped: int
    pending: int  # queued or sending: the send has not finished
    hard_bounces: int
    soft_bounces: int
    complaints: int
    unsubscribes: int  # status changes to unsubscribed attributed to this campaign
    engagement: Engagement | None = None  # None: no click or open recorded ([analytics] off)

    @property
    def rehearsal(self) -> bool:
        """Sent to the outbox: .eml files, nobody mailed."""
        return self.provider == REHEARSAL_PROVIDER

    def rate(self, count: int) -> float:
        """`count` as a share of the messages sent (0.0 when none went out)."""
        return count / self.sent if self.sent else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rehearsal"] = self.rehearsal
        data["rates"] = {
            k: round(self.rate(getattr(self, k)), 4)
            for k in ("failed", "hard_bounces", "soft_bounces", "complaints", "unsubscribes")
        }
        if self.engagement is not None:
            data["rates"]["opened"] = round(self.rate(self.engagement.openers), 4)
            data["rates"]["clicked"] = round(self.rate(self.engagement.clickers), 4)
        return data


@dataclass(frozen=True)
class LinkClicks:
    """One link of an issue: people's clicks on it, and how many people."""

    url: str
    clicks: int
    clickers: int


@dataclass(frozen=True)
class Engagement:
    """An issue's opens and clicks ([analytics]): people's, with machines' counted apart."""

    openers: int  # distinct people who opened (a Gmail proxy fetch is a person)
    clickers: int  # distinct people who clicked any link
    opens: int  # people's open events
    clicks: int  # people's click events
    machine_opens: int
    machine_clicks: int
    machine: dict[str, int]  # why (head, agent, apple-mpp, burst, unsigned) → events
    links: tuple[LinkClicks, ...]  # most clicked first


@dataclass(frozen=True)
class Bucket:
    """One week or month of the list's life."""

    start: date
    joined: int = 0  # new readers, dated by their own sign-up date
    confirmed: int = 0
    unsubscribed: int = 0
    bounced: int = 0
    complained: int = 0
    active: int = 0  # active readers at the end of the period

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "start": self.start.isoformat()}


@dataclass
class Growth:
    period: str
    segment: str  # "everyone", or the segment as `--to` writes it
    buckets: list[Bucket] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"period": self.period, "segment": self.segment,
                "buckets": [b.as_dict() for b in self.buckets]}


@dataclass(frozen=True)
class Transactional:
    """Mail that is not an issue: confirmations, manage links and welcomes, counted apart."""

    confirmations_sent: int
    manage_links_sent: int
    queued_or_failed: int
    welcomes_sent: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def issue_results(database: Path, campaign_id: int | None = None, *,
                  include_tests: bool = False) -> list[IssueResult]:
    """Per-campaign results, newest first (welcome emails are counted apart)."""
    db = _open(database)
    try:
        if campaign_id is not None:
            campaigns = [get_campaign(db, campaign_id)]
        else:
            campaigns = [c for c in list_campaigns(db)
                         if c.audience != welcome.AUDIENCE and (include_tests or c.kind == "list")]
        feedback = _feedback_by_campaign(db, [c.id for c in campaigns])
        engaged = _engagement_by_campaign(db, [c.id for c in campaigns])
        return [_result(c, feedback.get(c.id, {}), engaged.get(c.id)) for c in campaigns]
    finally:
        db.conn.close()


def _feedback_by_campaign(db: Any, ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """campaign id → {kind: distinct readers} for bounces, complaints and unsubscribes."""
    found: dict[int, dict[str, int]] = {}
    if not ids:
        return found
    marks = ",".join("?" * len(ids))
    # One reader bouncing three times for one issue is one bounce of that issue.
    rows = db.execute(
        f"SELECT campaign_id, kind, count(DISTINCT email) FROM events "
        f"WHERE campaign_id IN ({marks}) AND kind IN ('hard_bounce','soft_bounce','complaint') "
        f"GROUP BY campaign_id, kind", list(ids)).fetchall()
    for cid, kind, n in rows:
        found.setdefault(cid, {})[kind] = n
    # An unsubscribe is a reader's status becoming unsubscribed, however it arrived
    # (the issue's link, its one-click header, a provider's unsubscribe report).
    rows = db.execute(
        f"SELECT campaign_id, count(DISTINCT email) FROM events "
        f"WHERE campaign_id IN ({marks}) AND status_after = 'unsubscribed' "
        f"AND (status_before IS NULL OR status_before <> 'unsubscribed') "
        f"GROUP BY campaign_id", list(ids)).fetchall()
    for cid, n in rows:
        found.setdefault(cid, {})["unsubscribed"] = n
    return found


def _engagement_by_campaign(db: Any, ids: Sequence[int]) -> dict[int, Engagement]:
    """campaign id → its opens and clicks, for the campaigns that have any recorded."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    tallies: dict[int, dict[str, int]] = {}
    reasons: dict[int, dict[str, int]] = {}
    for cid, kind, machine, events, readers in db.execute(
            f"SELECT campaign_id, kind, machine, count(*), count(DISTINCT reader) "
            f"FROM engagement WHERE campaign_id IN ({marks}) "
            f"GROUP BY campaign_id, kind, machine", list(ids)).fetchall():
        t = tallies.setdefault(cid, {})
        if machine is None:
            t[f"{kind}s"] = events
            t[f"{kind}ers"] = readers
        else:
            t[f"machine_{kind}s"] = t.get(f"machine_{kind}s", 0) + events
            why = reasons.setdefault(cid, {})
            why[machine] = why.get(machine, 0) + events
    links: dict[int, list[LinkClicks]] = {}
    for cid, url, clicks, clickers in db.execute(
            f"SELECT campaign_id, url, count(*), count(DISTINCT reader) FROM engagement "
            f"WHERE campaign_id IN ({marks}) AND kind = 'click' AND machine IS NULL "
            f"GROUP BY campaign_id, url ORDER BY count(*) DESC, url", list(ids)).fetchall():
        links.setdefault(cid, []).append(LinkClicks(url, clicks, clickers))
    return {cid: Engagement(
        openers=t.get("openers", 0), clickers=t.get("clickers", 0), opens=t.get("opens", 0),
        clicks=t.get("clicks", 0), machine_opens=t.get("machine_opens", 0),
        machine_clicks=t.get("machine_clicks", 0), machine=dict(sorted(reasons.get(cid, {})
                                                                       .items())),
        links=tuple(links.get(cid, ()))) for cid, t in tallies.items()}


def _result(c: Campaign, fb: dict[str, int], engaged: Engagement | None = None) -> IssueResult:
    n = c.counts
    return IssueResult(
        id=c.id, slug=c.slug, subject=c.subject, audience=c.audience, kind=c.kind,
        provider=c.provider, created_at=c.created_at, status=c.status, sent=n.sent, failed=n.failed,
        uncertain=n.uncertain, skipped=n.skipped, pending=n.queued + n.sending,
        hard_bounces=fb.get("hard_bounce", 0), soft_bounces=fb.get("soft_bounce", 0),
        complaints=fb.get("complaint", 0), unsubscribes=fb.get("unsubscribed", 0),
        engagement=engaged,
    )


def transactional(database: Path) -> Transactional:
    """Confirmation, manage-link and welcome emails: kept apart from issues."""
    db = _open(database)
    try:
        counts = dict(db.execute(
            "SELECT kind || ':' || state, count(*) FROM outgoing GROUP BY kind, state").fetchall())
        # From the welcome campaigns to their deliveries: a join SQLite ordered the other
        # way read every delivery of every issue (a million on a large list).
        welcomes = db.execute(
            "SELECT count(*) FROM deliveries WHERE state = 'sent' AND campaign_id IN "
            "(SELECT id FROM campaigns WHERE audience = ?)", [welcome.AUDIENCE]).fetchone()[0]
    finally:
        db.conn.close()
    waiting = sum(n for k, n in counts.items() if not k.endswith(":sent"))
    return Transactional(confirmations_sent=counts.get("confirm:sent", 0),
                         manage_links_sent=counts.get("manage:sent", 0),
                         queued_or_failed=waiting, welcomes_sent=welcomes)


def list_growth(database: Path, period: str = "month", segment: str | None = None, *,
                today: date | None = None) -> Growth:
    """Joins, confirmations, stops and the active count per week or month, oldest first.

    The whole list is counted per period from the date indexes (migration 023): each count
    reads a range of an index, so a million readers answer in a fraction of a second
    (bench/stats.py). A segment's filter is not in those indexes, so a segment is counted by
    grouped scans of the readers instead; both give the same numbers.
    """
    if period not in PERIODS:
        raise ConfigError(f"--by {period!r}: use week or month")
    chosen = None
    if segment and segment not in ("everyone", "subscribers"):
        chosen = segments.parse_segment(segment, "--segment")
    db = _open(database)
    try:
        where, params = ("1", []) if chosen is None else segments.segment_where(db, chosen)
        first_joined = db.execute(
            f"SELECT min(created_at) FROM subscribers WHERE {where}", params).fetchone()[0]
        if first_joined:
            starts = _period_starts(_day(first_joined), today or datetime.now(UTC).date(),
                                    period)
            counts = (_ranged(db, starts, period) if chosen is None
                      else _grouped(db, period, where, params))
    finally:
        db.conn.close()
    growth = Growth(period, "everyone" if chosen is None else chosen.spec)
    if not first_joined:
        return growth
    index = {s.isoformat(): i for i, s in enumerate(starts)}
    tallies = [dict.fromkeys(_TALLIES, 0) for _ in starts]
    changes = [0] * len(starts)  # readers who became active (+) and who stopped (-)
    for (what, bucket), n in counts.items():
        at = index.get(bucket)
        if at is None:  # after today (a clock ahead), or before the first join
            if bucket > starts[-1].isoformat():
                continue
            at = 0
        if what == "began":
            changes[at] += n
        elif what == "ended":
            changes[at] -= n
        else:
            tallies[at][what] += n
    active = 0
    for i, start in enumerate(starts):
        active += changes[i]
        growth.buckets.append(Bucket(start=start, active=active, **tallies[i]))
    return growth


_TALLIES = ("joined", "confirmed", "unsubscribed", "bounced", "complained")
_STOPPED_SQL = "(" + ",".join(f"'{status}'" for status in sorted(STOPPED)) + ")"
_STOPPED_AT = "coalesce(unsubscribed_at, updated_at)"
_ACTIVE_FROM = "coalesce(confirmed_at, created_at)"


def _bucket(period: str, column: str) -> str:
    """SQL for the first day (YYYY-MM-DD) of the week (Monday) or month holding `column`."""
    if period == "week":
        return f"date(substr({column}, 1, 10), '-6 days', 'weekday 1')"
    return f"substr({column}, 1, 7) || '-01'"


def _grouped(db: Any, period: str, where: str, params: list[Any]) -> dict[tuple[str, str], int]:
    """(what, period start) → readers, for what each reader did when.

    A reader counts as active from their confirmation (one the writer added or imported:
    from joining) until they stopped; a pending reader never was.
    """
    b = functools.partial(_bucket, period)
    queries = [
        (f"SELECT 'joined', {b('created_at')}, count(*) FROM subscribers WHERE {where} "
         "GROUP BY 2"),
        (f"SELECT 'confirmed', {b('confirmed_at')}, count(*) FROM subscribers "
         f"WHERE confirmed_at IS NOT NULL AND ({where}) GROUP BY 2"),
        (f"SELECT status, {b(_STOPPED_AT)}, count(*) FROM subscribers "
         f"WHERE status IN {_STOPPED_SQL} AND ({where}) GROUP BY 1, 2"),
        (f"SELECT 'began', {b(_ACTIVE_FROM)}, count(*) FROM subscribers "
         f"WHERE status <> 'pending' AND ({where}) GROUP BY 2"),
        # A stop dated before the start (odd imported dates) ends the reader when they began.
        (f"SELECT 'ended', {b(f'max({_STOPPED_AT}, {_ACTIVE_FROM})')}, count(*) "
         f"FROM subscribers WHERE status IN {_STOPPED_SQL} AND ({where}) GROUP BY 2"),
    ]
    found: dict[tuple[str, str], int] = {}
    for sql in queries:
        for what, bucket, n in db.execute(sql, params).fetchall():
            if bucket is not None:
                found[(what, bucket)] = found.get((what, bucket), 0) + n
    return found


# The whole list's growth, per period [low, high): each reads one range of an index
# migration 023 made (INDEXED BY: an index that cannot serve is an error, never a silent
# scan per period), whose expressions these must keep written as the index has them.
RANGED_QUERIES = (
    # Joined; and those never confirmed who began being active when they joined.
    "SELECT count(*), total(confirmed_at IS NULL AND status <> 'pending') "
    "FROM subscribers INDEXED BY subscribers_joined WHERE created_at >= ? AND created_at < ?",
    # Confirmed; and those who began being active when they confirmed (`_ACTIVE_FROM`).
    "SELECT count(*), total(status <> 'pending') "
    "FROM subscribers INDEXED BY subscribers_confirmed "
    "WHERE confirmed_at IS NOT NULL AND confirmed_at >= ? AND confirmed_at < ?",
    f"SELECT count(*), 0 FROM subscribers INDEXED BY subscribers_ended "
    f"WHERE status IN {_STOPPED_SQL} AND max({_STOPPED_AT}, {_ACTIVE_FROM}) >= ? "
    f"AND max({_STOPPED_AT}, {_ACTIVE_FROM}) < ?",
    # Each stopped status (unsubscribed, bounced, complained).
    f"SELECT status, count(*) FROM subscribers INDEXED BY subscribers_stopped "
    f"WHERE status IN {_STOPPED_SQL} AND {_STOPPED_AT} >= ? AND {_STOPPED_AT} < ? "
    f"GROUP BY status",
)
_RANGED_COUNTS = (("joined", "began"), ("confirmed", "began"), ("ended", None))


def _ranged(db: Any, starts: list[date], period: str) -> dict[tuple[str, str], int]:
    """The same counts as `_grouped` for the whole list, from `RANGED_QUERIES`.

    A date before the first period counts in the first (as in `list_growth`), one after
    the last is left out (a clock ahead).
    """
    ends = [*starts[1:], _next_start(starts[-1], period)]
    bounds = [("" if i == 0 else start.isoformat(), ends[i].isoformat(), start.isoformat())
              for i, start in enumerate(starts)]
    found: dict[tuple[str, str], int] = {}
    for (first, second), sql in zip(_RANGED_COUNTS, RANGED_QUERIES[:3], strict=True):
        for low, high, bucket in bounds:
            n, m = db.execute(sql, [low, high]).fetchone()
            found[(first, bucket)] = n
            if second is not None:
                found[(second, bucket)] = found.get((second, bucket), 0) + int(m)
    for low, high, bucket in bounds:
        for status, n in db.execute(RANGED_QUERIES[3], [low, high]).fetchall():
            found[(status, bucket)] = n
    return found


def _day(text: str) -> date:
    return date.fromisoformat(text[:10])


def _period_start(day: date, period: str) -> date:
    if period == "week":
        return day - timedelta(days=day.weekday())  # Monday
    return day.replace(day=1)


def _period_starts(first: date, last: date, period: str) -> list[date]:
    starts = []
    current = _period_start(first, period)
    end = _period_start(max(first, last), period)
    while current <= end:
        starts.append(current)
        current = _next_start(current, period)
    return starts


def _next_start(start: date, period: str) -> date:
    if period == "week":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def _open(database: Path) -> Any:
    if not database.exists():
        raise ConfigError(
            f"no database at {database}: nothing has been sent or imported yet "
            "(`newsletter subscribers add` or `newsletter send` make it)"
        )
    return store.connect(database)


def sparkline(values: Iterable[int]) -> str:
    """A row of block characters, one per value, scaled to the largest."""
    values = list(values)
    if not values:
        return ""
    bars = " ▁▂▃▄▅▆▇█"
    top = max(values) or 1
    return "".join(bars[round(v / top * (len(bars) - 1))] if v > 0 else bars[0] for v in values)


def as_json(results: Sequence[IssueResult], growth: Growth | None,
            extra: Transactional | None) -> str:
    data: dict[str, Any] = {"issues": [r.as_dict() for r in results]}
    if growth is not None:
        data["growth"] = growth.as_dict()
    if extra is not None:
        data["transactional"] = extra.as_dict()
    return json.dumps(data, indent=2, ensure_ascii=False)
