"""Slow and idle clients are disconnected: a deadline for reading each request.

uvicorn closes a keep-alive connection that stays silent for `KEEP_ALIVE` seconds after a
response, but any byte that arrives cancels that timer and nothing arms another: a client
that opens a connection and sends nothing, or sends its headers one byte a second, holds
a connection (and a file descriptor) forever, and a few hundred such clients fill the
server. `ReadDeadline` adds what is missing, at the protocol level, since headers are
read before any ASGI code runs: from the moment a connection opens, or the first byte of
a later request on it, the whole request (headers and body) must arrive within
`READ_TIMEOUT` seconds. A request still incomplete then gets `408` (when its headers were
not yet read) or a closed connection (mid-body: the app sees the disconnect). The time
the app takes to answer is not limited.

This module imports uvicorn at the top: server.py imports it only when serving.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger("newsletter.web")

KEEP_ALIVE = 5  # seconds a connection may stay idle between requests (uvicorn's timer)
READ_TIMEOUT = 10  # seconds for one request's headers and body to arrive

_TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
              b"content-length: 38\r\nconnection: close\r\n\r\n"
              b"The request took too long to arrive.\r\n")


class ReadDeadline:
    """Mixed into uvicorn's HTTP protocol (h11 or httptools): a deadline per request read."""

    read_timeout: float = READ_TIMEOUT

    def connection_made(self, transport: Any) -> None:
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self._between_requests():
            self._arm()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)  # type: ignore[misc]
        self._disarm_when_read()

    def on_response_complete(self) -> None:
        before = self._cycle()
        super().on_response_complete()  # type: ignore[misc]
        cycle = self._cycle()
        # A pipelined request already buffered may have started; its body must arrive too.
        if cycle is not before and cycle is not None and cycle.more_body and (
                self._deadline is None):
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    # --- the deadline ------------------------------------------------------------------

    def _cycle(self) -> Any:
        return getattr(self, "cycle", None)

    def _between_requests(self) -> bool:
        cycle = self._cycle()
        return cycle is None or bool(cycle.response_complete)

    def _reading(self) -> bool:
        cycle = self._cycle()
        return self._between_requests() or bool(cycle.more_body)

    def _arm(self) -> None:
        loop: asyncio.AbstractEventLoop = self.loop  # type: ignore[attr-defined]
        self._deadline = loop.call_later(self.read_timeout, self._timed_out)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _disarm_when_read(self) -> None:
        if self._deadline is not None and not self._reading():
            self._cancel()  # the request is in: answering it may take as long as it takes

    def _timed_out(self) -> None:
        self._deadline = None
        transport: asyncio.Transport = self.transport  # type: ignore[attr-defined]
        if transport.is_closing() or not self._reading():
            return
        log.info("closed a connection whose request did not arrive within %s s",
                 self.read_timeout)
        if self._between_requests():
            transport.write(_TIMED_OUT)  # no request was parsed: nothing else will answer
        transport.close()


class GuardedHTTP(ReadDeadline, AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol with the read deadline (importable: workers pickle it)."""
