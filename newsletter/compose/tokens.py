"""Every token the newsletter puts in a link: made and checked only with its secret.

Two families, one module:

Lasting tokens (`TokenMaker`): the unsubscribe link in every issue (and the manage page it
opens), and the kinds the next issues add (a click, a web version...). A token carries
its kind, the reader's identity (Recipient.key, by default the normalized address) and,
where a link needs it, the campaign it came from, all encrypted, so a URL shows no
readable address (addresses in URLs leak into logs and spam filters score them), and
authenticated, so a forged, altered or kind-swapped token is refused. Version "3", what
is made now, is AES-SIV (RFC 5297) from `cryptography`:

    key   = HKDF-SHA256(secret, info="newsletter/tokens/v3/" + len + identity)   # 64 bytes
    plain = kind code (1 byte) + reader key [+ NUL + campaign id]
    token = "3" + base64url(AES-SIV(key, plain)), unpadded       # 16-byte tag, then ciphertext

The identity is the newsletter's base_url (normalized: https://Example.com/ and
https://example.com are one newsletter), so two newsletters sharing a NEWSLETTER_SECRET
refuse each other's links. SIV is deterministic: the same reader gets the same link in
every issue, and it keeps working until the secret or base_url changes.

Links already mailed keep working: version "1" (unbound) and "2" (bound to base_url)
unsubscribe tokens, a hand-written HMAC-SHA256 SIV-style construction, are still
verified (never made). v1 is accepted unless `accept_legacy=False`: a newsletter that
never shared its secret loses nothing by that, and one that did can refuse them (or
rotate the secret).

Timed tokens (`make_token` / `read_token`): the confirmation link of a sign-up (and
the purpose "manage"), signed and stamped with itsdangerous, so they expire. The salt
holds the purpose and the newsletter's identity (base_url, else its name); the payload
names the subscriber by row id and a short hash of their address, so a token made for
a row that was erased and reused by someone else does not match.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from itsdangerous import BadSignature, URLSafeTimedSerializer

from newsletter import paths, store
from newsletter.errors import ConfigError
from newsletter.settings import FINGERPRINT_META, Settings, key_fingerprint, recorded_fingerprint

LEGACY_VERSION = "1"
BOUND_VERSION = "2"
SIV_VERSION = "3"
VERSION = SIV_VERSION
_TAG = 16  # the SIV tag, v1/v2's MAC: both 16 bytes
_MAX_TOKEN = 2048


class Kind(enum.StrEnum):
    """What a token lets its holder do. Lasting kinds have a one-byte code (never reuse one)."""

    UNSUBSCRIBE = "unsubscribe"  # lasting: every issue's link (it opens the manage page too)
    CONFIRM = "confirm"  # timed: the double opt-in email
    MANAGE = "manage"  # lasting or timed: a link to the preferences alone
    READER = "reader"  # lasting: who clicked or opened, only with [analytics] per_reader


# The byte each lasting kind is encrypted as. A new kind takes the next free code.
_CODES: dict[Kind, int] = {Kind.UNSUBSCRIBE: 1, Kind.MANAGE: 2, Kind.READER: 3}
_KINDS = {code: kind for kind, code in _CODES.items()}


@dataclass(frozen=True)
class Link:
    """What a verified lasting token says."""

    kind: Kind
    reader: str  # the subscriber's identity (email_key)
    campaign: int | None = None


# --- lasting tokens ------------------------------------------------------------------------


def _normalize_context(context: str) -> str:
    # https://Example.com/ and https://example.com are the same newsletter.
    context = context.strip().rstrip("/")
    scheme, sep, rest = context.partition("://")
    if not sep:
        return context
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}"


def _identity(context: str | None) -> bytes:
    # Length-prefixed so no identity can be confused with another's label.
    ctx = _normalize_context(context).encode("utf-8") if context is not None else b""
    return len(ctx).to_bytes(4, "big") + ctx


def _siv_key(secret: bytes, context: str | None) -> AESSIV:
    key = HKDF(algorithm=hashes.SHA256(), length=64, salt=None,
               info=b"newsletter/tokens/v3/" + _identity(context)).derive(secret)
    return AESSIV(key)  # 64 bytes: AES-256-SIV


def _legacy_keys(secret: bytes, context: str | None) -> tuple[bytes, bytes]:
    # v1/v2 (verify only): HMAC-derived MAC and keystream keys, as issues sent before made.
    if context is None:
        label = b"newsletter/unsubscribe/"
    else:
        label = b"newsletter/unsubscribe/v2/" + _identity(context) + b"/"
    mac_key = hmac.new(secret, label + b"mac", hashlib.sha256).digest()
    enc_key = hmac.new(secret, label + b"enc", hashlib.sha256).digest()
    return mac_key, enc_key


def _legacy_open(keys: tuple[bytes, bytes], raw: bytes) -> str | None:
    mac_key, enc_key = keys
    iv, ct = raw[:_TAG], raw[_TAG:]
    stream = b"".join(hmac.digest(enc_key, iv + n.to_bytes(4, "big"), "sha256")
                      for n in range((len(ct) + 31) // 32))[:len(ct)]
    plain = bytes(a ^ b for a, b in zip(ct, stream, strict=True))
    if not hmac.compare_digest(iv, hmac.digest(mac_key, plain, "sha256")[:_TAG]):
        return None
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError:  # pragma: no cover - the MAC matched, so we wrote it
        return None


def _decode(body: str) -> bytes | None:
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        return None
    # Only the canonical encoding is accepted: no altered padding bits or spellings.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != body:
        return None
    return raw


class TokenMaker:
    """Makes and reads lasting tokens with keys derived once (personalize makes one per reader).

    `context` is the newsletter's identity, its base_url: tokens are bound to it. v2
    tokens are checked against it too; v1 tokens (bound to nothing) are accepted unless
    `accept_legacy=False`. Without a context only v1 and unbound v3 tokens verify.
    """

    def __init__(self, secret: bytes, context: str | None = None, *,
                 accept_legacy: bool = True):
        self._siv = _siv_key(secret, context)
        self._legacy: dict[str, tuple[bytes, bytes]] = {}
        if context is not None:
            self._legacy[BOUND_VERSION] = _legacy_keys(secret, context)
        if context is None or accept_legacy:
            self._legacy[LEGACY_VERSION] = _legacy_keys(secret, None)

    def make(self, reader: str, kind: Kind = Kind.UNSUBSCRIBE,
             campaign: int | None = None) -> str:
        """The token for `reader` (and `campaign`): the same every time it is asked for."""
        if kind not in _CODES:
            raise ValueError(f"{kind} tokens are timed: make them with make_token()")
        if "\x00" in reader:
            raise ValueError("a reader key cannot hold a NUL character")
        plain = bytes([_CODES[kind]]) + reader.encode("utf-8")
        if campaign is not None:
            plain += b"\x00" + str(int(campaign)).encode("ascii")
        sealed = self._siv.encrypt(plain, None)  # the tag first, then the ciphertext
        return SIV_VERSION + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def read(self, token: str) -> Link | None:
        """What a token says; None when forged, altered, truncated or another newsletter's."""
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN:
            return None
        version, raw = token[0], _decode(token[1:])
        if raw is None or len(raw) < _TAG:
            return None
        if version == SIV_VERSION:
            return self._open_siv(raw)
        keys = self._legacy.get(version)
        if keys is None:
            return None
        key = _legacy_open(keys, raw)  # v1 and v2 were only ever unsubscribe tokens
        return None if key is None else Link(Kind.UNSUBSCRIBE, key)

    def _open_siv(self, raw: bytes) -> Link | None:
        try:
            plain = self._siv.decrypt(raw, None)
        except InvalidTag:
            return None
        kind = _KINDS.get(plain[0]) if plain else None
        if kind is None:
            return None
        reader, sep, campaign = plain[1:].partition(b"\x00")
        try:
            text = reader.decode("utf-8")
        except UnicodeDecodeError:  # pragma: no cover - authenticated, so we wrote it
            return None
        if not sep:
            return Link(kind, text)
        if not campaign.isdigit():  # pragma: no cover - authenticated, so we wrote it
            return None
        return Link(kind, text, int(campaign))

    def verify(self, token: str, kind: Kind = Kind.UNSUBSCRIBE) -> str | None:
        """The reader a token of `kind` was made for; None for any other token."""
        link = self.read(token)
        return link.reader if link is not None and link.kind == kind else None


