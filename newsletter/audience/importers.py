"""Imports: the engine that applies a list export to the subscribers, safely.

`formats.py` turns each row of a platform's CSV into a `Record` (address, name, status
mapped faithfully, tags, attributes, consent dates) and `sheets.py` reads the files. The
engine validates and normalizes every address, stages the rows in a temporary table
(duplicates inside the file folded there, so memory does not grow with the file), prepares
from a snapshot of the list, without the write lock, every row the merge will write (new
readers' ids, events, the change journal's ops in a file of their own), then merges them
into `subscribers` in ONE short transaction: killed half-way, the database is as before.
The merge never turns an unsubscribed, bounced or complained subscriber back into active.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from newsletter import changes
from newsletter.audience.formats import FORMAT_NAMES, Columns, RowError, get_format
from newsletter.audience.sheets import iter_sheets, sheet_sizes
from newsletter.audience.subscribers import (
    MAX_NAME,
    address_hash,
    clean_name,
    clean_tags,
    email_key,
    escape_cell,
    is_database_file,
    name_too_long,
    normalize_email,
    now_iso,
)
from newsletter.errors import SubscriberError

__all__ = ["FORMAT_NAMES", "ImportSummary", "import_file"]


BATCH = 5000
MAX_EXAMPLES = 10



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
    # Every skipped row's line, by reason and sheet, as runs [first, last]: the report
    # names them all while memory stays at one pair per run of neighbouring lines.
    skipped_lines: dict[tuple[str, str], list[list[int]]] = field(default_factory=dict)
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
        if self.skipped_total > len(self.examples):
            # Past the examples, every skipped row still gets named: its line and why.
            for (kind, sheet), runs in self.skipped_lines.items():
                where = f"{sheet} lines" if sheet else "lines"
                listed = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
                out.append(f"  skipped ({kind}) {where} {listed}")
            out.append("  (each skipped row with its cells and reason: --rejects FILE)")
        if self.dry_run:
            out.append("Dry run: nothing was written.")
        return out


Progress = Callable[[str, int, int], None]  # (stage, done, total)

_STAGE_COLUMNS = (
    "email_key, email, name, status, tags, attributes, created_at, confirmed_at, "
    "unsubscribed_at, optin_ip, source, updated_at, line"
)
_STOPPED_SQL = "('unsubscribed','bounced','complained')"


_WHERE = re.compile(r"(?:(.*) )?line (\d+)")
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _dumps(value: Any) -> str:
    # Most rows have no tags or attributes: skip the encoder for those.
    return _encode(value) if value else ("[]" if isinstance(value, list) else "{}")


class _Rejects:
    """Collects skipped rows: counts, the first few for the summary, all of them in a file.

    The file is for a spreadsheet: every cell is escaped as `subscribers export` escapes
    them (`escape_cell`), so a cell like =HYPERLINK(…) from the import is not run.
    """

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
        self.headers: list[list[str]] = []  # each sheet's header, in the order read
        # With a file: the rows of the batch being staged, by line, as (sheet, cells), so a
        # repeat of an address is written as it was in the file (`cells_of`). One batch only.
        self.batch: dict[str, tuple[int, Sequence[str]]] | None = {} if self.writer else None

    def cells_of(self, where: str) -> str | None:
        """The staged row at `where` as JSON [sheet, cells] (called by the duplicate trigger:
        only repeats are encoded and kept)."""
        held = self.batch.get(where) if self.batch is not None else None
        return _encode(held) if held is not None else None

    def add(self, where: str, kind: str, message: str, row: Sequence[str] = (),
            header: Sequence[str] = ()) -> None:
        self.summary.skipped[kind] += 1
        self._note_line(where, kind)
        if len(self.summary.examples) < MAX_EXAMPLES:
            self.summary.examples.append(f"{where}: {message}")
        if self.writer is not None:
            if self.header_for is None:
                self.header_for = where
                self.writer.writerow([escape_cell(c) for c in ("where", "reason", *header)])
            self.writer.writerow([escape_cell(c) for c in (where, message, *row)])

    def _note_line(self, where: str, kind: str) -> None:
        match = _WHERE.fullmatch(where)
        if match is None:
            return  # every caller passes "[sheet ]line N"
        runs = self.summary.skipped_lines.setdefault((kind, match[1] or ""), [])
        line = int(match[2])
        if runs and runs[-1][1] + 1 == line:
            runs[-1][1] = line
        else:
            runs.append([line, line])

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
    prepared: _Prepared | None = None
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
        # With --rejects it also keeps the repeat's cells, for the rejects file: asked of
        # Python for that row only, so the other rows are neither encoded nor stored twice.
        db.execute("DROP TABLE IF EXISTS temp.import_dups")
        db.execute("CREATE TEMP TABLE import_dups (email_key TEXT NOT NULL, line TEXT, "
                   "cells TEXT)")
        db.conn.create_function("nl_import_cells", 1, bad.cells_of)
        db.execute(
            "CREATE TEMP TRIGGER import_dup BEFORE INSERT ON import_rows "
            "WHEN EXISTS (SELECT 1 FROM import_rows WHERE email_key = NEW.email_key) "
            "BEGIN INSERT INTO import_dups VALUES (NEW.email_key, NEW.line, "
            "nl_import_cells(NEW.line)); END"
        )
        # Stage 1: read and validate into the temporary table (the list is untouched).
        with db.conn:
            db.execute("BEGIN")
            _stage(db, path, format, extra_tags, summary, bad, progress)
        _report_duplicates(db, bad)
        _drop_suppressed(db, secret, bad)
        # Stage 2: every row the merge will write, with its id, and the journal's ops,
        # prepared from a snapshot of the list without the write lock (readers and serve
        # go on meanwhile).
        if progress:
            progress("Preparing", 0, 1)
        prepared = _prepare(db, summary, path.name, welcome, journal=not dry_run)
        if progress:
            progress("Merging", 0, 1)
        # Stage 3: the merge, one short transaction: the prepared rows copied in (or, when
        # the list changed under the snapshot where it matters, merged as before).
        if not dry_run:
            with db.conn:
                db.execute("BEGIN IMMEDIATE")
                if not _commit_prepared(db, prepared):
                    last_event = changes.last_event_id(db.conn)
                    _merge(db, summary, path.name, welcome)
                    # every reader the import added or changed: one append
                    changes.append(db.conn, itertools.chain(
                        changes.readers_since(db.conn, last_event), _renamed_ops(db)))
        if progress:
            progress("Merging", 1, 1)
        done = True
    finally:
        bad.close(keep=done)
        if db.conn.in_transaction:
            db.conn.rollback()
        for table in ("import_rows", "import_dups", "import_suppressed", *_PREPARED_TABLES):
            db.execute(f"DROP TABLE IF EXISTS temp.{table}")
        if prepared is not None and prepared.ops is not None:
            prepared.ops.unlink(missing_ok=True)  # adopted (renamed) when the merge committed
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
    sheets = list(sheet_sizes(path))
    total = sum(size for size, _ in sheets)
    done_before = 0
    for size, (sheet, tell) in iter_sheets(path, sheets):
        fmt = get_format(format, sheet.header, sheet.name)
        sheet_no = len(bad.headers)
        bad.headers.append(sheet.header)
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
            if bad.batch is not None:
                bad.batch[where] = (sheet_no, row)
            if len(batch) >= BATCH:
                db.conn.executemany(insert, batch)
                batch.clear()
                if bad.batch is not None:
                    bad.batch.clear()
                if progress:
                    progress("Reading", done_before + tell(), total)
        if batch:
            db.conn.executemany(insert, batch)
            if bad.batch is not None:
                bad.batch.clear()
        done_before += size
        if progress:
            progress("Reading", done_before, total)


def _report_duplicates(db: sqlite_utils.Database, bad: _Rejects) -> None:
    rows = db.execute(
        "SELECT r.email, r.line, d.line, d.cells FROM temp.import_dups d "
        "JOIN temp.import_rows r ON r.email_key = d.email_key ORDER BY d.rowid"
    )
    for email, first, where, cells in rows:
        # The row as it was in the file (with --rejects), so it can be fixed and imported.
        sheet, row = json.loads(cells) if cells else (None, [email])
        bad.add(where, "duplicate", f"{email} again (first at {first})", row,
                bad.headers[sheet] if sheet is not None else ())


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


# Pre-assigned event ids start this far past the snapshot's highest: the unsubscribes and
# other events recorded while the import prepares take the next ids without a clash (more
# than this many meanwhile, and the merge is done under the lock as before). Readers' ids
# follow on from the snapshot's with no gap (an export imported again keeps its ids): a
# sign-up meanwhile means the merge is done under the lock as before.
ID_GAP = 10_000
_PREPARED_TABLES = ("import_matches", "import_new", "import_changed", "import_events")


@dataclass
class _Prepared:
    """What the short merge transaction copies in, and what it checks first."""

    first_reader: int  # the pre-assigned ids start here (readers, events)
    first_event: int
    suppressions: int  # forgotten addresses in the snapshot
    ops: Path | None  # the journal's ops, written (changes.write_import_ops)


def _copy_table(db: sqlite_utils.Database, table: str, copy: str) -> None:
    """A temporary table with `table`'s very columns and defaults (its own CREATE)."""
    sql = db.execute("SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?",
                     [table]).fetchone()[0]
    head = re.match(rf'\s*CREATE\s+TABLE\s+("?){table}\1', sql, re.IGNORECASE)
    assert head is not None, sql
    db.execute(f"DROP TABLE IF EXISTS temp.{copy}")
    db.execute(f"CREATE TEMP TABLE {copy}{sql[head.end():]}")


