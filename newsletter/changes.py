"""The change journal: what happened to the list and the delivery log since the last backup.

A folder beside the database, `newsletter.db.journal/`, holds one file per backup
generation (`000003.jsonl`). Each line is one committed transaction's changes, as JSON:
`{"at": time, "ops": [...]}`, appended and fsync'ed inside the transaction, before it
commits, so a transaction reported done is in the journal. The ops are absolute (a
reader's row as it is now, a delivery's state), never increments, so replaying a journal
over a snapshot that already holds some of it, or replaying it twice, ends in the same
place (`newsletter/restore.py` replays it). The ops:

- `reader`: a reader's row after a change (`subscriber`) and the events recorded with it
  (`events`); a status change also says `subscriber_id`, `email`, `before`, `after`,
  `source` and `at`. Without `subscriber` (a change appended BEFORE its transaction,
  as a reader's unsubscribe will be when the database is busy), replay applies `after`
  as `change_status` would, and an event without an `id` is recorded once;
- `erase`: a reader forgotten (`subscribers remove`); replay forgets them again;
- `campaign`: a campaign's row, and with `deliveries` the rows created for it;
- `handed`: deliveries marked `sending` (about to be handed to the provider);
- `deliveries`: delivery outcomes, `[id, state, provider id, sent_at, error]` each.

A reader's unsubscribe made while the database was busy is journaled before its
transaction, in the generation's `000003.requests.jsonl` (see the end of this module).

`newsletter backup` starts a new generation (the number in the database's `meta` table,
read inside each writing transaction, so a commit lands in the generation its snapshot
does not hold) and deletes the older files: a newer snapshot covers them. This module
sits on the store's floor: the audience and the delivery log both write to it.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from newsletter.errors import NewsletterError

GENERATION_KEY = "journal_generation"  # meta: the generation new changes go to
SNAPSHOT_AT_KEY = "snapshot_at"  # meta: when the generation began (a snapshot holds it)

# Connections whose changes are journaled as another database's (a restore being prepared
# in a side file writes the journal of the database it will become).
_written_as: dict[int, Path] = {}


def journal_dir(database: Path) -> Path:
    """The folder of the journal files of `database`."""
    return database.with_name(database.name + ".journal")


def generation_path(database: Path, generation: int) -> Path:
    """The journal file of one generation."""
    return journal_dir(database) / f"{generation:06d}.jsonl"


def requests_path(database: Path, generation: int) -> Path:
    """The file of one generation's reader requests journaled while the database was busy
    (beside its journal file: its fsync does not wait for an import's hundreds of MB)."""
    return journal_dir(database) / f"{generation:06d}.requests.jsonl"


def request_generations(database: Path) -> list[int]:
    """The generations that have a requests file, oldest first."""
    folder = journal_dir(database)
    if not folder.is_dir():
        return []
    return sorted(int(name) for p in folder.glob("*.requests.jsonl")
                  if (name := p.name.split(".")[0]).isdigit())


def generation_files(database: Path) -> list[Path]:
    """Every file of every generation: journals, requests and imports' journal files."""
    folder = journal_dir(database)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.name.split(".")[0].isdigit())


def generations(database: Path) -> list[int]:
    """The generations that have a journal file, oldest first."""
    folder = journal_dir(database)
    if not folder.is_dir():
        return []
    return sorted(int(p.stem) for p in folder.glob("*.jsonl") if p.stem.isdigit())


def current_generation(conn: sqlite3.Connection) -> int:
    """The generation this database's changes go to now (0 before any backup)."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", [GENERATION_KEY]).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # a database older than the meta table
            return 0
        raise
    return int(row[0]) if row is not None else 0


def database_path(conn: sqlite3.Connection) -> Path | None:
    """The file of the connection's main database (None: in memory)."""
    if id(conn) in _written_as:
        return _written_as[id(conn)]
    for _seq, name, file in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return Path(file) if file else None
    return None


