"""Platform exports: how each one is recognised by its header and read row by row.

Each format turns a row of its platform's CSV into a `Record` (address, name, status
mapped faithfully, tags, attributes, consent dates); a sheet no platform claims is read
as long as one column holds the addresses. The engine that applies them is importers.py.
"""

from __future__ import annotations

import ast
import csv
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from newsletter.audience.subscribers import STATUSES, clean_tags, unescape_cell
from newsletter.errors import SubscriberError


class RowError(Exception):
    """A row that cannot be imported: `kind` groups it in the summary, the message says why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Record:
    """One subscriber as read from a file, before validation of the address."""

    email: str
    name: str = ""
    status: str = "active"
    tags: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    confirmed_at: str | None = None
    unsubscribed_at: str | None = None
    optin_ip: str | None = None
    source: str = ""  # only our own format carries one
    updated_at: str | None = None  # only our own format carries one


# --- field helpers ------------------------------------------------------------------

_PLAIN_DATE = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")


def parse_date(text: str, column: str = "date") -> str | None:
    """An export's date as ISO 8601 UTC (`2024-01-31T09:00:00Z`); None when empty.

    Naive times are taken as UTC (Mailchimp, Substack and others export UTC).
    """
    text = text.strip()
    if not text:
        return None
    if len(text) == 19 and _PLAIN_DATE.fullmatch(text):  # the common case, cheaply
        return f"{text[:10]}T{text[11:]}Z"
    cleaned = text.removesuffix(" UTC").removesuffix(" GMT")
    try:
        when = datetime.fromisoformat(cleaned)
    except ValueError:
        raise RowError(
            "bad date", f"{column} {text!r} is not a date like 2024-01-31 09:00:00"
        ) from None
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0", ""})


def parse_bool(text: str, column: str) -> bool:
    """A true/false cell; anything else is a bad row."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise RowError("bad value", f"{column} {text!r} is neither true nor false")


def parse_tags(text: str) -> list[str]:
    """Tags from a cell: a JSON or Python list, or a comma list (Mailchimp quotes each tag)."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        for loader in (json.loads, ast.literal_eval):
            try:
                value = loader(text)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, list):
                return clean_tags(str(v) for v in value)
    return clean_tags(next(csv.reader([text], skipinitialspace=True), []))


def parse_object(text: str, column: str) -> dict[str, Any]:
    """A JSON object cell (Python dict syntax tolerated); empty means {}."""
    text = text.strip()
    if not text:
        return {}
    for loader in (json.loads, ast.literal_eval):
        try:
            value = loader(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
        break
    raise RowError("bad attributes", f"{column} is not a JSON object: {text[:60]!r}")


def join_name(*parts: str) -> str:
    """First and last names joined with a space, blanks dropped."""
    return " ".join(p for p in parts if p)


class Columns:
    """Header lookup by name, ignoring case and surrounding spaces."""

    def __init__(self, header: Sequence[str]) -> None:
        self.header = [h.strip() for h in header]
        self._index: dict[str, int] = {}
        for i, name in enumerate(self.header):
            self._index.setdefault(name.lower(), i)

    def has(self, *names: str) -> bool:
        return all(n.lower() in self._index for n in names)

    def missing(self, *names: str) -> list[str]:
        return [n for n in names if n.lower() not in self._index]

    def index(self, name: str) -> int | None:
        return self._index.get(name.lower())

    def getter(self, name: str) -> Callable[[Sequence[str]], str]:
        """A fast accessor for one column: '' when the column or the cell is absent."""
        i = self.index(name)
        if i is None:
            return lambda row: ""
        return lambda row: row[i].strip() if i < len(row) else ""


def _status(value: str, mapping: dict[str, str], column: str = "status") -> str:
    status = mapping.get(value.strip().lower())
    if status is None:
        raise RowError(
            "unknown status",
            f"{column} {value!r} is not one this importer knows ({', '.join(sorted(mapping))})",
        )
    return status


# --- the readers ------------------------------------------------------------------

Mapper = Callable[[Sequence[str]], Record]


@dataclass(frozen=True)
class Format:
    """A platform's export: how to recognise its header and read its rows."""

    name: str
    title: str
    required: tuple[str, ...]  # columns --format NAME needs
    detect: Callable[[Columns], bool]
    mapper: Callable[[Columns], Mapper]


