"""newsletter.toml + environment → Settings.

A newsletter is a folder holding `newsletter.toml`. Commands find it in the
current directory or its parents (like git); `--dir PATH` or `NEWSLETTER_DIR`
override that. Every problem in the file is reported at once, in one line.
Secrets never live in the file: settings name the environment variable that
holds them (`password_env`, `api_key_env`), and the value is read only when a
provider opens.
"""

from __future__ import annotations

import hmac
import math
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from newsletter.errors import ConfigError

CONFIG_NAME = "newsletter.toml"
SECRET_FILE = ".newsletter-secret"
SECRET_ENV = "NEWSLETTER_SECRET"


@dataclass(frozen=True)
class ProviderSettings:
    """The `[provider]` table. `options` keeps every key for the adapter to read."""

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
    # The other tables ([server], [bounces], [mailbox], …) as read; each room checks its own.
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    def table(self, name: str) -> dict[str, Any]:
        """One of the EXTRA_TABLES as written in newsletter.toml ({} when absent)."""
        return self.tables.get(name, {})

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
    def sender_address(self) -> str:
        """The bare address of the From header ('' when not configured)."""
        return parseaddr(self.sender)[1]

    def secret_key(self) -> bytes:
        """The HMAC key for unsubscribe tokens: NEWSLETTER_SECRET, else the secret file.

        The file is created (git-ignored, mode 600) on first use, so a fresh
        newsletter works with nothing set up.
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
            write_secret_file(path)
            _git_ignore(self.root, SECRET_FILE)
        text = path.read_text().strip()
        if len(text) < 32:
            raise ConfigError(
                f"{path} holds a secret shorter than 32 characters: delete it to make a new one "
                f"(old unsubscribe links stop working) or set {SECRET_ENV}"
            )
        return text.encode()


_BREAK_OR_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# Connections (or API clients) in parallel: each holds a socket and files; past this, the
# process runs out of file descriptors long before any server would take that many.
MAX_CONCURRENCY = 100

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


# Tables beside [newsletter] and [provider]; each is read and checked by the room that uses
# it (web/ for [server] and [subscribe], feedback/ for [bounces], [webhooks] and [mailbox],
# writer/publish.py for [publish], delivery/schedule.py for [schedule]).
EXTRA_TABLES = ("server", "subscribe", "bounces", "webhooks", "mailbox", "publish", "schedule")


def settings_from_dict(root: Path, data: dict[str, Any], path: Path | None = None) -> Settings:
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
    news = data.get("newsletter", {})
    if not isinstance(news, dict):
        problems.append("[newsletter] must be a table")
        news = {}
    for key in news:
        if key not in _NEWSLETTER_KEYS:
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

    prov = data.get("provider", {})
    if not isinstance(prov, dict):
        problems.append("[provider] must be a table")
        prov = {}
    for key in prov:
        # A secret pasted into the file is refused: the file gets committed.
        if key in {"password", "api_key", "token", "secret", "secret_key"}:
            problems.append(
                f"provider.{key} must not hold a secret: put it in an environment variable and "
                f"name that variable with provider.{key}_env"
            )
        elif _names_a_secret(key):
            # server_token, apikey, smtp_password, aws_secret_access_key, …: no adapter
            # reads them, so the key would sit in the committed file, silently unused.
            problems.append(
                f"provider.{key} must not hold a secret: put it in an environment variable and "
                "name that variable with provider.api_key_env (provider.password_env for SMTP)"
            )
    for key, value in prov.items():
        # password_env, api_key_env, …: the name of a variable, never the secret pasted in.
        if key.endswith("_env") and not is_env_name(value):
            problems.append(
                f"provider.{key} must be the name of an environment variable (like "
                f"NEWSLETTER_SMTP_PASSWORD), not the secret itself: export the secret in a "
                f"variable and put that variable's name here"
            )
        elif isinstance(value, str) and "://" in value and _url_password(value):
            # An endpoint or proxy like https://user:pass@host: errors would print it.
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
    port = prov.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool)
                             or not 1 <= port <= 65535):
        problems.append(f"provider.port = {port!r} must be a whole number from 1 to 65535 "
                        "(587 for SMTP with STARTTLS, 465 for TLS)")
    endpoint = prov.get("endpoint")
    if isinstance(endpoint, str) and "://" in endpoint:
        try:
            endpoint_port = urlsplit(endpoint).port
        except ValueError:
            endpoint_port = 0
        if endpoint_port == 0:
            problems.append(f'provider.endpoint = "{endpoint}" has a port outside 1–65535: '
                            "fix the number after the colon, or leave it out")

    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))

    options = {k: v for k, v in prov.items() if k not in {"name", "rate", "concurrency"}}
    provider = ProviderSettings(
        name=str(prov.get("name", "outbox")),
        rate=float(rate) if rate else None,
        concurrency=concurrency,
        options=options,
    )
    tables = {}
    for name in EXTRA_TABLES:
        if name in data:
            if not isinstance(data[name], dict):
                problems.append(f"[{name}] must be a table")
            else:
                tables[name] = data[name]
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    database = Path(news.get("database", "newsletter.db"))
    return Settings(
        root=root,
        name=str(news.get("name", "My Newsletter")),
        sender=sender,
        reply_to=news.get("reply_to") or None,
        base_url=base_url,
        address=str(news.get("address", "")),
        layout=str(news.get("layout", "default")),
        list_id=news.get("list_id") or None,
        unsubscribe_mailto=mailto,
        database=database if database.is_absolute() else root / database,
        provider=provider,
        tables=tables,
    )
