"""What a reader sees when the database fails: "busy" when it is locked, else its reason.

A locked database (a long import or send holding the write lock past the 30 s busy
timeout) passes: the page says so and when to retry. Anything else (a damaged or
unreadable file, a missing table) will not pass by waiting: it is a 500 that names the
reason, and the log says how to fix it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from newsletter.errors import ConfigError
from newsletter.store import database_error
from newsletter.web.context import Web

log = logging.getLogger("newsletter.web")

_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def is_busy(exc: Exception) -> bool:
    """True when SQLite gave up waiting for another writer (locked or busy)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _BUSY_CODES  # extended codes keep the primary in the low byte
    # store.connect reports a failure while opening as a ConfigError naming SQLite's reason.
    text = str(exc)
    return "database is locked" in text or "database table is locked" in text or (
        "database is busy" in text)


async def database_failed(request: Request, exc: Exception) -> Response:
    """The exception handler for sqlite3.Error and ConfigError raised by a view."""
    web = Web.of(request)
    if is_busy(exc):
        log.error("database busy: %s", exc)
        response = web.page("error.html", 503, title="Busy",
                            text="The newsletter is busy for a moment. Please try again in a "
                                 "minute.")
        response.headers["Retry-After"] = "60"
        return response
    if isinstance(exc, sqlite3.Error):
        reason = str(exc)
        log.error("%s", database_error(exc, web.settings.database))
    else:
        # Named relative to the newsletter folder: the page shows no server paths.
        reason = str(exc).replace(f"{web.settings.root}/", "")
        log.error("%s", exc)
    return web.page("error.html", 500, title="Something went wrong",
                    text=f"The newsletter could not answer ({reason}). Please try again "
                         "later.")


def too_large(web: Web) -> Callable[[int], Response]:
    """The 413 page for a form post over [server] max_body (the body limit's answer)."""

    def page(limit: int) -> Response:
        response = web.page("error.html", 413, title="Too much text",
                            text=f"What you sent is longer than this page accepts ({limit:,} "
                                 "bytes). Go back, shorten it and send it again.")
        response.headers["Connection"] = "close"
        return response

    return page


HANDLERS = {sqlite3.Error: database_failed, ConfigError: database_failed}