def _prepare(db: sqlite_utils.Database, summary: ImportSummary, file_name: str,
             welcome: bool, journal: bool) -> _Prepared:
    """Everything the merge writes, computed in one read transaction (no write lock).

    New readers get ids from `first_reader` on, in the order of the file; their events
    and those of status changes ids from `first_event` on, in the order `_merge` writes
    them. The rows land in temp tables shaped as `subscribers` and `events`, and with
    `journal` their ops are written to a file of their own (one fsync, lock-free).
    """
    now = now_iso()
    with db.conn:
        db.execute("BEGIN")  # one snapshot of the list for all that follows
        last_reader, last_event, suppressed = db.execute(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM main.subscribers), "
            "(SELECT COALESCE(MAX(id), 0) FROM main.events), "
            "(SELECT count(*) FROM main.suppressions)").fetchone()
        prepared = _Prepared(last_reader + 1, last_event + ID_GAP + 1, suppressed,
                             None)
        _match(db, summary, now)
        image = changes.row_json(db.conn, "subscribers", "s")
        db.execute("ALTER TABLE temp.import_matches ADD COLUMN image TEXT")
        db.execute(f"UPDATE temp.import_matches SET image = (SELECT {image} FROM "
                   "main.subscribers s WHERE s.id = import_matches.id)")
        # New readers, in the order of the file (rowid counts on from the first id).
        _copy_table(db, "subscribers", "import_new")
        db.execute("INSERT INTO temp.import_new (id, email, email_key, created_at, updated_at) "
                   "VALUES (?, '', '', '', '')", [prepared.first_reader - 1])
        summary.added = db.execute(
            """
            INSERT INTO temp.import_new (email, email_key, name, status, tags, attributes,
              source, created_at, updated_at, confirmed_at, unsubscribed_at, optin_ip)
            SELECT email, email_key, name, status, tags, attributes, source, created_at,
              updated_at, confirmed_at, unsubscribed_at, optin_ip
            FROM temp.import_rows
            WHERE email_key NOT IN (SELECT email_key FROM temp.import_matches)
            ORDER BY rowid
            """).rowcount
        db.execute("DELETE FROM temp.import_new WHERE id = ?", [prepared.first_reader - 1])
        # Existing readers the file changes, as they will be.
        _copy_table(db, "subscribers", "import_changed")
        db.execute("INSERT INTO temp.import_changed SELECT s.* FROM main.subscribers s "
                   "JOIN temp.import_matches m ON m.id = s.id WHERE m.changed")
        db.execute(
            """
            UPDATE temp.import_changed SET status = m.status, name = m.name, tags = m.tags,
              attributes = m.attributes, created_at = m.created_at,
              confirmed_at = m.confirmed_at, unsubscribed_at = m.unsubscribed_at,
              optin_ip = m.optin_ip, updated_at = :now
            FROM temp.import_matches AS m WHERE import_changed.id = m.id
            """, {"now": now})
        # The events, as _merge writes them: status changes, readers added, welcomes owed.
        _copy_table(db, "events", "import_events")
        db.execute("INSERT INTO temp.import_events (id, email, kind, source, created_at) "
                   "VALUES (?, '', '', '', '')", [prepared.first_event - 1])
        db.execute(
            """
            INSERT INTO temp.import_events (subscriber_id, email, kind, status_before,
              status_after, source, detail, created_at)
            SELECT m.id, r.email, CASE m.status WHEN 'active' THEN 'activated' ELSE m.status END,
              m.old_status, m.status, 'import', :file, :now
            FROM temp.import_matches m JOIN temp.import_rows r ON r.email_key = m.email_key
            WHERE m.status IS NOT m.old_status ORDER BY r.rowid
            """, {"file": file_name, "now": now})
        db.execute(
            """
            INSERT INTO temp.import_events (subscriber_id, email, kind, status_before,
              status_after, source, detail, created_at)
            SELECT id, email, 'imported', NULL, status, 'import', :file, :now
            FROM temp.import_new ORDER BY id
            """, {"file": file_name, "now": now})
        if welcome:  # owed the welcome email: new active readers, and those made active
            db.execute(
                """
                INSERT INTO temp.import_events (subscriber_id, email, kind, source, detail,
                  created_at)
                SELECT id, email, 'welcome_requested', 'import', :file, :now FROM (
                  SELECT c.id, c.email FROM temp.import_changed c
                  JOIN temp.import_matches m ON m.id = c.id
                  WHERE c.status = 'active' AND m.old_status IS NOT 'active'
                  UNION ALL
                  SELECT id, email FROM temp.import_new WHERE status = 'active'
                ) ORDER BY id
                """, {"file": file_name, "now": now})
        db.execute("DELETE FROM temp.import_events WHERE id = ?", [prepared.first_event - 1])
        db.conn.commit()  # the read transaction: nothing was written to the list
    if journal and changes.database_path(db.conn) is not None:
        database = changes.database_path(db.conn)
        assert database is not None
        prepared.ops = changes.write_import_ops(database, _ops(db))
    return prepared


