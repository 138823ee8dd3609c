"""Whether the addresses in the emails answer the way mail clients and readers need.

`/healthz` (the server is up and its database answers), the archive home, and the
one-click unsubscribe POST (RFC 8058) as Gmail and Yahoo send it. The POST carries a
token that cannot match any reader, so nothing changes: `serve` answers it with its
invalid-link page (400); a 2xx is what a mail client takes as done. Anything else (404 or
405 from a static host, a redirect, which mail clients do not follow with a POST, 5xx)
means a reader's one-click would fail. Requests go through `newsletter.http` with short
timeouts and never follow redirects.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx

from newsletter.compose.tokens import unsubscribe_url
from newsletter.doctor.report import Report
from newsletter.errors import ProviderError
from newsletter.http import HTTPTrouble, Transport, Unreachable
from newsletter.settings import Settings

HEALTHZ, ARCHIVE, ONE_CLICK = "healthz", "archive", "one-click"


@dataclass(frozen=True)
class Served:
    """One address the emails link to, and which of the checks it must pass."""

    url: str
    checks: tuple[str, ...]


def served_urls(settings: Settings) -> list[Served]:
    """The addresses to check, each for what the emails need from it.

    By default base_url answers everything (the reader pages, the one-click POST, the
    archive). With the archive on a static host (`[server] url`), base_url answers the
    archive and the server the rest; with no server (`url = "none"`), only the archive.
    """
    if not settings.base_url:
        return []
    hosting = settings.web.hosting
    if hosting == "static" and settings.server_url:
        return [Served(settings.base_url, (ARCHIVE,)),
                Served(settings.server_url, (HEALTHZ, ONE_CLICK))]
    if hosting == "none":
        return [Served(settings.base_url, (ARCHIVE,))]
    return [Served(settings.base_url, (HEALTHZ, ARCHIVE, ONE_CLICK))]


def check_urls(settings: Settings, report: Report, timeout: float = 5.0) -> None:
    served = served_urls(settings)
    if not served:
        report.add("base_url", "error", "no [newsletter] base_url: set it to the address "
                   "`newsletter serve` answers at (https://news.example.com): without it "
                   "emails have no working unsubscribe, View online or image links")
        return
    for entry in served:
        transport = Transport("doctor", entry.url.rstrip("/") + "/", {}, timeout)
        try:
            for check in entry.checks:
                _CHECKS[check](transport, entry.url.rstrip("/"), report)
        finally:
            transport.close()


def _fetch(transport: Transport, check: str, method: str, url: str, report: Report,
           **kwargs: object) -> httpx.Response | None:
    """The answer, or None with an error line saying why there is none."""
    try:
        return transport.request(method, url, **kwargs)  # type: ignore[arg-type]
    except Unreachable as exc:
        report.add(check, "error", f"{method} {url} cannot connect ({exc.detail}): start "
                   "`newsletter serve` there (systemd) and check the proxy and the firewall")
    except HTTPTrouble as exc:
        status = f"HTTP {exc.status}" if exc.status else exc.detail
        report.add(check, "error", f"{method} {url} did not answer ({status}): check that "
                   "`newsletter serve` is running behind the proxy (journalctl -u newsletter)")
    except ProviderError as exc:
        report.add(check, "error", f"{method} {url}: {exc}")
    return None


def _healthz(transport: Transport, base: str, report: Report) -> None:
    url = f"{base}/healthz"
    response = _fetch(transport, HEALTHZ, "GET", url, report)
    if response is None:
        return
    if response.status_code == 200 and response.text.startswith("ok"):
        report.add(HEALTHZ, "ok", f"GET {url} answered ok")
    else:
        report.add(HEALTHZ, "error", f"GET {url} answered HTTP {response.status_code}, not "
                   "`newsletter serve`'s ok: point the proxy's reverse_proxy for this address "
                   "at serve (docs/deploy.md, Caddy)")


def _archive(transport: Transport, base: str, report: Report) -> None:
    url = f"{base}/"
    response = _fetch(transport, ARCHIVE, "GET", url, report)
    if response is None:
        return
    kind = response.headers.get("content-type", "")
    if response.status_code == 200 and kind.startswith("text/html"):
        report.add(ARCHIVE, "ok", f"GET {url} answered a page")
    elif response.is_redirect:
        report.add(ARCHIVE, "error", f"GET {url} redirects to "
                   f"{response.headers.get('location')}: set base_url to the address that "
                   "answers")
    else:
        report.add(ARCHIVE, "error", f"GET {url} answered HTTP {response.status_code} "
                   f"({kind or 'no type'}): `newsletter serve` answers / with the archive "
                   "home; check the proxy sends every path to it")


def _one_click(transport: Transport, base: str, report: Report) -> None:
    # A token no reader can have: serve finds no one and changes nothing.
    url = unsubscribe_url(base, "doctor-" + secrets.token_urlsafe(12))
    response = _fetch(transport, ONE_CLICK, "POST", url, report,
                      data={"List-Unsubscribe": "One-Click"})
    if response is None:
        return
    shown = url.split("?", 1)[0]
    status = response.status_code
    if 200 <= status < 300 or status == 400:
        report.add(ONE_CLICK, "ok", f"POST {shown} (List-Unsubscribe=One-Click) is answered "
                   f"by the server (HTTP {status} for a token that matches no reader)")
    elif response.is_redirect:
        report.add(ONE_CLICK, "error", f"POST {shown} redirects (HTTP {status}) to "
                   f"{response.headers.get('location')}: mail clients do not follow it; set "
                   "base_url to the address that answers (https, the right host and path)")
    else:
        report.add(ONE_CLICK, "error", f"POST {shown} answered HTTP {status}: one-click "
                   "unsubscribe (required by Gmail and Yahoo) fails; the address must reach "
                   "`newsletter serve`, which takes the POST")


_CHECKS = {HEALTHZ: _healthz, ARCHIVE: _archive, ONE_CLICK: _one_click}
