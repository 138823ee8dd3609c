"""`newsletter backup` and `newsletter restore`: a consistent snapshot, and putting one back.

A backup is SQLite's `VACUUM INTO` (one read transaction: consistent while `serve`, a
send and an import write; never a plain copy of a WAL database). Just before it, the
change journal (`newsletter/changes.py`) starts a new generation, recorded in the
database: every commit from then on lands in the new generation's file, and the snapshot
holds everything committed before. A commit between the switch and the snapshot is in
both, which the replay's absolute ops make harmless.

A restore puts a snapshot back in a side file, replays the journal written since it
(readers who left stay gone, readers who joined are there, erased readers stay erased,
every delivery that went out is known), settles what was in flight as after a crash
(`delivery/recovery.py`: handed to a provider with no answer = `uncertain`), holds the
scheduled sends that came due, and only then swaps it in, keeping the replaced database
aside. It uses both the list and the delivery log, so it stands above both, like `run`.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from newsletter import changes, store
from newsletter.audience.events import STOPPED, now_iso
from newsletter.audience.subscribers import erase_rows
from newsletter.delivery.journal import journal_paths
from newsletter.delivery.lock import is_being_sent
from newsletter.delivery.log import finish_campaign
from newsletter.delivery.recovery import recover_interrupted
from newsletter.errors import ConfigError, DeliveryError, database_error

BACKUPS = "backups"  # the folder next to the database where snapshots go by default
LAST_BACKUP_AT = "last_backup_at"  # meta keys of the live database (`newsletter doctor`)
LAST_BACKUP_FILE = "last_backup_file"

Progress = Callable[[int, int], None]  # (bytes written, bytes in the database)


@dataclass
class Backup:
    """What `backup()` wrote."""

    path: Path
    size: int
    at: str
    generation: int  # the journal generation that starts with this snapshot
    deleted_journals: list[Path] = field(default_factory=list)


def default_backup_path(database: Path, at: datetime) -> Path:
    """`backups/newsletter-2026-12-07T220000Z.db` next to the database."""
    return database.parent / BACKUPS / f"{database.stem}-{at.strftime('%Y-%m-%dT%H%M%SZ')}.db"


def backup(database: Path, target: Path | None = None, *,
           progress: Progress | None = None) -> Backup:
    """Write a consistent snapshot of `database` to `target` (0600), while others write.

    Starts a new journal generation first, records `last_backup_at` and
    `last_backup_file` in the live database's meta after, and deletes the journal files
    the snapshot now covers (an erased reader lingers in them until then).
    """
    now = datetime.now(UTC)
    target = target or default_backup_path(database, now)
    if target.exists():
        raise ConfigError(f"{target} exists already: name another file, or move that one away")
    if not database.exists():
        raise ConfigError(f"there is no database at {database} to back up: check [newsletter] "
                          "database in newsletter.toml, or --dir")
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {target.parent} ({exc.strerror}): name a FILE in a "
                          "folder that can be written") from None
    partial = target.with_name(f".{target.name}.partial")
    db = store.connect(database)
    try:
        at = now_iso()
        with db.conn:  # the switch: commits after it go to the new generation
            db.execute("BEGIN IMMEDIATE")
            generation = changes.current_generation(db.conn) + 1
            changes.start_generation(db.conn, generation, at)
        total = _size(db.conn)
        try:
            partial.unlink(missing_ok=True)
            os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            with _Watch(partial, total, progress):
                db.conn.execute("VACUUM INTO ?", [str(partial)])
            _check_snapshot(partial, generation)
            fd = os.open(partial, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(partial, target)
            changes.sync_dir(target.parent)
        except (OSError, sqlite3.Error) as exc:
            partial.unlink(missing_ok=True)
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ConfigError(
                f"the snapshot {target} could not be written ({reason}): check that its "
                "folder has room and can be written, then run `newsletter backup` again "
                "(the database was not changed)") from None
        with db.conn:
            db.execute("BEGIN IMMEDIATE")
            db.conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [
                (LAST_BACKUP_AT, at), (LAST_BACKUP_FILE, str(target.resolve()))])
    finally:
        db.conn.close()
    deleted = changes.delete_before(database, generation)
    return Backup(target, target.stat().st_size, at, generation, deleted)


def _size(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    return int(pages) * int(conn.execute("PRAGMA page_size").fetchone()[0])


class _Watch:
    """Reports the snapshot's growth every half second while VACUUM INTO writes it."""

    def __init__(self, path: Path, total: int, progress: Progress | None):
        self.path, self.total, self.progress = path, total, progress
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Watch:
        if self.progress is not None:
            self.thread.start()
        return self

    def _run(self) -> None:
        assert self.progress is not None
        while not self.done.wait(0.5):
            try:
                self.progress(self.path.stat().st_size, self.total)
            except FileNotFoundError:
                return

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()
        if self.progress is not None and exc[0] is None:
            self.progress(self.total, self.total)


