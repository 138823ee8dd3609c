"""Provider webhooks: verify a signed request, turn its events into Feedback, apply them.

`newsletter serve` mounts `POST /webhooks/{provider}` and hands every request to
`handle()`; this package knows the providers, the web app knows only this function.
(The verifiers for each provider live in modules named after it.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlite_utils

from newsletter.settings import Settings


@dataclass(frozen=True)
class WebhookRequest:
    provider: str  # the {provider} part of the path
    url: str  # the full URL as the provider called it (scheme, host, path, query)
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    client_ip: str | None = None


@dataclass(frozen=True)
class WebhookResponse:
    status: int
    text: str  # a short plain-text answer; never echoes secrets or addresses


def handle(
    request: WebhookRequest, settings: Settings, db: sqlite_utils.Database
) -> WebhookResponse:
    """Verify and apply one webhook request. (Placeholder until the verifiers land.)"""
    return WebhookResponse(404, f"no webhook for {request.provider!r}\n")
