"""The SQLite database: connection settings, schema and migrations.

One file (`newsletter.db` by default) holds subscribers, campaigns and the
delivery log. WAL mode and a busy timeout let a send run while another
command reads or changes subscribers. The schema is created and upgraded by
numbered migrations recorded in `_migrations`, so a newer version opens an
older database; migrations are append-only (never edit a released one).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from newsletter.errors import ConfigError, database_error


def _run(db: sqlite_utils.Database, script: str) -> None:
    """Run `;`-separated DDL inside the caller's transaction (executescript would commit)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _m001_initial(db: sqlite_utils.Database) -> None:
    _run(
        db,
        """
        CREATE TABLE subscribers (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL,              -- normalized (domain lower-cased, IDN as Unicode)
            email_key TEXT NOT NULL UNIQUE,   -- lower-cased email: one person, one row
            name TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'active'
                CHECK (status IN ('active','unsubscribed','bounced','complained','pending')),
            tags TEXT NOT NULL DEFAULT '[]',        -- JSON array of strings
            attributes TEXT NOT NULL DEFAULT '{}',  -- JSON object, available to layouts
            source TEXT NOT NULL DEFAULT '',        -- which import or command added it
            created_at TEXT NOT NULL,               -- ISO 8601 UTC
            updated_at TEXT NOT NULL,
            confirmed_at TEXT,
            unsubscribed_at TEXT,
            optin_ip TEXT
        );
        CREATE INDEX subscribers_status ON subscribers (status, id);

        CREATE TABLE campaigns (
            id INTEGER PRIMARY KEY,
            slug TEXT NOT NULL,
            draft_path TEXT NOT NULL,
            subject TEXT NOT NULL,
            audience TEXT NOT NULL,          -- 'subscribers', 'tag:NAME' or the explicit addresses
            kind TEXT NOT NULL CHECK (kind IN ('list','test')),
            provider TEXT NOT NULL,
            created_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL DEFAULT 'sending'   -- sending | done | stopped
        );
        CREATE INDEX campaigns_slug ON campaigns (slug, kind);

        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
            subscriber_id INTEGER REFERENCES subscribers(id),
            email TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'queued'
                CHECK (state IN ('queued','sending','sent','failed','uncertain','skipped')),
            attempts INTEGER NOT NULL DEFAULT 0,
            provider_message_id TEXT,
            error TEXT,
            updated_at TEXT NOT NULL,
            sent_at TEXT,
            UNIQUE (campaign_id, email)
        );
        CREATE INDEX deliveries_state ON deliveries (campaign_id, state, id);
        """
    )