def _check_snapshot(path: Path, generation: int) -> None:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        ok = conn.execute("PRAGMA quick_check").fetchone()[0]
        found = conn.execute("SELECT value FROM meta WHERE key = ?",
                             [changes.GENERATION_KEY]).fetchone()
    finally:
        conn.close()
    if ok != "ok" or found is None or int(found[0]) != generation:
        raise sqlite3.DatabaseError(f"the snapshot does not check out ({ok})")


# -- restore ------------------------------------------------------------------------------


@dataclass
class Restored:
    """What `restore()` did."""

    snapshot: Path
    snapshot_at: str | None  # when the snapshot was taken (None: not made by `backup`)
    kept_aside: Path | None  # the database it replaced (None: there was none)
    journal_lost: bool
    transactions: int = 0  # journaled transactions replayed
    readers: int = 0  # reader changes replayed (joins, status changes, topics)
    erased: int = 0  # erasures replayed
    outcomes: int = 0  # delivery outcomes replayed
    torn: int = 0  # journal lines never committed (skipped)
    uncertain: dict[int, int] = field(default_factory=dict)  # campaign → rows made uncertain
    resumable: dict[int, int] = field(default_factory=dict)  # campaign → rows never sent
    campaigns: dict[int, tuple[str, str]] = field(default_factory=dict)  # id → slug, audience
    held: list[tuple[int, str, str]] = field(default_factory=list)  # schedule id, slug, to


def restore(database: Path, snapshot: Path) -> Restored:
    """Put `snapshot` back as `database`, with the journal since it replayed.

    Refuses while a send holds a campaign's lock or another process (`serve`, an
    import, …) has the database open. The database replaced is renamed aside, never
    deleted. Nothing is sent: resumed sends and held schedules wait for the writer.
    """
    snapshot_generation, snapshot_at = _read_snapshot(snapshot, database)
    _refuse_live_sends(database)
    staging = database.with_name(f".{database.name}.restoring")
    for leftover in _with_sidecars(staging):
        leftover.unlink(missing_ok=True)
    live = _Exclusive(database) if database.exists() else None
    try:
        kept_meta = live.meta() if live is not None else {}
        _copy(snapshot, staging)
        since = snapshot_generation if snapshot_generation is not None else -1
        lost = since < 0 or since not in changes.generations(database)
        result = Restored(snapshot, snapshot_at, None, lost)
        db = store.connect(staging)
        try:
            with changes.written_as(db.conn, database):
                _continue_journal(db, database, lost, since)
                if not lost:
                    _replay(db, database, since, result)
                _settle(db, database, result)
                _hold_due_schedules(db, result)
            with db.conn:
                db.execute("BEGIN IMMEDIATE")
                db.conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                    list(kept_meta.items()))
            db.execute("PRAGMA journal_mode=DELETE")  # one self-contained file to move
        finally:
            db.conn.close()
        if live is not None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            result.kept_aside = _unused(database.with_name(f"{database.name}.replaced-{stamp}"))
            os.rename(database, result.kept_aside)
        os.rename(staging, database)
        changes.sync_dir(database.parent)
    finally:
        if live is not None:
            live.close()
    return result