def _ops(db: sqlite_utils.Database) -> Iterator[changes.Encoded]:
    """The journal's `reader` ops of the prepared rows: one per event (as
    changes.readers_since), then one per reader changed without a status change."""
    new = changes.row_json(db.conn, "subscribers", "n")
    changed = changes.row_json(db.conn, "subscribers", "c")
    event = changes.row_json(db.conn, "events", "e")
    rows = db.execute(
        f"""
        SELECT json_object('op', 'reader', 'subscriber',
          json(CASE WHEN n.id IS NOT NULL THEN {new} WHEN c.id IS NOT NULL THEN {changed} END),
          'events', json_array(json({event})))
        FROM temp.import_events e
        LEFT JOIN temp.import_new n ON n.id = e.subscriber_id
        LEFT JOIN temp.import_changed c ON c.id = e.subscriber_id
        ORDER BY e.id
        """)
    for (text,) in rows:
        yield changes.Encoded(text)
    rows = db.execute(
        f"""
        SELECT json_object('op', 'reader', 'subscriber', json({changed}), 'events', json('[]'))
        FROM temp.import_changed c
        WHERE c.id NOT IN (SELECT subscriber_id FROM temp.import_events) ORDER BY c.id
        """)
    for (text,) in rows:
        yield changes.Encoded(text)


