"""The HTTP transport every remote API caller shares: one client, timeouts, retries, redaction.

The one question that matters after a failed request is whether it may have
reached the API. `Transport.request()` answers it with the exception it raises:

- `NotSent`: the request cannot have been accepted — the connection was never
  made (connect timeout, pool timeout), or the API answered that it did not
  take it (408, 429, 503, with the wait it asked for). Safe to send again.
- `MaybeSent`: the body went out and no documented answer came back — a
  timeout while reading, a connection dropped after sending, a 502/504 from a
  gateway that gave up waiting for the API. Sending again could deliver twice.
- `Unreachable` (a `ProviderError`): nothing can go out (the server refuses
  connections, a proxy fails): stop.

Each carries the HTTP `status` it came from (None for a failure without an
answer) and the redacted `detail` of the failure itself, for callers with
their own retry rules (`newsletter sync` reads idempotent lists and retries
every kind a few times).

A `sign` hook, when given, is called with each request just before it goes
out (Amazon's SigV4 signs every request on its own: `newsletter.aws`).

Every other answer is returned for the caller to read; a 2xx body the caller
cannot read is the caller's `MaybeSent` (see `json_answer`). Reasons taken
from a server's answer pass through the transport's `Redactor`.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Collection
from typing import Any

import httpx

from newsletter.errors import ProviderError
from newsletter.redact import Redactor, one_line

# Never wait longer than this for one Retry-After; the caller may back off again.
MAX_RETRY_AFTER = 3600.0
# A gateway in front of the API gave up waiting for it: the API may have taken the request.
MAYBE_SENT_STATUSES = frozenset({502, 504})
NOT_SENT_STATUSES = frozenset({408, 429, 503})
# A retry inside request() (GETs, or not-sent POSTs when asked) waits at most this long.
_INLINE_WAIT = 30.0


class HTTPTrouble(Exception):
    """A request that did not get a usable answer; `reason` is redacted and one line."""

    def __init__(self, reason: str, retry_after: float | None = None, *,
                 status: int | None = None, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status  # the HTTP status, None when no answer came
        self.detail = detail or reason  # the failure alone (the library's words), redacted


class NotSent(HTTPTrouble):
    """The API did not take the request: sending it again cannot duplicate anything."""


class MaybeSent(HTTPTrouble):
    """The request may have reached the API, and its answer is lost or unreadable."""


class Unreachable(ProviderError):
    """No connection could be made (refused, no route, a failing proxy): nothing went out."""

    def __init__(self, message: str, detail: str):
        super().__init__(message)
        self.detail = detail  # the library's words, redacted


class Transport:
    """One pooled httpx client for one API, with the rules above."""

    def __init__(self, name: str, base_url: str, headers: dict[str, str], timeout: float,
                 redact: Redactor | None = None,
                 maybe_sent_statuses: Collection[int] = MAYBE_SENT_STATUSES,
                 sign: Callable[[httpx.Request], None] | None = None):
        self.name = name
        self.base_url = base_url
        self.redact = redact or Redactor()
        self.sign = sign
        self.maybe_sent_statuses = frozenset(maybe_sent_statuses)
        self.client = httpx.Client(
            base_url=base_url,
            headers={"User-Agent": "newsletter (+httpx)", **headers},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_keepalive_connections=4, max_connections=8),
            follow_redirects=False,
        )

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:  # no headers: they carry the key
        return f"<Transport {self.name} {self.base_url!r}>"

    def text(self, value: object) -> str:
        """A server's or library's text, redacted, on one line."""
        return one_line(self.redact(str(value)))

    def request(self, method: str, path: str, *, retries: int = 0,
                sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> httpx.Response:
        """Send one request; raise NotSent / MaybeSent / ProviderError as described above.

        `retries` re-sends a NotSent request that many times (waiting as the
        server asked, up to 30 s); a MaybeSent one is never re-sent here.
        """
        for attempt in range(retries + 1):
            try:
                return self._once(method, path, **kwargs)
            except NotSent as exc:
                wait = exc.retry_after if exc.retry_after is not None else 2.0 ** attempt
                if attempt == retries or wait > _INLINE_WAIT:
                    raise
                sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        where = self.base_url
        try:
            if self.sign is None:
                response = self.client.request(method, path, **kwargs)
            else:
                request = self.client.build_request(method, path, **kwargs)
                self.sign(request)
                response = self.client.send(request)
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # No connection was made (or none was free): nothing left this machine.
            raise NotSent(f"{self.name}: could not connect to {where} in time "
                          f"({type(exc).__name__})", detail=self._detail(exc)) from None
        except httpx.ConnectError as exc:
            raise Unreachable(
                f"{self.name}: cannot reach {where} ({self.text(exc)}): check the network "
                "and the endpoint setting, then run the send again to resume",
                self._detail(exc),
            ) from None
        except httpx.TimeoutException as exc:  # read or write timeout: the body was going out
            raise MaybeSent(f"{self.name}: no answer from {where} in time "
                            f"({type(exc).__name__}, timeout) after the request was sent",
                            detail=self._detail(exc)) from None
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
            raise MaybeSent(f"{self.name}: the connection to {where} broke after the request "
                            f"was sent ({type(exc).__name__}: {self.text(exc)})",
                            detail=self._detail(exc)) from None
        except httpx.TransportError as exc:  # a proxy or protocol problem before sending
            raise Unreachable(f"{self.name}: cannot send to {where} "
                              f"({type(exc).__name__}: {self.text(exc)})",
                              self._detail(exc)) from None
        status = response.status_code
        if status in self.maybe_sent_statuses:
            raise MaybeSent(f"{self.name} HTTP {status} from a gateway: "
                            f"{self.reason(response)}",
                            retry_after=retry_after(response.headers), status=status)
        if status in NOT_SENT_STATUSES or (status >= 500 and status != 501):
            raise NotSent(f"{self.name} HTTP {status}: {self.reason(response)}",
                          retry_after=retry_after(response.headers), status=status)
        return response

    def _detail(self, exc: Exception) -> str:
        return self.text(exc) or type(exc).__name__

    def reason(self, response: httpx.Response) -> str:
        """The server's explanation of an error, redacted and short."""
        text = ""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            for key in ("message", "Message", "error", "errors", "name"):
                if key in body and body[key]:
                    value = body[key]
                    text = value if isinstance(value, str) else _join_errors(value)
                    break
        if not text:
            text = response.text or response.reason_phrase
        return self.text(text) or f"HTTP {response.status_code}"

    def json_answer(self, response: httpx.Response, check: Callable[[Any], bool]) -> Any:
        """The JSON of a 2xx answer, or MaybeSent when it is not what the API documents."""
        try:
            body = response.json()
        except ValueError:
            body = None
        else:
            if check(body):
                return body
        excerpt = self.text(response.text)[:80]
        raise MaybeSent(f"{self.name} answered HTTP {response.status_code} with a body it does "
                        f"not document ({excerpt!r})")


def _join_errors(value: Any) -> str:
    if isinstance(value, list):
        parts = []
        for item in value:
            if isinstance(item, dict):
                parts.append(str(item.get("message") or item))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(value)


def retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait, from `Retry-After` (seconds or HTTP date) or a rate-limit reset header.

    `X-RateLimit-Reset` is a Unix time on SendGrid and some others and a number
    of seconds elsewhere: values that look like a Unix time are read as one.
    """
    now = time.time() if now is None else now
    value = headers.get("retry-after")
    if value:
        seconds = _number(value)
        if seconds is None:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                seconds = when.timestamp() - now
        if seconds is not None:
            return _clamp(seconds)
    for name in ("x-ratelimit-reset", "ratelimit-reset", "x-ratelimit-reset-after"):
        seconds = _number(headers.get(name, ""))
        if seconds is not None:
            if seconds > 1_000_000_000:  # a Unix time, not a delay
                seconds -= now
            return _clamp(seconds)
    return None


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def _clamp(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
