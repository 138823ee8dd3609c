"""newsletter.toml + environment → Settings.

A newsletter is a folder holding `newsletter.toml`. Commands find it in the
current directory or its parents (like git); `--dir PATH` or `NEWSLETTER_DIR`
override that.

Every table of the file is read and checked here, when settings load, into
frozen dataclasses: no other module reads the TOML. Every problem in the file is
reported at once, in one line, before any command runs. `[provider]` is checked
against the options the named provider declares (`Provider.options`, a mapping of
name -> `Option`), plug-ins included: the entry-point group is asked for the class
by name, so this floor imports nothing above it.

Secrets never live in the file: settings name the environment variable that
holds them (`password_env`, `api_key_env`), and the value is read only when a
provider opens (or a webhook or the mailbox needs it).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import hmac
import ipaddress
import math
import os
import re
import secrets
import sqlite3
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from newsletter.errors import ConfigError, database_error

CONFIG_NAME = "newsletter.toml"
SECRET_FILE = ".newsletter-secret"
SECRET_ENV = "NEWSLETTER_SECRET"
# The database's `meta` row naming the key that signed its links (a fingerprint, never the key).
FINGERPRINT_META = "key_fingerprint"


@dataclass(frozen=True)
class Option:
    """One [provider] setting a provider reads: its type, its default, what it is for.

    Providers declare theirs as `options` (name -> Option); settings check every key of
    [provider] against the declaration when they load. `kind` is `str`, `int`, `float`
    (a whole number is fine too), `bool`, or a tuple of them; `choices` limits text values
    (compared without case); `minimum` limits numbers; `required` ones must be set.
    """

    kind: type | tuple[type, ...]
    default: Any = None  # None: the provider works it out (a port from the security, …)
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    required: bool = False  # the provider cannot send without it

    def problem(self, key: str, value: Any) -> str | None:
        """What is wrong with `value` for setting `key`, or None when it fits."""
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if bool in kinds and isinstance(value, bool):
            return None
        if str in kinds and isinstance(value, str):
            if self.choices and value.lower() not in self.choices:
                also = " (or true/false)" if bool in kinds else ""
                return (f'[provider] {key} = "{value}" is not one of '
                        f'{", ".join(self.choices)}{also}')
            return None
        if int in kinds and float not in kinds:
            if isinstance(value, int) and not isinstance(value, bool) and (
                    self.minimum is None or value >= self.minimum):
                return None
            return f"[provider] {key} = {value!r} must be a whole number" + self._floor()
        if float in kinds:
            if (isinstance(value, int | float) and not isinstance(value, bool)
                    and math.isfinite(value) and (self.minimum is None or value >= self.minimum)):
                return None
            return f"[provider] {key} = {value!r} must be a number" + self._floor()
        if kinds == (bool,):
            return f"[provider] {key} = {value!r} must be true or false"
        shown = " or ".join(f'"{c}"' for c in self.choices) if self.choices else "text"
        also = " (or true/false)" if bool in kinds else ""
        return f"[provider] {key} = {value!r} must be {shown}{also}"

    def _floor(self) -> str:
        return "" if self.minimum is None else f" of at least {self.minimum:g}"


# Every provider takes these ([provider] name, pacing, retries): the send engine reads them.
COMMON_OPTIONS: dict[str, Option] = {
    "name": Option(str, "outbox", "the provider that sends: `newsletter providers` lists them"),
    "rate": Option(float, None, "messages (or requests) per second; 0: no limit", minimum=0),
    "concurrency": Option(int, 1, "messages in flight at once (connections, API clients)",
                          minimum=1),
    "retry_delay": Option(float, 1.0, "seconds before the first retry of a transient failure",
                          minimum=0),
    "max_attempts": Option(int, 5, "tries per message before it is marked failed", minimum=0),
}


@dataclass(frozen=True)
class ProviderSettings:
    """The `[provider]` table, checked against the provider's declared options.

    `options` keeps every key but name, rate and concurrency for the adapter to read.
    """

    name: str = "outbox"
    rate: float | None = None  # messages (or requests) per second; None: the provider's default
    concurrency: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def secret(self, key_env_setting: str, default_env: str | None = None) -> str | None:
        """Read a secret from the environment variable named by `key_env_setting`.

        Returns None when no variable is named and no default applies. Raises
        ConfigError (naming the variable, never a value) when it is named but unset.
        """
        env_name = self.options.get(key_env_setting, default_env)
        if not env_name:
            return None
        if not is_env_name(env_name):
            # Looks like the secret itself: never echo it back.
            raise ConfigError(
                f"newsletter.toml [provider] {key_env_setting} must be the name of an "
                "environment variable, not the secret itself"
            )
        value = os.environ.get(env_name)
        if not value:
            raise ConfigError(
                f"the environment variable {env_name} is not set: export it with your "
                f"{self.name} credentials (newsletter.toml [provider] {key_env_setting} names it)"
            )
        return value


@dataclass(frozen=True)
class BounceSettings:
    """[bounces]: how many soft bounces in a row (separate sends) stop a reader."""

    soft_limit: int = 3


@dataclass(frozen=True)
class ScheduleSettings:
    """[schedule]: what a scheduled send does with a draft edited since it was scheduled."""

    if_edited: str = "send"  # send: the draft as it is then; hold: wait for the writer


@dataclass(frozen=True)
class PublishSettings:
    """[publish]: the static archive `newsletter publish` writes."""

    out: Path = Path("site")  # relative to the newsletter folder unless absolute
    lang: str = "en"
    description: str = ""
    feed_entries: int = 20  # the newest N issues, with full content, in each feed


@dataclass(frozen=True)
class AnalyticsSettings:
    """[analytics]: opt-in click and open counting (all off by default: nothing is tracked)."""

    clicks: bool = False  # links in an issue's HTML go through serve's /c/<token>
    opens: bool = False  # a 1x1 image from serve's /o/<token>
    per_reader: bool = False  # record who clicked/opened, not a per-campaign pseudonym
    keep_days: int = 90  # `newsletter run` deletes click and open records older than this

    @property
    def tracking(self) -> bool:
        return self.clicks or self.opens


ANALYTICS_KEYS = ("clicks", "opens", "per_reader", "keep_days")


@dataclass(frozen=True)
class WebConfig:
    """[subscribe] and [server], checked: what `newsletter serve` answers and how."""

    topics: tuple[str, ...] = ()
    # What the sign-up form has ticked before the reader changes it: "all" (everything,
    # including topics added later) or "none" (no box ticked: the reader picks).
    default_topics: str = "all"
    consent: str = ""
    confirmations_per_day: int = 3
    signups_per_ip_per_hour: int = 20
    max_body: int = 64 * 1024
    trusted_proxies: tuple[Any, ...] = ()  # ip_network objects
    webhook_max_body: int = 1024 * 1024
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    configured: bool = False  # True when newsletter.toml has [server] or [subscribe]
    # [server] url: where `serve` answers when it is not at base_url (the archive is on a
    # static host); None: at base_url. `hosting` says which of the three ways this is.
    url: str | None = None
    hosting: str = "serve"  # serve | static (archive elsewhere, serve at url) | none

    def consent_text(self, settings: Settings) -> str:
        return self.consent or (
            f"Send me {settings.name} by email. I can unsubscribe at any time with the link "
            "in every email."
        )


class MissingSecret(Exception):
    """A webhook provider is turned on but its environment variable is not set on the server."""


WEBHOOK_ENV_KEYS = (
    "postmark_user_env",
    "postmark_password_env",
    "sendgrid_public_key_env",
    "mailgun_signing_key_env",
    "resend_secret_env",
)
_WEBHOOK_INTS = {"max_body_bytes": (1024, 1_000_000), "tolerance_seconds": (30, 300)}
_WEBHOOK_BOOLS = {"ses_enabled": False, "ses_confirm_subscriptions": True}
WEBHOOK_KEYS = sorted(
    {*WEBHOOK_ENV_KEYS, *_WEBHOOK_INTS, *_WEBHOOK_BOOLS, "ses_topic_arns",
     "insecure_test_only_sns_host"}
)


@dataclass(frozen=True)
class WebhookSettings:
    """[webhooks]: which providers may call, and the variables holding their secrets."""

    env: dict[str, str] = field(default_factory=dict)  # setting -> env var name
    max_body_bytes: int = 1_000_000
    tolerance_seconds: int = 300  # how old a signed timestamp may be
    ses_enabled: bool = False
    ses_confirm_subscriptions: bool = True
    ses_topic_arns: tuple[str, ...] = ()  # empty: any topic
    # Tests only: lets SigningCertURL/SubscribeURL point at this host:port over http(s).
    insecure_test_only_sns_host: str | None = None

    @classmethod
    def from_table(cls, table: dict[str, Any] | None) -> WebhookSettings:
        """Check a [webhooks] table alone; raise one ConfigError listing every problem."""
        problems: list[str] = []
        checked = _webhooks(table or {}, problems)
        if problems:
            raise ConfigError("newsletter.toml [webhooks]: " + "; ".join(problems))
        return checked

    def enabled(self, provider: str) -> bool:
        """True when newsletter.toml turns this provider's webhook on."""
        if provider == "ses":
            return self.ses_enabled
        return any(key.startswith(provider + "_") for key in self.env)

    def secret(self, key: str) -> str:
        """The secret in the environment variable that setting `key` names."""
        name = self.env[key]
        value = os.environ.get(name, "")
        if not value:
            raise MissingSecret(f"the environment variable {name} (webhooks.{key}) is not set")
        return value


