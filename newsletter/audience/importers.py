"""Imports: one reader per platform export, and one engine that applies them safely.

Each reader turns a row of its platform's CSV into a `Record`: address, name,
status (mapped faithfully), tags, attributes and consent dates. The engine
streams the file, validates and normalizes every address, stages the rows in
a temporary table (duplicates inside the file folded there, so memory does not
grow with the file), then merges them into `subscribers` in ONE transaction:
killed half-way, the database is as before. The merge never turns an
unsubscribed, bounced or complained subscriber back into active.
"""

from __future__ import annotations

import ast
import csv
import json
import re
import shutil
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import sqlite_utils

from newsletter.audience.subscribers import (
    MAX_NAME,
    STATUSES,
    address_hash,
    clean_name,
    clean_tags,
    email_key,
    is_database_file,
    name_too_long,
    normalize_email,
    now_iso,
    unescape_cell,
)
from newsletter.errors import SubscriberError

BATCH = 5000
MAX_EXAMPLES = 10


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
        attributes: dict[str, Any] = {}
        if parse_bool(paid(row), "active_subscription"):
            attributes["paid"] = True
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
        name = attributes.get("name")
        return Record(
            email=email(row), name=name if isinstance(name, str) else "",
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


def _is_plain(cols: Columns) -> bool:
    names = [h.lower() for h in cols.header]
    return names in (["email"], ["email", "name"], ["name", "email"], ["email address"]) or (
        len(names) <= 2 and "@" in (cols.header[0] if cols.header else "")
    )


_EMAIL_COLUMNS = ("email", "email address", "e-mail", "e-mail address", "email_address")
_NAME_COLUMNS = ("name", "full name", "full_name")
_FIRST_COLUMNS = ("first name", "first_name", "firstname")
_LAST_COLUMNS = ("last name", "last_name", "lastname")


def _first_of(cols: Columns, names: Sequence[str]) -> int | None:
    return next((i for n in names if (i := cols.index(n)) is not None), None)


def _has_email_column(cols: Columns) -> bool:
    return _first_of(cols, _EMAIL_COLUMNS) is not None


def _sheet(cols: Columns) -> Mapper:
    """Any sheet with an email column (a mail-merge list): every other column an attribute."""
    email_i = _first_of(cols, _EMAIL_COLUMNS)
    name_i, first_i, last_i = (
        _first_of(cols, _NAME_COLUMNS), _first_of(cols, _FIRST_COLUMNS),
        _first_of(cols, _LAST_COLUMNS),
    )
    used = {email_i, name_i, first_i, last_i}
    extra = [(i, h) for i, h in enumerate(cols.header) if h and i not in used]

    def cell(row: Sequence[str], i: int | None) -> str:
        return row[i].strip() if i is not None and i < len(row) else ""

    def read(row: Sequence[str]) -> Record:
        attributes = {h: value for i, h in extra if (value := cell(row, i))}
        name = cell(row, name_i) or join_name(cell(row, first_i), cell(row, last_i))
        return Record(email=cell(row, email_i), name=name, attributes=attributes)

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
    Format("plain", "plain list", (), _is_plain, _plain),
    # Last: a sheet no platform claims, as long as one column holds the addresses.
    Format("sheet", "spreadsheet", ("email",), _has_email_column, _sheet),
)}

FORMAT_NAMES = ("auto", *FORMATS)


def detect_format(header: Sequence[str], where: str) -> Format:
    """The format whose header this is; SubscriberError saying how to choose when none fits."""
    cols = Columns(header)
    for fmt in FORMATS.values():
        if fmt.detect(cols):
            return fmt
    shown = ",".join(cols.header[:8]) + (",…" if len(cols.header) > 8 else "")
    raise SubscriberError(
        f"{where}: cannot tell which platform this export comes from (header: {shown}): "
        f"pass --format with one of {', '.join(FORMATS)}"
    )


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
    if missing:
        raise SubscriberError(
            f"{where} is not a {fmt.title} export: it has no {', '.join(missing)} column; "
            "try --format auto"
        )
    return fmt


# --- reading files ----------------------------------------------------------------