def _renamed_ops(db: sqlite_utils.Database) -> Iterator[changes.Encoded]:
    """After `_merge`: the `reader` ops of the readers it changed without an event (a name,
    tags, attributes: no status change), so a restore puts those back too."""
    image = changes.row_json(db.conn, "subscribers", "s")
    rows = db.execute(
        f"SELECT json_object('op', 'reader', 'subscriber', json({image}), 'events', "
        "json('[]')) FROM temp.import_matches m JOIN main.subscribers s ON s.id = m.id "
        "WHERE m.changed AND m.status IS m.old_status ORDER BY m.id")
    for (text,) in rows:
        yield changes.Encoded(text)


def _commit_prepared(db: sqlite_utils.Database, prepared: _Prepared) -> bool:
    """Inside the merge's write transaction: copy the prepared rows in and adopt their
    journal file; False (nothing written) when the list changed under the snapshot in a way
    that matters: an id taken, a matched reader changed or erased, an address forgotten."""
    last_reader, last_event, suppressed = db.execute(
        "SELECT (SELECT COALESCE(MAX(id), 0) FROM main.subscribers), "
        "(SELECT COALESCE(MAX(id), 0) FROM main.events), "
        "(SELECT count(*) FROM main.suppressions)").fetchone()
    if (last_reader >= prepared.first_reader or last_event >= prepared.first_event
            or suppressed != prepared.suppressions):
        return False
    image = changes.row_json(db.conn, "subscribers", "s")
    moved = db.execute(
        f"SELECT 1 FROM temp.import_matches m LEFT JOIN main.subscribers s ON s.id = m.id "
        f"WHERE s.id IS NULL OR {image} IS NOT m.image LIMIT 1").fetchone()
    if moved is not None:
        return False
    db.execute("SAVEPOINT import_prepared")
    try:
        db.execute("INSERT INTO main.subscribers SELECT * FROM temp.import_new ORDER BY id")
    except sqlite3.IntegrityError:  # an address of the file signed up meanwhile
        db.execute("ROLLBACK TO import_prepared")
        db.execute("RELEASE import_prepared")
        return False
    db.execute("RELEASE import_prepared")
    columns = [row[1] for row in db.execute("PRAGMA main.table_info(subscribers)").fetchall()
               if row[1] != "id"]
    db.execute(
        "UPDATE main.subscribers SET " + ", ".join(f'"{c}" = c."{c}"' for c in columns) + " "
        "FROM temp.import_changed AS c WHERE main.subscribers.id = c.id")
    db.execute("INSERT INTO main.events SELECT * FROM temp.import_events ORDER BY id")
    if prepared.ops is not None:
        changes.adopt_import_ops(db.conn, prepared.ops)
    return True


def _merge(db: sqlite_utils.Database, summary: ImportSummary, file_name: str,
           welcome: bool = False) -> None:
    """Fold the staged rows into `subscribers` (inside the caller's transaction).

    The events are written in bulk too (INSERT … SELECT): one per reader added, one per
    status changed, source `import` and the file name as the detail.
    """
    now = now_iso()
    _match(db, summary, now)
    _merge_matched(db, summary, file_name, welcome, now)


def _match(db: sqlite_utils.Database, summary: ImportSummary, now: str) -> None:
    """temp.import_matches: each existing reader the file names, and what they become under
    the consent rules (`changed`: anything did); the summary's updated and unchanged."""
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


def _merge_matched(db: sqlite_utils.Database, summary: ImportSummary, file_name: str,
                   welcome: bool, now: str) -> None:
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