MAILBOX_KEYS = {"host", "port", "security", "username", "password_env", "folder",
                "processed_folder", "timeout"}


@dataclass(frozen=True)
class MailboxSettings:
    """[mailbox]: the IMAP mailbox `sync` reads mailto unsubscribes and bounce reports from."""

    host: str
    port: int
    security: str
    username: str
    password_env: str
    folder: str = "INBOX"
    processed_folder: str = "Newsletter/Processed"
    timeout: float = 30.0

    def password(self) -> str:
        value = os.environ.get(self.password_env)
        if not value:
            raise ConfigError(f"the environment variable {self.password_env} is not set: export "
                              "the mailbox password in it (newsletter.toml [mailbox] "
                              "password_env names it)")
        return value


@dataclass(frozen=True)
class Settings:
    root: Path
    name: str = "My Newsletter"
    sender: str = ""  # the From header, "Name <addr>"; "" when not configured
    reply_to: str | None = None
    base_url: str | None = None  # no trailing slash
    address: str = ""  # postal address for the footer
    layout: str = "default"
    list_id: str | None = None  # List-Id header value; derived from name + domain when None
    unsubscribe_mailto: str | None = None  # optional mailto: for List-Unsubscribe
    database: Path = Path("newsletter.db")
    provider: ProviderSettings = field(default_factory=ProviderSettings)
    bounces: BounceSettings = field(default_factory=BounceSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    mailbox: MailboxSettings | None = None  # None: no [mailbox] table
    web: WebConfig = field(default_factory=WebConfig)  # [subscribe] and [server]
    publish: PublishSettings = field(default_factory=PublishSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    analytics: AnalyticsSettings = field(default_factory=AnalyticsSettings)
    # preview/check/build: their links are never mailed, so a moved newsletter without its
    # key still renders drafts (with a throwaway key) instead of refusing.
    drafts_only: bool = False

    @property
    def drafts_dir(self) -> Path:
        return self.root / "drafts"

    @property
    def layouts_dir(self) -> Path:
        return self.root / "layouts"

    @property
    def outbox_dir(self) -> Path:
        return self.root / "outbox"

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def server_url(self) -> str | None:
        """Where reader links (unsubscribe, manage, confirm, the sign-up form) and webhooks
        go: [server] url when the archive is hosted elsewhere, else base_url; None when
        there is no server (`[server] url = "none"`: unsubscribe by mailto)."""
        if self.web.hosting == "none":
            return None
        return self.web.url or self.base_url

    @property
    def sender_address(self) -> str:
        """The bare address of the From header ('' when not configured)."""
        return parseaddr(self.sender)[1]

    def secret_key(self) -> bytes:
        """The HMAC key for unsubscribe tokens: NEWSLETTER_SECRET, else the secret file.

        The file is created (git-ignored, mode 600) on first use, so a fresh
        newsletter works with nothing set up. A database that records the fingerprint
        of the key that signed its links gets that key or a ConfigError: never a new
        file (links already mailed would die) and never another key.
        """
        key = self.existing_key()
        recorded = recorded_fingerprint(self.database) if key is None or not \
            _known_match(self.database, key) else None
        if key is None:
            if recorded is not None:
                if self.drafts_only:
                    return _THROWAWAY_KEY
                raise ConfigError(
                    f"{self.database.name} holds links signed with a key this folder does not "
                    f"have (fingerprint {recorded}): set {SECRET_ENV} to the content of "
                    f"{SECRET_FILE} in the folder the database came from (or to the "
                    f"{SECRET_ENV} set where it was made), or copy that file to "
                    f"{self.root / SECRET_FILE}; a new key would break every link already mailed"
                )
            path = self.root / SECRET_FILE
            write_secret_file(path)
            _git_ignore(self.root, SECRET_FILE)
            key = self.existing_key()
            assert key is not None
            return key
        if recorded is not None and not self.drafts_only:
            mine = key_fingerprint(key)
            if not hmac.compare_digest(mine, recorded):
                source = SECRET_ENV if os.environ.get(SECRET_ENV) else str(self.root / SECRET_FILE)
                raise ConfigError(
                    f"{source} is not the key that signed the links of {self.database.name} "
                    f"(its fingerprint is {mine}, the database's {recorded}): use the "
                    f"{SECRET_FILE} of the folder the database came from, or the {SECRET_ENV} "
                    "set where it was made; this key would break every link already mailed"
                )
            _MATCHED.add((str(self.database), mine))
        return key

    def existing_key(self) -> bytes | None:
        """NEWSLETTER_SECRET, else the secret file's key; None when there is neither.

        Never makes one (`newsletter doctor` asks this: it only looks).
        """
        value = os.environ.get(SECRET_ENV)
        if value:
            # A short key can be guessed offline from any reader's own link, and then
            # links forged for everyone: the same floor as the secret file.
            if len(value.strip()) < 32:
                raise ConfigError(
                    f"{SECRET_ENV} is shorter than 32 characters: set it to a long random "
                    "value (python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
                )
            _same_as_secret_file(self.root / SECRET_FILE, value)
            return value.encode()
        path = self.root / SECRET_FILE
        if not path.exists():
            return None
        text = path.read_text().strip()
        if len(text) < 32:
            raise ConfigError(
                f"{path} holds a secret shorter than 32 characters: delete it to make a new one "
                f"(old unsubscribe links stop working) or set {SECRET_ENV}"
            )
        return text.encode()


def key_fingerprint(key: bytes) -> str:
    """Which key this is, in 16 hex characters that do not reveal it."""
    return hmac.new(key, b"newsletter key fingerprint", hashlib.sha256).hexdigest()[:16]


def recorded_fingerprint(database: Path) -> str | None:
    """The fingerprint of the key that signed the database's links; None before any.

    Read here, read-only, because this floor cannot import the store (which writes it).
    No file, or no `meta` table yet, means no link was made against it.
    """
    if not database.exists():
        return None
    try:
        conn = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = ?",
                               (FINGERPRINT_META,)).fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if str(exc).startswith("no such table"):
            return None
        raise database_error(exc, database) from None
    except sqlite3.Error as exc:
        raise database_error(exc, database) from None
    return str(row[0]) if row else None


# (database, fingerprint) pairs already checked in this process: a fingerprint once recorded
# never changes, so the many calls of one send (one per token) need not read it again.
_MATCHED: set[tuple[str, str]] = set()
# Signs a preview's links when the key is elsewhere: they are never mailed.
_THROWAWAY_KEY = secrets.token_urlsafe(48).encode()


def _known_match(database: Path, key: bytes) -> bool:
    return (str(database), key_fingerprint(key)) in _MATCHED


_BREAK_OR_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# Connections (or API clients) in parallel: each holds a socket and files; past this, the
# process runs out of file descriptors long before any server would take that many.
MAX_CONCURRENCY = 100

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# [webhooks] names variables in capitals, as the servers they run on set them.
_UPPER_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def is_env_name(value: Any) -> bool:
    """True for a plausible environment variable name; False for a pasted key or token.

    Keys with dashes, dots or slashes (Postmark, SendGrid, Mailgun, AWS) fail the
    pattern; long mixed-case names with digits (Resend's `re_…`) are keys too.
    """
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        return False
    mixed = any(c.islower() for c in value) and any(c.isupper() for c in value)
    return not (len(value) >= 20 and mixed and any(c.isdigit() for c in value))


def ascii_url(url: str) -> str:
    """`url` as an ASCII URI: an international domain as xn--…, other characters %-encoded.

    Raises UnicodeError when the domain cannot be encoded.
    """
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    host, colon, port = hostport.partition(":")
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    netloc = f"{userinfo}{at}{host}{colon}{port}"
    return urlunsplit((
        parts.scheme, quote(netloc, safe=_URL_SAFE), quote(parts.path, safe=_URL_SAFE),
        quote(parts.query, safe=_URL_SAFE), quote(parts.fragment, safe=_URL_SAFE),
    ))


def ascii_mailto(value: str) -> str:
    """An address or mailto: URL in ASCII (xn--… domain, %-encoded UTF-8 elsewhere, RFC 6068)."""
    scheme, sep, rest = ("", "", value)
    if value.lower().startswith("mailto:"):
        scheme, sep, rest = value.partition(":")
    address, qmark, query = rest.partition("?")
    local, at, domain = address.rpartition("@")
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
    address = f"{quote(local, safe=_URL_SAFE)}{at}{domain}" if at else quote(domain, safe=_URL_SAFE)
    return f"{scheme}{sep}{address}{qmark}{quote(query, safe=_URL_SAFE)}"


_URL_SAFE = "/%:@!$&'()*+,;=-._~?#[]"


_SECRET_WORDS = {"password", "passwd", "pass", "pwd", "token", "secret", "apikey", "credential",
                 "credentials"}


def _names_a_secret(key: str) -> bool:
    """True for a [provider] key that names a secret itself (not `…_env`, its variable)."""
    lowered = key.lower().replace("-", "_")
    if lowered.endswith("_env"):
        return False
    words = set(re.split(r"[_\-.]+", lowered))
    return bool(words & _SECRET_WORDS) or lowered in {"key", "access_key", "private_key"} \
        or "api_key" in lowered


def _url_password(url: str) -> bool:
    try:
        return bool(urlsplit(url.strip()).password)
    except ValueError:
        return False


def _git_ignore(root: Path, name: str) -> None:
    """Add `name` to the folder's .gitignore when it has one that does not list it.

    (`newsletter init` writes a .gitignore that does; this covers a folder set up
    by hand, where the secret file would otherwise be committed with the rest.)
    """
    gitignore = root / ".gitignore"
    try:
        text = gitignore.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    if name in (line.strip().lstrip("/") for line in text.splitlines()):
        return
    with gitignore.open("a", encoding="utf-8") as f:
        f.write(("" if text.endswith("\n") or not text else "\n") + name + "\n")


def _same_as_secret_file(path: Path, value: str) -> None:
    """Refuse a NEWSLETTER_SECRET that is not the secret file's key, when there is one.

    That file signed every link already mailed and keys the suppression list's hashes:
    a new key would quietly break those links and let forgotten readers back in.
    """
    try:
        old = path.read_text().strip()
    except OSError:
        return
    if old and not hmac.compare_digest(old.encode(), value.strip().encode()):
        raise ConfigError(
            f"{SECRET_ENV} is not the key in {path.name}, which signed the links already "
            "mailed and the suppression list: set it to that file's content "
            f"({SECRET_ENV}=\"$(cat {path.name})\"), or delete {path.name} if no issue "
            "has gone out yet"
        )


def write_secret_file(path: Path) -> None:
    """Create a random secret file readable only by its owner; never overwrite one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48) + "\n")


def find_root(start: Path | None = None) -> Path:
    """The newsletter folder: NEWSLETTER_DIR, else the nearest one upwards with the config."""
    env_dir = os.environ.get("NEWSLETTER_DIR")
    if start is None and env_dir:
        start = Path(env_dir)
        if not (start / CONFIG_NAME).is_file():
            raise ConfigError(
                f"NEWSLETTER_DIR={env_dir} has no {CONFIG_NAME}: run `newsletter init {env_dir}`"
            )
        return start.resolve()
    here = (start or Path.cwd()).resolve()
    if start is not None and (here / CONFIG_NAME).is_file():
        return here
    if start is not None and not here.exists():
        raise ConfigError(f"{here} does not exist: pass an existing folder to --dir")
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise ConfigError(
        f"no {CONFIG_NAME} in {here} or its parents: run `newsletter init` to start a "
        "newsletter here, or pass --dir"
    )


_NEWSLETTER_KEYS = {
    "name", "from", "reply_to", "base_url", "address", "layout", "list_id",
    "unsubscribe_mailto", "database",
}


def load_settings(root: Path | None = None) -> Settings:
    """Read `newsletter.toml` under `root` (found as `find_root` does when None)."""
    root = find_root(root)
    path = root / CONFIG_NAME
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}: fix the TOML syntax there") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text: save it as UTF-8") from None
    return settings_from_dict(root, data, path)


# The tables beside [newsletter] and [provider], each checked below into its dataclass.
EXTRA_TABLES = ("server", "subscribe", "bounces", "webhooks", "mailbox", "publish", "schedule",
                "analytics")
PROVIDER_GROUP = "newsletter.providers"  # the entry-point group providers register in


def provider_entry_points() -> list[EntryPoint]:
    """The providers registered in the entry-point group, sorted by name, one per name."""
    return list(_provider_entry_points(tuple(sys.path)))


@functools.lru_cache(maxsize=4)
def _provider_entry_points(path: tuple[str, ...]) -> tuple[EntryPoint, ...]:
    # Scanning every installed distribution takes ~10 ms, and settings load often (preview
    # reloads, each worker): once per import path, which is what installing a plug-in changes.
    found = sorted(entry_points(group=PROVIDER_GROUP), key=lambda ep: ep.name)
    # The same name may be declared twice (an editable install next to a wheel):
    # keep the first, like importlib does for console scripts.
    unique: dict[str, EntryPoint] = {}
    for ep in found:
        unique.setdefault(ep.name, ep)
    return tuple(unique.values())


def declared_options(name: str) -> Mapping[str, Option] | None:
    """The options provider `name` declares (COMMON_OPTIONS included).

    None when it declares none (an older plug-in: its keys are not checked) or cannot be
    loaded (sending through it says why). ConfigError listing the known names when no
    provider has that name.
    """
    points = provider_entry_points()
    for ep in points:
        if ep.name == name:
            try:
                cls = ep.load()
            except Exception:  # a broken plug-in: make_provider reports it when it is used
                return None
            options = getattr(cls, "options", None)
            return {**COMMON_OPTIONS, **options} if isinstance(options, Mapping) else None
    known = ", ".join(ep.name for ep in points) or "none"
    raise ConfigError(
        f'unknown provider "{name}": known providers are {known} '
        "(set [provider] name in newsletter.toml or pass --provider)"
    )


def _suggest(key: str, known: Any) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def settings_from_dict(root: Path, data: dict[str, Any], path: Path | None = None) -> Settings:
    """Check every table of a parsed newsletter.toml; one ConfigError lists every problem."""
    where = str(path or root / CONFIG_NAME)
    problems: list[str] = []
    for key, value in data.items():
        # A misspelt [providers] would otherwise be ignored and the send go to the outbox.
        if key not in ("newsletter", "provider", *EXTRA_TABLES):
            problems.append(
                f"unknown table [{key}]: the tables are [newsletter], [provider], "
                + ", ".join(f"[{t}]" for t in EXTRA_TABLES)
                if isinstance(value, dict) else
                f"unknown setting {key}: settings go under [newsletter] or [provider]"
            )
    tables: dict[str, dict[str, Any]] = {}
    for name in ("newsletter", "provider", *EXTRA_TABLES):
        value = data.get(name, {})
        if isinstance(value, dict):
            tables[name] = value
        else:
            problems.append(f"[{name}] must be a table")
            tables[name] = {}
    prov = tables["provider"]
    declared = _declared(prov, problems)
    news = _newsletter(tables["newsletter"], declared, problems)
    provider = _provider(prov, declared, problems)
    bounces = _bounces(tables["bounces"], problems)
    webhooks = _webhooks(tables["webhooks"], problems)
    mailbox = _mailbox(tables["mailbox"], problems)
    web = _web(tables["subscribe"], tables["server"], problems,
               configured="server" in data or "subscribe" in data)
    publish = _publish(tables["publish"], problems)
    schedule = _schedule(tables["schedule"], problems)
    analytics = _analytics(tables["analytics"], problems)
    if analytics.tracking and (web.hosting == "none" or not (web.url or news.get("base_url"))):
        problems.append(
            "[analytics] clicks and opens go through `newsletter serve`: set [newsletter] "
            "base_url (or [server] url), or turn them off")
    if web.hosting == "none" and not news.get("unsubscribe_mailto"):
        problems.append(
            '[server] url = "none" (no server) needs [newsletter] unsubscribe_mailto: with no '
            "server, readers unsubscribe by email, e.g. unsubscribe_mailto = "
            '"unsubscribe@example.com"')
    if web.hosting == "static" and not news.get("base_url"):
        problems.append(
            "[server] url puts reader links on their own server, so the archive needs "
            "[newsletter] base_url (where the static host serves it)")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    database = Path(news.get("database", "newsletter.db"))
    return Settings(
        root=root,
        name=str(news.get("name", "My Newsletter")),
        sender=news["from"],
        reply_to=news.get("reply_to") or None,
        base_url=news["base_url"],
        address=str(news.get("address", "")),
        layout=str(news.get("layout", "default")),
        list_id=news.get("list_id") or None,
        unsubscribe_mailto=news["unsubscribe_mailto"],
        database=database if database.is_absolute() else root / database,
        provider=provider,
        bounces=bounces,
        webhooks=webhooks,
        mailbox=mailbox,
        web=web,
        publish=publish,
        schedule=schedule,
        analytics=analytics,
    )


def _declared(prov: dict[str, Any], problems: list[str]) -> Mapping[str, Option] | None:
    """The named provider's options, or None when they cannot be checked."""
    name = prov.get("name", "outbox")
    if not isinstance(name, str):
        problems.append('provider.name must be text, like name = "smtp"')
        return None
    try:
        return declared_options(name)
    except ConfigError as exc:
        problems.append(str(exc))
        return None


def _newsletter(news: dict[str, Any], declared: Mapping[str, Option] | None,
                problems: list[str]) -> dict[str, Any]:
    """[newsletter], checked; the values as Settings takes them (from, base_url, mailto set)."""
    provider_keys = set(declared or COMMON_OPTIONS) - {"name"}
    for key in news:
        if key in provider_keys:
            problems.append(f"newsletter.{key} belongs in [provider]: move it there")
        elif key not in _NEWSLETTER_KEYS:
            problems.append(f"unknown setting newsletter.{key}")
    for key in ("name", "from", "reply_to", "base_url", "address", "layout", "list_id",
                "unsubscribe_mailto", "database"):
        if key in news and not isinstance(news[key], str):
            problems.append(f"newsletter.{key} must be a string")

    sender = str(news.get("from", "") or "")
    if sender and (not parseaddr(sender)[1] or "@" not in parseaddr(sender)[1]):
        problems.append(
            f'newsletter.from = "{sender}" is not an address like "Name <you@example.com>"'
        )
    for key in ("from", "reply_to", "name", "list_id", "unsubscribe_mailto", "base_url"):
        value = news.get(key)
        # These become headers: no line break of any kind (\v, U+2028, …), no control character.
        if isinstance(value, str) and _BREAK_OR_CONTROL.search(value):
            problems.append(f"newsletter.{key} must be one line")
    base_url = news.get("base_url") or None
    if isinstance(base_url, str):
        if not base_url.startswith(("https://", "http://")):
            problems.append(f'newsletter.base_url = "{base_url}" must start with https://')
        base_url = base_url.rstrip("/")
        if not base_url.isascii():
            # Headers are ASCII: List-Unsubscribe came out as "https://b?cher.example/…".
            try:
                base_url = ascii_url(base_url)
            except UnicodeError:
                problems.append(f'newsletter.base_url = "{base_url}" has no valid domain name')
    mailto = news.get("unsubscribe_mailto") or None
    if isinstance(mailto, str) and not mailto.isascii():
        try:
            mailto = ascii_mailto(mailto)
        except UnicodeError:
            problems.append(f'newsletter.unsubscribe_mailto = "{mailto}" has no valid domain')
    return {**news, "from": sender, "base_url": base_url, "unsubscribe_mailto": mailto}


def _provider(prov: dict[str, Any], declared: Mapping[str, Option] | None,
              problems: list[str]) -> ProviderSettings:
    """[provider]: no secret in the file, every key one the provider declares, of its type."""
    flagged: set[str] = set()
    for key in prov:
        # A secret pasted into the file is refused: the file gets committed.
        if key in {"password", "api_key", "token", "secret", "secret_key"}:
            flagged.add(key)
            problems.append(
                f"provider.{key} must not hold a secret: put it in an environment variable and "
                f"name that variable with provider.{key}_env"
            )
        elif _names_a_secret(key):
            # server_token, apikey, smtp_password, aws_secret_access_key, …: no adapter
            # reads them, so the key would sit in the committed file, silently unused.
            flagged.add(key)
            problems.append(
                f"provider.{key} must not hold a secret: put it in an environment variable and "
                "name that variable with provider.api_key_env (provider.password_env for SMTP)"
            )
    for key, value in prov.items():
        # password_env, api_key_env, …: the name of a variable, never the secret pasted in.
        if key.endswith("_env") and not is_env_name(value):
            flagged.add(key)
            problems.append(
                f"provider.{key} must be the name of an environment variable (like "
                f"NEWSLETTER_SMTP_PASSWORD), not the secret itself: export the secret in a "
                f"variable and put that variable's name here"
            )
        elif isinstance(value, str) and "://" in value and _url_password(value):
            # An endpoint or proxy like https://user:pass@host: errors would print it.
            flagged.add(key)
            problems.append(
                f"provider.{key} must not hold a password (user:password@ in the URL): "
                "give the provider its key through api_key_env instead"
            )
    rate = prov.get("rate")
    if rate is not None and (not isinstance(rate, int | float) or isinstance(rate, bool)
                             or not math.isfinite(rate) or rate < 0):  # TOML has nan and inf
        problems.append("provider.rate must be a number of messages per second (0: no limit)")
    concurrency = prov.get("concurrency", 1)
    if (not isinstance(concurrency, int) or isinstance(concurrency, bool)
            or not 1 <= concurrency <= MAX_CONCURRENCY):
        problems.append(
            f"provider.concurrency must be a whole number from 1 to {MAX_CONCURRENCY}"
        )
        concurrency = 1
    port = prov.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool)
                             or not 1 <= port <= 65535):
        flagged.add("port")
        problems.append(f"provider.port = {port!r} must be a whole number from 1 to 65535 "
                        "(587 for SMTP with STARTTLS, 465 for TLS)")
    endpoint = prov.get("endpoint")
    if isinstance(endpoint, str) and not endpoint.startswith(("https://", "http://")):
        flagged.add("endpoint")
        problems.append(f'provider.endpoint = "{endpoint}" is not a URL: write it like '
                        '"https://api.example.com"')
    elif isinstance(endpoint, str):
        try:
            endpoint_port = urlsplit(endpoint).port
        except ValueError:
            endpoint_port = 0
        if endpoint_port == 0:
            problems.append(f'provider.endpoint = "{endpoint}" has a port outside 1–65535: '
                            "fix the number after the colon, or leave it out")
    name = prov.get("name", "outbox")
    for key, value in prov.items():
        if key in flagged or key in ("name", "rate", "concurrency"):
            continue
        if key in _NEWSLETTER_KEYS:
            problems.append(f"provider.{key} belongs in [newsletter]: move it there")
        elif declared is None:
            continue  # a provider that declares no options: its keys are its own
        elif key not in declared:
            problems.append(
                f"unknown setting provider.{key} for the {name} provider (known: "
                f"{', '.join(sorted(declared))}){_suggest(key, declared)}"
            )
        elif (problem := declared[key].problem(key, value)) is not None:
            problems.append(problem)
    for key, option in (declared or {}).items():
        if option.required and key not in prov:
            problems.append(f"provider.{key} is missing: the {name} provider needs it "
                            f"({option.help})")
    options = {k: v for k, v in prov.items() if k not in {"name", "rate", "concurrency"}}
    return ProviderSettings(
        name=str(name),
        rate=float(rate) if isinstance(rate, int | float) and rate else None,
        concurrency=concurrency,
        options=options,
    )


