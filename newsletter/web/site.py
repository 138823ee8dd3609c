"""The published site (`newsletter publish`'s folder, [publish] out) at base_url.

With the archive on a static host ([server] url set: this server is not at base_url), `/`
redirects to the archive and no file is served: the reader routes answer alone.

`/` is the archive home when the site exists (else the subscribe form), `/{slug}/` each
issue's page, and every other file publish wrote: images, feeds, the sitemap. The reader
and webhook routes are matched first (web/app.py), and a path whose first segment is a
reserved name (newsletter/paths.py) is never looked up here, so a file cannot shadow them.

Nothing outside the folder is served: a path with a segment that starts with a dot
(`..`, `.newsletter-publish.json`, `.git/`), an empty segment (`//etc/passwd`), a
backslash or a NUL is a 404, and so is a file whose real path (symlinks followed) is not
inside the folder's real path. The folder is read on every request, so an issue published
while the server runs is served at once.

Starlette's FileResponse gives Content-Type, ETag, Last-Modified and HEAD; what its
StaticFiles would add is done here because StaticFiles serves dotfiles, answers a plain
404 and cannot sit behind the reader routes as one routes-table entry.
"""

from __future__ import annotations

import mimetypes
import os
import re
from email.utils import parsedate_to_datetime
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import NotModifiedResponse

from newsletter import paths
from newsletter.web import reader_pages
from newsletter.web.context import Web

# publish names images by content (`red.3f2a9c1b7e.png`): such a file never changes.
_HASHED = re.compile(r"\.[0-9a-f]{8,64}\.[A-Za-z0-9]+$")
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"  # pages and feeds change when an issue is published

# Types mimetypes does not know, or knows differently on different systems.
_TYPES = {
    "feed.xml": "application/atom+xml; charset=utf-8",
    "rss.xml": "application/rss+xml; charset=utf-8",
    "feed.json": "application/feed+json; charset=utf-8",
    "sitemap.xml": "application/xml; charset=utf-8",
}
_CHARSET_TYPES = ("application/json", "application/xml", "application/javascript",
                  "image/svg+xml")


def site_root(web: Web) -> Path:
    """The folder `newsletter publish` writes ([publish] out, relative to the newsletter)."""
    return (web.settings.root / web.settings.publish.out).absolute()


def resolve(root: Path, path: str) -> Path | None:
    """The file or folder `path` (relative, '/'-separated) names inside `root`, or None.

    None for anything that could reach outside `root` or a hidden file: see the module
    docstring.
    """
    if "\\" in path or "\x00" in path:
        return None
    parts = path.split("/")
    if parts and parts[-1] == "":
        parts = parts[:-1]  # `slug/` names the folder
    if any(not p or p.startswith(".") for p in parts):
        return None
    try:
        real_root = root.resolve(strict=True)
        target = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if target != real_root and not target.is_relative_to(real_root):
        return None  # a symlink out of the folder
    return target


def media_type(target: Path) -> str:
    """The Content-Type for `target`, with a charset for text."""
    if known := _TYPES.get(target.name):
        return known
    guessed = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if guessed.startswith("text/") or guessed in _CHARSET_TYPES:
        guessed += "; charset=utf-8"
    return guessed


def not_modified(response: Response, request: Request) -> bool:
    """True when the client's copy (If-None-Match, else If-Modified-Since) is current."""
    headers = Headers(scope=request.scope)
    if match := headers.get("if-none-match"):
        tags = [t.strip().removeprefix("W/") for t in match.split(",")]
        return "*" in tags or response.headers["etag"] in tags
    since = headers.get("if-modified-since")
    if not since:
        return False
    try:
        return parsedate_to_datetime(since) >= parsedate_to_datetime(
            response.headers["last-modified"])
    except (TypeError, ValueError):
        return False  # an unreadable date: send the file


def file_response(request: Request, target: Path) -> Response:
    """`target` with its type, validators and cache lifetime; a 304 when the client has it."""
    stat = os.stat(target)
    response = FileResponse(target, stat_result=stat, media_type=media_type(target))
    response.headers["Cache-Control"] = IMMUTABLE if _HASHED.search(target.name) else SHORT
    response.headers["X-Content-Type-Options"] = "nosniff"
    if not_modified(response, request):
        return NotModifiedResponse(response.headers)
    return response


def not_found(web: Web) -> Response:
    """The styled 404 page (layouts/not_found.html)."""
    return web.page("not_found.html", 404, title="Page not found")


def _archive_elsewhere(web: Web) -> bool:
    # [server] url: this server answers reader links and webhooks; a static host the archive.
    return web.settings.web.hosting == "static"


async def home(request: Request) -> Response:
    """GET /: the archive home once `newsletter publish` has written it, else the form.

    With the archive on a static host ([server] url), a redirect to it at base_url."""
    web = Web.of(request)
    if _archive_elsewhere(web) and web.settings.base_url:
        return RedirectResponse(f"{web.settings.base_url}/", 302)
    index = await run_in_threadpool(resolve, site_root(web), "index.html")
    if index is None or not index.is_file():
        return await reader_pages.subscribe_form(request)
    return await run_in_threadpool(file_response, request, index)


async def site_file(request: Request) -> Response:
    """GET /{path}: a file publish wrote, `slug/` its index.html; `slug` redirects to `slug/`."""
    web = Web.of(request)
    path: str = request.path_params["path"]
    if paths.is_reserved(path) or _archive_elsewhere(web):
        return not_found(web)  # /subscribe/x, /webhooks: never a file, whatever is on disk
    target = await run_in_threadpool(resolve, site_root(web), path)
    if target is not None and target.is_dir():
        if not path.endswith("/"):
            # Relative, so it holds behind a proxy that strips a path prefix or keeps it.
            name = path.rsplit("/", 1)[-1]
            query = f"?{request.url.query}" if request.url.query else ""
            return RedirectResponse(f"{name}/{query}", 301)
        target = await run_in_threadpool(resolve, target, "index.html")
    if target is None or not target.is_file():
        return not_found(web)
    return await run_in_threadpool(file_response, request, target)