def _newsletter(cols: Columns) -> Mapper:
    email, name, status = cols.getter("email"), cols.getter("name"), cols.getter("status")
    tags, attrs, source = cols.getter("tags"), cols.getter("attributes"), cols.getter("source")
    created, updated = cols.getter("created_at"), cols.getter("updated_at")
    confirmed, unsub, ip = (
        cols.getter("confirmed_at"), cols.getter("unsubscribed_at"), cols.getter("optin_ip"),
    )
    statuses = {s: s for s in STATUSES}

    def read(row: Sequence[str]) -> Record:
        return Record(
            email=unescape_cell(email(row)), name=unescape_cell(name(row)),
            status=_status(status(row) or "active", statuses),
            tags=parse_tags(tags(row)), attributes=parse_object(attrs(row), "attributes"),
            created_at=parse_date(created(row), "created_at"),
            confirmed_at=parse_date(confirmed(row), "confirmed_at"),
            unsubscribed_at=parse_date(unsub(row), "unsubscribed_at"),
            optin_ip=ip(row) or None, source=unescape_cell(source(row)),
            updated_at=parse_date(updated(row), "updated_at"),
        )

    return read


def _substack(cols: Columns) -> Mapper:
    email, disabled = cols.getter("email"), cols.getter("email_disabled")
    paid, plan, expiry = (
        cols.getter("active_subscription"), cols.getter("plan"), cols.getter("expiry"),
    )
    created = cols.getter("created_at")

    def read(row: Sequence[str]) -> Record:
        # `paid` is always written, true or false (comp and gift subscriptions are active
        # ones in Substack's export): a re-import after a subscription lapsed turns it off,
        # so `--to paid=true` never reaches a reader who stopped paying.
        attributes: dict[str, Any] = {
            "paid": parse_bool(paid(row), "active_subscription")}
        if plan(row):
            attributes["plan"] = plan(row)
        if expiry(row):
            attributes["expiry"] = expiry(row)
        stopped = parse_bool(disabled(row), "email_disabled")
        return Record(
            email=email(row), status="unsubscribed" if stopped else "active",
            attributes=attributes, created_at=parse_date(created(row), "created_at"),
        )

    return read


# Mailchimp's own columns are upper case (OPTIN_TIME, TAGS…); the list's merge
# fields (First Name, Phone…) are not, and become attributes.
_MAILCHIMP_SYSTEM = re.compile(r"[A-Z0-9_]+")


def _mailchimp(cols: Columns) -> Mapper:
    email, first, last = (
        cols.getter("Email Address"), cols.getter("First Name"), cols.getter("Last Name"),
    )
    optin, optin_ip = cols.getter("OPTIN_TIME"), cols.getter("OPTIN_IP")
    confirm, confirm_ip = cols.getter("CONFIRM_TIME"), cols.getter("CONFIRM_IP")
    tags = cols.getter("TAGS")
    # Which of the three files: subscribed, unsubscribed or cleaned (bounced).
    if cols.has("UNSUB_TIME"):
        status, stopped_at = "unsubscribed", cols.getter("UNSUB_TIME")
    elif cols.has("CLEAN_TIME"):
        status, stopped_at = "bounced", cols.getter("CLEAN_TIME")
    else:
        status, stopped_at = "active", (lambda row: "")
    skip = {"email address", "first name", "last name"}
    extra = [
        (i, h) for i, h in enumerate(cols.header)
        if h and h.lower() not in skip and not _MAILCHIMP_SYSTEM.fullmatch(h)
    ]

    def read(row: Sequence[str]) -> Record:
        attributes = {}
        for i, h in extra:
            if i < len(row) and (value := row[i].strip()):
                attributes[h] = value
        optin_at = parse_date(optin(row), "OPTIN_TIME")
        confirmed_at = parse_date(confirm(row), "CONFIRM_TIME")
        return Record(
            email=email(row), name=join_name(first(row), last(row)), status=status,
            tags=parse_tags(tags(row)), attributes=attributes,
            created_at=optin_at or confirmed_at, confirmed_at=confirmed_at,
            unsubscribed_at=parse_date(stopped_at(row), "UNSUB_TIME/CLEAN_TIME"),
            optin_ip=optin_ip(row) or confirm_ip(row) or None,
        )

    return read