def _bounces(table: dict[str, Any], problems: list[str]) -> BounceSettings:
    for key in sorted(set(table) - {"soft_limit"}):
        problems.append(f"unknown setting bounces.{key}: [bounces] has soft_limit"
                        f"{_suggest(key, ['soft_limit'])}")
    limit = table.get("soft_limit", 3)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        problems.append("bounces.soft_limit must be a whole number of 1 or more")
        return BounceSettings()
    return BounceSettings(soft_limit=limit)


def _webhooks(table: dict[str, Any], problems: list[str]) -> WebhookSettings:
    for key in sorted(set(table) - set(WEBHOOK_KEYS)):
        problems.append(f"unknown setting webhooks.{key} (known: {', '.join(WEBHOOK_KEYS)})"
                        f"{_suggest(key, WEBHOOK_KEYS)}")
    env: dict[str, str] = {}
    for key in WEBHOOK_ENV_KEYS:
        if key not in table:
            continue
        value = table[key]
        if not isinstance(value, str) or not _UPPER_ENV_NAME.fullmatch(value):
            problems.append(
                f"webhooks.{key} must name an environment variable (like "
                f"NEWSLETTER_{key[:-4].upper()}); put the secret itself in that variable, "
                "never in newsletter.toml"
            )
        else:
            env[key] = value
    if ("postmark_user_env" in env) != ("postmark_password_env" in env):
        problems.append(
            "set both webhooks.postmark_user_env and webhooks.postmark_password_env"
        )
    numbers: dict[str, int] = {}
    for key, (low, default) in _WEBHOOK_INTS.items():
        value = table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            problems.append(f"webhooks.{key} must be a whole number of {low} or more")
        else:
            numbers[key] = value
    flags: dict[str, bool] = {}
    for key, default in _WEBHOOK_BOOLS.items():
        value = table.get(key, default)
        if not isinstance(value, bool):
            problems.append(f"webhooks.{key} must be true or false")
        else:
            flags[key] = value
    arns = table.get("ses_topic_arns", [])
    if not isinstance(arns, list) or not all(
        isinstance(a, str) and a.startswith("arn:") for a in arns
    ):
        problems.append('webhooks.ses_topic_arns must be a list of "arn:aws:sns:…" strings')
        arns = []
    test_host = table.get("insecure_test_only_sns_host")
    if test_host is not None and not (
        isinstance(test_host, str) and re.fullmatch(r"(127\.0\.0\.1|localhost):\d+", test_host)
    ):
        problems.append(
            'webhooks.insecure_test_only_sns_host is for tests only and must be '
            '"127.0.0.1:<port>"; remove it in production'
        )
        test_host = None
    return WebhookSettings(
        env=env,
        max_body_bytes=numbers.get("max_body_bytes", _WEBHOOK_INTS["max_body_bytes"][1]),
        tolerance_seconds=numbers.get("tolerance_seconds", _WEBHOOK_INTS["tolerance_seconds"][1]),
        ses_enabled=flags.get("ses_enabled", _WEBHOOK_BOOLS["ses_enabled"]),
        ses_confirm_subscriptions=flags.get("ses_confirm_subscriptions",
                                            _WEBHOOK_BOOLS["ses_confirm_subscriptions"]),
        ses_topic_arns=tuple(arns),
        insecure_test_only_sns_host=test_host,
    )


