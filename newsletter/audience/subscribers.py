"""The subscriber list: add, change, query and export, on the newsletter's SQLite file.

One row per person: `email_key` (the normalized address, lower-cased) is unique,
so the same person can't be added twice under different letter cases. Only
`active` subscribers are ever sent to; consent is given back only explicitly
(`add_subscriber(..., resubscribe=True)`), never by an import.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.utils import getaddresses
from pathlib import Path
from typing import Any, TextIO

import sqlite_utils
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from newsletter import changes, store
from newsletter.audience import engagement, events
from newsletter.audience.events import STATUSES, STOPPED, Origin
from newsletter.audience.segments import GRAMMAR, Segment, parse_segment, segment_where
from newsletter.compose.message import Recipient, header_address
from newsletter.errors import SubscriberError
from newsletter.settings import Settings

# STOPPED (from events): statuses an import or a plain `add` never turns back into active.

COLUMNS = (
    "id", "email", "name", "status", "tags", "attributes", "source",
    "created_at", "updated_at", "confirmed_at", "unsubscribed_at", "optin_ip",
)
# Our own export format; `import` recognises it by this header.
EXPORT_HEADER = COLUMNS[1:]  # email,name,status,tags,attributes,source,created_at,…


def open_db(settings: Settings) -> sqlite_utils.Database:
    """The newsletter's database, created and migrated to the latest schema if needed."""
    return store.connect(settings.database)


def _dumps(value: Any) -> str:
    """JSON as stored in the database: compact, Unicode kept."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


now_iso = events.now_iso


# --- addresses -------------------------------------------------------------------

# A fast path for the plain ASCII addresses that make up nearly every real list:
# dot-atom local part, lower-or-upper-case hostname labels without "--" (so no
# Punycode), a letters-only TLD. Anything else goes to email-validator. For every
# address this accepts, the result is identical to email-validator's (tested).
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_SIMPLE = re.compile(
    rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
)
_CASE_INSENSITIVE_LOCAL = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
_SPECIAL_TLDS = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def _fast_normalize(text: str) -> str | None:
    """The normalized address for a plain ASCII address, or None to ask email-validator."""
    m = _SIMPLE.fullmatch(text)
    if m is None or len(text) > 254:
        return None
    local, domain = m.group(1), m.group(2).lower()
    if "--" in domain or local.lower() in _CASE_INSENSITIVE_LOCAL:
        return None
    if domain.rsplit(".", 1)[1] in _SPECIAL_TLDS:
        return None
    return f"{local}@{domain}"


def _validate(text: str) -> str:
    """email-validator's normalized form (syntax only, no DNS: works offline)."""
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise SubscriberError(f"{text!r} is not a valid email address: {exc}") from None
    return result.normalized


def normalize_email(text: str) -> str:
    """Validate an address and return its normalized form.

    Surrounding spaces are dropped, the domain is lower-cased and IDN domains
    come back in Unicode (NFC). Raises SubscriberError with the reason when the
    address is invalid. No DNS look-ups: this works offline.
    """
    text = text.strip()
    if not text:
        raise SubscriberError("the email address is empty: give an address like reader@example.com")
    return _fast_normalize(text) or _validate(text)


def email_key(email: str) -> str:
    """The identity of a normalized address: lower-cased (one person, one row)."""
    return email.lower()


# --- the Subscriber --------------------------------------------------------------


@dataclass
class Subscriber:
    """One row of the `subscribers` table, with tags and attributes decoded."""

    id: int
    email: str
    name: str = ""
    status: str = "active"
    tags: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    created_at: str = ""
    updated_at: str = ""
    confirmed_at: str | None = None
    unsubscribed_at: str | None = None
    optin_ip: str | None = None

    @property
    def key(self) -> str:
        """The unique identity (`email_key`): the address lower-cased."""
        return email_key(self.email)

    def recipient(self) -> Recipient:
        """Who a message to this subscriber is for (the unsubscribe key is `email_key`)."""
        return Recipient(self.email, self.name, dict(self.attributes), key=self.key)

    def as_dict(self) -> dict[str, Any]:
        """The subscriber as plain JSON-ready data."""
        return {name: getattr(self, name) for name in COLUMNS}

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Subscriber:
        """Build from a row selected as `COLUMNS`."""
        values = dict(zip(COLUMNS, row, strict=True))
        values["tags"] = json.loads(values["tags"] or "[]")
        values["attributes"] = json.loads(values["attributes"] or "{}")
        return cls(**values)


