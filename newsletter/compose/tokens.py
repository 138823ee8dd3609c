"""Unsubscribe tokens: opaque, made and checked only with this newsletter's secret.

The unsubscribe URL is `{base_url}/unsubscribe?token=<token>`. The token carries
the subscriber's identity (Recipient.key, by default the normalized address)
encrypted, so a URL shows no readable address (addresses in URLs leak into
logs and spam filters score them), and authenticated, so a forged or altered
token is refused.

Construction (deterministic authenticated encryption, SIV style, stdlib only):

    mac  = HMAC-SHA256(K_mac, key)[:16]           # also the IV
    ct   = key XOR HMAC-SHA256-CTR(K_enc, mac)    # keystream blocks
    token = "1" + base64url(mac + ct), unpadded

K_mac and K_enc are derived from the secret with HMAC and distinct labels.
The same subscriber always gets the same token, so links in old issues keep
working until the secret changes.

Binding to one newsletter: version "2" tokens (what personalize makes) derive
both keys from the secret *and* the newsletter's base_url (the `context`), so
two newsletters sharing a NEWSLETTER_SECRET refuse each other's links.
Version "1" tokens (unbound, in issues sent before) are still accepted when
`accept_legacy=True`, the default, so old links keep working; a newsletter
that never shared its secret loses nothing by that, and one that did can pass
`accept_legacy=False` (or rotate the secret). Changing base_url invalidates
v2 links, like changing the secret does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

LEGACY_VERSION = "1"
BOUND_VERSION = "2"
VERSION = BOUND_VERSION
_TAG = 16


def _keys(secret: bytes, context: str | None = None) -> tuple[bytes, bytes]:
    if context is None:
        label = b"newsletter/unsubscribe/"
    else:
        # Length-prefixed so no context can be confused with another's label.
        ctx = _normalize_context(context).encode("utf-8")
        label = b"newsletter/unsubscribe/v2/" + len(ctx).to_bytes(4, "big") + ctx + b"/"
    mac_key = hmac.new(secret, label + b"mac", hashlib.sha256).digest()
    enc_key = hmac.new(secret, label + b"enc", hashlib.sha256).digest()
    return mac_key, enc_key


def _normalize_context(context: str) -> str:
    # https://Example.com/ and https://example.com are the same newsletter.
    context = context.strip().rstrip("/")
    scheme, sep, rest = context.partition("://")
    if not sep:
        return context
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}"


def _keystream(enc_key: bytes, iv: bytes, length: int) -> bytes:
    blocks = []
    for counter in range((length + 31) // 32):
        blocks.append(hmac.digest(enc_key, iv + counter.to_bytes(4, "big"), "sha256"))
    return b"".join(blocks)[:length]


def _xor(data: bytes, stream: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


class TokenMaker:
    """Makes tokens with keys derived once (personalize makes one per recipient).

    With a `context` (the newsletter's base_url) tokens are v2, bound to it;
    without, v1 as before.
    """

    def __init__(self, secret: bytes, context: str | None = None, *,
                 accept_legacy: bool = True):
        self._version = LEGACY_VERSION if context is None else BOUND_VERSION
        self._keys = {self._version: _keys(secret, context)}
        if context is not None and accept_legacy:
            self._keys[LEGACY_VERSION] = _keys(secret, None)

    def make(self, key: str) -> str:
        mac_key, enc_key = self._keys[self._version]
        plain = key.encode("utf-8")
        iv = hmac.digest(mac_key, plain, "sha256")[:_TAG]
        ct = _xor(plain, _keystream(enc_key, iv, len(plain))) if plain else b""
        return self._version + base64.urlsafe_b64encode(iv + ct).rstrip(b"=").decode("ascii")

    def verify(self, token: str) -> str | None:
        if not isinstance(token, str) or not token or len(token) > 2048:
            return None
        keys = self._keys.get(token[0])
        if keys is None:
            return None
        mac_key, enc_key = keys
        body = token[1:]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            return None
        # Only the canonical encoding is accepted: no altered padding bits or spellings.
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != body:
            return None
        if len(raw) < _TAG:
            return None
        iv, ct = raw[:_TAG], raw[_TAG:]
        plain = _xor(ct, _keystream(enc_key, iv, len(ct))) if ct else b""
        expected = hmac.digest(mac_key, plain, "sha256")[:_TAG]
        if not hmac.compare_digest(iv, expected):
            return None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:  # pragma: no cover - the MAC matched, so we wrote it
            return None


def unsubscribe_token(secret: bytes, key: str, context: str | None = None) -> str:
    """An opaque token for the subscriber identity `key` (URL-safe, no padding).

    Pass the newsletter's base_url as `context` (as personalize does) to bind it
    to this newsletter; without it the token is an unbound v1 token.
    """
    return TokenMaker(secret, context).make(key)


def verify_unsubscribe_token(
    secret: bytes, token: str, context: str | None = None, *, accept_legacy: bool = True
) -> str | None:
    """The subscriber key a token was made for, or None when forged, altered or foreign.

    With `context` (the newsletter's base_url), v2 tokens must have been made for
    it; v1 tokens from issues sent before binding are accepted unless
    `accept_legacy=False`. Without `context` only v1 tokens verify.
    """
    return TokenMaker(secret, context, accept_legacy=accept_legacy).verify(token)


def unsubscribe_url(base_url: str, token: str) -> str:
    """The one-click unsubscribe URL for a token: `{base_url}/unsubscribe?token=…`."""
    return f"{base_url.rstrip('/')}/unsubscribe?token={token}"


def token_from(text: str) -> str | None:
    """The token in an unsubscribe URL (or a bare token); None when `text` holds none.

    Lets a writer act on a link a reader forwarded, or one from a web server's log.
    """
    text = text.strip()
    if "@" in text and "token=" not in text:
        return None  # an email address
    if "token=" in text:
        from urllib.parse import parse_qs, urlsplit

        values = parse_qs(urlsplit(text).query).get("token")
        return values[0] if values else None
    return text or None