@contextmanager
def written_as(conn: sqlite3.Connection, database: Path) -> Iterator[None]:
    """Journal the changes made on `conn` as those of `database` while inside."""
    _written_as[id(conn)] = database
    try:
        yield
    finally:
        _written_as.pop(id(conn), None)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def append(conn: sqlite3.Connection, ops: Iterable[dict[str, Any] | Encoded]) -> None:
    """Append one transaction's `ops` to the journal, durably (one fsync).

    Call inside the open transaction, before it commits: a failed write (a full disk)
    raises JournalError and the transaction rolls back, so nothing is committed that the
    journal does not hold. `ops` may be a generator (a bulk import's readers): they are
    written LINE_OPS to a line, every line but the last marked `"more": true`, so neither
    the writer nor a restore holds a whole import in memory.
    """
    database = database_path(conn)
    if database is None:
        return
    if id(conn) in _grouped:  # one_fsync: written when the group ends, one fsync for all
        _grouped[id(conn)].append(list(ops))
        return
    path = generation_path(database, current_generation(conn))
    try:
        with _Appender(path) as out:
            _write_ops(out, ops, end=True)
    except OSError as exc:
        raise journal_error(exc, path) from None


def _write_ops(out: _Appender, ops: Iterable[dict[str, Any] | Encoded], *, end: bool) -> None:
    """`ops`, LINE_OPS to a line; with `end`, the last line closes the transaction's entry
    (`more` false), else every line says more follows."""
    batch: list[dict[str, Any] | Encoded] = []
    for op in ops:
        batch.append(op)
        if len(batch) == LINE_OPS:
            out.write(_line(batch, more=True))
            batch = []
    if end and (batch or out.written):
        out.write(_line(batch, more=False))
    elif batch:
        out.write(_line(batch, more=True))


LINE_OPS = 1000  # ops per journal line


def _line(ops: list[dict[str, Any] | Encoded], *, more: bool) -> bytes:
    encoded = ",".join(op if isinstance(op, Encoded) else _dumps(op) for op in ops)
    tail = ',"more":true' if more else ""
    return f'{{"at":{_dumps(now_iso())},"ops":[{encoded}]{tail}}}\n'.encode()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class _Appender:
    """An open journal file: lines appended, fsync'ed once when it closes (if any was)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None
        self.written = 0

    def __enter__(self) -> _Appender:
        return self

    def write(self, data: bytes) -> None:
        if self.fd is None:
            self.created = not self.path.exists()
            if self.created:
                self.path.parent.mkdir(mode=0o700, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            size = os.fstat(self.fd).st_size
            if size and os.pread(self.fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a torn line (a crash mid-write) stays a line of its own
        while data:
            data = data[os.write(self.fd, data):]
        self.written += 1

    def __exit__(self, kind: object, *rest: object) -> None:
        if self.fd is None:
            return
        try:
            if kind is None:
                os.fsync(self.fd)
        finally:
            os.close(self.fd)
        if kind is None and self.created:
            sync_dir(self.path.parent)


def write_line(path: Path, data: bytes) -> None:
    """Append `data` to `path` (creating it) and fsync it."""
    with _Appender(path) as out:
        out.write(data)


class JournalError(NewsletterError):
    """The change journal could not be written: the change was not made."""


def journal_error(exc: OSError, path: Path) -> JournalError:
    """A failed append as one line that says what to do (a full disk above all)."""
    if exc.errno == errno.ENOSPC:
        return JournalError(
            f"the disk holding {path.parent.parent} is full: the change journal could not be "
            "written, so nothing was recorded; free some space, then run the same command")
    return JournalError(
        f"cannot write the change journal {path} ({exc.strerror}): make its folder writable, "
        "then run the same command (nothing was recorded)")


def sync_dir(folder: Path) -> None:
    """fsync a folder, so a file created or renamed in it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def start_generation(conn: sqlite3.Connection, generation: int, at: str) -> None:
    """Inside the caller's write transaction: new changes go to `generation` from now on."""
    conn.executemany(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
        [(GENERATION_KEY, str(generation)), (SNAPSHOT_AT_KEY, at)],
    )
    database = database_path(conn)
    if database is not None:  # the file exists from the start: "no changes" is not "lost"
        write_line(generation_path(database, generation), b"")


def delete_before(database: Path, generation: int) -> list[Path]:
    """Delete the journal files older than `generation` (a snapshot holds them now).

    A reader's request journaled there but not applied yet (the snapshot lacks it) is
    carried into `generation`'s file first: deleting it would lose an answered unsubscribe.
    """
    _carry_requests(database, generation)
    for old in request_generations(database):
        if old < generation:
            requests_path(database, old).unlink(missing_ok=True)
    gone = []
    for old in generations(database):
        if old < generation:
            path = generation_path(database, old)
            path.unlink(missing_ok=True)
            gone.append(path)
    for path in generation_files(database):  # imports' own journal files (import_file)
        number = path.name.split(".")[0]
        if ".import-" in path.name and int(number) < generation:
            path.unlink(missing_ok=True)
    return gone


