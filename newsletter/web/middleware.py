"""ASGI layers around the app: a request body limit and an access log without tokens."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.responses import PlainTextResponse

from newsletter import paths

access_log = logging.getLogger("newsletter.access")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]
_WEBHOOKS = paths.WEBHOOKS + "/"


TooLarge = Callable[[int], Any]  # the body limit → the 413 response (an ASGI app)


def _plain_too_large(limit: int) -> Any:
    return PlainTextResponse(f"Request body too large (limit {limit} bytes).\n", 413,
                             headers={"Connection": "close"})


class BodyLimit:
    """413 for a request body over the limit, counted as it arrives (chunked included).

    Readers get `too_large(limit)` (a page in the newsletter's style); providers posting
    to /webhooks/ get one line of text.
    """

    def __init__(self, app: ASGIApp, limit: int, webhook_limit: int,
                 too_large: TooLarge = _plain_too_large):
        self.app, self.limit, self.webhook_limit = app, limit, webhook_limit
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root + "/"):
            path = path[len(root):]  # under base_url's path (BasePath)
        webhook = path.startswith(_WEBHOOKS)
        limit = self.webhook_limit if webhook else self.limit
        declared = dict(scope["headers"]).get(b"content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > limit
        chunks: list[bytes] = []
        size = 0
        while not too_big:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            too_big = size > limit
            if not message.get("more_body"):
                break
        if too_big:
            response = _plain_too_large(limit) if webhook else self.too_large(limit)
            await response(scope, receive, send)
            return
        body, sent = b"".join(chunks), False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class AccessLog:
    """One line per request: method, path without the query (tokens), status, duration.

    No client IP and no query string: the log holds nothing that identifies a reader.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            access_log.info("%s %s %d %.1fms", scope["method"], scope["path"], status,
                            (time.perf_counter() - start) * 1000)


class BasePath:
    """Answer under base_url's path too (`https://example.com/news` → `/news/slug/`).

    A proxy may strip the prefix (Caddy's `handle_path`) or forward it (`handle`): both
    work. A request under the prefix gets it as its ASGI root_path, which Starlette's
    router takes off before matching; any other path is matched as it came.
    """

    def __init__(self, app: ASGIApp, prefix: str):
        self.app, self.prefix = app, prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if self.prefix and scope["type"] == "http" and (
                path == self.prefix or path.startswith(self.prefix + "/")):
            scope = dict(scope, root_path=scope.get("root_path", "") + self.prefix,
                         path=path if path != self.prefix else path + "/")
        await self.app(scope, receive, send)