_SELECT = f"SELECT {', '.join(COLUMNS)} FROM subscribers"


# Control characters (C0, DEL, C1): ESC and BEL in a name typed into a sign-up form
# would drive the writer's terminal when `subscribers list` prints it.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text safe to print on a terminal: control characters (ESC, BEL…) become spaces."""
    return _CONTROLS.sub(" ", text)


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Tags on one line without control characters, empty ones dropped, duplicates removed."""
    out: list[str] = []
    for tag in tags:
        tag = _CONTROLS.sub(" ", str(tag)).strip()
        if tag and tag not in out:
            out.append(tag)
    return out


def clean_name(name: str) -> str:
    """A name on one line: runs of spaces, newlines (from quoted CSV cells) and control
    characters become one space."""
    return " ".join(_CONTROLS.sub(" ", name).split()) if name else ""


MAX_NAME = 200  # characters: a display name, not a paragraph pasted into a form


def name_too_long(name: str) -> str:
    """Why a name is refused (shared by add and import)."""
    return f"the name is {len(name)} characters long; at most {MAX_NAME} are kept: shorten it"


def check_name(name: str) -> str:
    """The cleaned name, or SubscriberError when it is longer than MAX_NAME."""
    cleaned = clean_name(name)
    if len(cleaned) > MAX_NAME:
        raise SubscriberError(name_too_long(cleaned))
    return cleaned


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP: CSV
# injection). Our export puts a single quote before such a cell, and before a cell that is
# quotes followed by one of these, so that our import can take exactly one quote off again.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _looks_escaped(value: str) -> bool:
    return value.lstrip("'").startswith(_FORMULA_START)


def escape_cell(value: str) -> str:
    """A cell as exported: a quote in front when a spreadsheet would read a formula."""
    return "'" + value if value and _looks_escaped(value) else value


def unescape_cell(value: str) -> str:
    """Undo `escape_cell` (a value that only happens to start with a quote is kept)."""
    return value[1:] if value.startswith("'") and _looks_escaped(value) else value


def check_status(status: str) -> str:
    """`status` if it is one we know, else SubscriberError listing the valid ones."""
    if status not in STATUSES:
        raise SubscriberError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    return status


def get(db: sqlite_utils.Database, email: str) -> Subscriber | None:
    """The subscriber with this address (any letter case), or None."""
    key = email_key(normalize_email(email))
    row = db.execute(f"{_SELECT} WHERE email_key = ?", [key]).fetchone()
    return Subscriber.from_row(row) if row else None


def _require(db: sqlite_utils.Database, email: str) -> Subscriber:
    found = get(db, email)
    if found is None:
        raise SubscriberError(
            f"{email.strip()} is not on the list: see `newsletter subscribers list --search` "
            "for who is"
        )
    return found


@dataclass(frozen=True)
class AddResult:
    """What `add_or_update` did: `outcome` is added, updated, unchanged or resubscribed."""

    subscriber: Subscriber
    outcome: str


def add_or_update(
    db: sqlite_utils.Database,
    email: str,
    name: str = "",
    tags: Iterable[str] = (),
    attributes: Mapping[str, Any] | None = None,
    source: str = "cli",
    resubscribe: bool = False,
    origin: Origin | None = None,
    welcome: bool = False,
    secret: bytes | None = None,
) -> AddResult:
    """Add a subscriber, or update the name, tags and attributes of an existing one.

    A subscriber who unsubscribed, bounced or complained is only made active
    again with `resubscribe=True` (their explicit consent); otherwise this
    raises SubscriberError and changes nothing. With the newsletter `secret`, an
    address forgotten with `remove(..., suppress=True)` is refused.
    """
    address = normalize_email(email)
    name = check_name(name)
    if secret is not None and is_suppressed(db, secret, address):
        raise SubscriberError(
            f"{address} asked to be forgotten and never added again (subscribers remove "
            "--suppress): it is not added"
        )
    tags = clean_tags(tags)
    attributes = dict(attributes or {})
    now = now_iso()
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        row = db.execute(f"{_SELECT} WHERE email_key = ?", [email_key(address)]).fetchone()
        if row is None:
            cursor = db.execute(
                "INSERT INTO subscribers (email, email_key, name, status, tags, attributes, "
                "source, created_at, updated_at, confirmed_at) "
                "VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?, ?)",
                [address, email_key(address), clean_name(name), _dumps(tags),
                 _dumps(attributes), source, now, now, now],
            )
            sub_id, outcome = cursor.lastrowid, "added"
            events.record(db, subscriber_id=sub_id, email=address, kind="subscribed",
                          origin=origin or Origin(source), after="active", detail="added")
        else:
            old = Subscriber.from_row(row)
            if old.status in STOPPED and not resubscribe:
                since = f" since {old.unsubscribed_at}" if old.unsubscribed_at else ""
                raise SubscriberError(
                    f"{old.email} is {old.status}{since}: add them back only with their "
                    f"consent, with `newsletter subscribers add {old.email} --resubscribe`"
                )
            new = Subscriber(**{**old.__dict__})
            new.name = clean_name(name) or old.name
            new.tags = clean_tags([*old.tags, *tags])
            new.attributes = {**old.attributes, **attributes}
            outcome = "unchanged"
            if old.status != "active":
                # `add` is the writer saying this person wants the newsletter.
                outcome = "resubscribed" if old.status in STOPPED else "updated"
                new.status, new.confirmed_at, new.unsubscribed_at = "active", now, None
            elif new != old:
                outcome = "updated"
            if outcome != "unchanged":
                db.execute(
                    "UPDATE subscribers SET name = ?, status = ?, tags = ?, attributes = ?, "
                    "confirmed_at = ?, unsubscribed_at = ?, updated_at = ? WHERE id = ?",
                    [new.name, new.status, _dumps(new.tags),
                     _dumps(new.attributes), new.confirmed_at,
                     new.unsubscribed_at, now, old.id],
                )
                if new.status != old.status:
                    events.record(db, subscriber_id=old.id, email=old.email,
                                  kind="resubscribed" if old.status in STOPPED else "activated",
                                  origin=origin or Origin(source), before=old.status,
                                  after=new.status)
            sub_id = old.id
        if welcome:  # owed the welcome email (delivery/welcome.py sends it)
            events.record(db, subscriber_id=sub_id, email=address, kind="welcome_requested",
                          origin=origin or Origin(source), detail="welcome email requested")
        row = db.execute(f"{_SELECT} WHERE id = ?", [sub_id]).fetchone()
    return AddResult(Subscriber.from_row(row), outcome)


def add_subscriber(
    db: sqlite_utils.Database,
    email: str,
    name: str = "",
    tags: Iterable[str] = (),
    attributes: Mapping[str, Any] | None = None,
    source: str = "cli",
    resubscribe: bool = False,
) -> Subscriber:
    """Add (or update) one subscriber and return them; see `add_or_update` for the rules."""
    return add_or_update(db, email, name, tags, attributes, source, resubscribe).subscriber


def set_status(
    db: sqlite_utils.Database, email: str, status: str, at: str | None = None,
    origin: Origin = events.CLI, detail: str = "",
) -> Subscriber:
    """Mark a subscriber unsubscribed, bounced or complained (or pending).

    Making someone active goes through `add_subscriber(..., resubscribe=True)`.
    The first time a subscriber stops, `unsubscribed_at` records when.
    """
    check_status(status)
    if status == "active":
        raise SubscriberError(
            "a subscriber is made active only by `newsletter subscribers add EMAIL --resubscribe`"
        )
    found = _require(db, email)
    if found.status != status:
        events.change_status(db, found.id, status, origin, detail=detail, at=at)
    return _require(db, email)


def unsubscribe(
    db: sqlite_utils.Database, email: str, origin: Origin = events.CLI
) -> Subscriber:
    """Stop sending to this subscriber; their row and consent history stay."""
    found = _require(db, email)
    if found.status in STOPPED:
        return found  # already not sent to: keep the original reason and date
    return set_status(db, email, "unsubscribed", origin=origin)


def address_hash(secret: bytes, address: str) -> str:
    """A keyed one-way hash of an address (its `email_key`): the same for every letter case,
    and without the newsletter secret nobody can test a guessed address against it."""
    digest = hmac.new(secret, b"forget:" + email_key(address).encode(), hashlib.sha256)
    return digest.hexdigest()


def is_suppressed(db: sqlite_utils.Database, secret: bytes, address: str) -> bool:
    """True when this address was forgotten with `remove(..., suppress=True)`."""
    row = db.execute("SELECT 1 FROM suppressions WHERE address_hash = ?",
                     [address_hash(secret, address)]).fetchone()
    return row is not None


@dataclass(frozen=True)
class Removal:
    """What `remove` did: the reader forgotten, and what still holds their address."""

    subscriber: Subscriber
    deliveries: int  # delivery-log rows whose address became a hash
    events: int  # history rows deleted
    outbox_files: list[Path]  # saved outbox messages to them (deleted when `deleted`)
    deleted: bool
    suppressed: bool
    # With `deleted`: the files that could not be deleted, and why (the rest are gone).
    not_deleted: list[tuple[Path, str]] = field(default_factory=list)


def _saved_messages(folder: Path) -> Iterator[Path]:
    """Every .eml file under `folder`, at any depth, streamed (a folder is never listed whole
    in memory; symbolic links are not followed)."""
    pending = [folder]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))
                    elif entry.name.endswith(".eml") and entry.is_file(follow_symlinks=False):
                        yield Path(entry.path)
        except OSError:
            continue  # a folder we may not read holds nothing we could delete either


_RECIPIENT_FIELDS = (b"to", b"cc", b"bcc")
_MAX_HEADER = 256 * 1024  # bytes: the outbox writes a few KB; past this it is not a message


def _addressed_to(path: Path, wanted: frozenset[str]) -> bool:
    """Whether the saved message is to one of `wanted` (lower-cased addresses) in its To
    (or Cc, Bcc) header. Only the header block is read, never the body."""
    fields: list[bytes] = []
    size = 0
    with open(path, "rb") as f:
        while (line := f.readline(_MAX_HEADER)) and size < _MAX_HEADER:
            size += len(line)
            line = line.rstrip(b"\r\n")
            if not line:
                break  # the blank line before the body
            if line[:1] in (b" ", b"\t") and fields:
                fields[-1] += line  # a folded header goes on (RFC 5322 unfolding)
            else:
                fields.append(line)
    for field_line in fields:
        name, _, value = field_line.partition(b":")
        if name.strip().lower() in _RECIPIENT_FIELDS:
            # Exact addresses, not a substring: ana@example.com is not dana@example.com.
            for _, addr in getaddresses([value.decode("utf-8", "replace")]):
                if addr.lower() in wanted:
                    return True
    return False


def _outbox_files_for(outboxes: Sequence[Path], address: str) -> list[Path]:
    """The saved messages to this address anywhere in the outboxes (every campaign's folder,
    outbox/confirm/…), matched in their To header in any letter case; sorted."""
    # As stored (an IDN domain in Unicode) and as the outbox writes it (in Punycode).
    wanted = frozenset({email_key(address), email_key(header_address(address))})
    found: set[Path] = set()
    for outbox in dict.fromkeys(outboxes):  # the same folder is read once
        if not outbox.is_dir():
            continue
        for path in _saved_messages(outbox):
            try:
                if _addressed_to(path, wanted):
                    found.add(path)
            except OSError:
                continue
    return sorted(found)


def remove(
    db: sqlite_utils.Database,
    email: str,
    secret: bytes | None = None,
    outboxes: Sequence[Path] = (),
    delete_outbox: bool = False,
    suppress: bool = False,
) -> Removal:
    """Forget a subscriber: their row, their history, their address in the delivery log.

    Delivery-log rows stay (a campaign's counts do not change) with the address replaced
    by `address_hash` (needs `secret`); those not sent yet become `skipped`. The messages
    to them saved anywhere under `outboxes` (campaign folders, confirm/) are listed, or
    deleted with `delete_outbox` (the folders stay). With `suppress`, only the hash is
    kept, so a later import or add of the address is refused.
    Prefer `unsubscribe`: it keeps the consent record that proves they asked.
    """
    found = _require(db, email)
    if secret is None and suppress:
        raise SubscriberError("forgetting with --suppress needs the newsletter secret")
    hashed = address_hash(secret, found.email) if secret is not None else None
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        if secret is not None:  # their provider opens and clicks: pseudonyms made with it
            engagement.forget_pseudonyms(db, secret, found.id, found.key)
        deliveries, erased = erase_rows(db, found.id, found.key, hashed, suppress=suppress)
        # Journaled as its own entry: a restore replays it, so no snapshot taken before
        # brings the reader back (the journal holds only the key and the hash).
        changes.append(db.conn, [{"op": "erase", "subscriber_id": found.id,
                                  "email_key": found.key, "hash": hashed,
                                  "suppress": bool(suppress and hashed is not None)}])
    files = _outbox_files_for(outboxes, found.email)
    failed: list[tuple[Path, str]] = []
    if delete_outbox:
        for path in files:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:  # the reader is forgotten already: say what is left
                failed.append((path, exc.strerror or type(exc).__name__))
    return Removal(found, deliveries, erased, files, delete_outbox, suppress, failed)


def erase_rows(db: sqlite_utils.Database, subscriber_id: int, key: str, hashed: str | None,
               *, suppress: bool) -> tuple[int, int]:
    """Forget a reader inside the caller's transaction: (deliveries unlinked, events erased).

    `subscribers remove` calls it, and a restore replaying the journal's `erase` entry.
    """
    # Not yet sent (a send stopped half-way): never sent now, to an address or a hash.
    db.execute(
        "UPDATE deliveries SET state = 'skipped', error = 'the reader was forgotten' "
        "WHERE state IN ('queued', 'uncertain') AND (subscriber_id = ? OR lower(email) = ?)",
        [subscriber_id, key],
    )
    if hashed is not None:
        cursor = db.execute(
            "UPDATE deliveries SET subscriber_id = NULL, email = ? "
            "WHERE subscriber_id = ? OR lower(email) = ?",
            [f"forgotten:{hashed}", subscriber_id, key],
        )
    else:
        cursor = db.execute(
            "UPDATE deliveries SET subscriber_id = NULL WHERE subscriber_id = ?", [subscriber_id]
        )
    deliveries = cursor.rowcount
    erased = events.erase(db, subscriber_id)
    erased += db.execute("DELETE FROM events WHERE lower(email) = ?", [key]).rowcount
    # The confirmation emails queued for them (sent or not) hold the address: gone too.
    db.execute("DELETE FROM outgoing WHERE subscriber_id = ? OR lower(email) = ?",
               [subscriber_id, key])
    engagement.forget(db, key)  # their clicks and opens, when [analytics] per_reader named them
    db.execute("DELETE FROM subscribers WHERE id = ?", [subscriber_id])
    if suppress and hashed is not None:
        db.execute(
            "INSERT OR IGNORE INTO suppressions (address_hash, reason, created_at) "
            "VALUES (?, 'forgotten', ?)", [hashed, now_iso()],
        )
    return deliveries, erased


@dataclass(frozen=True)
class Profile:
    """One reader and their history, for `subscribers show`."""

    subscriber: Subscriber
    history: list[events.Event]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the subscriber's fields and `history`, oldest first."""
        return {**self.subscriber.as_dict(),
                "history": [dict(e.__dict__) for e in self.history]}


def show(db: sqlite_utils.Database, email: str) -> Profile:
    """The subscriber with this address and their events; SubscriberError when not on the list."""
    found = _require(db, email)
    return Profile(found, events.history(db, found.id))


def count_by_status(
    db: sqlite_utils.Database, tag: str | Segment | None = None
) -> dict[str, int]:
    """How many subscribers have each status (every status listed, zeros included)."""
    counts = dict.fromkeys(STATUSES, 0)
    where, params = _filters(db, None, tag, None)
    for status, n in db.execute(
        f"SELECT status, count(*) FROM subscribers{where} GROUP BY status", params
    ):
        counts[status] = n
    return counts


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def segment_for(
    to: str | None = None, tag: str | None = None, topics: Sequence[str] = (),
) -> Segment | None:
    """The readers `--to EXPR` (or its alias `--tag EXPR`, where `tag:` is optional) name;
    None for the whole list (`--to subscribers`, or neither). `topics`: [subscribe] topics."""
    if to is not None and tag is not None:
        raise SubscriberError("--to and --tag name the same thing: give one of them")
    if to is not None and to.strip().lower() in ("subscribers", "list", "all"):
        return None
    if to is not None:
        if any("@" in part and '"' not in part and "=" not in part
               for part in to.split(",")):
            raise SubscriberError(
                f"{GRAMMAR}; here it takes a segment, not addresses ({to!r}): "
                "`newsletter subscribers show EMAIL` shows one reader")
        return replace(parse_segment(to, option="--to"), known_topics=tuple(topics))
    if tag is not None:
        return replace(parse_segment(tag, option="--tag", bare_is_tag=True),
                       known_topics=tuple(topics))
    return None


def _filters(
    db: sqlite_utils.Database, status: str | None, tag: str | Segment | None,
    search: str | None,
) -> tuple[str, list[Any]]:
    """The WHERE clause (or '') and its parameters for the list filters."""
    where: list[str] = []
    params: list[Any] = []
    if status:
        where.append("status = ?")
        params.append(check_status(status))
    if tag:
        segment = segment_for(tag=tag) if isinstance(tag, str) else tag
        sql, tag_params = segment_where(db, segment) if segment else ("1", [])
        where.append(sql)
        params += tag_params
    if search:
        where.append("(email_key LIKE ? ESCAPE '\\' OR name LIKE ? ESCAPE '\\')")
        params += [_like(search.strip().lower()), _like(search.strip())]
    return (" WHERE " + " AND ".join(where) if where else ""), params


def _rows(
    db: sqlite_utils.Database, status: str | None = None, tag: str | Segment | None = None,
    search: str | None = None, limit: int | None = None,
) -> Iterator[tuple[Any, ...]]:
    """Raw rows (as COLUMNS) in id order, streamed from the cursor a thousand at a time."""
    where, params = _filters(db, status, tag, search)
    sql = _SELECT + where + " ORDER BY id"
    if limit is not None:
        if limit < 0:
            raise SubscriberError("--limit must be 0 or more")
        sql += " LIMIT ?"
        params.append(limit)
    cursor = db.conn.execute(sql, params)
    try:
        while batch := cursor.fetchmany(1000):
            yield from batch
    finally:
        cursor.close()


def count(
    db: sqlite_utils.Database, status: str | None = None, tag: str | Segment | None = None,
    search: str | None = None,
) -> int:
    """How many subscribers match the list filters."""
    where, params = _filters(db, status, tag, search)
    return db.execute("SELECT count(*) FROM subscribers" + where, params).fetchone()[0]


def iter_subscribers(
    db: sqlite_utils.Database,
    status: str | None = None,
    tag: str | Segment | None = None,
    search: str | None = None,
    limit: int | None = None,
) -> Iterator[Subscriber]:
    """Subscribers in the order they were added, streamed (memory does not grow with the list).

    `search` matches part of the address or the name, ignoring case; `tag` is a tag
    expression (`founders`, `a+b`, `a,-b`) or a Segment (see audience/segments.py).
    """
    for row in _rows(db, status, tag, search, limit):
        yield Subscriber.from_row(row)


def export_csv(
    db: sqlite_utils.Database,
    out: TextIO,
    status: str | None = None,
    tag: str | Segment | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write subscribers as CSV in our own format (which `import` reads back); return the count.

    Tags and attributes are JSON so they come back exactly. `progress(done, total)`
    is called every few thousand rows when given.
    """
    if status:
        check_status(status)  # before the header: a typo must not leave a header-only file
    total = count(db, status, tag) if progress else 0
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_HEADER)
    n = 0
    for row in _rows(db, status, tag):
        # Stored JSON is written as is: no decoding and encoding per row. Tags and
        # attributes start with [ or {, dates with a digit: only these can look like formulas.
        email, name, status, tags, attributes, source, *rest = row[1:]
        writer.writerow([escape_cell(email), escape_cell(name), status, tags, attributes,
                         escape_cell(source), *(v if v is not None else "" for v in rest)])
        n += 1
        if progress and n % 10000 == 0:
            progress(n, total)
    if progress:
        progress(n, total)
    return n


def is_database_file(db: sqlite_utils.Database, path: Path) -> bool:
    """Whether `path` is this database's file (or its -wal/-shm): never a place to write to."""
    main = next((r[2] for r in db.execute("PRAGMA database_list") if r[1] == "main"), "")
    database_files = {Path(main + suffix).resolve() for suffix in ("", "-wal", "-shm")}
    return bool(main) and path.resolve() in database_files


def export_file(
    db: sqlite_utils.Database,
    path: Path,
    status: str | None = None,
    tag: str | Segment | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """`export_csv` into a file, written beside it and renamed: never half a file."""
    if is_database_file(db, path):
        # The rename would put a CSV where the list was: every subscriber gone.
        raise SubscriberError(f"-o {path} is the database itself: export to another file")
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "w", encoding="utf-8", newline="") as out:
            n = export_csv(db, out, status=status, tag=tag, progress=progress)
        partial.replace(path)
    except OSError as exc:
        raise SubscriberError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)
    return n


# --- topics: what a reader chose to get --------------------------------------------------
#
# Stored apart from tags, in `subscribers.topics`: NULL is "everything" (every issue, with
# or without a topic, and topics added later): imported and existing readers, and a reader
# who ticks "everything"; a JSON list is the topics the reader ticked, and '[]' a reader who
# unticked every topic, who then gets only issues without a topic.


@dataclass(frozen=True)
class TopicChoice:
    """What a reader gets: every issue (`everything`), or issues without a topic and those
    with one of `chosen`."""

    everything: bool
    chosen: tuple[str, ...] = ()

    def describe(self) -> str:
        """For people and the events record: "everything", "links, essays", "no topics"."""
        if self.everything:
            return "everything"
        return ", ".join(self.chosen) or "no topics (only issues without a topic)"


EVERYTHING = TopicChoice(everything=True)


def topic_choice(db: sqlite_utils.Database, subscriber_id: int,
                 known: Sequence[str] = ()) -> TopicChoice:
    """The reader's stored choice; with `known` (the [subscribe] topics) only those remain,
    in their order."""
    row = db.execute("SELECT topics FROM subscribers WHERE id = ?", [subscriber_id]).fetchone()
    if row is None:
        raise SubscriberError(f"no subscriber has the id {subscriber_id}")
    if row[0] is None:
        return EVERYTHING
    chosen = [t for t in json.loads(row[0]) if isinstance(t, str)]
    if known:
        wanted = {t.casefold() for t in chosen}
        chosen = [t for t in known if t.casefold() in wanted]
    return TopicChoice(False, tuple(chosen))


def set_topic_choice(db: sqlite_utils.Database, subscriber_id: int, choice: TopicChoice) -> None:
    """Store what the reader chose (inside the caller's transaction)."""
    db.execute("UPDATE subscribers SET topics = ? WHERE id = ?",
               [None if choice.everything else _dumps(list(choice.chosen)), subscriber_id])
    changes.append(db.conn, [changes.reader_op(db.conn, subscriber_id)])  # a restore keeps it


# The sign-up and /manage forms post `topics` (one per ticked topic), `everything` (the
# "everything" box) and `topics_shown` (a hidden field: the form offered topics, so no
# ticked box means "none", not "this form had no boxes").
def topic_choice_from_form(known: Sequence[str], form: Mapping[str, Sequence[str]]
                           ) -> TopicChoice | None:
    """The reader's choice as a form posted it; None when the form offered no topics and
    posted none (an embedded form without boxes: keep what the reader had).

    "Everything" ticked stays everything when the topic boxes are all ticked (as the page
    shows it) or all left empty; a topic unticked beside it is honoured: that topic is not
    wanted, so the reader gets the ticked ones.
    """
    posted = {t.casefold() for t in form.get("topics", ()) if isinstance(t, str)}
    ticked = tuple(t for t in known if t.casefold() in posted)
    shown = bool(form.get("topics_shown"))
    if not shown and not form.get("everything"):
        return TopicChoice(False, ticked) if ticked else None
    if form.get("everything") and len(ticked) in (0, len(known)):
        return EVERYTHING
    return TopicChoice(False, ticked)