@dataclass
class Record:
    """One line of the journal: the ops of a transaction (or part of one, when `more`)."""

    generation: int
    line: int
    at: str
    ops: list[dict[str, Any]]
    more: bool  # the transaction goes on on the next line


def read(database: Path, since: int) -> Iterator[Record | None]:
    """The lines of generations `since` and newer, in order; None for a torn line.

    A torn line (a crash in the middle of an append, or a disk that filled) was never
    committed: its transaction rolled back. A transaction whose last line (no `more`)
    is missing never committed either: the replay drops it.

    A generation's reader requests (its `.requests.jsonl`, written while the database was
    busy) come in among the transactions by time, never inside one (an import's merge
    journals over many lines), and after a None when the last one never ended. Each is
    absolute and idempotent; its application by `serve`, when it happened, is a later
    transaction of its own.
    """
    for generation in generations(database):
        if generation < since:
            continue
        asked = _request_records(database, generation)
        open_txn = False
        for record in _with_imports(database, _records(generation_path(database, generation),
                                                        generation)):
            if not open_txn:
                while asked and record is not None and asked[0].at < record.at:
                    yield asked.pop(0)
            yield record
            if record is None:
                open_txn = False  # the replay rolled the open transaction back
            else:
                open_txn = record.more
        if open_txn:  # its last line never came: it never committed
            yield None
        yield from asked


def _records(path: Path, generation: int) -> Iterator[Record | None]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                entry = json.loads(text)
                ops = list(entry["ops"])
            except (ValueError, KeyError, TypeError):
                yield None
                continue
            yield Record(generation, number, str(entry.get("at", "")), ops,
                         bool(entry.get("more")))


def _with_imports(database: Path, records: Iterable[Record | None]) -> Iterator[Record | None]:
    """`records` with each import's line replaced by the lines of its own file (every one
    marked `more`: the import's line, last, ends its transaction)."""
    for record in records:
        side = [op for op in record.ops if op.get("op") == IMPORT_OP] if record else []
        if record is None or not side:
            yield record
            continue
        for op in side:
            path = journal_dir(database) / str(op.get("file", ""))
            if "/" in str(op.get("file", "")) or not path.is_file():
                raise JournalError(
                    f"the journal file {path} of a committed import is missing: restore a "
                    "snapshot taken after that import, or import the file again after this "
                    "restore")
            for line in _records(path, record.generation):
                if line is None or not line.more:
                    raise JournalError(
                        f"the journal file {path} of a committed import is damaged: restore a "
                        "snapshot taken after that import, or import the file again after "
                        "this restore")
                yield line
        yield Record(record.generation, record.line, record.at,
                     [op for op in record.ops if op.get("op") != IMPORT_OP], record.more)


def _request_records(database: Path, generation: int) -> list[Record]:
    path = requests_path(database, generation)
    if not path.exists():
        return []
    # A torn request (serve killed mid-write) was never answered: not a change, skipped.
    return [r for r in _records(path, generation) if r is not None and not r.more]


# -- the ops, built where the changes are made ----------------------------------------------


def _row(conn: sqlite3.Connection | sqlite3.Cursor, sql: str,
         params: Sequence[Any]) -> dict[str, Any] | None:
    cursor = conn.execute(sql, list(params))
    row = cursor.fetchone()
    if row is None:
        return None
    return {d[0]: value for d, value in zip(cursor.description, row, strict=True)}


