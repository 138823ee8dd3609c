"""The mailbox: mailto unsubscribes and bounce reports, read over IMAP.

Settings (newsletter.toml, checked by newsletter.settings when they load):

    [mailbox]
    host = "imap.example.com"
    port = 993                        # default: 993 with tls, 143 otherwise
    security = "tls"                  # tls | starttls | none
    username = "bounces@example.com"
    password_env = "NEWSLETTER_IMAP_PASSWORD"
    folder = "INBOX"
    processed_folder = "Newsletter/Processed"   # handled messages are moved here, never deleted

What it recognises, in this order:
- a mail to the List-Unsubscribe mailto address: the reader's token in the subject
  ("unsubscribe <token>", as our List-Unsubscribe header writes it) or in a +tag of the
  address names the reader; with no token, the sender's address is used if it is on the list;
- a bounce report: delivery status notifications (RFC 3464) and the common non-standard
  formats, read by flufl.bounce; permanent failures are hard bounces, temporary ones soft.

A message it cannot read or does not recognise is left where it is, unread-state
untouched (messages are fetched with BODY.PEEK), and listed in the report.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import re
import ssl
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Any

import sqlite_utils
from flufl.bounce import all_failures

from newsletter.audience.policy import Feedback
from newsletter.compose import tokens
from newsletter.errors import ProviderError
from newsletter.settings import MailboxSettings, Settings

_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,}")
# Bounce reports quote the message they return: a few MB at most. Larger mail is left.
MAX_MESSAGE = 5 * 1024 * 1024


@dataclass
class Found:
    """What one message in the mailbox turned out to be."""

    uid: bytes
    feedback: list[Feedback] = field(default_factory=list)
    problem: str | None = None  # why it was left alone


def _subject_token(msg: Message) -> str | None:
    subject = str(msg.get("Subject", ""))
    for candidate in _TOKEN.findall(subject):
        return candidate
    for _, address in getaddresses(msg.get_all("To", []) + msg.get_all("Delivered-To", [])):
        local = address.split("@", 1)[0]
        if "+" in local:
            tag = local.split("+", 1)[1]
            if _TOKEN.fullmatch(tag):
                return tag
    return None


def _is_to(msg: Message, mailto: str | None) -> bool:
    if not mailto:
        return False
    target = mailto.removeprefix("mailto:").split("?", 1)[0].lower()
    local, _, domain = target.partition("@")
    for _, address in getaddresses(msg.get_all("To", []) + msg.get_all("Delivered-To", [])):
        a_local, _, a_domain = address.lower().partition("@")
        if a_domain == domain and a_local.split("+", 1)[0] == local:
            return True
    return False


def classify(msg: Message, uid: bytes, settings: Settings, db: sqlite_utils.Database) -> Found:
    """Turn one message into feedback (or say why it is left alone)."""
    found = Found(uid)
    message_id = str(msg.get("Message-ID", "")).strip() or f"uid-{uid.decode()}"
    if _is_to(msg, settings.unsubscribe_mailto):
        token = _subject_token(msg)
        email_addr = None
        how = "mailto unsubscribe"
        if token is not None:
            key = tokens.verify_unsubscribe_token(settings.secret_key(), token,
                                                      settings.base_url)
            if key is not None:
                row = db.execute("SELECT email FROM subscribers WHERE email_key = ?",
                                 [key]).fetchone()
                email_addr = row[0] if row else None
        if email_addr is None:
            sender = parseaddr(str(msg.get("From", "")))[1]
            row = db.execute("SELECT email FROM subscribers WHERE email_key = ?",
                             [sender.lower()]).fetchone() if sender else None
            if row is not None:
                email_addr, how = row[0], "mailto unsubscribe (by the sender's address)"
        if email_addr is None:
            found.problem = "an unsubscribe request naming nobody on the list"
            return found
        found.feedback.append(Feedback("unsubscribe", email_addr, "mailbox",
                                       f"mailbox:{message_id}", how))
        return found
    try:
        temporary, permanent = all_failures(msg)
    except Exception as exc:  # flufl.bounce's detectors raise on odd mail  # noqa: BLE001
        found.problem = f"the bounce parser failed on it ({type(exc).__name__})"
        return found
    for kind, addresses in (("hard_bounce", permanent), ("soft_bounce", temporary - permanent)):
        for raw in sorted(addresses):
            address = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            found.feedback.append(Feedback(
                kind, address, "mailbox", f"mailbox:{message_id}:{address.lower()}",
                f"bounce report: {str(msg.get('Subject', ''))[:200]}",
            ))
    if not found.feedback:
        found.problem = "neither a bounce report nor an unsubscribe request"
    return found


class Mailbox:
    """One IMAP session: list, fetch without marking read, move handled messages."""

    def __init__(self, config: MailboxSettings):
        self.config = config
        self.imap: imaplib.IMAP4 | None = None

    def __enter__(self) -> Mailbox:
        c = self.config
        where = f"the mailbox {c.host}:{c.port}"
        password = c.password()
        try:
            if c.security == "tls":
                self.imap = imaplib.IMAP4_SSL(c.host, c.port, timeout=c.timeout,
                                              ssl_context=ssl.create_default_context())
            else:
                self.imap = imaplib.IMAP4(c.host, c.port, timeout=c.timeout)
                if c.security == "starttls":
                    self.imap.starttls(ssl.create_default_context())
            self.imap.login(c.username, password)
        except imaplib.IMAP4.error as exc:
            self.close()
            text = str(exc).replace(password, "[redacted]")
            raise ProviderError(f"{where} refused the login ({text}): check mailbox.username "
                                f"and {c.password_env}") from None
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            self.close()
            raise ProviderError(f"{where} cannot be reached ({exc}): check mailbox.host, "
                                "port and security") from None
        status, _ = self.imap.select(self._quote(c.folder))
        if status != "OK":
            self.close()
            raise ProviderError(f"{where} has no folder {c.folder!r}: check mailbox.folder")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.imap is not None:
            try:
                self.imap.logout()
            except (imaplib.IMAP4.error, OSError):
                pass
            self.imap = None

    @staticmethod
    def _quote(name: str) -> str:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def _server_name(self, name: str) -> str:
        """`name` with "/" as this server's hierarchy delimiter (Dovecot's Maildir uses ".")."""
        assert self.imap is not None
        status, data = self.imap.list('""', '""')
        first = data[0] if status == "OK" and data else None
        match = re.search(rb'\) "(.)"', first) if isinstance(first, bytes) else None
        delimiter = match.group(1).decode() if match else "/"
        return name.replace("/", delimiter)

    def messages(self) -> list[tuple[bytes, Message | None, str | None]]:
        """Every message in the folder, by UID: (uid, message, None) or (uid, None, why)."""
        assert self.imap is not None
        status, data = self.imap.uid("SEARCH", "ALL")
        uids = data[0].split() if status == "OK" and data and data[0] else []
        out: list[tuple[bytes, Message | None, str | None]] = []
        for uid in uids:
            # A big message left in the folder (a reply with attachments) would be fetched
            # and parsed again on every run: ~14 s for 20 MB. Asked its size first.
            status, parts = self.imap.uid("FETCH", uid, "(RFC822.SIZE)")
            head = b" ".join(p if isinstance(p, bytes) else p[0] for p in parts or [] if p)
            size = re.search(rb"RFC822\.SIZE (\d+)", head) if status == "OK" else None
            if size is not None and int(size.group(1)) > MAX_MESSAGE:
                out.append((uid, None, f"too big to be a bounce report "
                                       f"({int(size.group(1)) / 1024 / 1024:.0f} MB)"))
                continue
            status, parts = self.imap.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((p[1] for p in parts or [] if isinstance(p, tuple)), None)
            if status != "OK" or raw is None:
                out.append((uid, None, "it could not be fetched"))
                continue
            out.append((uid, email.message_from_bytes(raw, policy=email.policy.compat32), None))
        return out

    def move(self, uids: list[bytes]) -> None:
        """Move handled messages to the processed folder (made if missing), never delete."""
        if not uids:
            return
        assert self.imap is not None
        target = self._quote(self._server_name(self.config.processed_folder))
        self.imap.create(target)  # "already exists" is fine
        uid_set = b",".join(uids).decode()
        capabilities: Any = self.imap.capabilities
        if "MOVE" in capabilities:
            status, data = self.imap.uid("MOVE", uid_set, target)
        else:
            status, data = self.imap.uid("COPY", uid_set, target)
            if status == "OK":
                self.imap.uid("STORE", uid_set, "+FLAGS.SILENT", r"(\Deleted)")
                self.imap.expunge()
        if status != "OK":
            raise ProviderError(f"the mailbox could not move handled messages to "
                                f"{self.config.processed_folder!r} ({data!r}): check that the "
                                "account may create that folder")


def read(settings: Settings, db: sqlite_utils.Database, config: MailboxSettings,
         handle: Any) -> list[Found]:
    """Classify every message; `handle(found_list)` applies them; then the handled move.

    `handle` returns True when the messages should be moved (False in a dry run).
    """
    with Mailbox(config) as box:
        found = []
        for uid, msg, why in box.messages():
            if msg is None:
                found.append(Found(uid, problem=why))
            else:
                found.append(classify(msg, uid, settings, db))
        if handle(found):
            handled = [f for f in found if f.feedback]
            try:
                box.move([f.uid for f in handled])
            except ProviderError as exc:
                # What was read is applied already (and each message's id makes a re-read
                # harmless): say the messages stayed, rather than hide what changed.
                for item in handled:
                    item.problem = f"applied, but not moved: {exc}"
    return found
