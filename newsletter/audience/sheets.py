"""Reading list exports: CSV files, or the CSVs inside a ZIP, line by line with flat memory.

Bytes are split into lines and decoded one line at a time, so an error names its line,
a runaway line or an unclosed quote is refused instead of read whole, and a damaged ZIP
is a clear error.
"""

from __future__ import annotations

import csv
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from newsletter.audience.formats import Columns, is_plain
from newsletter.errors import SubscriberError


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


def _physical_lines(binary: IO[bytes], counter: list[int]) -> Iterator[bytes]:
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


def _csv_rows(binary: IO[bytes], where: str) -> Iterator[tuple[int, list[str]]]:
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


def _check_header(header: list[str], name: str, line: int) -> None:
    """Refuse a header cell holding a control character: `name\\0` matches no known column,
    so every reader's name would silently become an attribute."""
    for number, cell in enumerate(header, start=1):
        bad = next((c for c in cell if unicodedata.category(c) == "Cc"), None)
        if bad is not None:
            raise SubscriberError(
                f"{name} line {line}: header column {number} ({cell!r}) holds the control "
                f"character U+{ord(bad):04X}: retype that column's name in the header row and "
                "import again")


def _open_sheet(binary: IO[bytes], name: str) -> Sheet:
    # Bytes are split into lines and decoded one line at a time (see _csv_rows); csv gets
    # each line with its ending, so CRLF and newlines inside quotes work.
    rows = _csv_rows(binary, name)
    for line, header in rows:
        if any(cell.strip() for cell in header):
            header = [h.strip() for h in header]
            cols = Columns(header)
            if is_plain(cols) and "@" in header[0]:
                # A bare list of addresses has no header: its first row is data.
                def with_first(first: list[str] = header, first_line: int = line) -> Iterator:
                    yield first_line, first
                    yield from rows
                return Sheet(name, ["email", "name"][: max(len(header), 1)], with_first(), False)
            _check_header(header, name, line)
            return Sheet(name, header, rows, True)
    raise SubscriberError(f"{name} is empty: export the list again and import that file")


csv.field_size_limit(MAX_LINE)  # big JSON attributes cells are fine; a runaway quote is not


def _looks_like_json(start: bytes) -> bool:
    """Whether a file starting with these bytes is JSON (an object, or a list of objects,
    strings or lists): no list export's header row starts so."""
    text = start.removeprefix(b"\xef\xbb\xbf").lstrip()
    return text.startswith(b"{") or (
        text.startswith(b"[") and text[1:].lstrip()[:1] in (b"{", b"[", b'"', b"]")
    )


@contextmanager
def _open_export(path: Path) -> Iterator[tuple[IO[bytes], zipfile.ZipFile | None]]:
    """The export file opened for reading, and its archive when it is a ZIP (else None)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise SubscriberError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        start = handle.read(64)
        handle.seek(0)
        if _looks_like_json(start):
            # A Ghost posts export, or members as JSON: read as CSV, its "header" would be `{`.
            raise SubscriberError(
                f"{path} is JSON, not a subscriber list export: subscribers are imported from "
                "the CSV (or ZIP) a platform exports; posts go in with "
                f"`newsletter import-posts {path}`"
            )
        if not start.startswith(b"PK\x03\x04"):
            yield handle, None
            return
        try:
            archive = zipfile.ZipFile(handle)
        except zipfile.BadZipFile as exc:
            raise SubscriberError(
                f"{path} is not a readable ZIP file ({exc}): download the export again"
            ) from None
        yield handle, archive


def sheet_sizes(path: Path) -> Iterator[tuple[int, str]]:
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


def iter_sheets(
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