@dataclass
class Sheet:
    """One CSV inside the file (a ZIP holds several): its name, header and data rows."""

    name: str
    header: list[str]
    rows: Iterator[tuple[int, list[str]]]  # (line number where the row starts, fields)
    has_header: bool


MAX_LINE = 1024 * 1024  # one line (or one cell) of a list export; a runaway is not read whole
_CHUNK = 64 * 1024


class _TooLong(Exception):
    """A physical line longer than MAX_LINE."""


def _physical_lines(binary: BinaryIO, counter: list[int]) -> Iterator[bytes]:
    """The file's lines (ending kept: \n, \r\n or a lone \r), read in chunks.

    Memory stays flat: a line longer than MAX_LINE stops the reading (`_TooLong`) instead
    of being gathered whole. `counter[0]` is the number of the line last yielded.
    """
    buffer = b""
    first = True
    while chunk := binary.read(_CHUNK):
        if first:
            chunk, first = chunk.removeprefix(b"\xef\xbb\xbf"), False  # a UTF-8 BOM
        # bytes.splitlines splits at \n, \r\n and \r only (never inside UTF-8 characters).
        parts = (buffer + chunk).splitlines(keepends=True)
        buffer = parts.pop() if parts else b""
        if buffer.endswith(b"\n"):
            parts.append(buffer)  # complete; a lone \r at the end may have its \n next
            buffer = b""
        for part in parts:
            counter[0] += 1
            yield part
        if len(buffer) > MAX_LINE:
            counter[0] += 1
            raise _TooLong
    if buffer:
        counter[0] += 1
        yield buffer


def _csv_rows(binary: BinaryIO, where: str) -> Iterator[tuple[int, list[str]]]:
    raw: list[str] = []  # the physical lines of the row csv is reading
    physical = [0]  # the number of the line being read

    def lines() -> Iterator[str]:
        for data in _physical_lines(binary, physical):
            if len(data) > MAX_LINE:
                raise _TooLong
            text = data.decode("utf-8")  # per line: an error names the very line
            raw.append(text)
            yield text

    reader = csv.reader(lines(), strict=False)
    line = 1
    unclosed: int | None = None  # start line of the last row, when it may end inside a quote
    try:
        for row in reader:
            # A row over several lines with an odd number of quotes may be a quote opened and
            # never closed; it is one only if csv ran into the end of the file with it.
            multiline = reader.line_num > line and "".join(raw).count('"') % 2 == 1
            unclosed = line if multiline else None
            raw.clear()
            yield line, row
            line = reader.line_num + 1
        if unclosed is not None:
            # csv read the rest of the file as one cell: every row after the quote would be
            # lost as a single "invalid address".
            raise SubscriberError(
                f"{where} line {unclosed}: a quote opens here and is never closed, so the rest "
                "of the file reads as one cell: fix the quoting there and import again"
            )
    except _TooLong:
        raise SubscriberError(
            f"{where} line {physical[0]} is longer than {MAX_LINE // (1024 * 1024)} MiB: "
            "no list export has lines like that; check that this is the right file"
        ) from None
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise SubscriberError(
                f"{where} line {line}: a cell is longer than {MAX_LINE // (1024 * 1024)} MiB "
                "(a quote opened and never closed?): fix the quoting there and import again"
            ) from None
        raise SubscriberError(
            f"{where} line {line}: {exc}: fix the quoting there and import again"
        ) from None
    except UnicodeDecodeError:
        raise SubscriberError(
            f"{where} line {physical[0]} is not UTF-8 text: save the file as UTF-8 (CSV UTF-8 "
            "in Excel) and import again"
        ) from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # a damaged or cut-off ZIP
        raise SubscriberError(
            f"{where} is damaged near line {line} ({exc}): download the export again"
        ) from None


def _open_sheet(binary: BinaryIO, name: str) -> Sheet:
    # Bytes are split into lines and decoded one line at a time (see _csv_rows); csv gets
    # each line with its ending, so CRLF and newlines inside quotes work.
    rows = _csv_rows(binary, name)
    for line, header in rows:
        if any(cell.strip() for cell in header):
            header = [h.strip() for h in header]
            cols = Columns(header)
            if _is_plain(cols) and "@" in header[0]:
                # A bare list of addresses has no header: its first row is data.
                def with_first(first: list[str] = header, first_line: int = line) -> Iterator:
                    yield first_line, first
                    yield from rows
                return Sheet(name, ["email", "name"][: max(len(header), 1)], with_first(), False)
            return Sheet(name, header, rows, True)
    raise SubscriberError(f"{name} is empty: export the list again and import that file")


