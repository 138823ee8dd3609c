"""GET /healthz: "ok" once the database answers (for the proxy, systemd and monitors)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from newsletter.web.context import Web


async def healthz(request: Request) -> Response:
    web = Web.of(request)

    def check() -> None:
        web.db().execute("SELECT 1").fetchone()

    await run_in_threadpool(check)
    return PlainTextResponse("ok\n")