def _rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, list(params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def reader_op(conn: sqlite3.Connection, subscriber_id: int,
              event_ids: Sequence[int] = ()) -> dict[str, Any]:
    """A reader's row as it is now, with the events `event_ids`."""
    op: dict[str, Any] = {
        "op": "reader",
        "subscriber": _row(conn, "SELECT * FROM subscribers WHERE id = ?", [subscriber_id]),
        "events": [],
    }
    if event_ids:
        marks = ",".join("?" * len(event_ids))
        op["events"] = _rows(conn, f"SELECT * FROM events WHERE id IN ({marks})", event_ids)
        if len(op["events"]) == 1:  # a status change says what it was, readably
            event = op["events"][0]
            op.update(subscriber_id=subscriber_id, email=event["email"],
                      before=event["status_before"], after=event["status_after"],
                      source=event["source"], at=event["created_at"])
    return op


# -- a bulk import's ops, written before its transaction (issue 21) -------------------------
#
# An import of a million readers would hold the write lock for the seconds it takes to
# encode, write and fsync hundreds of MB of ops. It writes them first, lock-free, to a file
# of its own (`import-<pid>-<uuid>.partial`, every line marked `more`); inside its short
# transaction the file is renamed into the generation (`000003.import-<uuid>.jsonl`) and
# ONE line naming it (`{"op": "import", "file": ...}`) is appended to the journal. `read`
# puts the file's lines in that line's place. A killed import leaves a `.partial` that no
# generation names: ignored, and deleted by the next import.

IMPORT_OP = "import"


def write_import_ops(database: Path, ops: Iterable[Encoded]) -> Path:
    """Write a bulk import's `ops` to a file of their own, durably; its path (a `.partial`
    until `adopt_import_ops` names it in a transaction)."""
    folder = journal_dir(database)
    folder.mkdir(mode=0o700, exist_ok=True)
    _delete_dead_partials(folder)
    path = folder / f"import-{os.getpid()}-{uuid.uuid4().hex}.partial"
    try:
        with _Appender(path) as out:
            _write_ops(out, ops, end=False)
        if not path.exists():  # no ops: an empty file still says so
            write_line(path, b"")
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise journal_error(exc, path) from None
    return path


def adopt_import_ops(conn: sqlite3.Connection, partial: Path) -> None:
    """Inside the import's write transaction: the `partial` file becomes part of the current
    generation, named by one journal line (append's guarantee: a JournalError rolls the
    transaction back)."""
    database = database_path(conn)
    if database is None:
        return
    generation = current_generation(conn)
    name = f"{generation:06d}.import-{partial.stem.rsplit('-', 1)[-1]}.jsonl"
    target = journal_dir(database) / name
    try:
        os.rename(partial, target)
        sync_dir(target.parent)
    except OSError as exc:
        raise journal_error(exc, target) from None
    append(conn, [{"op": IMPORT_OP, "file": name}])


def _delete_dead_partials(folder: Path) -> None:
    """The `.partial` files of imports killed before their transaction (their process gone)."""
    for path in folder.glob("import-*.partial"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def row_json(conn: sqlite3.Connection, table: str, alias: str) -> str:
    """SQL for `alias`'s row, shaped as `table` (the main database's), as a JSON object, as
    the journal holds it (`alias` may be a copy of the table: the same columns)."""
    return _object(conn, table, alias)


class Encoded(str):
    """An op already encoded as JSON (by SQLite, for a bulk import's readers)."""


def _object(conn: sqlite3.Connection, table: str, alias: str) -> str:
    """SQL for `alias`'s row of `table` as a JSON object, every column (as SELECT *)."""
    names = [row[1] for row in conn.execute(f"PRAGMA main.table_info({table})").fetchall()]
    return "json_object(" + ", ".join(f"'{n}', {alias}.\"{n}\"" for n in names) + ")"


def readers_since(conn: sqlite3.Connection, event_id: int) -> Iterator[Encoded]:
    """`reader` ops for every event after `event_id` (a bulk import's), streamed.

    Encoded by SQLite in one query (json_object), not row by row in Python: an import's
    merge holds the write lock while its readers are journaled, and this was most of it.
    """
    image = (f"CASE WHEN s.id IS NULL THEN NULL ELSE {_object(conn, 'subscribers', 's')} END")
    rows = conn.execute(
        f"SELECT json_object('op', 'reader', 'subscriber', json({image}), "
        f"'events', json_array({_object(conn, 'events', 'e')})) "
        "FROM events e LEFT JOIN subscribers s ON s.id = e.subscriber_id "
        "WHERE e.id > ? ORDER BY e.id", [event_id])
    for (text,) in rows:
        yield Encoded(text)


def last_event_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
    return int(row[0])


def campaign_op(conn: sqlite3.Connection, campaign_id: int, *,
                deliveries: bool = False) -> dict[str, Any]:
    """A campaign's row as it is now; with `deliveries`, its delivery rows' ids and readers."""
    op: dict[str, Any] = {
        "op": "campaign",
        "campaign": _row(conn, "SELECT * FROM campaigns WHERE id = ?", [campaign_id]),
    }
    if deliveries:
        op["deliveries"] = [list(r) for r in conn.execute(
            "SELECT id, subscriber_id, email, state FROM deliveries WHERE campaign_id = ? "
            "ORDER BY id", [campaign_id]).fetchall()]
    return op


def deliveries_op(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[str, Any]:
    """The outcome of deliveries `ids` as they are now in the open transaction."""
    found: list[list[Any]] = []
    for start in range(0, len(ids), 500):
        part = list(ids[start:start + 500])
        marks = ",".join("?" * len(part))
        found += [list(r) for r in conn.execute(
            "SELECT id, state, provider_message_id, sent_at, error FROM deliveries "
            f"WHERE id IN ({marks})", part).fetchall()]
    return {"op": "deliveries", "set": found}


# -- a reader's request journaled before its transaction (issue 21) ------------------------
#
# While another process holds the write lock for long (an import's merge), `serve` does not
# make a reader wait: their unsubscribe is appended at once (one fsync) to the generation's
# `.requests.jsonl` beside its journal file (a separate file: an fsync of the journal file
# would wait for the import's hundreds of MB written to it), as a line marked
# `"later":true`, answered, and applied by `serve`'s applier as soon as the lock is free
# (and at its next start, after a crash). `read` hands these lines to a restore. Its
# event carries an `external_id` (`request:<uuid>`), so applying it twice, or replaying it
# after it was applied, changes nothing. A running send reads these lines too
# (`Requests`): a reader whose unsubscribe was answered is not mailed, applied yet or not.

LATER = b'"later":true'  # only ever a key: inside a JSON string a quote is escaped


def request_op(*, subscriber_id: int, email: str, before: str, after: str, kind: str,
               source: str, detail: str, ip: str | None, user_agent: str | None,
               campaign_id: int | None, request_id: str, at: str) -> dict[str, Any]:
    """A status change asked for but not yet made: the `reader` op without a row image
    (restore applies `after` as change_status would, and the event once)."""
    event = {"subscriber_id": subscriber_id, "email": email, "kind": kind,
             "status_before": before, "status_after": after, "source": source,
             "detail": detail[:2000], "ip": ip, "user_agent": user_agent, "consent": None,
             "campaign_id": campaign_id, "external_id": request_id, "created_at": at}
    return {"op": "reader", "subscriber_id": subscriber_id, "email": email, "before": before,
            "after": after, "source": source, "at": at, "events": [event]}


def append_requests(conn: sqlite3.Connection, ops: list[dict[str, Any]]) -> None:
    """Journal `ops` now (one line each, one fsync for all), outside any transaction (the
    write lock is busy), durably.

    Reading the generation needs no lock. A backup that switches generation meanwhile
    carries the unapplied requests of the old file forward (`delete_before`); one written
    to the old file after that is written again to the new one here.
    """
    database = database_path(conn)
    if database is None:
        return
    if not ops:
        return
    data = b"".join(_request_line(op) for op in ops)
    generation = current_generation(conn)
    path = requests_path(database, generation)
    try:
        write_line(path, data)
        now = current_generation(conn)
        if now != generation:
            path = requests_path(database, now)
            write_line(path, data)
    except OSError as exc:
        raise journal_error(exc, path) from None


def _request_lines(data: bytes) -> Iterator[dict[str, Any]]:
    """The request ops in `data` (whole lines of a journal file)."""
    for text in data.splitlines():
        if LATER not in text:
            continue
        try:
            entry = json.loads(text)
        except ValueError:
            continue  # torn: its append never finished, so it was never answered
        if entry.get("later") is True:
            yield from entry.get("ops") or []


def requests(database: Path, since: int = 0) -> list[dict[str, Any]]:
    """Every request op in the journal files of generations `since` and newer, oldest
    first (applied or not: the caller asks the database which are)."""
    found: list[dict[str, Any]] = []
    for generation in request_generations(database):
        if generation >= since:
            found += _request_lines(requests_path(database, generation).read_bytes())
    return found


def request_id(op: dict[str, Any]) -> str | None:
    events = op.get("events") or []
    return str(events[0]["external_id"]) if events and events[0].get("external_id") else None


CHUNK = 8 << 20


class Requests:
    """The requests journaled so far, read as the files grow (a send's stopped check).

    Each call reads only the bytes appended since the last one, to the last newline.
    """

    # The folder is listed again only when its mtime changed, or is so recent that a file
    # made in the same clock tick could hide behind it: a send asks before every message,
    # and listing the folder each time cost a four-connection send a quarter of its speed.
    RECENT_NS = 1_000_000_000

    def __init__(self, database: Path):
        self.database = database
        self.read_to: dict[int, int] = {}  # generation → bytes read
        self.stopped: dict[int, str] = {}  # subscriber id → the status asked for
        self.folder = str(journal_dir(database))
        self.listed_at: int | None = None  # the folder's mtime_ns when last listed
        self.files: list[tuple[int, str]] = []  # (generation, requests file) then

    def _files(self) -> list[tuple[int, str]]:
        try:
            mtime = os.stat(self.folder).st_mtime_ns
        except FileNotFoundError:
            self.listed_at = None
            return []
        if mtime != self.listed_at or time.time_ns() - mtime < self.RECENT_NS:
            self.files = [(g, str(requests_path(self.database, g)))
                          for g in request_generations(self.database)]
            self.listed_at = mtime
        return self.files

    def new(self) -> dict[int, str]:
        """Every reader a journaled request stopped (unsubscribed), so far."""
        for generation, path in self._files():
            start = self.read_to.get(generation, 0)
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue  # deleted by a backup since it was listed
            if size <= start:
                continue
            with open(path, "rb") as f:
                f.seek(start)
                rest = b""
                while start < size:  # in pieces: a bulk import's lines are long
                    data = rest + f.read(min(CHUNK, size - start))
                    start += len(data) - len(rest)
                    end = data.rfind(b"\n") + 1  # a line being written: read next time
                    rest = data[end:]
                    for op in _request_lines(data[:end]):
                        if op.get("subscriber_id") is not None and op.get("after") in _STOPS:
                            self.stopped[int(op["subscriber_id"])] = str(op["after"])
                self.read_to[generation] = start - len(rest)
        return self.stopped


_STOPS = ("unsubscribed", "bounced", "complained")


def _carry_requests(database: Path, generation: int) -> None:
    older = [g for g in request_generations(database) if g < generation]
    if not older:
        return
    ops = [op for g in older for op in _request_lines(requests_path(database, g).read_bytes())]
    if not ops:
        return
    conn = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        # Applied: its own change is in the snapshot, or in the new generation's file.
        waiting = [op for op in ops if (rid := request_id(op)) is None or conn.execute(
            "SELECT 1 FROM events WHERE external_id = ?", [rid]).fetchone() is None]
    finally:
        conn.close()
    for op in waiting:
        write_line(requests_path(database, generation), _request_line(op))


def _request_line(op: dict[str, Any]) -> bytes:
    return f'{{"later":true,"at":{_dumps(now_iso())},"ops":[{_dumps(op)}]}}\n'.encode()


# --- group commit: many small transactions' worth of changes, one fsync (issue 21) ------
# An fsync costs milliseconds (5 ms on the bench machine): one per reader's unsubscribe
# capped `serve` near 200 a second. Its writer applies every pending unsubscribe in one
# transaction, and inside `one_fsync` their journal lines are written together.

_grouped: dict[int, list[list[dict[str, Any] | Encoded]]] = {}


@contextmanager
def one_fsync(conn: sqlite3.Connection) -> Iterator[None]:
    """Inside the caller's open transaction: `append` calls on `conn` keep their lines,
    written (each call its own line, as without this) with one fsync when the block ends
    without an error, still before the transaction commits. On an error nothing is
    written and the caller's transaction rolls back."""
    _grouped[id(conn)] = []
    try:
        yield
        groups = _grouped[id(conn)]
    finally:
        del _grouped[id(conn)]
    database = database_path(conn)
    if database is None or not groups:
        return
    path = generation_path(database, current_generation(conn))
    try:
        with _Appender(path) as out:
            for ops in groups:
                if ops:  # written as `append` would have, without this
                    _write_ops(out, ops, end=True)
    except OSError as exc:
        raise journal_error(exc, path) from None
