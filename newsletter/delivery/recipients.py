"""Who a send goes to: parse `--to`, the matching subscribers, their count and rows."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlite_utils

from newsletter import store
from newsletter.audience.segments import GRAMMAR, Segment, parse_segment, segment_where
from newsletter.errors import SubscriberError
from newsletter.settings import Settings


@dataclass(frozen=True)
class Audience:
    """Who a send goes to: the list, a segment of it, or explicit addresses (a test send)."""

    # As stored in campaigns.audience: 'subscribers', a segment's canonical text
    # ('tag:a+plan=paid,-tag:b') or 'a@x.org,b@y.org'.
    spec: str
    kind: str  # 'list' or 'test'
    tag: str | None = None  # the segment's text after `tag:` (lower case), for messages
    addresses: tuple[str, ...] = ()
    segment: Segment | None = None
    # The issue's topics (front matter `topics:`): a list send goes to readers who chose
    # one of them and to readers who get everything; () sends to the whole audience.
    topics: tuple[str, ...] = ()
    # For a list send with topics: (readers who chose a topic, readers who get everything).
    topic_split: tuple[int, int] | None = None

    def topic_line(self) -> str | None:
        """For people: "topic links: 40 readers chose it, 80 get everything"; None without
        topics (or for a test send, which goes to its addresses whatever they chose)."""
        if self.kind != "list" or not self.topics or self.topic_split is None:
            return None
        chose, everything = self.topic_split
        word = "topic" if len(self.topics) == 1 else "topics"
        return (f"{word} {', '.join(self.topics)}: {chose:,} reader(s) chose it, "
                f"{everything:,} get everything")

    def describe(self) -> str:
        """For people: "everyone", "tag founders but not press", "2 addresses"."""
        if self.kind == "test":
            n = len(self.addresses)
            return self.addresses[0] if n == 1 else f"{n} addresses"
        text = self.segment.describe() if self.segment else "everyone"
        if self.topics:  # those who chose one of the topics, or get everything
            word = "topic" if len(self.topics) == 1 else "topics"
            chose = f"{word} {' or '.join(self.topics)} (or everything)"
            return f"{text}, {chose}" if self.segment else chose
        return text


_LIST_WORDS = ("subscribers", "list", "all")


def _is_address(term: str) -> bool:
    """An address, not a segment term: it has an `@` and is not quoted, negated or `kind:`."""
    term = term.strip()
    return ("@" in term and '"' not in term and not term.startswith("-")
            and term.split(":", 1)[0].lower() not in ("tag", "topic", "has"))


def parse_audience(text: str) -> Audience:
    """`subscribers`, a segment (`tag:a+plan=paid,-tag:b`, see audience/segments.py) or
    `a@x.org,b@y.org` → Audience.

    SubscriberError (naming the grammar) when the text is none of these.
    """
    from newsletter.audience.subscribers import normalize_email

    text = text.strip()
    if text.lower() in _LIST_WORDS:
        return Audience("subscribers", "list")
    if text.lower() in ("tag:", "-tag:"):
        raise SubscriberError(f"--to tag: needs a tag name, like --to tag:friends. {GRAMMAR}")
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if any(p.lower() in _LIST_WORDS for p in parts):
        raise SubscriberError(f"{GRAMMAR}, not a mix of them ({text!r})")
    segment_like = [p for p in parts if not _is_address(p) and (
        p.startswith("-") or any(c in p for c in ':="'))]
    if any(_is_address(p) for p in parts) and not segment_like:
        # Addresses, one of them perhaps mistyped: normalize_email says what is wrong.
        addresses: list[str] = []
        for part in parts:
            address = normalize_email(part)
            if address.lower() not in {a.lower() for a in addresses}:
                addresses.append(address)
        return Audience(",".join(addresses), "test", addresses=tuple(addresses))
    if any(_is_address(p) for p in parts):
        raise SubscriberError(f"{GRAMMAR}, not a mix of them ({text!r})")
    if not parts:
        raise SubscriberError(GRAMMAR)
    segment = parse_segment(text, option="--to")
    spec = segment.spec
    return Audience(spec, "list", tag=spec.removeprefix("tag:"), segment=segment)


def audience_for_issue(settings: Settings, to: str, topics: Sequence[str]) -> Audience:
    """`--to` for an issue with `topics` (checked against [subscribe] topics when the issue
    was built): the audience narrowed to those topics, with how many readers get it because
    of a topic and how many because they want everything."""
    audience = parse_audience(to)
    if audience.segment is not None:  # `topic:NAME` may name a topic no reader chose yet
        audience = replace(audience, segment=replace(audience.segment,
                                                     known_topics=settings.web.topics))
    if audience.kind != "list" or not topics:
        return audience
    audience = replace(audience, topics=tuple(topics))
    db = store.connect(settings.database)
    try:
        where, params = audience_where(db, audience)
        chose, everything = db.execute(
            f"SELECT count(*) FILTER (WHERE topics IS NOT NULL), count(*) FILTER (WHERE topics "
            f"IS NULL) FROM subscribers WHERE {where}", params).fetchone()
    finally:
        db.conn.close()
    return replace(audience, topic_split=(chose, everything))


def describe_audience(spec: str) -> str:
    """A stored campaigns.audience, for people ("everyone", "tag a but not b", "2 addresses")."""
    try:
        return parse_audience(spec).describe()
    except SubscriberError:  # written by another version: show it as it is
        return spec


def audience_where(db: sqlite_utils.Database, audience: Audience) -> tuple[str, list[Any]]:
    """WHERE clause and parameters on `subscribers` for a list audience.

    SubscriberError names a tag, attribute or topic that no reader has.
    """
    sql, params = "status = 'active'", list[Any]()
    if audience.segment is not None:
        segment_sql, params = segment_where(db, audience.segment)
        sql += f" AND {segment_sql}"
    if audience.topics:
        # NULL: the reader gets everything (subscribers.topic_choice).
        sql += (" AND (subscribers.topics IS NULL OR EXISTS (SELECT 1 FROM "
                "json_each(subscribers.topics) WHERE json_each.value IN "
                f"({','.join('?' * len(audience.topics))})))")
        params = [*params, *audience.topics]
    return sql, params


def count_audience(db: sqlite_utils.Database, audience: Audience) -> int:
    """How many recipients a send to `audience` would have right now."""
    if audience.kind == "test":
        return len(audience.addresses)
    where, params = audience_where(db, audience)
    return db.execute(f"SELECT count(*) FROM subscribers WHERE {where}", params).fetchone()[0]


# --- delivery rows -----------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryRow:
    """One claimed delivery, with what personalization needs about its subscriber."""

    id: int
    email: str
    name: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # the subscriber's identity for unsubscribe tokens (email_key)
    attempts: int = 0


# The columns `delivery_row()` reads, for a query on `deliveries d` (add WHERE … to it).
DELIVERY_ROW_SELECT = (
    "SELECT d.id, d.email, s.name, s.attributes, s.email_key, d.attempts, s.status "
    "FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id "
)


def delivery_row(values: Sequence[Any]) -> DeliveryRow:
    """One row of DELIVERY_ROW_SELECT as a DeliveryRow (attributes that are not JSON: {})."""
    did, email, name, attributes, key, attempts, _status = values
    try:
        attrs = json.loads(attributes) if attributes else {}
    except ValueError:
        attrs = {}
    return DeliveryRow(
        id=did,
        email=email,
        name=name or "",
        attributes=attrs if isinstance(attrs, dict) else {},
        key=key or email.lower(),
        attempts=attempts,
    )


def iter_audience_rows(db: sqlite_utils.Database, audience: Audience) -> Iterator[DeliveryRow]:
    """Stream the recipients of `audience` as (unsaved) rows, for a dry run; ids count from 1."""
    if audience.kind == "test":
        for n, address in enumerate(audience.addresses, 1):
            found = db.execute(
                "SELECT name, attributes, email_key FROM subscribers WHERE email_key = ?",
                [address.lower()],
            ).fetchone()
            name, attributes, key = found or ("", "{}", None)
            yield delivery_row((n, address, name, attributes, key, 0, None))
        return
    where, params = audience_where(db, audience)
    cursor = db.execute(
        f"SELECT id, email, name, attributes, email_key, 0, status FROM subscribers "
        f"WHERE {where} ORDER BY id",
        params,
    )
    n = 0
    while chunk := cursor.fetchmany(500):
        for values in chunk:
            n += 1
            yield delivery_row((n, *values[1:]))
