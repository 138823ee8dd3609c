"""Local stand-ins for the email APIs: real HTTP servers on 127.0.0.1 that behave as documented.

Each fake checks auth the provider's way, enforces batch and size limits,
answers per-message failures in the provider's form, and records what every
reader would receive (`delivered`: the message after the provider expanded
substitutions / recipient variables). Faults are scripted with `fail_next()`
(429 with a retry time, 503 "down for a moment") and `delay` (a slow server).

Where the provider publishes an OpenAPI description (Resend, SendGrid), every
request is validated against it; violations are collected in `violations`
and the fixtures fail the test when any were seen.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import email.utils
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from werkzeug.datastructures import Headers
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

SPECS = Path(__file__).resolve().parent.parent / "data" / "provider-specs"


@dataclass
class Delivered:
    """One message as its reader would get it."""

    to: list[str]  # the To the reader sees
    sender: str
    subject: str
    html: str
    text: str
    headers: dict[str, str]
    provider_id: str
    reply_to: str | None = None
    inline: list[str] = field(default_factory=list)  # content ids of inline images


@dataclass
class Fault:
    status: int
    body: Any
    headers: dict[str, str]


class FakeAPI:
    """A threaded HTTP server playing one provider; subclasses implement `handle`."""

    name = "fake"

    def __init__(self, key: str = "test-key-0123456789"):
        self.key = key
        self.requests: list[Request] = []
        self.bodies: list[bytes] = []
        self.delivered: list[Delivered] = []
        self.violations: list[str] = []
        self.rejected: dict[str, str] = {}  # address → why the provider refuses it
        self.busy: set[str] = set()  # addresses whose next request gets a 503
        self.faults: list[Fault] = []
        self.aftermath: list[str] = []  # what happens after the next requests were accepted
        self.late_by = 0.0  # seconds a "late" answer waits
        self.delay = 0.0
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- scripting -------------------------------------------------------

    def fail_next(self, status: int, body: Any = None, headers: dict[str, str] | None = None,
                  times: int = 1) -> None:
        """The next `times` requests get this answer instead of being handled."""
        for _ in range(times):
            self.faults.append(Fault(status, body, headers or {}))

    def after_accept(self, kind: str, times: int = 1, late_by: float = 0.0) -> None:
        """The next `times` accepted requests are delivered, then their answer goes wrong.

        "late": the answer comes `late_by` seconds later (past the client's timeout);
        "reset": the connection is closed without an answer;
        "garbled": 200 with a proxy's HTML page instead of the API's JSON.
        """
        assert kind in ("late", "reset", "garbled"), kind
        self.late_by = late_by
        self.aftermath.extend([kind] * times)

    def busy_once(self, address: str) -> None:
        """The next request carrying `address` is answered 503, as by a server in trouble."""
        self.busy.add(address.lower())

    def reject(self, address: str, reason: str = "refused") -> None:
        """Refuse messages to `address` the way this provider refuses a recipient."""
        self.rejected[address.lower()] = reason

    # -- serving ---------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data(cache=True)
        with self._lock:
            self.requests.append(request)
            self.bodies.append(body)
            fault = self.faults.pop(0) if self.faults else None
            # As JSON, or url-encoded in a form (Mailgun).
            busy = {a for a in self.busy
                    if a.encode() in body or quote(a).encode() in body}
            self.busy -= busy
            if busy and fault is None:
                fault = Fault(503, {"message": "busy, try later"}, {})
        if self.delay:
            time.sleep(self.delay)
        if fault is not None:
            response = json_response(fault.body if fault.body is not None else {}, fault.status,
                                     fault.headers)
        else:
            try:
                response = self.handle(request, body)
            except Exception as exc:  # a bug in the fake must show in the test, not hang it
                self.violations.append(f"fake crashed: {type(exc).__name__}: {exc}")
                response = json_response({"message": "fake crashed"}, 500)
            if 200 <= response.status_code < 300:
                with self._lock:
                    after = self.aftermath.pop(0) if self.aftermath else None
                if after == "late":
                    time.sleep(self.late_by)
                elif after == "reset":
                    # Delivered, then the connection drops before any answer.
                    environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
                    return []
                elif after == "garbled":
                    response = Response(b"<html><body>502 Bad Gateway? No: 200 and a "
                                        b"maintenance banner</body></html>", status=200,
                                        content_type="text/html")
        return response(environ, start_response)

    def handle(self, request: Request, body: bytes) -> Response:
        raise NotImplementedError

    def record(self, item: Delivered) -> None:
        with self._lock:
            self.delivered.append(item)

    def validate(self, api: Any, request: Request) -> str | None:
        """Validate `request` against an OpenAPI description; the problem, or None."""
        from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest

        try:
            api.validate_request(WerkzeugOpenAPIRequest(request))
        except Exception as exc:
            detail = "; ".join(str(e) for e in getattr(exc, "schema_errors", []) or []) or str(exc)
            problem = f"{request.method} {request.path}: {type(exc).__name__}: {detail}"
            self.violations.append(problem[:2000])
            return problem
        return None


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=Headers(headers or {}),
                    content_type="application/json")


_SPEC_CACHE: dict[str, Any] = {}


def openapi(name: str, keep_paths: tuple[str, ...]) -> Any:
    """The OpenAPI description `name` (resend, sendgrid), servers pointed at any local host.

    Only the paths the adapters use are kept: the descriptions are large and
    building the validator for all of Resend's takes seconds.
    """
    if name not in _SPEC_CACHE:
        from openapi_core import Config, OpenAPI

        path = next((SPECS / name).glob("*.yaml"))
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        spec = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506
        spec["paths"] = {p: v for p, v in spec["paths"].items() if p in keep_paths}
        spec["servers"] = [{"url": "/"}]
        # Requests are validated; checking the published description itself takes seconds.
        _SPEC_CACHE[name] = OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))
    return _SPEC_CACHE[name]


def bearer_ok(request: Request, key: str) -> bool:
    return request.headers.get("Authorization", "") == f"Bearer {key}"


def presented_key(request: Request) -> str:
    """The key the client presented, echoed in error bodies like some APIs do (leak test)."""
    value = request.headers.get("Authorization", "") or request.headers.get(
        "X-Postmark-Server-Token", "")
    return value.split(" ", 1)[-1]


# -- Postmark ---------------------------------------------------------------


class FakePostmark(FakeAPI):
    """POST /email/batch (≤500, ≤50 MB): 200 with one ErrorCode per message."""

    name = "postmark"
    max_batch = 500
    max_bytes = 50 * 1024 * 1024

    def handle(self, request: Request, body: bytes) -> Response:
        token = request.headers.get("X-Postmark-Server-Token", "")
        if token != self.key:
            return json_response({"ErrorCode": 10, "Message": f"Bad or missing Server API token "
                                  f"'{token}'."}, 401)
        if request.method == "GET" and request.path == "/server":
            # "Get the server" (Server API): read-only, what `newsletter doctor` asks.
            return json_response({"ID": 1, "Name": "Field Notes", "Color": "blue",
                                  "DeliveryType": "Live", "SmtpApiActivated": True})
        if request.method != "POST" or request.path not in ("/email/batch", "/email"):
            return json_response({"ErrorCode": 404, "Message": "Not found"}, 404)
        if len(body) > self.max_bytes:
            return json_response({"ErrorCode": 413, "Message": "Payload too large"}, 413)
        if request.headers.get("Content-Type") != "application/json":
            return json_response({"ErrorCode": 409, "Message": "JSON data required"}, 422)
        data = json.loads(body)
        batch = data if request.path == "/email/batch" else [data]
        if len(batch) > self.max_batch:
            return json_response({"ErrorCode": 410, "Message": "Too many batch messages"}, 422)
        answers = []
        for item in batch:
            to = item.get("To", "")
            missing = [k for k in ("From", "To") if not item.get(k)]
            if not (item.get("HtmlBody") or item.get("TextBody")):
                missing.append("HtmlBody or TextBody")
            if missing:
                answers.append({"ErrorCode": 300, "Message": f"Invalid email request: {missing}"})
                continue
            address = email.utils.parseaddr(to)[1].lower()
            if address in self.rejected:
                answers.append({"ErrorCode": 406, "Message": "You tried to send to recipient(s) "
                                "that have been marked as inactive.", "To": to})
                continue
            message_id = str(uuid.uuid4())
            headers = {h["Name"]: h["Value"] for h in item.get("Headers", [])}
            self.record(Delivered(
                to=[to], sender=item["From"], subject=item.get("Subject", ""),
                html=item.get("HtmlBody", ""), text=item.get("TextBody", ""), headers=headers,
                provider_id=message_id, reply_to=item.get("ReplyTo"),
                inline=[a.get("ContentID", "") for a in item.get("Attachments", [])],
            ))
            answers.append({"ErrorCode": 0, "Message": "OK", "MessageID": message_id, "To": to,
                            "SubmittedAt": dt.datetime.now(dt.UTC).isoformat()})
        if request.path == "/email":
            answer = answers[0]
            return json_response(answer, 200 if answer["ErrorCode"] == 0 else 422)
        return json_response(answers, 200)


# -- SendGrid ---------------------------------------------------------------

RESERVED_SENDGRID = {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
                     "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc"}


class FakeSendGrid(FakeAPI):
    """POST /v3/mail/send: 202 for the whole request; substitutions applied per personalization."""

    name = "sendgrid"

    def __init__(self, key: str = "SG.test-key-0123456789"):
        super().__init__(key)
        self.api = openapi("sendgrid", ("/v3/mail/send",))
        self.scopes = ["mail.send", "scopes.read", "user.profile.read"]  # GET /v3/scopes

    def handle(self, request: Request, body: bytes) -> Response:
        if not bearer_ok(request, self.key):
            return json_response({"errors": [{"field": None, "message": "The provided "
                                  f"authorization grant is invalid: {presented_key(request)}"}]},
                                 401)
        if request.method == "GET" and request.path == "/v3/scopes":
            return json_response({"scopes": self.scopes})  # the key's permissions, read-only
        if request.path != "/v3/mail/send":
            return json_response({"errors": [{"message": "not found"}]}, 404)
        problem = self.validate(self.api, request)
        if problem:
            return json_response({"errors": [{"field": None, "message": problem}]}, 400)
        if len(body) > 30 * 1024 * 1024:
            return json_response({"errors": [{"message": "too large"}]}, 413)
        data = json.loads(body)
        personalizations = data["personalizations"]
        errors = []
        recipients = sum(len(p["to"]) for p in personalizations)
        if recipients > 1000:
            errors.append({"field": "personalizations", "message": "too many recipients"})
        for name in data.get("headers", {}):
            if name.lower() in RESERVED_SENDGRID:
                errors.append({"field": "headers", "message": f"reserved header {name}"})
        for i, p in enumerate(personalizations):
            for name in p.get("headers", {}):
                if name.lower() in RESERVED_SENDGRID:
                    errors.append({"field": f"personalizations.{i}.headers",
                                   "message": f"reserved header {name}"})
            subs = p.get("substitutions", {})
            if len(json.dumps(subs).encode()) > 10_000:
                errors.append({"field": f"personalizations.{i}.substitutions",
                               "message": "substitutions over 10,000 bytes"})
            for j, to in enumerate(p["to"]):
                if to["email"].lower() in self.rejected:
                    errors.append({"field": f"personalizations.{i}.to.{j}.email",
                                   "message": "Does not contain a valid address."})
        if errors:
            return json_response({"errors": errors}, 400)
        message_id = uuid.uuid4().hex[:22]
        content = {c["type"]: c["value"] for c in data.get("content", [])}
        for p in personalizations:
            subs = p.get("substitutions", {})

            def expand(text: str, subs: dict[str, str] = subs) -> str:
                # Each tag replaced by its value, in an order SendGrid does not document:
                # a request whose result depends on the order is refused as a violation.
                results = []
                for order in (list(subs.items()), list(reversed(subs.items()))):
                    out = text
                    for tag, value in order:
                        out = out.replace(tag, value)
                    results.append(out)
                if results[0] != results[1]:
                    self.violations.append("substitutions give another text in another order")
                return results[0]

            headers = {**data.get("headers", {}), **p.get("headers", {})}
            reply = data.get("reply_to")
            self.record(Delivered(
                to=[format_address(t) for t in p["to"]],
                sender=format_address(p.get("from") or data["from"]),
                subject=expand(p.get("subject") or data.get("subject", "")),
                html=expand(content.get("text/html", "")),
                text=expand(content.get("text/plain", "")),
                headers=headers, provider_id=message_id,
                reply_to=format_address(reply) if reply else None,
                inline=[a.get("content_id", "") for a in data.get("attachments", [])],
            ))
        return Response(b"", status=202, headers={"X-Message-Id": message_id})


def format_address(item: dict[str, str]) -> str:
    return email.utils.formataddr((item.get("name", ""), item["email"]))


# -- Mailgun ----------------------------------------------------------------


class FakeMailgun(FakeAPI):
    """POST /v3/{domain}/messages, Basic api:KEY; many `to` + recipient-variables."""

    name = "mailgun"
    domain = "mg.example.com"
    domain_state = "active"  # GET /v3/domains/{domain}: "unverified" until its DNS checks pass

    def handle(self, request: Request, body: bytes) -> Response:
        auth = request.authorization
        if auth is None or auth.username != "api" or auth.password != self.key:
            got = auth.password if auth else ""
            return Response(f"Forbidden: key {got} is not valid", status=401)
        if request.method == "GET" and request.path.startswith("/v3/domains/"):
            name = request.path.removeprefix("/v3/domains/")
            if name != self.domain:
                return json_response({"message": "Domain not found"}, 404)
            return json_response({"domain": {"name": name, "state": self.domain_state,
                                             "type": "custom", "spam_action": "disabled"},
                                  "receiving_dns_records": [], "sending_dns_records": []})
        if request.path != f"/v3/{self.domain}/messages":
            return json_response({"message": f"Domain not found: {request.path}"}, 404)
        form = request.form
        to = form.getlist("to")
        for name in ("from", "subject"):
            if not form.get(name):
                return json_response({"message": f"{name} parameter is missing"}, 400)
        if not to:
            return json_response({"message": "to parameter is missing"}, 400)
        if len(to) > 1000:
            return json_response({"message": "Too many recipients: at most 1000"}, 400)
        for item in to:
            if email.utils.parseaddr(item)[1].lower() in self.rejected:
                return json_response({"message": f"'to' parameter is not a valid address: "
                                      f"{item}"}, 400)
        variables = json.loads(form.get("recipient-variables") or "{}")
        message_id = f"<{uuid.uuid4().hex}@{self.domain}>"
        headers = {k[2:]: v for k, v in form.items() if k.startswith("h:")}
        inline = [f.filename for f in request.files.getlist("inline")]
        if not variables:
            # As documented: one message whose To shows everyone.
            self.record(Delivered(to=to, sender=form["from"], subject=form["subject"],
                                  html=form.get("html", ""), text=form.get("text", ""),
                                  headers=headers, provider_id=message_id,
                                  reply_to=headers.get("Reply-To"), inline=inline))
        else:
            for item in to:
                own = variables.get(email.utils.parseaddr(item)[1], {})

                def expand(text: str, own: dict[str, Any] = own) -> str:
                    return re.sub(r"%recipient\.([A-Za-z0-9_]+)%",
                                  lambda m: str(own.get(m.group(1), m.group(0))), text)

                own_headers = {k: expand(v) for k, v in headers.items()}
                self.record(Delivered(
                    to=[item], sender=form["from"], subject=expand(form["subject"]),
                    html=expand(form.get("html", "")), text=expand(form.get("text", "")),
                    headers=own_headers, provider_id=message_id,
                    reply_to=own_headers.get("Reply-To"), inline=inline,
                ))
        return json_response({"id": message_id, "message": "Queued. Thank you."})


# -- Resend -----------------------------------------------------------------


class FakeResend(FakeAPI):
    """POST /emails and /emails/batch (≤100, no attachments), Idempotency-Key replay (24 h)."""

    name = "resend"

    def __init__(self, key: str = "re_test_key_0123456789"):
        super().__init__(key)
        self.api = openapi("resend", ("/emails", "/emails/batch"))
        self.idempotent: dict[str, tuple[bytes, Response]] = {}
        self.domains = {"example.com": "verified"}  # GET /domains: name → status

    def handle(self, request: Request, body: bytes) -> Response:
        if not bearer_ok(request, self.key):
            return json_response({"statusCode": 401, "name": "validation_error",
                                  "message": f"API key is invalid: {presented_key(request)}"},
                                 401)
        if request.method == "GET" and request.path == "/domains":
            return json_response({"object": "list", "data": [
                {"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)), "name": name, "status": status,
                 "created_at": "2026-01-01 00:00:00.000000+00", "region": "us-east-1"}
                for name, status in self.domains.items()]})
        problem = self.validate(self.api, request)
        if problem:
            return json_response({"statusCode": 422, "name": "validation_error",
                                  "message": problem}, 422)
        key = request.headers.get("Idempotency-Key")
        if key and key in self.idempotent:
            seen_body, seen = self.idempotent[key]
            if seen_body != body:
                return json_response({"statusCode": 409, "name": "invalid_idempotent_request",
                                      "message": "Same idempotency key used with a different "
                                      "request payload."}, 409)
            return seen  # replay: nothing is sent again
        data = json.loads(body)
        batch = data if request.path == "/emails/batch" else [data]
        if request.path == "/emails/batch":
            if len(batch) > 100:
                return json_response({"statusCode": 422, "name": "validation_error",
                                      "message": "Too many emails: at most 100"}, 422)
            if any("attachments" in item for item in batch):
                return json_response({"statusCode": 422, "name": "validation_error",
                                      "message": "Attachments are not supported in batch"}, 422)
        for item in batch:
            to = item["to"] if isinstance(item["to"], list) else [item["to"]]
            for address in to:
                if email.utils.parseaddr(address)[1].lower() in self.rejected:
                    return json_response({"statusCode": 422, "name": "validation_error",
                                          "message": f"Invalid `to` field: {address}"}, 422)
        ids = []
        for item in batch:
            message_id = str(uuid.uuid4())
            ids.append(message_id)
            to = item["to"] if isinstance(item["to"], list) else [item["to"]]
            self.record(Delivered(
                to=to, sender=item["from"], subject=item["subject"], html=item.get("html", ""),
                text=item.get("text", ""), headers=item.get("headers", {}),
                provider_id=message_id, reply_to=item.get("reply_to"),
                inline=[a.get("content_id", "") for a in item.get("attachments", [])],
            ))
        answer = ({"data": [{"id": i} for i in ids]} if request.path == "/emails/batch"
                  else {"id": ids[0]})
        response = json_response(answer)
        if key:
            self.idempotent[key] = (body, response)
        return response


# -- Amazon SES v2 ------------------------------------------------------------


class FakeSES(FakeAPI):
    """POST /v2/email/outbound-emails, SigV4 checked with botocore, raw MIME one per request."""

    name = "ses"
    region = "eu-west-1"
    sending_enabled = True  # GetAccount's SendingEnabled
    production = True  # GetAccount's ProductionAccessEnabled (False: the sandbox)

    def __init__(self, key: str = "AKIDFAKE0123456789", secret: str = "fake/secret+key0123456789",
                 token: str | None = None):
        super().__init__(key)
        self.secret = secret
        self.token = token

    def signature_problem(self, request: Request, body: bytes) -> str | None:
        """Why the request's SigV4 signature is wrong (checked by botocore), or None."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        auth = request.headers.get("Authorization", "")
        match = re.match(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/ses/aws4_request, "
                         r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$", auth)
        if not match:
            return "Authorization header is not a SigV4 signature"
        access_key, day, region, signed, signature = match.groups()
        if access_key != self.key:
            return f"The security token included in the request is invalid: {access_key}"
        if region != self.region:
            return f"Credential should be scoped to a valid region, not '{region}'"
        amz_date = request.headers.get("X-Amz-Date", "")
        if not amz_date.startswith(day):
            return "Date in Credential scope does not match X-Amz-Date"
        when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        if abs((dt.datetime.now(dt.UTC) - when).total_seconds()) > 300:
            return "Signature expired"
        if self.token and request.headers.get("X-Amz-Security-Token") != self.token:
            return "The security token included in the request is invalid"
        headers = {name: request.headers.get(name, "") for name in signed.split(";")}
        aws = AWSRequest(method=request.method, url=request.url, data=body, headers=headers)
        aws.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(self.key, self.secret, self.token), "ses", self.region)
        canonical = signer.canonical_request(aws)
        expected = signer.signature(signer.string_to_sign(aws, canonical), aws)
        if expected != signature:
            return "The request signature we calculated does not match the signature you provided"
        return None

    def handle(self, request: Request, body: bytes) -> Response:
        problem = self.signature_problem(request, body)
        if problem:
            kind = ("UnrecognizedClientException" if "token" in problem
                    else "SignatureDoesNotMatch")
            return json_response({"message": problem}, 403, {"x-amzn-ErrorType": kind})
        if request.method == "GET" and request.path == "/v2/email/account":
            # GetAccount: the quota and whether the account may send, read-only.
            return json_response({
                "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0,
                              "SentLast24Hours": 0.0},
                "SendingEnabled": self.sending_enabled,
                "ProductionAccessEnabled": self.production,
                "EnforcementStatus": "HEALTHY", "DedicatedIpAutoWarmupEnabled": False})
        if request.path != "/v2/email/outbound-emails":
            return json_response({"message": "not found"}, 404,
                                 {"x-amzn-ErrorType": "NotFoundException"})
        data = json.loads(body)
        raw = base64.b64decode(data["Content"]["Raw"]["Data"])
        if len(raw) > 40 * 1024 * 1024:
            return json_response({"message": "Message too large"}, 400,
                                 {"x-amzn-ErrorType": "MessageRejected"})
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        destinations = data.get("Destination", {}).get("ToAddresses") or [parsed["To"]]
        for address in destinations:
            if email.utils.parseaddr(address)[1].lower() in self.rejected:
                return json_response(
                    {"message": "Email address is not verified. The following identities "
                     f"failed the check: {address}"}, 400,
                    {"x-amzn-ErrorType": "MessageRejected:http://internal.amazon.com/coral/"})
        message_id = f"0102{uuid.uuid4().hex}-000000"
        html_part = parsed.get_body(("html",))
        text_part = parsed.get_body(("plain",))
        skip = {"from", "to", "subject", "mime-version", "content-type",
                "content-transfer-encoding"}
        self.record(Delivered(
            to=[str(parsed["To"])], sender=str(parsed["From"]), subject=str(parsed["Subject"]),
            html=html_part.get_content() if html_part else "",
            text=text_part.get_content() if text_part else "",
            headers={k: str(v) for k, v in parsed.items() if k.lower() not in skip},
            provider_id=message_id, reply_to=str(parsed["Reply-To"]) if parsed["Reply-To"]
            else None,
        ))
        return json_response({"MessageId": message_id})
