"""Hide secrets in any text that may reach a terminal, a log or the database.

A server that echoes a credential back rarely echoes it verbatim: it may be
URL-encoded, hex-encoded, upper-cased, or base64 inside a Basic header or an
SMTP AUTH PLAIN/LOGIN exchange. `Redactor` knows every secret of one provider
and hides each in all those forms; HTTP adapters and SMTP share it.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
# A value this short is no real secret; hiding it everywhere would garble the text.
MIN_SECRET = 6


def _b64_forms(data: bytes) -> set[str]:
    """Base64 of `data` as written alone, and as it appears inside a longer base64 text.

    Inside a longer encoded string the secret's bytes start at one of three
    offsets mod 3; each offset gives a stable run of characters (the partial
    characters at both ends dropped).
    """
    forms = {base64.b64encode(data).decode(), base64.b64encode(data).decode().rstrip("=")}
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + data).decode().rstrip("=")
        start = (pad * 4 + 2) // 3  # characters that still carry the padding bytes
        end = ((pad + len(data)) * 4) // 3  # characters made of the secret's bytes only
        inner = encoded[start:end]
        if len(inner) >= MIN_SECRET:
            forms.add(inner)
    return forms


def forms_of(secret: str) -> set[str]:
    """Every text form a secret commonly takes when echoed back (case is handled by the matcher)."""
    if len(secret) < MIN_SECRET:
        return set()
    raw = secret.encode()
    forms = {secret, quote(secret, safe=""), quote_plus(secret, safe=""),
             binascii.hexlify(raw).decode()}
    forms |= _b64_forms(raw)
    forms |= _b64_forms(base64.b64encode(raw))  # base64 twice (a Basic header logged encoded)
    return {f for f in forms if len(f) >= MIN_SECRET}


class Redactor:
    """The secrets of one provider, and the function that hides them."""

    def __init__(self) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, *secrets: str | None) -> None:
        """Hide these values (in every form) from now on."""
        for secret in secrets:
            if secret:
                self._forms |= forms_of(secret)
        self._pattern = None

    def add_login(self, user: str, password: str | None) -> None:
        """Hide a password and the user:password / AUTH PLAIN forms it travels in."""
        if not password:
            return
        self.add(password)
        for combined in (f"{user}:{password}", f"\0{user}\0{password}", f"{user}\0{password}"):
            self._forms |= _b64_forms(combined.encode())
        self._pattern = None

    def clear(self) -> None:
        self._forms = set()
        self._pattern = None

    def __call__(self, text: str) -> str:
        """`text` with every known secret replaced by [redacted]."""
        if not self._forms:
            return text
        if self._pattern is None:
            # Longest first, so a secret is hidden before any shorter form inside it;
            # case-insensitive, as servers (and hex) swap case freely.
            alternatives = sorted(self._forms, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, alternatives)), re.IGNORECASE)
        return self._pattern.sub(REDACTED, text)


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line, cut to a readable length."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
