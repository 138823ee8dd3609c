"""`/c/<token>` (a tracked link) and `/o/<token>` (the open image), with [analytics] on.

The answer never waits for the database: the redirect (or the image) goes out at once and
the click is recorded after it, in the thread pool, under `Web.writing`. Only links this
newsletter signed redirect (compose/tokens.py TrackingTokens), so serve is never an open
redirect; a token that does not verify gets the invalid-link page. What counts as a
person and what as a machine is audience/engagement.py.
"""

from __future__ import annotations

import base64
import logging
import sqlite3
import weakref

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from newsletter.audience import engagement
from newsletter.compose.tokens import TrackingTokens
from newsletter.web.context import Web

log = logging.getLogger("newsletter.web")

# The smallest transparent GIF (1x1).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer",
             "X-Content-Type-Options": "nosniff"}
_tokens: weakref.WeakKeyDictionary[Web, TrackingTokens] = weakref.WeakKeyDictionary()


def _tracking(web: Web) -> TrackingTokens:
    found = _tokens.get(web)
    if found is None:
        found = _tokens[web] = TrackingTokens(web.settings.secret_key(), web.settings.base_url)
    return found


def _record(web: Web, kind: str, campaign: int, url: str | None, reader: str | None,
            method: str, agent: str | None, ip: str | None) -> None:
    try:
        with web.writing:
            engagement.record(web.db(), kind, campaign, url, reader, method=method,
                              agent=agent, ip=ip)
    except sqlite3.Error as exc:  # the reader has their page already: say what was lost
        log.warning("a %s of campaign %s was not recorded: %s", kind, campaign, exc)


def _task(request: Request, web: Web, kind: str, campaign: int, url: str | None) -> BackgroundTask:
    reader = _tracking(web).read_reader(campaign, request.query_params.get("r"))
    agent = request.headers.get("user-agent", "")[:500] or None
    return BackgroundTask(_record, web, kind, campaign, url, reader, request.method, agent,
                          web.client_ip(request))


async def click(request: Request) -> Response:
    """A tracked link: 302 to where the writer's link goes, then the click is recorded."""
    web = Web.of(request)
    found = _tracking(web).read_link(request.path_params["token"])
    if found is None or found.url is None:
        return web.page("link_invalid.html", 404)
    return RedirectResponse(found.url, 302, headers=_NO_STORE,
                            background=_task(request, web, engagement.CLICK, found.campaign,
                                             found.url))


async def open_image(request: Request) -> Response:
    """The open image: a 1x1 transparent GIF, then the open is recorded."""
    web = Web.of(request)
    found = _tracking(web).read_link(request.path_params["token"].removesuffix(".gif"))
    if found is None or found.url is not None:
        return web.page("link_invalid.html", 404)
    return Response(PIXEL, 200, media_type="image/gif", headers=_NO_STORE,
                    background=_task(request, web, engagement.OPEN, found.campaign, None))