def _mailbox(table: dict[str, Any], problems: list[str]) -> MailboxSettings | None:
    if not table:
        return None
    problems.extend(f"unknown setting mailbox.{k}{_suggest(k, MAILBOX_KEYS)}"
                    for k in sorted(set(table) - MAILBOX_KEYS))
    count = len(problems)
    security = table.get("security", "tls")
    if security not in ("tls", "starttls", "none"):
        problems.append("mailbox.security must be tls, starttls or none")
    for key in ("host", "username"):
        if not isinstance(table.get(key), str) or not table.get(key):
            problems.append(f'mailbox.{key} is missing: write it like {key} = "…"')
    env = table.get("password_env", "NEWSLETTER_IMAP_PASSWORD")
    if not is_env_name(env):
        problems.append("mailbox.password_env must name an environment variable (like "
                        "NEWSLETTER_IMAP_PASSWORD), not hold the password")
    port = table.get("port", 993 if security == "tls" else 143)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        problems.append("mailbox.port must be a whole number from 1 to 65535")
    timeout = table.get("timeout", 30)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        problems.append("mailbox.timeout must be a number of seconds")
    for key in ("folder", "processed_folder"):
        if key in table and not isinstance(table[key], str):
            problems.append(f'mailbox.{key} must be a folder name, like {key} = "INBOX"')
    if len(problems) > count:
        return None
    return MailboxSettings(host=table["host"], port=port, security=security,
                           username=table["username"], password_env=env,
                           folder=str(table.get("folder", "INBOX")),
                           processed_folder=str(table.get("processed_folder",
                                                          "Newsletter/Processed")),
                           timeout=float(timeout))


