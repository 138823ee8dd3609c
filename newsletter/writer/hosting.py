"""What an email links to on the web, made live (or checked) before a send mails it.

A send hands `make_live` to delivery (which never imports the writer's tools), as it
hands the pre-send check. The email links to its web page ("View online") and to each
local image under base_url; all must answer when the first message lands:

- `serve` hosts the archive (the default): the issue is published into [publish] out
  (listed for a list send, unlisted for a test send: see `publish.publish_issue`), then
  each of those URLs is checked to be a file there.
- the archive is on a static host (`[server] url` set, or `"none"`): nothing is published
  here (the writer uploads the site); each URL is asked over HTTP and must answer 200.

`make_live` returns the URLs that do not answer, each with why; delivery refuses a list
send on any (a test send is warned).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import httpx

from newsletter.compose.issue import Issue
from newsletter.errors import ConfigError, ContentError
from newsletter.settings import Settings
from newsletter.writer.publish import publish_issue

TIMEOUT = 5.0  # seconds for each URL on the static host


def linked_urls(settings: Settings, issue: Issue) -> list[str]:
    """The URLs under base_url the email links to: its web page, then each local image."""
    if not settings.base_url:
        return []
    urls = [issue.web_url] if issue.web_url else []
    return urls + [f"{settings.base_url}/{quote(rel)}" for rel, _ in issue.assets]


def make_live(issue: Issue, settings: Settings, unlisted: bool, /) -> list[str]:
    """Publish `issue` where `serve` answers from it, or check its URLs on the static host;
    the URLs that would not answer, as "URL (why)". `unlisted`: a test send, or a send to
    part of the list only (the page is kept out of the archive, feeds and sitemap)."""
    urls = linked_urls(settings, issue)
    if not urls:
        return []
    if settings.web.hosting == "serve":
        try:
            publish_issue(settings, issue.source, unlisted=unlisted)
        except (ConfigError, ContentError) as exc:  # what stopped the send, nothing mailed
            raise type(exc)(
                f"nothing was sent: publishing the issue's page before the send failed: {exc}"
                " (or pass --no-web-check to send without publishing)") from exc
        return missing_files(settings, urls)
    return missing_over_http(urls)


def missing_files(settings: Settings, urls: list[str]) -> list[str]:
    """The URLs (under base_url) with no file in [publish] out, the folder `serve` answers."""
    assert settings.base_url
    out = (settings.root / settings.publish.out).absolute()
    prefix = urlsplit(settings.base_url).path.rstrip("/")
    missing = []
    for url in urls:
        rel = unquote(urlsplit(url).path).removeprefix(prefix).lstrip("/")
        target = out / rel / "index.html" if rel.endswith("/") or not rel else out / rel
        if not Path(target).is_file():
            missing.append(f"{url} (no {target})")
    return missing


def missing_over_http(urls: list[str]) -> list[str]:
    """The URLs that do not answer 200 (redirects followed): HEAD, then GET if HEAD is not
    allowed; each with its status or the connection's failure."""
    missing = []
    with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as client:
        for url in urls:
            try:
                answer = client.head(url)
                if answer.status_code in (405, 501):  # a host that does not do HEAD
                    answer = client.get(url)
            except httpx.HTTPError as exc:
                missing.append(f"{url} ({type(exc).__name__}: {exc or 'no answer'})")
                continue
            if answer.status_code != 200:
                missing.append(f"{url} ({answer.status_code})")
    return missing
