"""The unsubscribe tokens issues carried before v3 (AES-SIV), made as turn 3's code made them.

The library only verifies v1/v2 now; tests make them here to check that links from old
issues keep working. tests/compose/test_tokens.py checks this maker against literal
tokens that turn 3's code produced, so it cannot drift from what was mailed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def _keys(secret: bytes, context: str | None) -> tuple[bytes, bytes]:
    if context is None:
        label = b"newsletter/unsubscribe/"
    else:
        context = context.strip().rstrip("/")
        scheme, sep, rest = context.partition("://")
        if sep:
            host, slash, path = rest.partition("/")
            context = f"{scheme.lower()}://{host.lower()}{slash}{path}"
        ctx = context.encode("utf-8")
        label = b"newsletter/unsubscribe/v2/" + len(ctx).to_bytes(4, "big") + ctx + b"/"
    return (hmac.new(secret, label + b"mac", hashlib.sha256).digest(),
            hmac.new(secret, label + b"enc", hashlib.sha256).digest())


def unsubscribe_token(secret: bytes, key: str, context: str | None = None) -> str:
    """A v1 token (no `context`) or a v2 token bound to `context`, as old issues carry."""
    mac_key, enc_key = _keys(secret, context)
    plain = key.encode("utf-8")
    iv = hmac.digest(mac_key, plain, "sha256")[:16]
    stream = b"".join(hmac.digest(enc_key, iv + n.to_bytes(4, "big"), "sha256")
                      for n in range((len(plain) + 31) // 32))
    ct = bytes(a ^ b for a, b in zip(plain, stream, strict=False))
    version = "1" if context is None else "2"
    return version + base64.urlsafe_b64encode(iv + ct).rstrip(b"=").decode("ascii")