def _int(table: dict[str, Any], key: str, default: int, where: str, problems: list[str]) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(f"{where} {key} = {value!r} must be a whole number of at least 1")
        return default
    return value


def _web(sub: dict[str, Any], server: dict[str, Any], problems: list[str],
         configured: bool) -> WebConfig:
    """[subscribe] and [server]; `configured` when either is written."""
    known_sub = {"topics", "default_topics", "consent", "confirmations_per_day",
                 "signups_per_ip_per_hour"}
    known_server = {"trusted_proxies", "max_body", "webhook_max_body", "host", "port", "workers",
                    "url"}
    for table, known, name in ((sub, known_sub, "[subscribe]"), (server, known_server, "[server]")):
        for key in sorted(set(table) - known):
            problems.append(f"{name} {key} is not a setting (known: {', '.join(sorted(known))})"
                            f"{_suggest(key, known)}")
    topics = sub.get("topics", [])
    if not isinstance(topics, list) or not all(isinstance(t, str) and t.strip() for t in topics):
        problems.append('[subscribe] topics must be a list of names, e.g. ["essays", "links"]')
        topics = []
    default_topics = sub.get("default_topics", "all")
    if default_topics not in ("all", "none"):
        problems.append(f'[subscribe] default_topics = {default_topics!r} must be "all" (the form '
                        'starts with everything ticked) or "none" (nothing ticked)')
        default_topics = "all"
    consent = sub.get("consent", "")
    if not isinstance(consent, str):
        problems.append("[subscribe] consent must be text (shown beside the form's button)")
        consent = ""
    proxies = server.get("trusted_proxies", [])
    networks = []
    if not isinstance(proxies, list):
        problems.append('[server] trusted_proxies must be a list, e.g. ["127.0.0.1"]')
        proxies = []
    for item in proxies:
        try:
            networks.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            problems.append(f"[server] trusted_proxies: {item!r} is not an IP address or network")
    url, hosting = _server_url(server.get("url"), problems)
    host = server.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host.strip():
        problems.append('[server] host must be an address to listen on, e.g. "127.0.0.1"')
        host = "127.0.0.1"
    return WebConfig(
        topics=tuple(dict.fromkeys(t.strip() for t in topics)),
        default_topics=default_topics,
        consent=consent.strip(),
        confirmations_per_day=_int(sub, "confirmations_per_day", 3, "[subscribe]", problems),
        signups_per_ip_per_hour=_int(sub, "signups_per_ip_per_hour", 20, "[subscribe]",
                                     problems),
        max_body=_int(server, "max_body", 64 * 1024, "[server]", problems),
        trusted_proxies=tuple(networks),
        webhook_max_body=_int(server, "webhook_max_body", 1024 * 1024, "[server]", problems),
        host=host.strip(),
        port=_int(server, "port", 8080, "[server]", problems),
        workers=_int(server, "workers", 1, "[server]", problems),
        configured=configured,
        url=url,
        hosting=hosting,
    )


