"""What every provider pull shares: an authenticated GET with retries, and cursors.

A pull reads a provider's lists (bounces, complaints, unsubscribes, suppressions) through
its API with the same key and settings the provider sends with; the sending adapter is
asked for its endpoint, key and auth headers, so there is one place each is configured.
Reading is idempotent, so 429 (after Retry-After), 5xx and timeouts are simply retried a
few times; 401/403 stop with the variable to fix.

A cursor per list (`sync_cursors`) remembers how far the last sync read; the next one asks
only for what is newer, with a small overlap that the events' external ids make harmless.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
import sqlite_utils

from newsletter.audience.policy import Feedback
from newsletter.delivery.providers.http import HTTPProvider, retry_after
from newsletter.errors import ProviderError

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
    """Base class: one provider's lists → Feedback, newest cursor per list."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # as the provider writes its name, for messages

    def __init__(self, provider: HTTPProvider):
        self.provider = provider
        self._client: httpx.Client | None = None
        self.waits: list[float] = []  # the Retry-After pauses taken (shown in --verbose)
        self._asked: set[tuple[str, tuple]] = set()  # every (path, query) asked this sync
        self._last: tuple[str, bytes] | None = None  # the last (path, body) answered

    def open(self) -> None:
        key = self.provider.read_key()
        self.provider.remember_secret(key)
        headers = {"Accept": "application/json", "User-Agent": "newsletter-sync (+httpx)"}
        headers.update(self.provider.auth_headers(key))
        timeout = float(self.provider.provider_settings.get("timeout", 30))
        self._client = httpx.Client(base_url=self.provider.endpoint, headers=headers,
                                    timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def sign(self, request: httpx.Request) -> None:
        """Hook for providers that sign each request (SES)."""

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET JSON, retrying 429/5xx/timeouts; ProviderError (secrets redacted) otherwise."""
        assert self._client is not None, "open() first"
        what = f"{self.name} {path}"
        # A paging loop (the same NextToken again, an offset the API ignores) would make
        # sync run forever: stop it with an error before the same thing is asked twice.
        asked = (path, tuple(sorted((params or {}).items())))
        if asked in self._asked or len(self._asked) >= MAX_PAGES:
            raise MalformedAnswer(f"{what}: the API kept answering with the same page: "
                                  "nothing was changed; run `newsletter sync` again later")
        self._asked.add(asked)
        for attempt in range(1, ATTEMPTS + 1):
            request = self._client.build_request("GET", path, params=params)
            self.sign(request)
            try:
                response = self._client.send(request)
            except httpx.HTTPError as exc:
                if attempt == ATTEMPTS:
                    raise ProviderError(
                        f"{what}: {self.provider.redact(str(exc) or type(exc).__name__)}: the "
                        "API could not be reached; check provider.endpoint and try again later"
                    ) from None
                time.sleep(min(2 ** attempt * 0.25, MAX_WAIT))
                continue
            if response.status_code in (401, 403):
                raise ProviderError(
                    f"{what}: the API refused the key ({response.status_code}): check "
                    f"{self.provider.key_env} (it must be allowed to read suppressions)"
                )
            if response.status_code == 429 or response.status_code >= 500:
                if attempt == ATTEMPTS:
                    raise ProviderError(f"{what}: the API answered {response.status_code} "
                                        f"{ATTEMPTS} times: run `newsletter sync` again later")
                wait = retry_after(response.headers) or min(2 ** attempt * 0.25, MAX_WAIT)
                wait = min(wait, MAX_WAIT)
                self.waits.append(wait)
                time.sleep(wait)
                continue
            if response.status_code == 404:
                return None  # nothing there (an empty list on some APIs)
            if response.status_code >= 400:
                raise ProviderError(f"{what}: the API answered {response.status_code}: "
                                    f"{self.provider.redact(response.text)}")
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

    def pull(self, db: sqlite_utils.Database) -> Iterator[tuple[str, Feedback | None, str]]:
        """Yield (cursor name, feedback, newest time seen) per item; feedback None = skip."""
        raise NotImplementedError
