"""What every provider pull shares: an authenticated GET with retries, and cursors.

A pull reads a provider's lists (bounces, complaints, unsubscribes, suppressions) through
its API with the same `[provider]` settings the provider sends with (endpoint, key
variable, region), read from the settings, not from the sending adapter: feedback and
delivery do not import each other. Requests go through `newsletter.http`'s transport
(its redaction, and a hook that signs each SES request). Reading is idempotent, so 429
(after Retry-After), 5xx, timeouts and refused connections are simply retried a few
times; 401/403 stop with the variable to fix.

A cursor per list (`sync_cursors`) remembers how far the last sync read; the next one asks
only for what is newer, with a small overlap that the events' external ids make harmless.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
import sqlite_utils

from newsletter.audience.policy import Feedback
from newsletter.errors import ProviderError
from newsletter.http import HTTPTrouble, Transport, Unreachable, retry_after
from newsletter.redact import Redactor, one_line
from newsletter.settings import Settings

ATTEMPTS = 4
MAX_WAIT = 60.0  # a sync never sleeps longer than this for one Retry-After
OVERLAP = timedelta(minutes=10)
# No real list needs this many pages in one sync; an API that pages on past it is looping.
MAX_PAGES = 2_000


class MalformedAnswer(ProviderError):
    """The API answered 200 with something its documentation does not describe."""


@dataclass(frozen=True)
class Cursor:
    """Where one list's last pull ended (ISO 8601 UTC), None before the first."""

    name: str  # e.g. "postmark:bounces"
    value: str | None


def read_cursor(db: sqlite_utils.Database, name: str) -> Cursor:
    row = db.execute("SELECT value FROM sync_cursors WHERE name = ?", [name]).fetchone()
    return Cursor(name, row[0] if row else None)


def save_cursor(db: sqlite_utils.Database, name: str, value: str) -> None:
    """Inside the caller's transaction: the cursor moves with the events it covers."""
    db.execute(
        "INSERT INTO sync_cursors (name, value, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        [name, value, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")],
    )