def _unused(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`…: two restores in one second never overwrite a kept file."""
    found, n = path, 1
    while found.exists():
        n += 1
        found = path.with_name(f"{path.name}-{n}")
    return found


def _read_snapshot(snapshot: Path, database: Path) -> tuple[int | None, str | None]:
    """The snapshot's journal generation and time; ConfigError for what is not one."""
    if not snapshot.is_file():
        raise ConfigError(f"there is no snapshot at {snapshot}: name a file `newsletter "
                          f"backup` wrote (they are in {database.parent / BACKUPS})")
    if database.exists() and snapshot.resolve() == database.resolve():
        raise ConfigError(f"{snapshot} is the live database itself: name a snapshot")
    try:
        conn = sqlite3.connect(f"{snapshot.resolve().as_uri()}?mode=ro", uri=True)
        try:
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("it does not pass SQLite's quick_check")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "campaigns" not in tables:
                raise ConfigError(f"{snapshot} is not a newsletter database: name a snapshot "
                                  "`newsletter backup` wrote")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall()) \
                if "meta" in tables else {}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"{snapshot} cannot be read as a database ({exc}): name a snapshot "
                          "`newsletter backup` wrote") from None
    generation = meta.get(changes.GENERATION_KEY)
    return (int(generation) if generation is not None else None,
            meta.get(changes.SNAPSHOT_AT_KEY))


def _refuse_live_sends(database: Path) -> None:
    for path in database.parent.glob(f".{database.name}.campaign-*.lock"):
        found = re.search(r"\.campaign-(\d+)\.lock$", path.name)
        if found and is_being_sent(database, int(found.group(1))):
            raise DeliveryError(
                f"campaign {found.group(1)} is being sent right now: let it finish (or stop it "
                "with Ctrl-C), then restore; nothing was changed")


class _Exclusive:
    """The live database held exclusively while it is replaced: no process has it open.

    Switching it out of WAL mode succeeds only when no other connection is open (`serve`
    keeps one), and folds the WAL into the file, so the copy kept aside is one file.
    """

    def __init__(self, database: Path):
        self.database = database
        try:
            self.conn = sqlite3.connect(str(database), timeout=2, isolation_level=None)
        except sqlite3.Error as exc:
            raise database_error(exc, database) from None
        try:
            mode = self.conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
            if mode != "delete":
                raise sqlite3.OperationalError("database is locked")
            self.conn.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as exc:
            self.conn.close()
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise database_error(exc, database) from None
            raise DeliveryError(
                f"another command has {database.name} open (`newsletter serve`, a send, an "
                "import, `newsletter run`…): stop it, then restore; nothing was changed"
            ) from None

    def meta(self) -> dict[str, str]:
        """The live database's backup record (`doctor` reads it): the restore keeps it."""
        try:
            rows = self.conn.execute(
                "SELECT key, value FROM meta WHERE key IN (?, ?)",
                [LAST_BACKUP_AT, LAST_BACKUP_FILE]).fetchall()
        except sqlite3.OperationalError as exc:
            if str(exc).startswith("no such table"):  # a database from before the meta table
                return {}
            raise  # locked, damaged, unreadable: said by the caller, never "no record"
        return {str(k): str(v) for k, v in rows}

    def close(self) -> None:
        self.conn.close()  # the lock goes with it (the file was renamed aside meanwhile)


def _with_sidecars(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"),
            path.with_name(path.name + "-journal")]


def _copy(snapshot: Path, staging: Path) -> None:
    """The snapshot into the side file, with SQLite's backup (it never changes the snapshot)."""
    source = sqlite3.connect(f"{snapshot.resolve().as_uri()}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(str(staging))
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    os.chmod(staging, 0o600)


def _continue_journal(db: sqlite_utils.Database, database: Path, lost: bool,
                      since: int) -> None:
    """The restored database journals on from the newest generation (or a new one)."""
    known = changes.generations(database)
    if lost and (moved := changes.generation_files(database)):
        # Journal files newer than the snapshot's lost one belong to the database being
        # replaced: moved aside (never deleted), so no later restore replays them onto
        # this one's history. Its requests files too: serve's start would apply them.
        aside = _unused(changes.journal_dir(database) / (
            "replaced-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")))
        aside.mkdir(mode=0o700)
        for path in moved:
            path.rename(aside / path.name)
        changes.sync_dir(aside)
        changes.sync_dir(aside.parent)
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        if lost:  # a fresh generation: nothing before it belongs to this database
            changes.start_generation(db.conn, max([*known, since, 0]) + 1, now_iso())
        else:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                       [changes.GENERATION_KEY, str(max(known))])