_BUTTONDOWN_STATUS = {
    "regular": "active", "premium": "active", "gifted": "active", "trialed": "active",
    "churning": "active", "past_due": "active", "paused": "unsubscribed",
    "unactivated": "pending", "unpaid": "active", "spammy": "pending",
    "unsubscribed": "unsubscribed", "removed": "unsubscribed",
    "undeliverable": "bounced", "bounced": "bounced", "complained": "complained",
}


def _buttondown(cols: Columns) -> Mapper:
    email, notes, kind = cols.getter("email"), cols.getter("notes"), cols.getter("subscriber_type")
    created, ip = cols.getter("creation_date"), cols.getter("ip_address")
    subscribed, unsubscribed = cols.getter("subscription_date"), cols.getter("unsubscription_date")
    tags, metadata = cols.getter("tags"), cols.getter("metadata")
    kept = [(n, cols.getter(n)) for n in
            ("referrer_url", "utm_source", "utm_medium", "utm_campaign")]

    def read(row: Sequence[str]) -> Record:
        attributes = parse_object(metadata(row), "metadata")
        if notes(row):
            attributes["notes"] = notes(row)
        for name, get in kept:
            if value := get(row):
                attributes[name] = value
        stated = attributes.get("name")
        return Record(
            email=email(row), name=stated if isinstance(stated, str) else "",
            status=_status(kind(row) or "regular", _BUTTONDOWN_STATUS, "subscriber_type"),
            tags=parse_tags(tags(row)), attributes=attributes,
            created_at=parse_date(created(row), "creation_date"),
            confirmed_at=parse_date(subscribed(row), "subscription_date"),
            unsubscribed_at=parse_date(unsubscribed(row), "unsubscription_date"),
            optin_ip=ip(row) or None,
        )

    return read


_LISTMONK_STATUS = {"enabled": "active", "disabled": "unsubscribed", "blocklisted": "unsubscribed"}


def _listmonk(cols: Columns) -> Mapper:
    email, name, attrs = cols.getter("email"), cols.getter("name"), cols.getter("attributes")
    status, created = cols.getter("status"), cols.getter("created_at")

    def read(row: Sequence[str]) -> Record:
        return Record(
            email=email(row), name=name(row),
            status=_status(status(row) or "enabled", _LISTMONK_STATUS),
            attributes=parse_object(attrs(row), "attributes"),
            created_at=parse_date(created(row), "created_at"),
        )

    return read


def _ghost(cols: Columns) -> Mapper:
    email, name, note = cols.getter("email"), cols.getter("name"), cols.getter("note")
    subscribed, created = cols.getter("subscribed_to_emails"), cols.getter("created_at")
    deleted, labels, tiers = cols.getter("deleted_at"), cols.getter("labels"), cols.getter("tiers")

    def read(row: Sequence[str]) -> Record:
        attributes = {}
        if note(row):
            attributes["note"] = note(row)
        if tiers(row):
            attributes["tiers"] = tiers(row)
        deleted_at = parse_date(deleted(row), "deleted_at")
        wants_email = parse_bool(subscribed(row) or "true", "subscribed_to_emails")
        return Record(
            email=email(row), name=name(row),
            status="active" if wants_email and not deleted_at else "unsubscribed",
            tags=parse_tags(labels(row)), attributes=attributes,
            created_at=parse_date(created(row), "created_at"), unsubscribed_at=deleted_at,
        )

    return read