def unsubscribe_token(secret: bytes, key: str, context: str | None) -> str:
    """An opaque unsubscribe token for the subscriber identity `key` (URL-safe, no padding).

    `context` is the newsletter's base_url, as personalize passes it: the token is bound
    to this newsletter.
    """
    return TokenMaker(secret, context).make(key)


def verify_unsubscribe_token(
    secret: bytes, token: str, context: str | None = None, *, accept_legacy: bool = True
) -> str | None:
    """The subscriber key an unsubscribe token was made for, or None when forged or foreign.

    With `context` (the newsletter's base_url), v3 and v2 tokens must have been made for
    it; v1 tokens from issues sent before binding are accepted unless
    `accept_legacy=False`. Without `context` only v1 and unbound tokens verify.
    """
    return TokenMaker(secret, context, accept_legacy=accept_legacy).verify(token)


def unsubscribe_url(base_url: str, token: str, campaign: int | None = None) -> str:
    """The one-click unsubscribe URL for a token: `{base_url}/unsubscribe?token=…`.

    `campaign` adds `&c=ID`, the issue the link came in, for `newsletter stats`. It sits
    beside the token, not in it: links mailed before it existed keep working, and the
    server counts it only for a reader the campaign was sent to.
    """
    return f"{base_url.rstrip('/')}{paths.UNSUBSCRIBE}?token={token}{_from(campaign)}"


