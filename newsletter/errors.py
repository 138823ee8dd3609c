"""One error hierarchy. The CLI turns these into `Error: …` and an exit code.

Every message says what is wrong *and* how to fix it, in one line.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


class NewsletterError(Exception):
    """Base class for every error a user can cause and fix."""

    exit_code = 1


class ConfigError(NewsletterError):
    """newsletter.toml, the environment or a missing secret."""

    exit_code = 2


class ContentError(NewsletterError):
    """A draft, its front matter, a layout or an asset cannot be rendered."""

    exit_code = 3


class SubscriberError(NewsletterError):
    """Bad addresses, import files, unknown subscribers."""

    exit_code = 4


class DeliveryError(NewsletterError):
    """A send cannot start or go on (refused resend, nothing to send, …)."""

    exit_code = 5


class ProviderError(DeliveryError):
    """The provider as a whole failed: auth refused, server down, bad settings.

    Stops the send at once; rows not yet sent stay queued for a resume.
    """

    exit_code = 6


def database_error(exc: sqlite3.Error, path: Path | None = None) -> ConfigError:
    """A ConfigError saying what is wrong with the database file and how to fix it.

    SQLite reports a damaged file, a file that is not a database, or one that cannot be
    written only when it is used, so the CLI maps these wherever they surface.
    """
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        fix = ("it is damaged or not a newsletter database: restore it from a backup, or move "
               "it aside and run the command again to start an empty one")
    elif "readonly" in text or "read-only" in text:
        fix = "it is read-only: make the file and its folder writable"
    elif "locked" in text or "busy" in text:
        fix = "another command is using it: wait for that one to finish and run this again"
    else:
        fix = "check that the file and its folder are readable and writable"
    name = f"the database {path}" if path is not None else "the database (newsletter.db)"
    return ConfigError(f"{name} failed ({text}): {fix}")