def _m002_events(db: sqlite_utils.Database) -> None:
    # The append-only record of every change to a reader (audience/events.py writes it).
    # subscriber_id is kept as a plain number, not a foreign key: erasing a reader deletes
    # their events explicitly, and a foreign key would make that order-dependent.
    _run(
        db,
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            subscriber_id INTEGER,
            email TEXT NOT NULL,
            kind TEXT NOT NULL,            -- subscribed, confirmed, unsubscribed, bounced, …
            status_before TEXT,            -- the reader's status before, NULL when new
            status_after TEXT,             -- after (equal to before for a non-status event)
            source TEXT NOT NULL,          -- cli, import, web, webhook:postmark, sync:ses, …
            detail TEXT NOT NULL DEFAULT '',   -- the provider's reason, the import file, …
            ip TEXT,
            user_agent TEXT,
            consent TEXT,                  -- the consent text the reader was shown
            campaign_id INTEGER,
            external_id TEXT UNIQUE,       -- the provider's event id: each applied once
            created_at TEXT NOT NULL
        );
        CREATE INDEX events_subscriber ON events (subscriber_id, id);
        CREATE INDEX events_email ON events (email)
        """
    )


def _m007_suppressions(db: sqlite_utils.Database) -> None:
    # Readers forgotten with `subscribers remove --suppress`: only a keyed one-way hash of
    # the address (HMAC with the newsletter secret), so a later import or add refuses it
    # without the address itself being kept.
    _run(
        db,
        """
        CREATE TABLE suppressions (
            address_hash TEXT PRIMARY KEY,
            reason TEXT NOT NULL,
            created_at TEXT NOT NULL
        )
        """,
    )


def _m008_imported_posts(db: sqlite_utils.Database) -> None:
    # Posts brought in by `newsletter import-posts`: a re-import recognises each by its
    # platform id and leaves a draft the writer edited (its hash changed) alone.
    _run(
        db,
        """
        CREATE TABLE imported_posts (
            source TEXT NOT NULL,          -- substack | ghost | buttondown
            post_id TEXT NOT NULL,
            path TEXT NOT NULL,            -- the draft, relative to the newsletter folder
            sha256 TEXT NOT NULL,          -- of the draft as import-posts wrote it
            imported_at TEXT NOT NULL,
            PRIMARY KEY (source, post_id)
        )
        """
    )


def _m009_sync_cursors(db: sqlite_utils.Database) -> None:
    # How far `newsletter sync` has read each provider list (feedback/pull/base.py).
    _run(
        db,
        """
        CREATE TABLE sync_cursors (
            name TEXT PRIMARY KEY,         -- e.g. postmark:bounces, sendgrid:spam_reports
            value TEXT NOT NULL,           -- the newest time seen (ISO 8601 UTC)
            updated_at TEXT NOT NULL
        )
        """
    )


def _m010_schedules(db: sqlite_utils.Database) -> None:
    # Sends recorded by `send --at` and sent by `newsletter run` (delivery/schedule.py).
    _run(
        db,
        """
        CREATE TABLE schedules (
            id INTEGER PRIMARY KEY,
            draft_path TEXT NOT NULL,       -- relative to the newsletter folder
            slug TEXT NOT NULL,
            subject TEXT NOT NULL,
            audience TEXT NOT NULL,         -- as --to gave it: subscribers, tag:NAME, …
            send_at TEXT NOT NULL,          -- ISO 8601 UTC
            status TEXT NOT NULL DEFAULT 'scheduled'
                CHECK (status IN ('scheduled','sending','sent','cancelled','held','failed')),
            created_at TEXT NOT NULL,
            draft_sha TEXT NOT NULL,        -- the draft file when scheduled (edits are noted)
            provider TEXT,
            resend INTEGER NOT NULL DEFAULT 0,
            campaign_id INTEGER,
            note TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX schedules_due ON schedules (status, send_at)
        """
    )


# Append new migrations at the end; never reorder or edit a released one.
def _m003_campaign_body_hash(db: sqlite_utils.Database) -> None:
    # A hash of the text part, so the same post saved under another file name
    # is recognised as a repeat of an earlier list send (delivery/log.py refuse_resend).
    # (_run, not executescript: that would commit in the middle of the migration.)
    _run(db, """
        ALTER TABLE campaigns ADD COLUMN body_hash TEXT;
        CREATE INDEX campaigns_body_hash ON campaigns (kind, body_hash)
    """)


def _m004_web_limits(db: sqlite_utils.Database) -> None:
    # Counters for `newsletter serve`'s abuse limits (sign-ups per IP, confirmation emails
    # per address per day), kept here so they hold across --workers processes.
    _run(
        db,
        """
        CREATE TABLE web_limits (
            scope TEXT NOT NULL,           -- e.g. 'confirm:<hashed address>', 'ip:<hashed ip>'
            window_start INTEGER NOT NULL, -- unix time the counting window began
            count INTEGER NOT NULL,
            PRIMARY KEY (scope, window_start)
        )
        """
    )


def _m005_webhook_tokens(db: sqlite_utils.Database) -> None:
    # Signed-request nonces (Mailgun tokens, Svix message ids) already accepted: a request
    # replayed inside its freshness window is refused (feedback/webhooks/replay.py).
    _run(
        db,
        """
        CREATE TABLE webhook_tokens (
            provider TEXT NOT NULL,
            token TEXT NOT NULL,
            seen_at REAL NOT NULL,         -- unix time (rows older than the window are pruned)
            PRIMARY KEY (provider, token)
        )
        """
    )


def _m011_delivery_message_ids(db: sqlite_utils.Database) -> None:
    # A bounce or complaint reported by a webhook or a pull names the provider's message
    # id; this finds the send it is about (audience/policy.py: soft bounces count per send).
    _run(db, "CREATE INDEX deliveries_provider_message_id ON deliveries (provider_message_id)")


def _m012_reader_topics(db: sqlite_utils.Database) -> None:
    # Which topics a reader gets, apart from their tags: NULL is "everything" (imported and
    # existing readers, and topics added later), a JSON list is the topics they ticked
    # ('[]': only issues without a topic). Web sign-ups stored their ticked topics as tags
    # (and nothing else), so those readers keep exactly that choice.
    _run(db, """
        ALTER TABLE subscribers ADD COLUMN topics TEXT;
        UPDATE subscribers SET topics = tags WHERE source = 'web' AND tags NOT IN ('', '[]')
    """)


def _m013_outgoing(db: sqlite_utils.Database) -> None:
    # Confirmation emails (and any mail a reader's request asks for) wait here for the
    # outgoing workers, so a request never waits on a provider; the row is the record.
    _run(db, """
        CREATE TABLE outgoing (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,                 -- 'confirm'
            subscriber_id INTEGER,
            email TEXT NOT NULL,
            url TEXT NOT NULL DEFAULT '',       -- the link the email carries
            state TEXT NOT NULL DEFAULT 'queued'
                CHECK (state IN ('queued','sending','sent','failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at TEXT NOT NULL,              -- not before (ISO 8601 UTC): retry back-off
            error TEXT,
            provider TEXT,
            provider_message_id TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX outgoing_due ON outgoing (state, next_at, id)
    """)


def _m014_meta(db: sqlite_utils.Database) -> None:
    """Facts about the database itself: which key signed its links (a fingerprint)."""
    _run(db, """
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )
    """)


def _m018_engagement(db: sqlite_utils.Database) -> None:
    """[analytics] clicks and opens: one row per request to /c/ or /o/ (audience/engagement.py)."""
    _run(db, """
        CREATE TABLE engagement (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,          -- click | open
            campaign_id INTEGER NOT NULL,
            url TEXT,                    -- the link (clicks)
            reader TEXT,                 -- a:<pseudonym>, key:<reader key> (per_reader), NULL
            machine TEXT,                -- NULL: a person, else why not (head, agent, ...)
            at TEXT NOT NULL             -- ISO 8601 UTC, microseconds
        );
        CREATE INDEX engagement_campaign ON engagement (campaign_id, kind);
        CREATE INDEX engagement_reader ON engagement (reader, campaign_id, at);
        CREATE INDEX engagement_at ON engagement (at)
    """)


def _m019_events_by_campaign(db: sqlite_utils.Database) -> None:
    # `newsletter stats` counts each campaign's bounces, complaints and unsubscribes; most
    # events name no campaign, so the index holds only those that do.
    _run(db, """
        CREATE INDEX events_campaign ON events (campaign_id, kind)
            WHERE campaign_id IS NOT NULL
    """)


def _m022_engagement_source(db: sqlite_utils.Database) -> None:
    # Provider open/click webhooks feed engagement too: `source` says whose tracking made a
    # row (NULL: serve's own /c/ and /o/), `event_id` a digest of the provider's event id,
    # so a webhook delivered twice counts once.
    _run(db, """
        ALTER TABLE engagement ADD COLUMN source TEXT;
        ALTER TABLE engagement ADD COLUMN event_id TEXT;
        CREATE UNIQUE INDEX engagement_event ON engagement (event_id) WHERE event_id IS NOT NULL
    """)


def _m023_growth_by_date(db: sqlite_utils.Database) -> None:
    # `newsletter stats` counts the list's growth per week or month as one range of each
    # of these per period (stats/numbers.py `_ranged`, whose expressions must stay written
    # as here). They cover their queries, so a count never reads the table; the stopped
    # readers' two hold only them.
    _run(db, """
        CREATE INDEX subscribers_joined ON subscribers (created_at, status, confirmed_at);
        CREATE INDEX subscribers_confirmed ON subscribers (confirmed_at, status)
            WHERE confirmed_at IS NOT NULL;
        CREATE INDEX subscribers_stopped ON subscribers (
            status, coalesce(unsubscribed_at, updated_at), unsubscribed_at, updated_at)
            WHERE status IN ('bounced','complained','unsubscribed');
        CREATE INDEX subscribers_ended ON subscribers (
            max(coalesce(unsubscribed_at, updated_at), coalesce(confirmed_at, created_at)),
            unsubscribed_at, updated_at, confirmed_at, created_at, status)
            WHERE status IN ('bounced','complained','unsubscribed')
    """)


MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("001_initial", _m001_initial),
    ("002_events", _m002_events),
    ("003_campaign_body_hash", _m003_campaign_body_hash),
    ("004_web_limits", _m004_web_limits),
    ("005_webhook_tokens", _m005_webhook_tokens),
    ("007_suppressions", _m007_suppressions),
    ("008_imported_posts", _m008_imported_posts),
    ("009_sync_cursors", _m009_sync_cursors),
    ("010_schedules", _m010_schedules),
    ("011_delivery_message_ids", _m011_delivery_message_ids),
    ("012_reader_topics", _m012_reader_topics),
    ("013_outgoing", _m013_outgoing),
    ("014_meta", _m014_meta),
    ("018_engagement", _m018_engagement),
    ("019_events_by_campaign", _m019_events_by_campaign),
    ("022_engagement_source", _m022_engagement_source),
    ("023_growth_by_date", _m023_growth_by_date),
]


def remember_once(db: sqlite_utils.Database, key: str, value: str) -> str:
    """Record `value` under `key` in meta unless one is there; return the one that stays.

    The first writer wins, so two processes binding at once agree on one value.
    """
    db.conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
    row = db.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return str(row[0])


def connect(path: Path, *, threads: bool = False) -> sqlite_utils.Database:
    """Open (creating if needed) the database at `path`, migrated to the latest schema.

    `threads=True` lets several threads share the connection (the caller serializes them).
    """
    try:
        conn = sqlite3.connect(
            str(path), timeout=30, isolation_level=None, check_same_thread=not threads
        )
    except sqlite3.Error as exc:
        raise ConfigError(
            f"cannot open the database {path}: {exc}: check that its folder exists and can be "
            "written (newsletter.toml [newsletter] database names another file)"
        ) from None
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        db = sqlite_utils.Database(conn)
        migrate(db)
    except sqlite3.Error as exc:
        conn.close()
        raise database_error(exc, path) from None
    return db


def read_only_rows(path: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of `sql` from the database at `path` opened read-only; [] without one.

    For commands that only look (drafts, publish): they never create or migrate the
    database. No file, or one without the table yet (nothing was ever sent), has nothing
    to show; any other failure (a damaged, unreadable or locked file) is a ConfigError,
    never "no rows": publish would take every page down on an empty answer.
    """
    if not path.exists():
        return []
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise database_error(exc, path) from None
    try:
        return conn.execute(sql, list(params)).fetchall()
    except sqlite3.OperationalError as exc:
        if str(exc).startswith("no such table") and _has_no_migrations(conn):
            return []
        raise database_error(exc, path) from None
    except sqlite3.Error as exc:
        raise database_error(exc, path) from None
    finally:
        conn.close()


def _has_no_migrations(conn: sqlite3.Connection) -> bool:
    """True for an empty file, or one that never reached this version's tables (an older or
    freshly created database): nothing was recorded in it yet."""
    try:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error:
        return False  # unreadable: the caller reports the first error
    return "campaigns" not in names


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply the migrations this database has not seen yet; return their names."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in db.execute("SELECT name FROM _migrations").fetchall()}
    known = {name for name, _ in MIGRATIONS}
    unknown = done - known
    if unknown:
        raise ConfigError(
            f"the database was written by a newer version of newsletter (migration "
            f"{sorted(unknown)[-1]}): upgrade newsletter to open it"
        )
    applied = []
    for name, step in MIGRATIONS:
        if name in done:
            continue
        with db.conn:  # one transaction per migration
            db.execute("BEGIN IMMEDIATE")
            step(db)
            db.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, datetime('now'))", [name]
            )
        applied.append(name)
    return applied
