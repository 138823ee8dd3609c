"""Signed, expiring tokens for the links the server mails out (confirmation links).

itsdangerous' URLSafeTimedSerializer keyed with the newsletter's secret; the salt holds
the token's purpose and the newsletter's identity (base_url, else its name), so a
confirmation token is never accepted as another kind of token, nor by another newsletter
that happens to share the secret. The payload names the subscriber by row id and a short
hash of their address: no readable address in a URL, and a token made for a row that was
erased and reused by someone else does not match.
"""

from __future__ import annotations

import hashlib

from itsdangerous import BadSignature, URLSafeTimedSerializer

from newsletter.settings import Settings

CONFIRM = "confirm"
CONFIRM_MAX_AGE = 7 * 24 * 3600  # a week, as the page tells the reader


def _serializer(settings: Settings, purpose: str) -> URLSafeTimedSerializer:
    identity = settings.base_url or settings.name
    return URLSafeTimedSerializer(settings.secret_key(), salt=f"newsletter/{purpose}|{identity}")


def address_hash(email_key: str) -> str:
    """A short digest of a subscriber's identity, bound into tokens."""
    return hashlib.sha256(email_key.encode("utf-8")).hexdigest()[:16]


def make_token(settings: Settings, purpose: str, subscriber_id: int, email_key: str) -> str:
    """A signed token saying `purpose` for this subscriber, stamped with the time."""
    return _serializer(settings, purpose).dumps([subscriber_id, address_hash(email_key)])


def read_token(
    settings: Settings, purpose: str, token: str, max_age: int = CONFIRM_MAX_AGE
) -> tuple[int, str] | None:
    """(subscriber id, address hash) from a valid, unexpired token; None otherwise."""
    if not isinstance(token, str) or not token or len(token) > 1024:
        return None
    try:
        value = _serializer(settings, purpose).loads(token, max_age=max_age)
    except BadSignature:  # SignatureExpired is a BadSignature too
        return None
    if (not isinstance(value, list) or len(value) != 2 or not isinstance(value[0], int)
            or not isinstance(value[1], str)):
        return None
    return value[0], value[1]