def manage_url(base_url: str, token: str, campaign: int | None = None) -> str:
    """The link to a reader's subscription (name, topics, leave or come back):
    `{base_url}/manage?token=…`, with a MANAGE token (and the issue it came in)."""
    return f"{base_url.rstrip('/')}{paths.MANAGE}?token={token}{_from(campaign)}"


def _from(campaign: int | None) -> str:
    return "" if campaign is None else f"&c={int(campaign)}"


def campaign_from(value: str | None) -> int | None:
    """The campaign number a link's `c` parameter names; None when absent or not a number."""
    if not value or not value.isascii() or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


def token_from(text: str) -> str | None:
    """The token in an unsubscribe URL (or a bare token); None when `text` holds none.

    Lets a writer act on a link a reader forwarded, or one from a web server's log.
    """
    text = text.strip()
    if "@" in text and "token=" not in text:
        return None  # an email address
    if "token=" in text:
        values = parse_qs(urlsplit(text).query).get("token")
        return values[0] if values else None
    return text or None


# --- click and open tokens ([analytics]) ------------------------------------------------------

_LINK_MAC = 12  # bytes of HMAC-SHA256 in a link token: 96 bits, beyond guessing
_REF_ID, _REF_MAC = 9, 6  # a pseudonym's bytes, and its signature's
ANONYMOUS = "a"  # the first character of a pseudonym (a READER token starts with "3")


@dataclass(frozen=True)
class Tracked:
    """What a verified click or open token says: the campaign, and the link (None: open)."""

    campaign: int
    url: str | None


class TrackingTokens:
    """Signs the links `serve` redirects (so it is never an open redirect) and the reader
    value each tracked link carries (so a pseudonym cannot be made up).

    A link token is base64url(HMAC(key, payload)[:12] + payload), payload the campaign
    and the URL itself: nothing is stored per link, and only links the newsletter put in
    an issue redirect. A pseudonym is HMAC(a random per-send salt, reader key): the salt
    is never stored, so no one, not even with the secret and the list, can tell whose it
    is; the reader is the same pseudonym in every link of that send (unique clickers),
    and a different one in the next issue. With per_reader, the reader value is a READER
    token instead: the reader's key, encrypted (AES-SIV, like the unsubscribe token).
    """

    def __init__(self, secret: bytes, context: str | None):
        identity = _identity(context)
        self._key = hmac.new(secret, b"newsletter/tracking/v1/" + identity,
                             hashlib.sha256).digest()
        self._readers = TokenMaker(secret, context, accept_legacy=False)

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def link(self, campaign: int, url: str | None) -> str:
        """The token for a link in campaign `campaign` (url None: its open image)."""
        payload = str(int(campaign)).encode("ascii")
        if url is not None:
            payload += b"\n" + url.encode("utf-8")
        raw = self._mac(b"link\x00" + payload)[:_LINK_MAC] + payload
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def read_link(self, token: str) -> Tracked | None:
        """The campaign and link a token names; None when it is not one this newsletter made."""
        if not isinstance(token, str) or not token or len(token) > 4 * _MAX_TOKEN:
            return None
        raw = _decode(token)
        if raw is None or len(raw) <= _LINK_MAC:
            return None
        mac, payload = raw[:_LINK_MAC], raw[_LINK_MAC:]
        if not hmac.compare_digest(mac, self._mac(b"link\x00" + payload)[:_LINK_MAC]):
            return None
        number, sep, url = payload.partition(b"\n")
        if not number.isdigit():  # pragma: no cover - signed, so we wrote it
            return None
        return Tracked(int(number), url.decode("utf-8") if sep else None)

    def pseudonym(self, salt: bytes, campaign: int, reader_key: str) -> str:
        """A reader's name for one send: not reversible without `salt` (never stored)."""
        ident = hmac.new(salt, reader_key.encode("utf-8"), hashlib.sha256).digest()[:_REF_ID]
        sig = self._mac(b"ref\x00" + str(int(campaign)).encode() + b"\x00" + ident)[:_REF_MAC]
        return ANONYMOUS + base64.urlsafe_b64encode(ident + sig).decode("ascii")

    def reader_token(self, campaign: int, reader_key: str) -> str:
        """per_reader: a token that names the reader (encrypted) and the campaign."""
        return self._readers.make(reader_key, Kind.READER, campaign)

    def read_reader(self, campaign: int, value: str | None) -> str | None:
        """Who a link's reader value stands for: "a:<pseudonym>" or "key:<reader key>";
        None when absent, forged or made for another campaign."""
        if not value:
            return None
        if value.startswith(ANONYMOUS):
            raw = _decode(value[1:])
            if raw is None or len(raw) != _REF_ID + _REF_MAC:
                return None
            ident, sig = raw[:_REF_ID], raw[_REF_ID:]
            want = self._mac(b"ref\x00" + str(int(campaign)).encode() + b"\x00" + ident)
            return f"a:{value[1:]}" if hmac.compare_digest(sig, want[:_REF_MAC]) else None
        link = self._readers.read(value)
        if link is None or link.kind != Kind.READER or link.campaign != campaign:
            return None
        return f"key:{link.reader}"


