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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

VERSION = "1"
_TAG = 16


def _keys(secret: bytes) -> tuple[bytes, bytes]:
    mac_key = hmac.new(secret, b"newsletter/unsubscribe/mac", hashlib.sha256).digest()
    enc_key = hmac.new(secret, b"newsletter/unsubscribe/enc", hashlib.sha256).digest()
    return mac_key, enc_key


def _keystream(enc_key: bytes, iv: bytes, length: int) -> bytes:
    blocks = []
    for counter in range((length + 31) // 32):
        blocks.append(hmac.digest(enc_key, iv + counter.to_bytes(4, "big"), "sha256"))
    return b"".join(blocks)[:length]


def _xor(data: bytes, stream: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


class TokenMaker:
    """Makes tokens with keys derived once (personalize makes one per recipient)."""

    def __init__(self, secret: bytes):
        self._mac_key, self._enc_key = _keys(secret)

    def make(self, key: str) -> str:
        plain = key.encode("utf-8")
        iv = hmac.digest(self._mac_key, plain, "sha256")[:_TAG]
        ct = _xor(plain, _keystream(self._enc_key, iv, len(plain))) if plain else b""
        return VERSION + base64.urlsafe_b64encode(iv + ct).rstrip(b"=").decode("ascii")

    def verify(self, token: str) -> str | None:
        if not isinstance(token, str) or not token.startswith(VERSION) or len(token) > 2048:
            return None
        body = token[len(VERSION) :]
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
        plain = _xor(ct, _keystream(self._enc_key, iv, len(ct))) if ct else b""
        expected = hmac.digest(self._mac_key, plain, "sha256")[:_TAG]
        if not hmac.compare_digest(iv, expected):
            return None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:  # pragma: no cover - the MAC matched, so we wrote it
            return None


def unsubscribe_token(secret: bytes, key: str) -> str:
    """An opaque token for the subscriber identity `key` (URL-safe, no padding)."""
    return TokenMaker(secret).make(key)


def verify_unsubscribe_token(secret: bytes, token: str) -> str | None:
    """The subscriber key a token was made for, or None when it is forged or altered."""
    return TokenMaker(secret).verify(token)


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