csv.field_size_limit(MAX_LINE)  # big JSON attributes cells are fine; a runaway quote is not


# --- the engine ---------------------------------------------------------------------


@dataclass
class ImportSummary:
    """What an import did (or, with dry_run, would do)."""

    formats: list[str] = field(default_factory=list)
    rows: int = 0  # data rows read (blank lines not counted)
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # by reason
    examples: list[str] = field(default_factory=list)  # the first few skipped rows, with line
    dry_run: bool = False

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def lines(self) -> list[str]:
        """The summary as the CLI prints it."""
        verb = "Would import" if self.dry_run else "Imported"
        out = [
            f"{verb} {self.rows} rows ({', '.join(self.formats) or 'no data'}): "
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.skipped_total} skipped"
            + (" (" + ", ".join(f"{k}: {n}" for k, n in self.skipped.most_common()) + ")"
               if self.skipped else "")
        ]
        out += [f"  skipped {e}" for e in self.examples]
        more = self.skipped_total - len(self.examples)
        if more > 0:
            out.append(f"  … and {more} more skipped rows (keep them all with --rejects FILE)")
        if self.dry_run:
            out.append("Dry run: nothing was written.")
        return out


Progress = Callable[[str, int, int], None]  # (stage, done, total)

_STAGE_COLUMNS = (
    "email_key, email, name, status, tags, attributes, created_at, confirmed_at, "
    "unsubscribed_at, optin_ip, source, updated_at, line"
)
_STOPPED_SQL = "('unsubscribed','bounced','complained')"


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _dumps(value: Any) -> str:
    # Most rows have no tags or attributes: skip the encoder for those.
    return _encode(value) if value else ("[]" if isinstance(value, list) else "{}")


class _Rejects:
    """Collects skipped rows: counts, the first few for the summary, all of them in a file."""

    def __init__(self, summary: ImportSummary, path: Path | None, source: Path) -> None:
        self.summary = summary
        self.path = path
        # Gathered in an unnamed temporary file (gone with the process, even on kill -9),
        # then written beside and renamed when the import succeeds: a failed import leaves
        # an existing file at --rejects as it was, and no half-written one.
        self.partial = path.with_name(path.name + ".partial") if path else None
        if path is not None and path.resolve() == source.resolve():
            raise SubscriberError(
                f"--rejects {path} is the file being imported: it would be emptied before it is "
                "read; write the rejects to another file"
            )
        if path is not None and path.is_dir():
            raise SubscriberError(f"cannot write the rejects file {path}: Is a directory")
        try:
            self.file = (
                tempfile.TemporaryFile(  # noqa: SIM115
                    "w+", encoding="utf-8", newline="", dir=path.parent
                ) if path else None
            )
        except OSError as exc:
            raise SubscriberError(f"cannot write the rejects file {path}: {exc.strerror}") from None
        self.writer = csv.writer(self.file) if self.file else None
        self.header_for: str | None = None

    def add(self, where: str, kind: str, message: str, row: Sequence[str] = (),
            header: Sequence[str] = ()) -> None:
        self.summary.skipped[kind] += 1
        if len(self.summary.examples) < MAX_EXAMPLES:
            self.summary.examples.append(f"{where}: {message}")
        if self.writer is not None:
            if self.header_for is None:
                self.header_for = where
                self.writer.writerow(["where", "reason", *header])
            self.writer.writerow([where, message, *row])

    def close(self, keep: bool) -> None:
        if self.file and self.partial and self.path:
            if not keep:
                self.file.close()
                return
            try:
                self.file.seek(0)
                with open(self.partial, "w", encoding="utf-8", newline="") as out:
                    shutil.copyfileobj(self.file, out)
                self.file.close()
                self.partial.replace(self.path)
            except OSError as exc:
                self.partial.unlink(missing_ok=True)
                raise SubscriberError(
                    f"cannot write the rejects file {self.path}: {exc.strerror}"
                ) from None