def click_url(server_url: str, token: str) -> str:
    """`{server}/c/<token>`: a tracked link (the reader value follows as `?r=`)."""
    return f"{server_url.rstrip('/')}{paths.CLICK}/{token}"


def open_url(server_url: str, token: str) -> str:
    """`{server}/o/<token>`: the open image (the reader value follows as `?r=`)."""
    return f"{server_url.rstrip('/')}{paths.OPEN}/{token}"


# --- timed tokens (itsdangerous) --------------------------------------------------------------

CONFIRM = Kind.CONFIRM
CONFIRM_MAX_AGE = 7 * 24 * 3600  # a week, as the page tells the reader


def _serializer(settings: Settings, purpose: str) -> URLSafeTimedSerializer:
    identity = settings.base_url or settings.name
    return URLSafeTimedSerializer(settings.secret_key(), salt=f"newsletter/{purpose}|{identity}")


def address_hash(email_key: str) -> str:
    """A short digest of a subscriber's identity, bound into timed tokens."""
    return hashlib.sha256(email_key.encode("utf-8")).hexdigest()[:16]


def make_token(settings: Settings, purpose: str, subscriber_id: int, email_key: str) -> str:
    """A signed token saying `purpose` for this subscriber, stamped with the time."""
    return _serializer(settings, purpose).dumps([subscriber_id, address_hash(email_key)])


def read_token(
    settings: Settings, purpose: str, token: str, max_age: int | None = CONFIRM_MAX_AGE
) -> tuple[int, str] | None:
    """(subscriber id, address hash) from a valid, unexpired token; None otherwise.

    `max_age=None` checks the signature and not the age.
    """
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


# --- text a page carries back (the consent text a sign-up form showed) ---------------------


def seal_text(settings: Settings, purpose: str, text: str) -> str:
    """A short signature of `text` for `purpose`, by this newsletter's secret and identity.

    A form printed once and kept (an archived page, the snippet pasted into another site)
    posts back the consent text it showed with this seal, so the record holds that text,
    not whatever the settings say today, and nobody can post a text the writer never wrote.
    """
    message = f"{purpose}|{_normalize_context(settings.base_url or settings.name)}|{text}"
    digest = hmac.new(settings.secret_key(), message.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode("ascii")


def unseal_text(settings: Settings, purpose: str, text: str, seal: str) -> str | None:
    """`text` when `seal` is its seal for `purpose`, else None."""
    if not text or not seal:
        return None
    return text if hmac.compare_digest(seal_text(settings, purpose, text), seal) else None


def bind_key(settings: Settings) -> bytes:
    """The key for the database's links, its fingerprint recorded there the first time.

    Commands that mail or check links (send, run, serve, sync, unsubscribing by a link)
    call this before anything else: `secret_key` refuses a missing or different key for
    a database that has a fingerprint, and this makes a fresh database remember its key.
    """
    key = settings.secret_key()
    mine = key_fingerprint(key)
    if recorded_fingerprint(settings.database) == mine:
        # Already bound: no write, and no connection of ours whose close would checkpoint
        # the WAL into the database (on a full disk that takes the space the command needs).
        return key
    db = store.connect(settings.database)
    try:
        kept = store.remember_once(db, FINGERPRINT_META, mine)
    finally:
        db.close()
    if kept != mine:  # another process bound another key in between
        raise ConfigError(
            f"{settings.database.name} was just bound to another key (fingerprint {kept}): "
            f"run again with that key in NEWSLETTER_SECRET or .newsletter-secret"
        )
    return key
