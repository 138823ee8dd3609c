"""Local stand-ins for the providers' suppression/bounce list APIs, as each documents them.

Each checks auth the provider's way, pages the provider's way (offset, `paging.next`,
NextToken), honours the date filter the pull sends, and can be scripted to answer 429
with Retry-After first (`fail_next`, from the sending fakes' base class).
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from werkzeug.wrappers import Request, Response

from tests.providers_http.fakes import FakeAPI, FakeSES, json_response


def _when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class PostmarkLists(FakeAPI):
    """GET /bounces (count ≤ 500, offset, fromdate, messagestream) and the suppression dump."""

    name = "postmark"

    def __init__(self) -> None:
        super().__init__()
        self.bounces: list[dict[str, Any]] = []
        self.suppressions: list[dict[str, Any]] = []

    def handle(self, request: Request, body: bytes) -> Response:
        if request.headers.get("X-Postmark-Server-Token") != self.key:
            return json_response({"ErrorCode": 10, "Message": "No Account or Server API tokens "
                                  "were supplied in the HTTP headers."}, 401)
        if request.path == "/bounces":
            args = request.args
            count, offset = int(args["count"]), int(args.get("offset", 0))
            if count > 500 or offset + count > 10_000:
                return json_response({"ErrorCode": 600, "Message": "count/offset too large"}, 422)
            items = [b for b in self.bounces if b["MessageStream"] == args.get("messagestream")]
            if "fromdate" in args:  # Postmark reads it in its own time zone, US Eastern
                start = dt.datetime.fromisoformat(args["fromdate"]).replace(
                    tzinfo=ZoneInfo("America/New_York"))
                items = [b for b in items if _when(b["BouncedAt"]) >= start]
            items.sort(key=lambda b: b["BouncedAt"], reverse=True)  # newest first
            return json_response({"TotalCount": len(items),
                                  "Bounces": items[offset:offset + count]})
        if request.path == "/message-streams/broadcast/suppressions/dump":
            return json_response({"Suppressions": self.suppressions})
        return json_response({"ErrorCode": 404, "Message": "not found"}, 404)


class SendGridLists(FakeAPI):
    """GET /v3/suppression/{bounces|blocks|spam_reports|unsubscribes|invalid_emails}."""

    name = "sendgrid"

    def __init__(self) -> None:
        super().__init__()
        self.lists: dict[str, list[dict[str, Any]]] = {
            n: [] for n in ("bounces", "blocks", "spam_reports", "unsubscribes", "invalid_emails")}

    def handle(self, request: Request, body: bytes) -> Response:
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return json_response({"errors": [{"message": "authorization required"}]}, 401)
        name = request.path.removeprefix("/v3/suppression/")
        if name not in self.lists:
            return json_response({"errors": [{"message": "not found"}]}, 404)
        limit, offset = int(request.args.get("limit", 500)), int(request.args.get("offset", 0))
        if limit > 500:
            return json_response({"errors": [{"message": "limit too large"}]}, 400)
        items = self.lists[name]
        if "start_time" in request.args:
            items = [i for i in items if i["created"] >= int(request.args["start_time"])]
        return json_response(items[offset:offset + limit])


class MailgunLists(FakeAPI):
    """GET /v3/{domain}/{bounces|complaints|unsubscribes}, paged by absolute paging.next."""

    name = "mailgun"
    domain = "mg.example.com"

    def __init__(self) -> None:
        super().__init__()
        self.lists: dict[str, list[dict[str, Any]]] = {
            n: [] for n in ("bounces", "complaints", "unsubscribes")}

    def handle(self, request: Request, body: bytes) -> Response:
        auth = request.authorization
        if auth is None or auth.username != "api" or auth.password != self.key:
            return Response("Forbidden", 401)
        prefix = f"/v3/{self.domain}/"
        name = request.path.removeprefix(prefix)
        if not request.path.startswith(prefix) or name not in self.lists:
            return json_response({"message": "not found"}, 404)
        limit = int(request.args.get("limit", 100))
        start = int(request.args.get("page_start", 0))
        items = self.lists[name][start:start + limit]
        base = f"{self.url}{prefix}{name}"
        nxt = f"{base}?{urlencode({'page': 'next', 'limit': limit, 'page_start': start + limit})}"
        return json_response({"items": items, "paging": {
            "first": f"{base}?limit={limit}", "next": nxt, "previous": base, "last": base}})


class _AsAWSReadsIt:
    """The request with its query as AWS canonicalises it before checking the signature:
    each name and value decoded, then percent-encoded but for A-Z a-z 0-9 - _ . ~
    (werkzeug's `request.url` leaves a `%2F` as a bare `/`, which AWS does not)."""

    def __init__(self, request: Request):
        self.method, self.headers = request.method, request.headers
        query = urlencode(list(request.args.items(multi=True)), quote_via=quote, safe="-_.~")
        self.url = request.base_url + (f"?{query}" if query else "")


class SESLists(FakeSES):
    """GET /v2/email/suppression/addresses (StartDate, PageSize ≤ 1000, NextToken), SigV4.

    NextToken is opaque base64 as AWS's is, with `/`, `+` and `=` in it: each must be
    signed in AWS's canonical encoding.
    """

    TOKEN_PREFIX = "pg/+"

    def __init__(self, token: str | None = None) -> None:
        super().__init__(token=token)
        self.suppressed: list[dict[str, Any]] = []

    def handle(self, request: Request, body: bytes) -> Response:
        problem = self.signature_problem(_AsAWSReadsIt(request), body)  # type: ignore[arg-type]
        if problem:
            return json_response({"message": problem}, 403)
        if request.path != "/v2/email/suppression/addresses":
            return json_response({"message": "not found"}, 404)
        size = int(request.args.get("PageSize", 100))
        items = self.suppressed
        if "StartDate" in request.args:
            start = _when(request.args["StartDate"])
            items = [i for i in items if _when(i["LastUpdateTime"]) >= start]
        next_token = request.args.get("NextToken", "")
        first = int(base64.b64decode(next_token.removeprefix(self.TOKEN_PREFIX))) \
            if next_token else 0
        page = items[first:first + size]
        answer: dict[str, Any] = {"SuppressedDestinationSummaries": page}
        if first + size < len(items):
            answer["NextToken"] = self.TOKEN_PREFIX + base64.b64encode(
                str(first + size).encode()).decode()
        return json_response(answer)