NO_SERVER = "none"  # [server] url = "none": no `serve` anywhere (docs/deploy.md, way 3)


def hosting_warnings(settings: Settings) -> list[str]:
    """What readers lose with the hosting these settings choose (`check` and every send
    say it): with no server, no one-click unsubscribe, manage page or web sign-up."""
    if settings.web.hosting != "none":
        return []
    return [
        '[server] url = "none": with no server, readers unsubscribe by email only (no '
        "one-click List-Unsubscribe-Post header, no page to manage their subscription, no "
        "sign-up form on the archive), and bounces arrive only by `newsletter sync`; Gmail and "
        "Yahoo require one-click unsubscribe (an RFC 8058 POST endpoint) from senders of more "
        "than 5,000 messages a day: run `newsletter serve` and set [server] url to it (or "
        "remove the line to serve at base_url) before your list grows that large"
    ]


def _server_url(value: Any, problems: list[str]) -> tuple[str | None, str]:
    """[server] url: (the server's own URL or None, the hosting way it names)."""
    if value is None:
        return None, "serve"
    if value == NO_SERVER:
        return None, "none"
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        problems.append(
            f"[server] url = {value!r} must be the address `newsletter serve` answers at, e.g. "
            '"https://news-api.example.com" (the archive then lives at base_url on a static '
            'host), or "none" when no server runs (unsubscribe by mailto)')
        return None, "serve"
    return value.rstrip("/"), "static"


