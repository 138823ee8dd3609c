"""The URL paths `newsletter serve` answers for readers and providers, named once.

The newsletter is one address: beside these, the archive will serve each issue at
`/{slug}/`. Every path here is reserved, so no draft's slug may take one of these names
(writer/check.py can ask `is_reserved`), and web/app.py builds its routes from them.
Links in emails (compose/tokens.py) are made from the same names.
"""

from __future__ import annotations

SUBSCRIBE = "/subscribe"
CONFIRM = "/confirm"
UNSUBSCRIBE = "/unsubscribe"
MANAGE = "/manage"
WEBHOOKS = "/webhooks"  # /webhooks/{provider}
HEALTHZ = "/healthz"
CLICK = "/c"  # /c/{token}: a tracked link ([analytics] clicks)
OPEN = "/o"  # /o/{token}: the open image ([analytics] opens)

# The first path segment of every reader and provider route.
RESERVED_PATHS: frozenset[str] = frozenset(
    p.strip("/") for p in (SUBSCRIBE, CONFIRM, UNSUBSCRIBE, MANAGE, WEBHOOKS, HEALTHZ,
                           CLICK, OPEN)
)


def is_reserved(slug: str) -> bool:
    """True when a page at `/{slug}/` would shadow (or be shadowed by) a server route."""
    return slug.strip("/").split("/", 1)[0].lower() in RESERVED_PATHS
