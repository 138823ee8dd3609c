"""The Starlette app for `newsletter serve`: it only wires.

The routes table maps the paths named in newsletter/paths.py to views in the modules
named for what they serve: reader_pages (subscribe, confirm, unsubscribe, manage),
webhooks, health, and last the published site (site: `/`, `/{slug}/`, feeds, images), so
the reader and webhook routes win over any file. What the pages change is reader_status;
what they share is context.Web, on `app.state.web`; database failures are error_pages.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.routing import Route

from newsletter import paths
from newsletter.settings import Settings
from newsletter.web import error_pages, health, reader_pages, site, tracking, webhooks
from newsletter.web.context import Web
from newsletter.web.middleware import AccessLog, BasePath, BodyLimit

ROUTES = [
    Route(paths.HEALTHZ, health.healthz, methods=["GET"]),
    Route(paths.SUBSCRIBE, reader_pages.subscribe_form, methods=["GET"]),
    Route(paths.SUBSCRIBE, reader_pages.subscribe, methods=["POST"]),
    Route(paths.CONFIRM, reader_pages.confirm_form, methods=["GET"]),
    Route(paths.CONFIRM, reader_pages.confirm, methods=["POST"]),
    Route(paths.UNSUBSCRIBE, reader_pages.unsubscribe_page, methods=["GET"]),
    Route(paths.UNSUBSCRIBE, reader_pages.unsubscribe, methods=["POST"]),
    Route(paths.MANAGE, reader_pages.manage, methods=["GET", "POST"]),
    Route(paths.WEBHOOKS + "/{provider}", webhooks.receive, methods=["POST"]),
    Route(paths.CLICK + "/{token}", tracking.click, methods=["GET"]),  # [analytics]
    Route(paths.OPEN + "/{token}", tracking.open_image, methods=["GET"]),
    # The published site, after every reader route (GET also answers HEAD).
    Route("/", site.home, methods=["GET"]),
    Route("/{path:path}", site.site_file, methods=["GET"]),
]


def create_app(settings: Settings) -> Any:
    """The ASGI app for `settings` (the same database as the CLI)."""
    web = Web(settings)  # checks the settings, opens and migrates the database
    app = Starlette(routes=ROUTES, exception_handlers=dict(error_pages.HANDLERS),
                    lifespan=reader_pages.lifespan)  # email workers, journaled requests
    app.state.web = web
    # The server's own path, if its address has one ([server] url, else base_url).
    prefix = urlsplit(settings.server_url or "").path
    return AccessLog(BasePath(BodyLimit(app, web.config.max_body, web.config.webhook_max_body,
                                        error_pages.too_large(web)), prefix))
