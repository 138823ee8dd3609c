"""Clicks and opens ([analytics], opt-in): recorded apart from people when a machine made them.

Each request to a tracked link (`/c/<token>`) or the open image (`/o/<token>`) is one row
of `engagement`. A row a machine made is kept, with the reason in `machine`, so the
writer can see how much is not people; `newsletter stats` counts only the others:

- `head`: a HEAD request (link checkers look without following);
- `agent`: a user agent that names a scanner, a fetcher or a preview bot, or none at all;
- `apple-mpp`: Apple Mail Privacy Protection fetches every image of every message when it
  arrives, person or not: its bare `Mozilla/5.0` agent, or an address in Apple's 17.0.0.0/8;
- `burst`: a "reader" who opens several links of an issue within seconds (a security
  scanner following every link); their earlier clicks in that window are re-marked;
- `unsigned`: a reader value missing or not made by this newsletter.

A fetch through Gmail's (or Yahoo's) image proxy happens when a person opens the message,
so it is a human open; unique openers count each reader once however often it fetches.
Readers are "a:<pseudonym>" (per send, not traceable to an address) or, with
[analytics] per_reader, "key:<reader key>": `subscribers remove` deletes those.

A provider's own open and click tracking (its webhooks, `record_provider`) lands in the same
rows, `source` naming the provider, through the same classifier. Its events name the
address, so the reader is "p:<pseudonym>": an HMAC of the reader key under a key derived
from the newsletter's secret (never in the database) and the campaign. The database alone
cannot turn it back; whoever holds the secret and the list could, by trying every address
(serve's own per-send salt is never kept, so there not even that works). With per_reader
the reader is "key:<reader key>", as serve records it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlite_utils

CLICK, OPEN = "click", "open"

# Image proxies fetch when a person opens the message: these are people, not machines.
_PERSON_PROXY = re.compile(r"GoogleImageProxy|YahooMailProxy", re.IGNORECASE)
# Security scanners, link fetchers and preview bots (listmonk #1025, #1524, #2946).
_MACHINE_AGENT = re.compile(
    r"bot\b|bot/|crawl|spider|scan|preview|python-|curl/|wget|go-http-client|java/|okhttp|"
    r"libwww|httpclient|headless|phantomjs|barracuda|mimecast|proofpoint|symantec|"
    r"messagelabs|fireeye|trend ?micro|sophos|forcepoint|ironport|safelinks|"
    r"microsoft office|ms-office|facebookexternalhit|slack|discord|whatsapp|skype",
    re.IGNORECASE,
)
_APPLE = ipaddress.ip_network("17.0.0.0/8")
# A person reads, comes back to the email, clicks again: not several links in seconds.
BURSTS = ((2, 2.0), (3, 10.0))  # (distinct links, within seconds)


def machine_reason(method: str, agent: str | None, ip: str | None) -> str | None:
    """Why a request was a machine's (None: a person, as far as can be told)."""
    if method.upper() == "HEAD":
        return "head"
    agent = (agent or "").strip()
    if _PERSON_PROXY.search(agent):
        return None
    if agent == "Mozilla/5.0" or _from_apple(ip):
        return "apple-mpp"
    if not agent or _MACHINE_AGENT.search(agent):
        return "agent"
    return None


def provider_machine_reason(agent: str | None, ip: str | None,
                            flagged: bool = False) -> str | None:
    """As `machine_reason`, for an event a provider reports: `agent` None when the provider
    does not report one (then only the address can tell), `flagged` when it says a machine
    made it (SendGrid's sg_machine_open)."""
    if flagged:
        return "provider"
    if agent is None:
        return "apple-mpp" if _from_apple(ip) else None
    return machine_reason("GET", agent, ip)


def _from_apple(ip: str | None) -> bool:
    try:
        return ip is not None and ipaddress.ip_address(ip) in _APPLE
    except ValueError:
        return False


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def record(db: sqlite_utils.Database, kind: str, campaign: int, url: str | None,
           reader: str | None, *, method: str = "GET", agent: str | None = None,
           ip: str | None = None, at: datetime | None = None) -> str | None:
    """Record one click or open; return why it is a machine's (None: a person's).

    The caller holds the write lock; this runs in its own transaction.
    """
    when = at or datetime.now(UTC)
    why = machine_reason(method, agent, ip)
    if why is None and reader is None:
        why = "unsigned"
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        return _insert(db, kind, campaign, url, reader, why, when)


