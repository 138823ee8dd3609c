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
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import httpx
import sqlite_utils

from newsletter.audience.policy import Feedback
from newsletter.feedback.pull.base import Puller, iso, read_cursor, since

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
    PAGE = 500

    def pull(self, db: sqlite_utils.Database) -> Iterator[Item]:
        stream = str(self.provider.provider_settings.get("message_stream", "broadcast"))
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
    LISTS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("bounces", "hard_bounce"), ("complaints", "complaint"), ("unsubscribes", "unsubscribe"),
    )

    def pull(self, db: sqlite_utils.Database) -> Iterator[Item]:
        domain = self.provider.domain  # type: ignore[attr-defined]
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

    def sign(self, request: httpx.Request) -> None:
        from newsletter.delivery.providers.ses import sigv4_headers

        provider: Any = self.provider
        # sigv4_headers encodes the query itself: hand it the decoded form, not httpx's.
        url = request.url
        plain = f"{url.scheme}://{url.netloc.decode()}{url.path}"
        if url.query:
            plain += "?" + unquote(url.query.decode())
        request.headers.update(sigv4_headers(
            request.method, plain, {"host": url.netloc.decode()}, b"",
            access_key=provider._access_key, secret_key=provider._secret_key,
            region=provider.region, session_token=provider._session_token,
        ))

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