def import_file(
    db: sqlite_utils.Database,
    path: Path,
    format: str = "auto",
    tags: Sequence[str] = (),
    dry_run: bool = False,
    rejects: Path | None = None,
    progress: Progress | None = None,
    secret: bytes | None = None,
    welcome: bool = False,
) -> ImportSummary:
    """Import a platform's export (CSV, or Mailchimp's or Substack's ZIP) into the list.

    The whole file goes in as one transaction, or nothing does (a bad file, an
    interruption, `dry_run`). Rows that cannot be imported are skipped and
    counted by reason, with their line numbers (all of them in `rejects` when
    given). `tags` are added to every imported subscriber. Every reader added and every
    status changed gets an event (source `import`, detail the file name). The
    newsletter `secret` lets it skip the addresses forgotten with `remove --suppress`.
    With `welcome`, every reader it adds as active (or makes active) is owed the welcome
    email (`trigger: welcome`, sent by `newsletter run`); a plain import owes nobody.
    """
    path = Path(path)
    extra_tags = clean_tags(tags)
    summary = ImportSummary(dry_run=dry_run)
    if rejects is not None and is_database_file(db, Path(rejects)):
        raise SubscriberError(f"--rejects {rejects} is the database itself: pick another file")
    bad = _Rejects(summary, rejects, path)
    done = False
    try:
        db.execute("DROP TABLE IF EXISTS temp.import_rows")
        db.execute(
            "CREATE TEMP TABLE import_rows (email_key TEXT NOT NULL UNIQUE, email TEXT, "
            "name TEXT, status TEXT, tags TEXT, attributes TEXT, created_at TEXT, "
            "confirmed_at TEXT, unsubscribed_at TEXT, optin_ip TEXT, source TEXT, "
            "updated_at TEXT, line TEXT)"
        )
        # Repeats of an address, one row each (appending to a string on the first row made
        # many repeats of one address quadratic). The trigger runs before the upsert folds.
        db.execute("DROP TABLE IF EXISTS temp.import_dups")
        db.execute("CREATE TEMP TABLE import_dups (email_key TEXT NOT NULL, line TEXT)")
        db.execute(
            "CREATE TEMP TRIGGER import_dup BEFORE INSERT ON import_rows "
            "WHEN EXISTS (SELECT 1 FROM import_rows WHERE email_key = NEW.email_key) "
            "BEGIN INSERT INTO import_dups VALUES (NEW.email_key, NEW.line); END"
        )
        # Stage 1: read and validate into the temporary table (the list is untouched).
        with db.conn:
            db.execute("BEGIN")
            _stage(db, path, format, extra_tags, summary, bad, progress)
        _report_duplicates(db, bad)
        _drop_suppressed(db, secret, bad)
        # Stage 2: merge, in one transaction on the list.
        if progress:
            progress("Merging", 0, 1)
        with db.conn:
            db.execute("BEGIN IMMEDIATE")
            _merge(db, summary, path.name, welcome)
            if dry_run:
                db.conn.rollback()
        if progress:
            progress("Merging", 1, 1)
        done = True
    finally:
        bad.close(keep=done)
        if db.conn.in_transaction:
            db.conn.rollback()
        for table in ("import_rows", "import_dups", "import_suppressed"):
            db.execute(f"DROP TABLE IF EXISTS temp.{table}")
    return summary


