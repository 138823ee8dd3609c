"""POST /webhooks/{provider}: a provider's bounce and complaint events, handed to feedback/."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from newsletter.feedback.webhooks import WebhookRequest, handle
from newsletter.settings import Settings
from newsletter.web.context import Web


def public_url(settings: Settings, request: Request) -> str:
    """The URL as the provider called it (signatures cover it).

    Behind the proxy that is the server's address (base_url, or [server] url) + path, not
    the loopback address uvicorn sees.
    """
    if not settings.server_url:
        return str(request.url)
    query = request.url.query
    return f"{settings.server_url.rstrip('/')}{request.url.path}" + (f"?{query}" if query else "")


async def receive(request: Request) -> Response:
    web = Web.of(request)
    body = await request.body()
    hook = WebhookRequest(
        provider=request.path_params["provider"], url=public_url(web.settings, request),
        headers={k.lower(): v for k, v in request.headers.items()}, body=body,
        client_ip=web.client_ip(request),
    )
    answer = await run_in_threadpool(lambda: handle(hook, web.settings, web.db()))
    return PlainTextResponse(answer.text, answer.status)
