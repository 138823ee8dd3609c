"""Who a send goes to: parse `--to`, the matching subscribers, their count and rows."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from newsletter.errors import SubscriberError


@dataclass(frozen=True)
class Audience:
    """Who a send goes to: the list, a tag of it, or explicit addresses (a test send)."""

    spec: str  # as stored in campaigns.audience: 'subscribers', 'tag:NAME' or 'a@x.org,b@y.org'
    kind: str  # 'list' or 'test'
    tag: str | None = None
    addresses: tuple[str, ...] = ()


_LIST_WORDS = ("subscribers", "list", "all")
_TO_FORMS = "--to takes `subscribers`, `tag:NAME`, or email addresses separated by commas"


def parse_audience(text: str) -> Audience:
    """`subscribers`, `tag:NAME` or `a@x.org,b@y.org` → Audience (SubscriberError if bad)."""
    from newsletter.audience.subscribers import normalize_email

    text = text.strip()
    if text.lower() in _LIST_WORDS:
        return Audience("subscribers", "list")
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if text.lower().startswith("tag:"):
        tag = text[4:].strip()
        if not tag:
            raise SubscriberError("--to tag: needs a tag name, like --to tag:friends")
        if len(parts) > 1 and any(p.lower().startswith("tag:") for p in parts[1:]):
            raise SubscriberError(f"{_TO_FORMS}: one tag per send, not {text!r}")
        return Audience(f"tag:{tag}", "list", tag=tag)
    if any(p.lower() in _LIST_WORDS or p.lower().startswith("tag:") for p in parts):
        raise SubscriberError(f"{_TO_FORMS}, not a mix of them ({text!r})")
    addresses: list[str] = []
    for part in parts:
        address = normalize_email(part)
        if address.lower() not in {a.lower() for a in addresses}:
            addresses.append(address)
    if not addresses:
        raise SubscriberError(_TO_FORMS)
    return Audience(",".join(addresses), "test", addresses=tuple(addresses))


def _audience_where(audience: Audience) -> tuple[str, list[Any]]:
    if audience.tag is not None:
        return (
            "status = 'active' AND EXISTS (SELECT 1 FROM json_each(subscribers.tags) "
            "WHERE json_each.value = ?)",
            [audience.tag],
        )
    return "status = 'active'", []


def count_audience(db: sqlite_utils.Database, audience: Audience) -> int:
    """How many recipients a send to `audience` would have right now."""
    if audience.kind == "test":
        return len(audience.addresses)
    where, params = _audience_where(audience)
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


_ROW_SELECT = (
    "SELECT d.id, d.email, s.name, s.attributes, s.email_key, d.attempts, s.status "
    "FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id "
)


def _row(values: Sequence[Any]) -> DeliveryRow:
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
            yield _row((n, address, name, attributes, key, 0, None))
        return
    where, params = _audience_where(audience)
    cursor = db.execute(
        f"SELECT id, email, name, attributes, email_key, 0, status FROM subscribers "
        f"WHERE {where} ORDER BY id",
        params,
    )
    n = 0
    while chunk := cursor.fetchmany(500):
        for values in chunk:
            n += 1
            yield _row((n, *values[1:]))