def _stage(
    db: sqlite_utils.Database, path: Path, format: str, extra_tags: list[str],
    summary: ImportSummary, bad: _Rejects, progress: Progress | None,
) -> None:
    now = now_iso()
    insert = (
        f"INSERT INTO temp.import_rows ({_STAGE_COLUMNS}) VALUES ({', '.join('?' * 13)}) "
        "ON CONFLICT(email_key) DO UPDATE SET "
        # The same person twice in one file: a stop (unsubscribed…) wins over active.
        f"status = CASE WHEN status NOT IN {_STOPPED_SQL} AND excluded.status IN {_STOPPED_SQL} "
        "THEN excluded.status ELSE status END, "
        f"unsubscribed_at = CASE WHEN status NOT IN {_STOPPED_SQL} "
        f"AND excluded.status IN {_STOPPED_SQL} THEN excluded.unsubscribed_at "
        "ELSE unsubscribed_at END"
    )
    sheets = list(_sheet_sizes(path))
    total = sum(size for size, _ in sheets)
    done_before = 0
    for size, (sheet, tell) in _iter_sheets(path, sheets):
        fmt = get_format(format, sheet.header, sheet.name)
        if fmt.title not in summary.formats:
            summary.formats.append(fmt.title)
        read = fmt.mapper(Columns(sheet.header))
        default_source = f"import:{fmt.name}:{Path(sheet.name.split(':')[0]).name}"
        width = len(sheet.header)
        check_width = sheet.has_header and fmt.name != "plain"
        batch: list[tuple[Any, ...]] = []
        for line, row in sheet.rows:
            if not any(row) or not any(cell.strip() for cell in row):
                continue  # blank line
            summary.rows += 1
            where = f"line {line}" if len(sheets) == 1 else f"{sheet.name} line {line}"
            try:
                if check_width and len(row) > width:
                    raise RowError(
                        "too many fields",
                        f"{len(row)} fields but the header has {width}: a comma outside quotes?",
                    )
                rec = read(row)
                if not rec.email:
                    raise RowError("missing address", "no email address")
                try:
                    address = normalize_email(rec.email)
                except SubscriberError as exc:
                    raise RowError("invalid address", str(exc)) from None
                name = clean_name(rec.name)
                if len(name) > MAX_NAME:
                    raise RowError("name too long", name_too_long(name))
            except RowError as exc:
                bad.add(where, exc.kind, str(exc), row, sheet.header)
                continue
            tags = clean_tags([*rec.tags, *extra_tags]) if extra_tags else rec.tags
            batch.append((
                email_key(address), address, name, rec.status, _dumps(tags),
                _dumps(rec.attributes), rec.created_at or now, rec.confirmed_at,
                rec.unsubscribed_at, rec.optin_ip, rec.source or default_source,
                rec.updated_at or now, where,
            ))
            if len(batch) >= BATCH:
                db.conn.executemany(insert, batch)
                batch.clear()
                if progress:
                    progress("Reading", done_before + tell(), total)
        if batch:
            db.conn.executemany(insert, batch)
        done_before += size
        if progress:
            progress("Reading", done_before, total)