def _insert(db: sqlite_utils.Database, kind: str, campaign: int, url: str | None,
            reader: str | None, why: str | None, when: datetime, source: str | None = None,
            event_id: str | None = None) -> str | None:
    """One row, inside the caller's transaction; a person's click may turn out a burst."""
    db.execute(
        "INSERT INTO engagement (kind, campaign_id, url, reader, machine, at, source, event_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [kind, campaign, url, reader, why, _stamp(when), source, event_id])
    if why is None and kind == CLICK:
        why = _burst(db, campaign, reader, when)
    return why


@dataclass(frozen=True)
class ProviderEvent:
    """One open or click as a provider's webhook reports it (read by feedback/webhooks)."""

    kind: str  # CLICK or OPEN
    emails: tuple[str, ...]  # whom the message went to (only used to find the delivery)
    message_id: str  # the provider's id of the message, as its send answered it
    event_id: str  # the provider's id of this event: a second delivery of it counts once
    url: str | None = None  # the link (clicks)
    agent: str | None = None  # None: the provider does not report one
    ip: str | None = None
    at: datetime | None = None
    machine: bool = False  # the provider says a machine made it


def provider_pseudonym(secret: bytes, campaign: int, reader_key: str) -> str:
    """"p:<pseudonym>": one reader of one campaign, from provider events (see the top)."""
    key = hmac.new(secret, b"newsletter/provider-reader/v1", hashlib.sha256).digest()
    data = str(int(campaign)).encode() + b"\x00" + reader_key.encode("utf-8")
    digest = hmac.new(key, data, hashlib.sha256).digest()[:12]
    return "p:" + base64.urlsafe_b64encode(digest).decode("ascii")


def record_provider(db: sqlite_utils.Database, source: str, event: ProviderEvent, *,
                    secret: bytes | None) -> str:
    """Record a provider's open or click inside the caller's transaction; what became of it:
    "person", "machine:<why>", "duplicate" or "unknown" (no delivery of ours has that id).

    `secret` None records the reader as per_reader does ("key:<reader key>").
    """
    # A digest, not the id itself: some providers' ids name the address.
    event_id = hashlib.sha256(f"{source}\x00{event.event_id}".encode()).hexdigest()[:32]
    if db.execute("SELECT 1 FROM engagement WHERE event_id = ?", [event_id]).fetchone():
        return "duplicate"
    bare = event.message_id.strip().strip("<>")
    keys = [e.strip().lower() for e in event.emails if e.strip()]
    found = None
    if bare and keys:
        found = db.execute(
            f"SELECT d.campaign_id, s.email_key FROM deliveries d "
            f"JOIN subscribers s ON s.id = d.subscriber_id "
            f"WHERE d.provider_message_id IN (?, ?) "
            f"AND s.email_key IN ({','.join('?' * len(keys))}) ORDER BY d.id DESC LIMIT 1",
            [bare, f"<{bare}>", *keys]).fetchone()
    if found is None:
        return "unknown"
    campaign, reader_key = found
    reader = (f"key:{reader_key}" if secret is None
              else provider_pseudonym(secret, campaign, reader_key))
    why = provider_machine_reason(event.agent, event.ip, event.machine)
    why = _insert(db, event.kind, campaign, event.url if event.kind == CLICK else None, reader,
                  why, event.at or datetime.now(UTC), source, event_id)
    return "person" if why is None else f"machine:{why}"


def _burst(db: sqlite_utils.Database, campaign: int, reader: str | None,
           when: datetime) -> str | None:
    """Mark a reader's clicks of this issue as `burst` when they cover too many links at once."""
    for links, seconds in BURSTS:
        since = _stamp(when - timedelta(seconds=seconds))
        distinct = db.execute(
            "SELECT count(DISTINCT url) FROM engagement WHERE reader = ? AND campaign_id = ? "
            "AND kind = 'click' AND at >= ? AND (machine IS NULL OR machine = 'burst')",
            [reader, campaign, since]).fetchone()[0]
        if distinct >= links:
            db.execute(
                "UPDATE engagement SET machine = 'burst' WHERE reader = ? AND campaign_id = ? "
                "AND kind = 'click' AND at >= ? AND machine IS NULL", [reader, campaign, since])
            return "burst"
    return None


def prune(db: sqlite_utils.Database, keep_days: int, *, now: datetime | None = None) -> int:
    """Delete click and open records older than `keep_days`; how many went."""
    cutoff = _stamp((now or datetime.now(UTC)) - timedelta(days=keep_days))
    # Read first (WAL: never waits): a run with nothing to delete takes no write lock.
    if db.execute("SELECT 1 FROM engagement WHERE at < ? LIMIT 1", [cutoff]).fetchone() is None:
        return 0
    with db.conn:
        return db.execute("DELETE FROM engagement WHERE at < ?", [cutoff]).rowcount


def forget_pseudonyms(db: sqlite_utils.Database, secret: bytes, subscriber_id: int,
                      reader_key: str) -> int:
    """Delete a reader's provider-event records ("p:" pseudonyms, made with the secret, for
    each campaign sent to them), inside the caller's transaction, before the deliveries that
    name the campaigns are unlinked."""
    campaigns = [row[0] for row in db.execute(
        "SELECT DISTINCT campaign_id FROM deliveries WHERE subscriber_id = ?", [subscriber_id])]
    names = [provider_pseudonym(secret, c, reader_key) for c in campaigns]
    gone = 0
    for start in range(0, len(names), 500):  # under SQLite's bound-parameter limit
        part = names[start:start + 500]
        gone += db.execute(f"DELETE FROM engagement WHERE reader IN ({','.join('?' * len(part))})",
                           part).rowcount
    return gone


def forget(db: sqlite_utils.Database, reader_key: str) -> int:
    """Delete the records that name a reader (per_reader), inside the caller's transaction."""
    return db.execute("DELETE FROM engagement WHERE reader = ?", [f"key:{reader_key}"]).rowcount
