"""One puller per provider API that can list what it knows about the readers.

- Postmark: the bounces of the message stream (GET /bounces, paged by offset, from a date)
  and the stream's suppressions (GET /message-streams/{stream}/suppressions/dump).
- SendGrid: bounces, blocks, spam reports, global unsubscribes and invalid emails
  (GET /v3/suppression/…, paged by offset, from a Unix time).
- Mailgun: bounces, complaints and unsubscribes of the domain (GET /v3/{domain}/…, paged
  by the `paging.next` URL).
- Amazon SES: the account-level suppression list (GET /v2/email/suppression/addresses,
  paged by NextToken, from a date), signed with SigV4.
- Resend has no API that lists bounces or complaints: its events come only through
  webhooks (`newsletter serve`), and `sync` says so.

Each puller names its API's public address and key variable (the same defaults as the
sending adapter's), and reads the rest of `[provider]` (domain, region, message_stream)
from the settings.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import httpx
import sqlite_utils

from newsletter import aws
from newsletter.audience.policy import Feedback
from newsletter.errors import ConfigError
from newsletter.feedback.pull.base import Puller, iso, read_cursor, since
from newsletter.settings import Settings

Item = tuple[str, Feedback | None, str]

_POSTMARK_KINDS = {
    "HardBounce": "hard_bounce", "BadEmailAddress": "hard_bounce",
    "SoftBounce": "soft_bounce", "Transient": "soft_bounce", "DnsError": "soft_bounce",
    "SpamComplaint": "complaint", "SpamNotification": "complaint",
    "Unsubscribe": "unsubscribe", "ManuallyDeactivated": "unsubscribe",
}
_POSTMARK_ZONE = ZoneInfo("America/New_York")
_POSTMARK_SUPPRESSIONS = {"HardBounce": "hard_bounce", "SpamComplaint": "complaint",
                          "ManualSuppression": "unsubscribe"}


def _parse(value: Any) -> datetime:
    text = str(value)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        moment = parsedate_to_datetime(text)  # Mailgun: "Fri, 21 Oct 2011 11:02:55 UTC"
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class PostmarkPuller(Puller):
    name = "postmark"
    title = "Postmark"
    default_endpoint = "https://api.postmarkapp.com"
    default_key_env = "POSTMARK_SERVER_TOKEN"
    PAGE = 500

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"X-Postmark-Server-Token": key}

    def pull(self, db: sqlite_utils.Database) -> Iterator[Item]:
        stream = str(self.options.get("message_stream", "broadcast"))
        cursor = read_cursor(db, "postmark:bounces")
        params: dict[str, Any] = {"count": self.PAGE, "messagestream": stream}
        start = since(cursor)
        if start is not None:
            # Postmark reads fromdate as its own (US Eastern) wall time; given as UTC it
            # started 4–5 hours late and bounces in between were never read.
            params["fromdate"] = start.astimezone(_POSTMARK_ZONE).strftime("%Y-%m-%dT%H:%M:%S")
        offset = 0
        while True:
            page = self.get("/bounces", {**params, "offset": offset}) or {}
            bounces = page.get("Bounces") or []
            for bounce in bounces:
                kind = _POSTMARK_KINDS.get(str(bounce.get("Type")))
                when = iso(_parse(bounce["BouncedAt"]))
                feedback = None
                if kind and bounce.get("Email"):
                    feedback = Feedback(kind, str(bounce["Email"]), "sync:postmark",
                                        f"postmark:bounce:{bounce.get('ID')}",
                                        str(bounce.get("Description") or bounce.get("Type")),
                                        when, message_id=str(bounce.get("MessageID") or "") or None)
                yield cursor.name, feedback, when
            offset += len(bounces)
            # Postmark answers at most 10,000 per query (offset + count): a first sync of a
            # longer history reads the newest 10,000; its suppression dump below has the rest.
            total = int(page.get("TotalCount", 0))
            if not bounces or offset >= total or offset + self.PAGE > 10_000:
                break
        dump = self.get(f"/message-streams/{stream}/suppressions/dump") or {}
        for item in dump.get("Suppressions") or []:
            kind = _POSTMARK_SUPPRESSIONS.get(str(item.get("SuppressionReason")))
            when = iso(_parse(item.get("CreatedAt")))
            email = str(item.get("EmailAddress") or "")
            feedback = None
            if kind and email:
                feedback = Feedback(kind, email, "sync:postmark",
                                    f"postmark:suppression:{email.lower()}:{when}",
                                    f"suppressed: {item.get('SuppressionReason')}", when)
            yield "postmark:suppressions", feedback, when


class SendGridPuller(Puller):
    name = "sendgrid"
    title = "SendGrid"
    default_endpoint = "https://api.sendgrid.com"
    default_key_env = "SENDGRID_API_KEY"
    PAGE = 500
    LISTS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("bounces", "hard_bounce"), ("blocks", "soft_bounce"), ("spam_reports", "complaint"),
        ("unsubscribes", "unsubscribe"), ("invalid_emails", "hard_bounce"),
    )

    def pull(self, db: sqlite_utils.Database) -> Iterator[Item]:
        for name, kind in self.LISTS:
            cursor = read_cursor(db, f"sendgrid:{name}")
            params: dict[str, Any] = {"limit": self.PAGE}
            start = since(cursor)
            if start is not None:
                params["start_time"] = int(start.timestamp())
            offset = 0
            while True:
                items = self.get(f"/v3/suppression/{name}", {**params, "offset": offset}) or []
                for item in items:
                    when = iso(datetime.fromtimestamp(int(item.get("created", 0)), UTC))
                    this = kind
                    # A bounce with a 4.x.x status is temporary.
                    if name == "bounces" and str(item.get("status", "")).startswith("4"):
                        this = "soft_bounce"
                    email = str(item.get("email") or "")
                    feedback = Feedback(this, email, "sync:sendgrid",
                                        f"sendgrid:{name}:{email.lower()}:{item.get('created')}",
                                        str(item.get("reason") or name), when) if email else None
                    yield cursor.name, feedback, when
                if len(items) < self.PAGE:
                    break
                offset += len(items)


class MailgunPuller(Puller):
    name = "mailgun"
    title = "Mailgun"
    default_key_env = "MAILGUN_API_KEY"
    ENDPOINTS: ClassVar[dict[str, str]] = {"us": "https://api.mailgun.net",
                                           "eu": "https://api.eu.mailgun.net"}
    LISTS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("bounces", "hard_bounce"), ("complaints", "complaint"), ("unsubscribes", "unsubscribe"),
    )

    @property
    def endpoint(self) -> str:
        explicit = self.options.get("endpoint")
        if explicit:
            return str(explicit).rstrip("/")
        region = str(self.options.get("region", "us")).lower()
        if region not in self.ENDPOINTS:
            raise ConfigError(
                f'provider.region = "{region}" is not a Mailgun region: use "us" or "eu"'
            )
        return self.ENDPOINTS[region]

    @property
    def domain(self) -> str:
        value = self.options.get("domain")
        if not value:
            raise ConfigError(
                "Mailgun needs your sending domain: set [provider] domain = \"mg.example.com\" "
                "in newsletter.toml"
            )
        return str(value)

    def read_key(self) -> str:
        key = super().read_key()
        self.redactor.add_login("api", key)  # it travels as Basic api:KEY
        return key

    def auth_headers(self, key: str) -> dict[str, str]:
        token = base64.b64encode(f"api:{key}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def pull(self, db: sqlite_utils.Database) -> Iterator[Item]:
        domain = self.domain
        for name, kind in self.LISTS:
            cursor = read_cursor(db, f"mailgun:{name}")
            start = since(cursor)
            url: str | None = f"/v3/{domain}/{name}"
            params: dict[str, Any] | None = {"limit": 1000}
            seen_pages: set[str] = set()
            while url:
                page = self.get(url, params) or {}
                items = page.get("items") or []
                for item in items:
                    moment = _parse(item.get("created_at"))
                    if start is not None and moment < start:
                        continue
                    when = iso(moment)
                    email = str(item.get("address") or "")
                    code = str(item.get("code") or "")
                    this = "soft_bounce" if kind == "hard_bounce" and code.startswith("4") else kind
                    detail = " ".join(x for x in (code, str(item.get("error") or "")) if x)
                    feedback = Feedback(this, email, "sync:mailgun",
                                        f"mailgun:{name}:{email.lower()}:{when}",
                                        detail or name, when) if email else None
                    yield cursor.name, feedback, when
                next_url = (page.get("paging") or {}).get("next")
                if not items or not next_url or next_url in seen_pages:
                    break
                seen_pages.add(next_url)
                # paging.next is absolute: keep only path and query, on our endpoint.
                parsed = httpx.URL(next_url)
                url, params = parsed.raw_path.decode(), None


class SESPuller(Puller):
    name = "ses"
    title = "Amazon SES"
    PAGE = 100

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self._credentials: aws.AWSCredentials | None = None  # read by open()

    @property
    def region(self) -> str:
        return aws.read_region(self.options)

    @property
    def endpoint(self) -> str:
        return aws.ses_endpoint(self.options, self.region)

    @property
    def key_env(self) -> str:
        return str(self.options.get("access_key_env") or "AWS_ACCESS_KEY_ID")

    def read_key(self) -> str:
        self._credentials = aws.read_credentials(self.options)
        self.region  # noqa: B018 -- check the setting before anything goes out
        self.redactor.add(self._credentials.secret_key, self._credentials.session_token)
        return self._credentials.access_key

    def auth_headers(self, key: str) -> dict[str, str]:
        return {}  # every request is signed on its own

    def signer(self) -> Callable[[httpx.Request], None]:
        assert self._credentials is not None, "read_key() first"
        return aws.SigV4Signer(self._credentials, self.region).sign

    def pull(self, db: sqlite_utils.Database) -> Iterator[Item]:
        cursor = read_cursor(db, "ses:suppressions")
        params: dict[str, Any] = {"PageSize": self.PAGE}
        start = since(cursor)
        if start is not None:
            params["StartDate"] = iso(start)
        token: str | None = None
        while True:
            page = self.get("/v2/email/suppression/addresses",
                            {**params, **({"NextToken": token} if token else {})}) or {}
            for item in page.get("SuppressedDestinationSummaries") or []:
                when = iso(_parse(item.get("LastUpdateTime")))
                reason = str(item.get("Reason") or "")
                kind = {"BOUNCE": "hard_bounce", "COMPLAINT": "complaint"}.get(reason)
                email = str(item.get("EmailAddress") or "")
                feedback = Feedback(kind, email, "sync:ses", f"ses:{email.lower()}:{when}",
                                    f"account suppression list: {reason}", when) \
                    if kind and email else None
                yield cursor.name, feedback, when
            token = page.get("NextToken")
            if not token:
                break


PULLERS: dict[str, type[Puller]] = {
    p.name: p for p in (PostmarkPuller, SendGridPuller, MailgunPuller, SESPuller)
}
# Providers that cannot be pulled from, and why (said by `sync`, and in the docs).
NOT_PULLABLE = {
    "resend": "Resend has no API that lists bounces or complaints: set up its webhook "
              "(newsletter serve, POST /webhooks/resend) instead",
    "smtp": "an SMTP server reports bounces by mail: set up [mailbox] so sync reads them",
    "outbox": "the outbox sends nothing, so nothing bounces",
}