@contextmanager
def _open_export(path: Path) -> Iterator[tuple[BinaryIO, zipfile.ZipFile | None]]:
    """The export file opened for reading, and its archive when it is a ZIP (else None)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise SubscriberError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        is_zip = handle.read(4) == b"PK\x03\x04"
        handle.seek(0)
        if not is_zip:
            yield handle, None
            return
        try:
            archive = zipfile.ZipFile(handle)
        except zipfile.BadZipFile as exc:
            raise SubscriberError(
                f"{path} is not a readable ZIP file ({exc}): download the export again"
            ) from None
        yield handle, archive


def _sheet_sizes(path: Path) -> Iterator[tuple[int, str]]:
    """(size, name) of each CSV in `path`, without reading the data."""
    with _open_export(path) as (_, archive):
        if archive is None:
            yield path.stat().st_size, path.name
            return
        for m in archive.infolist():
            if _is_member_csv(m):
                yield m.file_size, m.filename


def _is_member_csv(member: zipfile.ZipInfo) -> bool:
    name = member.filename
    return name.lower().endswith(".csv") and not member.is_dir() and not (
        name.startswith("__MACOSX/") or Path(name).name.startswith("._")
        # Substack's whole export: posts.csv and posts/… beside the email list.
        or Path(name).name.lower() == "posts.csv" or "posts" in Path(name).parts[:-1]
    )


def _iter_sheets(
    path: Path, sizes: list[tuple[int, str]]
) -> Iterator[tuple[int, tuple[Sheet, Callable[[], int]]]]:
    with _open_export(path) as (handle, archive):
        if archive is None:
            yield sizes[0][0], (_open_sheet(handle, path.name), handle.tell)
            return
        members = [m for m in archive.infolist() if _is_member_csv(m)]
        if not members:
            raise SubscriberError(f"{path} holds no .csv file: is it a list export?")
        for member in members:
            try:
                raw = archive.open(member)
            except (RuntimeError, NotImplementedError) as exc:  # a password, odd compression
                why = ("it is password-protected" if "encrypted" in str(exc)
                       else "it is compressed in a way this tool cannot open")
                raise SubscriberError(
                    f"cannot read {member.filename} in {path.name}: {why}: unzip it "
                    "yourself and import the .csv"
                ) from None
            with raw:
                sheet = _open_sheet(raw, f"{path.name}:{member.filename}")
                yield member.file_size, (sheet, raw.tell)


def _report_duplicates(db: sqlite_utils.Database, bad: _Rejects) -> None:
    rows = db.execute(
        "SELECT r.email, r.line, d.line FROM temp.import_dups d "
        "JOIN temp.import_rows r ON r.email_key = d.email_key ORDER BY d.rowid"
    )
    for email, first, where in rows:
        bad.add(where, "duplicate", f"{email} again (first at {first})", [email])


def _drop_suppressed(db: sqlite_utils.Database, secret: bytes | None, bad: _Rejects) -> None:
    """Take out the staged rows of readers who asked to be forgotten (remove --suppress)."""
    if db.execute("SELECT 1 FROM main.suppressions LIMIT 1").fetchone() is None:
        return  # nobody suppressed: no hashing per row
    if secret is None:
        raise SubscriberError(
            "this list has forgotten addresses (remove --suppress): importing needs the "
            "newsletter secret to recognise them"
        )
    db.conn.create_function("nl_address_hash", 1, lambda key: address_hash(secret, key),
                            deterministic=True)
    db.execute(
        "CREATE TEMP TABLE import_suppressed AS SELECT r.rowid AS id, r.line FROM "
        "temp.import_rows r JOIN main.suppressions s "
        "ON s.address_hash = nl_address_hash(r.email_key)"
    )
    for (where,) in db.execute("SELECT line FROM temp.import_suppressed ORDER BY id"):
        bad.add(where, "forgotten", "this reader asked to be forgotten and never added again "
                "(subscribers remove --suppress)")
    db.execute("DELETE FROM temp.import_rows WHERE rowid IN "
               "(SELECT id FROM temp.import_suppressed)")
    db.execute("DROP TABLE temp.import_suppressed")


def _merge(db: sqlite_utils.Database, summary: ImportSummary, file_name: str,
           welcome: bool = False) -> None:
    """Fold the staged rows into `subscribers` (inside the caller's transaction).

    The events are written in bulk too (INSERT … SELECT): one per reader added, one per
    status changed, source `import` and the file name as the detail.
    """
    now = now_iso()
    db.execute("DROP TABLE IF EXISTS temp.import_matches")
    # Existing subscribers: compute what each becomes under the consent rules.
    db.execute(
        f"""
        CREATE TEMP TABLE import_matches AS
        SELECT m.*, (m.status IS NOT m.old_status OR m.name IS NOT m.old_name
                     OR json(m.tags) IS NOT json(m.old_tags)
                     OR json(m.attributes) IS NOT json(m.old_attributes)
                     OR m.created_at IS NOT m.old_created_at
                     OR m.confirmed_at IS NOT m.old_confirmed_at
                     OR m.unsubscribed_at IS NOT m.old_unsubscribed_at
                     OR m.optin_ip IS NOT m.old_optin_ip) AS changed
        FROM (
          SELECT s.id, r.email_key,
            s.status AS old_status, s.name AS old_name, s.tags AS old_tags,
            s.attributes AS old_attributes, s.created_at AS old_created_at,
            s.confirmed_at AS old_confirmed_at, s.unsubscribed_at AS old_unsubscribed_at,
            s.optin_ip AS old_optin_ip,
            -- never back to active: a stopped subscriber stays stopped; a stop in the
            -- file is taken; an active one is not demoted to pending.
            CASE WHEN s.status IN {_STOPPED_SQL} THEN s.status
                 WHEN r.status IN {_STOPPED_SQL} THEN r.status
                 WHEN s.status = 'active' THEN 'active'
                 ELSE r.status END AS status,
            CASE WHEN r.name != '' THEN r.name ELSE s.name END AS name,
            CASE WHEN r.tags = '[]' OR r.tags = s.tags THEN s.tags ELSE (
              SELECT json_group_array(value) FROM (
                SELECT value FROM (
                  SELECT value, 0 AS part, key FROM json_each(s.tags)
                  UNION ALL
                  SELECT value, 1, key FROM json_each(r.tags)
                  WHERE value NOT IN (SELECT value FROM json_each(s.tags))
                ) ORDER BY part, key)
            ) END AS tags,
            CASE WHEN r.attributes = '{{}}' THEN s.attributes
                 ELSE json_patch(s.attributes, r.attributes) END AS attributes,
            CASE WHEN r.created_at < s.created_at THEN r.created_at
                 ELSE s.created_at END AS created_at,
            COALESCE(s.confirmed_at, r.confirmed_at) AS confirmed_at,
            CASE WHEN s.status IN {_STOPPED_SQL} THEN s.unsubscribed_at
                 WHEN r.status IN {_STOPPED_SQL} THEN COALESCE(r.unsubscribed_at, :now)
                 ELSE s.unsubscribed_at END AS unsubscribed_at,
            COALESCE(s.optin_ip, r.optin_ip) AS optin_ip
          FROM temp.import_rows r JOIN main.subscribers s ON s.email_key = r.email_key
        ) AS m
        """,
        {"now": now},
    )
    summary.updated, summary.unchanged = db.execute(
        "SELECT COALESCE(SUM(changed), 0), COALESCE(SUM(NOT changed), 0) FROM temp.import_matches"
    ).fetchone()
    db.execute(
        """
        INSERT INTO main.events (subscriber_id, email, kind, status_before, status_after,
          source, detail, created_at)
        SELECT m.id, r.email, CASE m.status WHEN 'active' THEN 'activated' ELSE m.status END,
          m.old_status, m.status, 'import', :file, :now
        FROM temp.import_matches m JOIN temp.import_rows r ON r.email_key = m.email_key
        WHERE m.status IS NOT m.old_status ORDER BY r.rowid
        """,
        {"file": file_name, "now": now},
    )
    db.execute(
        """
        UPDATE main.subscribers SET status = m.status, name = m.name, tags = m.tags,
          attributes = m.attributes, created_at = m.created_at, confirmed_at = m.confirmed_at,
          unsubscribed_at = m.unsubscribed_at, optin_ip = m.optin_ip, updated_at = :now
        FROM temp.import_matches AS m WHERE main.subscribers.id = m.id AND m.changed
        """,
        {"now": now},
    )
    last_id = db.execute("SELECT COALESCE(MAX(id), 0) FROM main.subscribers").fetchone()[0]
    # New subscribers, in the order of the file.
    cursor = db.execute(
        """
        INSERT INTO main.subscribers (email, email_key, name, status, tags, attributes, source,
          created_at, updated_at, confirmed_at, unsubscribed_at, optin_ip)
        SELECT email, email_key, name, status, tags, attributes, source, created_at,
          updated_at, confirmed_at, unsubscribed_at, optin_ip
        FROM temp.import_rows
        WHERE email_key NOT IN (SELECT email_key FROM temp.import_matches)
        ORDER BY rowid
        """
    )
    summary.added = cursor.rowcount
    if summary.added:
        db.execute(
            """
            INSERT INTO main.events (subscriber_id, email, kind, status_before, status_after,
              source, detail, created_at)
            SELECT s.id, s.email, 'imported', NULL, s.status, 'import', :file, :now
            FROM main.subscribers s
            WHERE s.id > :last ORDER BY s.id  -- this transaction added every row past :last
            """,
            {"file": file_name, "now": now, "last": last_id},
        )
    if welcome:  # owed the welcome email: new active readers, and those made active
        db.execute(
            """
            INSERT INTO main.events (subscriber_id, email, kind, source, detail, created_at)
            SELECT s.id, s.email, 'welcome_requested', 'import', :file, :now
            FROM main.subscribers s WHERE s.status = 'active' AND (s.id > :last OR s.id IN
              (SELECT id FROM temp.import_matches WHERE status = 'active'
               AND old_status IS NOT 'active'))
            ORDER BY s.id
            """,
            {"file": file_name, "now": now, "last": last_id},
        )
    db.execute("DROP TABLE temp.import_matches")