def since(cursor: Cursor) -> datetime | None:
    """The time to ask from: the cursor less the overlap (None: everything)."""
    if cursor.value is None:
        return None
    return datetime.fromisoformat(cursor.value.replace("Z", "+00:00")) - OVERLAP


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Puller:
    """Base class: one provider's lists → Feedback, newest cursor per list.

    A puller declares its API's public address and key variable as the sending
    adapter does; `[provider] endpoint` and `api_key_env` override both.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # as the provider writes its name, for messages
    default_endpoint: ClassVar[str] = ""
    default_key_env: ClassVar[str] = ""

    def __init__(self, settings: Settings):
        self.options = settings.provider
        self.redactor = Redactor()  # every secret read in open(), hidden from every message
        self._transport: Transport | None = None
        self.waits: list[float] = []  # the Retry-After pauses taken (shown in --verbose)
        self._asked: set[tuple[str, tuple]] = set()  # every (path, query) asked this sync
        self._last: tuple[str, bytes] | None = None  # the last (path, body) answered

    @property
    def endpoint(self) -> str:
        """The API's base URL: `[provider] endpoint`, else the provider's public one."""
        return str(self.options.get("endpoint") or self.default_endpoint).rstrip("/")

    @property
    def key_env(self) -> str:
        """The name (never the value) of the environment variable holding the key."""
        return str(self.options.get("api_key_env") or self.default_key_env)

    def read_key(self) -> str:
        """The API key from the environment; ConfigError naming the variable when unset."""
        key = self.options.secret("api_key_env", self.default_key_env)
        assert key is not None  # a default variable name always applies
        return key

    def auth_headers(self, key: str) -> dict[str, str]:
        """Headers that authenticate every request (Bearer by default)."""
        return {"Authorization": f"Bearer {key}"}

    def signer(self) -> Callable[[httpx.Request], None] | None:
        """The transport's hook for APIs that sign each request (SES); None elsewhere."""
        return None

    def redact(self, text: str) -> str:
        """`text` with every secret of this pull hidden, on one line."""
        return one_line(self.redactor(text))

    def open(self) -> None:
        key = self.read_key()
        self.redactor.add(key)
        headers = {"Accept": "application/json", "User-Agent": "newsletter-sync (+httpx)"}
        headers.update(self.auth_headers(key))
        timeout = float(self.options.get("timeout", 30))
        self._transport = Transport(self.name, self.endpoint, headers, timeout, self.redactor,
                                    sign=self.signer())

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET JSON, retrying 429/5xx/timeouts; ProviderError (secrets redacted) otherwise."""
        assert self._transport is not None, "open() first"
        what = f"{self.name} {path}"
        # A paging loop (the same NextToken again, an offset the API ignores) would make
        # sync run forever: stop it with an error before the same thing is asked twice.
        asked = (path, tuple(sorted((params or {}).items())))
        if asked in self._asked or len(self._asked) >= MAX_PAGES:
            raise MalformedAnswer(f"{what}: the API kept answering with the same page: "
                                  "nothing was changed; run `newsletter sync` again later")
        self._asked.add(asked)
        for attempt in range(1, ATTEMPTS + 1):
            backoff = min(2 ** attempt * 0.25, MAX_WAIT)
            try:
                response = self._transport.request("GET", path, params=params)
            except HTTPTrouble as exc:
                if exc.status is None:  # no answer (a timeout, a dropped connection)
                    self._not_reached(what, attempt, exc.detail, backoff)
                else:  # 408, 429, 5xx: the transport read the wait the API asked for
                    self._answered_busy(what, attempt, exc.status, exc.retry_after or backoff)
                continue
            except Unreachable as exc:  # refused: the server may be restarting
                self._not_reached(what, attempt, exc.detail, backoff)
                continue
            except httpx.HTTPError as exc:  # an answer httpx could not decode
                self._not_reached(what, attempt, self.redact(str(exc) or type(exc).__name__),
                                  backoff)
                continue
            status = response.status_code
            if status in (401, 403):
                raise ProviderError(
                    f"{what}: the API refused the key ({status}): check "
                    f"{self.key_env} (it must be allowed to read suppressions)"
                )
            if status >= 500:  # 501, which the transport leaves to its caller
                self._answered_busy(what, attempt, status,
                                    retry_after(response.headers) or backoff)
                continue
            if status == 404:
                return None  # nothing there (an empty list on some APIs)
            if status >= 400:
                raise ProviderError(f"{what}: the API answered {status}: "
                                    f"{self.redact(response.text)}")
            if self._last == (path, response.content) and params:
                raise MalformedAnswer(f"{what}: the API answered the next page with the same "
                                      "page again: nothing was changed; run `newsletter sync` "
                                      "again later")
            self._last = (path, response.content)
            try:
                return response.json()
            except ValueError:
                raise ProviderError(f"{what}: the answer is not JSON: is provider.endpoint "
                                    "the API's address?") from None
        raise AssertionError("unreachable")

    @staticmethod
    def _not_reached(what: str, attempt: int, detail: str, backoff: float) -> None:
        """Sleep before the next attempt, or stop after the last one."""
        if attempt == ATTEMPTS:
            raise ProviderError(f"{what}: {detail}: the API could not be reached; check "
                                "provider.endpoint and try again later")
        time.sleep(backoff)

    def _answered_busy(self, what: str, attempt: int, status: int, wait: float) -> None:
        """Wait as the API asked (at most MAX_WAIT), or stop after the last attempt."""
        if attempt == ATTEMPTS:
            raise ProviderError(f"{what}: the API answered {status} {ATTEMPTS} times: "
                                "run `newsletter sync` again later")
        wait = min(wait, MAX_WAIT)
        self.waits.append(wait)
        time.sleep(wait)

    def pull(self, db: sqlite_utils.Database) -> Iterator[tuple[str, Feedback | None, str]]:
        """Yield (cursor name, feedback, newest time seen) per item; feedback None = skip."""
        raise NotImplementedError