# -- the replay ---------------------------------------------------------------------------


def _replay(db: sqlite_utils.Database, database: Path, since: int, result: Restored) -> None:
    """Apply the journal's transactions, in order, in one transaction; each op is absolute,
    so ops the snapshot already holds change nothing, and a second replay neither."""
    conn = db.conn
    counted = Restored(result.snapshot, None, None, False)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("SAVEPOINT txn")
        open_txn = False
        for record in changes.read(database, since):
            if record is None:
                result.torn += 1
                if open_txn:  # its last line never came: it never committed
                    conn.execute("ROLLBACK TO txn")
                    counted = Restored(result.snapshot, None, None, False)
                    open_txn = False
                continue
            for op in record.ops:
                _apply(db, op, counted)
            open_txn = record.more
            if not record.more:
                conn.execute("RELEASE txn")
                conn.execute("SAVEPOINT txn")
                result.transactions += 1
                result.readers += counted.readers
                result.erased += counted.erased
                result.outcomes += counted.outcomes
                counted = Restored(result.snapshot, None, None, False)
        if open_txn:
            conn.execute("ROLLBACK TO txn")
            result.torn += 1
        conn.execute("RELEASE txn")


def _apply(db: sqlite_utils.Database, op: dict[str, Any], counted: Restored) -> None:
    kind = op.get("op")
    if kind == "reader":
        if op.get("subscriber"):
            _upsert(db, "subscribers", op["subscriber"])
        elif op.get("subscriber_id") is not None and op.get("after"):
            _status_only(db, op)
        for event in op.get("events") or []:
            if "id" in event:
                _upsert(db, "events", event, replace=True)
            else:
                _event_once(db, event)
        counted.readers += 1
    elif kind == "erase":
        erase_rows(db, int(op["subscriber_id"]), str(op["email_key"]), op.get("hash"),
                   suppress=bool(op.get("suppress")))
        counted.erased += 1
    elif kind == "campaign":
        if op.get("campaign"):
            _upsert(db, "campaigns", op["campaign"])
        campaign_id = op["campaign"]["id"] if op.get("campaign") else None
        for did, subscriber_id, email, state in op.get("deliveries") or []:
            db.execute(
                "INSERT OR IGNORE INTO deliveries (id, campaign_id, subscriber_id, email, "
                "state, updated_at) VALUES (?, ?, (SELECT id FROM subscribers WHERE id = ?), "
                "?, ?, ?)", [did, campaign_id, subscriber_id, email, state, now_iso()])
    elif kind == "deliveries":
        stamp = now_iso()
        db.conn.executemany(
            "UPDATE deliveries SET state = ?, provider_message_id = ?, sent_at = ?, error = ?, "
            "updated_at = ? WHERE id = ?",
            [(state, provider_id, sent_at, error, stamp, did)
             for did, state, provider_id, sent_at, error in op.get("set") or []])
        counted.outcomes += len(op.get("set") or [])
    elif kind == "handed":
        ids = [int(i) for i in op.get("ids") or []]
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            db.execute(f"UPDATE deliveries SET state = 'sending' WHERE id IN "
                       f"({','.join('?' * len(part))})", part)
    else:
        raise ConfigError(f"the journal holds an entry this version does not know ({kind!r}): "
                          "upgrade newsletter, then restore again (nothing was changed)")