_BEEHIIV_STATUS = {
    "active": "active", "validating": "pending", "pending": "pending",
    "needs_attention": "pending", "inactive": "unsubscribed", "unsubscribed": "unsubscribed",
    "invalid": "bounced", "bounced": "bounced", "complained": "complained",
}


def _beehiiv(cols: Columns) -> Mapper:
    email, first, last = cols.getter("email"), cols.getter("First Name"), cols.getter("Last Name")
    status, unsub = cols.getter("status"), cols.getter("unsubscribed_at")
    created = cols.getter("created_at") if cols.has("created_at") else cols.getter("created")
    tags = cols.getter("tags")
    kept = [(n, cols.getter(n)) for n in (
        "subscription_tier", "utm_source", "utm_medium", "utm_channel", "utm_campaign",
        "referring_site", "referral_code",
    ) if cols.has(n)]

    def read(row: Sequence[str]) -> Record:
        attributes = {name: value for name, get in kept if (value := get(row))}
        return Record(
            email=email(row), name=join_name(first(row), last(row)),
            status=_status(status(row) or "active", _BEEHIIV_STATUS),
            tags=parse_tags(tags(row)), attributes=attributes,
            created_at=parse_date(created(row), "created_at"),
            unsubscribed_at=parse_date(unsub(row), "unsubscribed_at"),
        )

    return read


def _plain(cols: Columns) -> Mapper:
    email_i = cols.index("email")
    email_i = 0 if email_i is None else email_i
    name_i = cols.index("name")
    name_i = (1 if email_i == 0 else 0) if name_i is None else name_i

    def read(row: Sequence[str]) -> Record:
        if len(row) > 2:
            raise RowError("too many fields", f"{len(row)} fields where email,name was expected")
        email = row[email_i].strip() if email_i < len(row) else ""
        name = row[name_i].strip() if name_i < len(row) else ""
        return Record(email=email, name=name)

    return read


def is_plain(cols: Columns) -> bool:
    names = [h.lower() for h in cols.header]
    return names in (["email"], ["email", "name"], ["name", "email"], ["email address"]) or (
        len(names) <= 2 and "@" in (cols.header[0] if cols.header else "")
    )


_EMAIL_COLUMNS = ("email", "email address", "e-mail", "e-mail address", "email_address")
_NAME_COLUMNS = ("name", "full name", "full_name")
_FIRST_COLUMNS = ("first name", "first_name", "firstname")
_LAST_COLUMNS = ("last name", "last_name", "lastname")
_TAG_COLUMNS = ("tags", "tag")
# The reader's own sign-up date: `stats` dates their join by it, not by the import.
_JOINED_COLUMNS = ("created_at", "created", "subscribed_at", "signup_date", "sign_up_date",
                   "joined", "joined_at", "date_subscribed", "subscription_date")


def _first_of(cols: Columns, names: Sequence[str]) -> int | None:
    return next((i for n in names if (i := cols.index(n)) is not None), None)


def _has_email_column(cols: Columns) -> bool:
    return _first_of(cols, _EMAIL_COLUMNS) is not None