PUBLISH_KEYS = {"out", "lang", "description", "feed_entries"}


def _publish(table: dict[str, Any], problems: list[str]) -> PublishSettings:
    """[publish]: its problems go in as one group, "[publish]: …; …"."""
    found = [f"unknown key {key!r} (the keys are {', '.join(sorted(PUBLISH_KEYS))})"
             f"{_suggest(key, PUBLISH_KEYS)}" for key in table if key not in PUBLISH_KEYS]
    for key in ("out", "lang", "description"):
        if key in table and not isinstance(table[key], str):
            found.append(f'{key} must be a string, e.g. {key} = "…"')
    entries = table.get("feed_entries", 20)
    if not isinstance(entries, int) or isinstance(entries, bool) or entries < 1:
        found.append("feed_entries must be a whole number of 1 or more, e.g. feed_entries = 20")
    lang = table.get("lang", "en")
    if isinstance(lang, str) and not re.fullmatch(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*", lang):
        found.append(f'lang {lang!r} is not a language tag: write e.g. lang = "en" or "pt-BR"')
    if found:
        problems.append("[publish]: " + "; ".join(found))
        return PublishSettings()
    return PublishSettings(out=Path(str(table.get("out", "site"))).expanduser(), lang=str(lang),
                           description=str(table.get("description", "")),
                           feed_entries=int(entries))


def _schedule(table: dict[str, Any], problems: list[str]) -> ScheduleSettings:
    problems.extend(f"unknown setting schedule.{k}{_suggest(k, ['if_edited'])}"
                    for k in sorted(set(table) - {"if_edited"}))
    value = table.get("if_edited", "send")
    if value not in ("send", "hold"):
        problems.append('schedule.if_edited must be "send" (the draft as it is then) or '
                        '"hold" (wait for you)')
        return ScheduleSettings()
    return ScheduleSettings(if_edited=value)


def _analytics(table: dict[str, Any], problems: list[str]) -> AnalyticsSettings:
    problems.extend(f"unknown setting analytics.{k} (known: {', '.join(ANALYTICS_KEYS)})"
                    f"{_suggest(k, ANALYTICS_KEYS)}"
                    for k in sorted(set(table) - set(ANALYTICS_KEYS)))
    found: dict[str, Any] = {}
    for key in ("clicks", "opens", "per_reader"):
        value = table.get(key, False)
        if not isinstance(value, bool):
            problems.append(f"analytics.{key} must be true or false")
            value = False
        found[key] = value
    days = table.get("keep_days", 90)
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        problems.append("analytics.keep_days must be a whole number of days, 1 or more")
        days = 90
    return AnalyticsSettings(keep_days=days, **found)