def _status_only(db: sqlite_utils.Database, op: dict[str, Any]) -> None:
    """A status change journaled before its transaction ran (issue 21: a reader's request
    made durable while the database was busy): no row image, only what changed. Applied as
    change_status would: a reader who stopped keeps their first stop and its date."""
    after, at = str(op["after"]), str(op.get("at") or now_iso())
    if after in STOPPED:
        db.execute(
            "UPDATE subscribers SET status = ?, unsubscribed_at = ?, updated_at = ? "
            "WHERE id = ? AND status NOT IN ('unsubscribed', 'bounced', 'complained')",
            [after, at, at, op["subscriber_id"]])
    else:
        db.execute("UPDATE subscribers SET status = ?, updated_at = ? WHERE id = ?",
                   [after, at, op["subscriber_id"]])


def _event_once(db: sqlite_utils.Database, event: dict[str, Any]) -> None:
    """An event journaled without its row id: recorded unless the same one is there."""
    same = db.execute(
        "SELECT 1 FROM events WHERE subscriber_id IS ? AND kind = ? AND created_at = ? AND "
        "source = ?", [event.get("subscriber_id"), event.get("kind"),
                       event.get("created_at"), event.get("source")]).fetchone()
    if same is None:
        _upsert(db, "events", event, replace=True)


def _upsert(db: sqlite_utils.Database, table: str, row: dict[str, Any], *,
            replace: bool = False) -> None:
    """The row as the journal saw it, by its id (columns this database does not have are
    left out; a newer column the journal lacks keeps its value)."""
    known = [c[1] for c in db.execute(f"PRAGMA table_info({table})").fetchall()]
    names = [name for name in row if name in known]
    marks = ", ".join("?" * len(names))
    values = [row[name] for name in names]
    if replace:
        db.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(names)}) VALUES ({marks})",
                   values)
        return
    updates = ", ".join(f"{name} = excluded.{name}" for name in names if name != "id")
    db.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks}) "
               f"ON CONFLICT(id) DO UPDATE SET {updates}", values)


# -- after the replay: what was in flight, what came due ------------------------------------


_LOST = ("restored from a snapshot whose journal was lost: it may have gone out after the "
         "snapshot")


def _settle(db: sqlite_utils.Database, database: Path, result: Restored) -> None:
    """Rows handed to a provider with no answer become `uncertain` (as after a crash); with
    the journal lost, every unsent row of an unfinished campaign does."""
    unfinished = [r[0] for r in db.execute(
        "SELECT id FROM campaigns WHERE status != 'done' OR id IN "
        "(SELECT campaign_id FROM deliveries WHERE state IN ('queued', 'sending')) "
        "ORDER BY id").fetchall()]
    for campaign_id in unfinished:
        if result.journal_lost:
            with db.conn:
                db.execute("BEGIN IMMEDIATE")
                ids = [r[0] for r in db.execute(
                    "UPDATE deliveries SET state = 'uncertain', error = ?, updated_at = ? "
                    "WHERE campaign_id = ? AND state IN ('queued', 'sending') RETURNING id",
                    [_LOST, now_iso(), campaign_id]).fetchall()]
                if ids:
                    changes.append(db.conn, [changes.deliveries_op(db.conn, ids)])
            if ids:
                result.uncertain[campaign_id] = len(ids)
        else:
            # The worker journals of a send that died before the restore still tell
            # answered rows from those in flight; without them every `sending` row is.
            recovery = recover_interrupted(db, campaign_id, requeue_them=False,
                                           journals=journal_paths(database, campaign_id))
            if recovery.in_flight:
                result.uncertain[campaign_id] = recovery.in_flight
        campaign = finish_campaign(db, campaign_id)
        result.campaigns[campaign_id] = (campaign.slug, campaign.audience)
        if campaign.counts.queued:
            result.resumable[campaign_id] = campaign.counts.queued


def _hold_due_schedules(db: sqlite_utils.Database, result: Restored) -> None:
    """Scheduled sends that came due wait for the writer: `run` never sends a held one."""
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        result.held = [(int(r[0]), str(r[1]), str(r[2])) for r in db.execute(
            "UPDATE schedules SET status = 'held', note = 'held by a restore: send it with "
            "`newsletter send` if it did not go out' WHERE status IN ('scheduled', 'sending') "
            "AND send_at <= ? RETURNING id, slug, audience", [now_iso()]).fetchall()]
    result.held.sort()