def _sheet(cols: Columns) -> Mapper:
    """Any sheet with an email column (a mail-merge list): a tags (or tag) column gives the
    tags, split like the platforms' ("a, b" or a JSON list); every other column an attribute."""
    email_i = _first_of(cols, _EMAIL_COLUMNS)
    name_i, first_i, last_i = (
        _first_of(cols, _NAME_COLUMNS), _first_of(cols, _FIRST_COLUMNS),
        _first_of(cols, _LAST_COLUMNS),
    )
    tags_i = _first_of(cols, _TAG_COLUMNS)
    joined_i = _first_of(cols, _JOINED_COLUMNS)
    used = {email_i, name_i, first_i, last_i, tags_i, joined_i}
    extra = [(i, h) for i, h in enumerate(cols.header) if h and i not in used]

    def cell(row: Sequence[str], i: int | None) -> str:
        return row[i].strip() if i is not None and i < len(row) else ""

    def read(row: Sequence[str]) -> Record:
        attributes = {h: value for i, h in extra if (value := cell(row, i))}
        name = cell(row, name_i) or join_name(cell(row, first_i), cell(row, last_i))
        joined = cell(row, joined_i)
        return Record(email=cell(row, email_i), name=name, tags=parse_tags(cell(row, tags_i)),
                      attributes=attributes,
                      created_at=parse_date(joined, cols.header[joined_i])
                      if joined_i is not None else None)

    return read


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("newsletter", "newsletter export", ("email", "name", "status", "tags"),
           lambda c: [h.lower() for h in c.header[:4]] == ["email", "name", "status", "tags"],
           _newsletter),
    Format("substack", "Substack", ("email", "active_subscription", "email_disabled"),
           lambda c: c.has("email", "active_subscription", "email_disabled"), _substack),
    Format("mailchimp", "Mailchimp", ("Email Address",),
           lambda c: c.has("Email Address"), _mailchimp),
    Format("buttondown", "Buttondown", ("email", "subscriber_type"),
           lambda c: c.has("email", "secondary_id", "subscriber_type"), _buttondown),
    Format("listmonk", "listmonk", ("email", "status"),
           lambda c: c.has("uuid", "email", "attributes", "status"), _listmonk),
    Format("ghost", "Ghost", ("email", "subscribed_to_emails"),
           lambda c: c.has("email", "subscribed_to_emails"), _ghost),
    Format("beehiiv", "beehiiv", ("email", "status"),
           lambda c: c.has("email", "First Name", "Last Name", "status"), _beehiiv),
    Format("plain", "plain list", (), is_plain, _plain),
    # Last: a sheet no platform claims, as long as one column holds the addresses.
    Format("sheet", "spreadsheet", ("email",), _has_email_column, _sheet),
)}

FORMAT_NAMES = ("auto", *FORMATS)


def _detect(cols: Columns) -> Format | None:
    return next((fmt for fmt in FORMATS.values() if fmt.detect(cols)), None)


def _no_email_column(where: str, cols: Columns, other_formats: bool) -> SubscriberError:
    """No format fits, as no column is named for the addresses (a sheet with one would be
    read): say which name to give it."""
    shown = ",".join(cols.header[:8]) + (",…" if len(cols.header) > 8 else "")
    fix = f", or pass --format with one of {', '.join(FORMATS)}" if other_formats else ""
    return SubscriberError(
        f"{where}: no column holds the email addresses (header: {shown}): name the column "
        f'that has them "email" and import again{fix}'
    )


def detect_format(header: Sequence[str], where: str) -> Format:
    """The format whose header this is; SubscriberError saying how to choose when none fits."""
    cols = Columns(header)
    fmt = _detect(cols)
    if fmt is None:
        raise _no_email_column(where, cols, other_formats=True)
    return fmt


def get_format(name: str, header: Sequence[str], where: str) -> Format:
    """The format named by --format (checking its columns are there), or the detected one."""
    if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
        # Excel in many locales saves "CSV" with semicolons; read as commas, every row is one
        # cell and no format fits (or, forced, every row is an "invalid address").
        separator = "semicolons" if ";" in header[0] else "tabs"
        raise SubscriberError(
            f"{where} separates its columns with {separator}, not commas: save it again as "
            "comma-separated CSV (in Excel: CSV UTF-8) and import that"
        )
    if name == "auto":
        return detect_format(header, where)
    fmt = FORMATS.get(name)
    if fmt is None:
        raise SubscriberError(f"unknown format {name!r}: use one of {', '.join(FORMAT_NAMES)}")
    cols = Columns(header)
    missing = [] if fmt.name == "sheet" and _has_email_column(cols) else cols.missing(*fmt.required)
    if missing and _detect(cols) is None:
        raise _no_email_column(where, cols, other_formats=False)  # auto would not help either
    if missing:
        raise SubscriberError(
            f"{where} is not a {fmt.title} export: it has no {', '.join(missing)} column; "
            "try --format auto"
        )
    return fmt
