"""What each API does its own way: batching with per-reader values, idempotency, signing, codes."""

from __future__ import annotations

import datetime as dt
import email.utils

import httpx
import pytest

from newsletter.aws import AWSCredentials, SigV4Signer
from newsletter.delivery.providers.base import Outcome, TransientBatchError
from newsletter.delivery.providers.http import retry_after, send_in_parts
from newsletter.errors import ProviderError
from tests.providers_http.messages import make_batch, make_message, unsubscribe_url

# -- shared body + per-reader values ----------------------------------------


def test_sendgrid_sends_a_thousand_personal_messages_in_one_request(make_api) -> None:
    api = make_api("sendgrid")
    provider = api.provider()
    batch = make_batch(1000)
    results = provider.send(batch)
    assert all(r.outcome is Outcome.SENT for r in results)
    assert len(api.fake.requests) == 1
    assert len({r.provider_id for r in results}) == 1  # X-Message-Id of the request
    got = {d.to[0]: d for d in api.fake.delivered}
    for i in (0, 517, 999):
        d = next(v for k, v in got.items() if f"reader{i}@" in k)
        assert unsubscribe_url(i) in d.text and f"Hello Reader Number{i}," in d.html
        assert d.headers["Message-ID"] == f"<issue7.{i}@example.com>"


def test_sendgrid_different_subjects_go_in_separate_requests(make_api) -> None:
    api = make_api("sendgrid")
    batch = [make_message(1), make_message(2, subject="Another subject"), make_message(3)]
    results = api.provider().send(batch)
    assert all(r.outcome is Outcome.SENT for r in results)
    assert len(api.fake.requests) == 2
    subjects = {d.to[0].split("<")[1][:-1]: d.subject for d in api.fake.delivered}
    assert subjects["reader2@example.org"] == "Another subject"


def test_mailgun_never_shows_one_reader_anothers_address(make_api) -> None:
    api = make_api("mailgun")
    batch = make_batch(50)
    results = api.provider().send(batch)
    assert all(r.outcome is Outcome.SENT for r in results)
    assert len(api.fake.requests) == 1
    assert len(api.fake.delivered) == 50
    for d in api.fake.delivered:
        assert len(d.to) == 1
        assert "%recipient." not in d.html + d.text + "".join(d.headers.values())
    request = api.fake.requests[0]
    assert request.form.get("recipient-variables")


def test_mailgun_eu_region_and_missing_domain(make_api) -> None:
    from newsletter.delivery.providers.mailgun import MailgunProvider
    from newsletter.errors import ConfigError

    api = make_api("mailgun")
    settings = api.settings(endpoint=None, region="eu")
    assert MailgunProvider(settings, settings.provider).endpoint == "https://api.eu.mailgun.net"
    settings = api.settings(domain=None)
    with pytest.raises(ConfigError, match="domain"):
        MailgunProvider(settings, settings.provider).open()


# -- Resend: idempotency -----------------------------------------------------


def test_resend_a_resent_batch_is_not_sent_twice(make_api) -> None:
    api = make_api("resend")
    provider = api.provider()
    batch = make_batch(3)
    first = provider.send(batch)
    # The process died before recording the answer; the resumed send tries again.
    again = api.provider().send(batch)
    assert [r.provider_id for r in again] == [r.provider_id for r in first]
    assert len(api.fake.delivered) == 3
    keys = {r.headers["Idempotency-Key"] for r in api.fake.requests}
    assert len(keys) == 1


def test_resend_idempotency_keys_differ_per_newsletter(make_api) -> None:
    from newsletter.delivery.providers.resend import idempotency_key

    a = make_message(1)
    b = make_message(1, address="someone.else@example.net")  # same delivery id, other list
    assert idempotency_key([a]) != idempotency_key([b])
    assert len(idempotency_key(make_batch(100))) <= 256


def test_resend_whole_request_fault_fails_all_without_a_request_per_reader(make_api) -> None:
    api = make_api("resend")
    provider = api.provider()
    for _ in range(40):
        api.fake.fail_next(422, {"statusCode": 422, "name": "validation_error",
                                 "message": "The `from` domain is invalid."})
    results = provider.send(make_batch(64))
    assert all(r.outcome is Outcome.FAILED and "from" in (r.error or "") for r in results)
    assert len(api.fake.requests) <= 12


def test_resend_inline_images_go_one_by_one(make_api) -> None:
    api = make_api("resend")
    batch = [make_message(1), make_message(2, image=True), make_message(3)]
    results = api.provider().send(batch)
    assert all(r.outcome is Outcome.SENT for r in results)
    assert sorted(r.path for r in api.fake.requests) == ["/emails", "/emails/batch"]


# -- Postmark ------------------------------------------------------------------


def test_postmark_unconfirmed_sender_stops_the_send(make_api) -> None:
    api = make_api("postmark")
    api.fake.fail_next(422, {"ErrorCode": 400, "Message": "The 'From' address you supplied "
                             "is not a Sender Signature on your account."})
    with pytest.raises(ProviderError, match="sender signature not found"):
        api.provider().send(make_batch(2))


def test_postmark_inactive_recipient_reason_is_kept(make_api) -> None:
    api = make_api("postmark")
    api.fake.reject("reader1@example.org")
    results = api.provider().send(make_batch(3))
    assert results[1].outcome is Outcome.FAILED
    assert "406" in (results[1].error or "") and "inactive" in (results[1].error or "")


# -- SES -----------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzE+token/with=chars"])
def test_sigv4_matches_botocore(token: str | None) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails"
    body = b'{"FromEmailAddress": "liu@example.com"}'
    headers = {"Content-Type": "application/json"}
    ours = SigV4Signer(AWSCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                                      token), "eu-west-1").headers("POST", url, headers, body)
    # The reference: botocore's signer, at the time our headers carry, as AWS checks it.
    reference = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    reference.context["timestamp"] = ours["X-Amz-Date"]
    signer = SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                                   token), "ses", "eu-west-1")
    if token:
        reference.headers["X-Amz-Security-Token"] = token
    reference.headers["X-Amz-Date"] = ours["X-Amz-Date"]
    canonical = signer.canonical_request(reference)
    signature = signer.signature(signer.string_to_sign(reference, canonical), reference)
    signed = signer.signed_headers(signer.headers_to_sign(reference))
    assert ours["Authorization"] == (
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{ours['X-Amz-Date'][:8]}/eu-west-1/ses/"
        f"aws4_request, SignedHeaders={signed}, Signature={signature}")
    if token:
        assert ours["X-Amz-Security-Token"] == token


def test_ses_sends_the_raw_message_as_built(make_api) -> None:
    api = make_api("ses")
    message = make_message(4)
    result = api.provider().send([message])[0]
    assert result.outcome is Outcome.SENT and result.provider_id
    got = api.fake.delivered[0]
    for name, value in message.headers:
        if name == "Date":  # the parser rewrites GMT as +0000: same instant
            assert email.utils.parsedate_to_datetime(got.headers[name]) == \
                email.utils.parsedate_to_datetime(value)
        else:
            assert got.headers[name] == value


def test_ses_session_token_is_signed(make_api) -> None:
    api = make_api("ses")
    api.fake.token = "session-token-abc"
    api.monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-abc")
    assert api.provider().send([make_message(1)])[0].outcome is Outcome.SENT


@pytest.mark.parametrize("status,kind,text", [
    (429, "TooManyRequestsException", "Too many requests"),
    (400, "LimitExceededException", "Daily message quota exceeded"),
    (400, "MessageRejected", "Maximum sending rate exceeded."),
])
def test_ses_throttling_and_quota_are_transient(make_api, status, kind, text) -> None:
    api = make_api("ses")
    api.fake.fail_next(status, {"message": text}, {"x-amzn-ErrorType": kind})
    with pytest.raises(TransientBatchError):
        api.provider().send([make_message(1)])


def test_ses_throttled_after_the_first_message_keeps_the_sent_one(make_api) -> None:
    api = make_api("ses")
    provider = api.provider()
    batch = make_batch(3)
    # The first message goes through, the second is throttled: no exception, no re-send.
    original = api.fake.handle
    calls = []

    def handle(request, body):
        calls.append(1)
        if len(calls) == 2:
            from tests.providers_http.fakes import json_response
            return json_response({"message": "Rate exceeded"}, 429,
                                 {"x-amzn-ErrorType": "TooManyRequestsException",
                                  "Retry-After": "2"})
        return original(request, body)

    api.fake.handle = handle
    results = provider.send(batch)
    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.RETRY, Outcome.RETRY]
    assert results[1].retry_after == 2
    assert len(api.fake.delivered) == 1


def test_ses_suspended_account_stops(make_api) -> None:
    api = make_api("ses")
    api.fake.fail_next(400, {"message": "Account suspended"},
                       {"x-amzn-ErrorType": "AccountSuspendedException"})
    with pytest.raises(ProviderError, match="AccountSuspended"):
        api.provider().send([make_message(1)])


def test_ses_wrong_region_is_refused(make_api) -> None:
    api = make_api("ses")
    with pytest.raises(ProviderError, match="region"):
        api.provider(region="us-east-1").send([make_message(1)])


# -- shared pieces -------------------------------------------------------------


def test_retry_after_forms() -> None:
    now = 1_800_000_000.0
    assert retry_after(httpx.Headers({"Retry-After": "12"}), now) == 12
    date = "Fri, 15 Jan 2027 08:00:30 GMT"
    then = dt.datetime(2027, 1, 15, 8, 0, 30, tzinfo=dt.UTC).timestamp()
    assert retry_after(httpx.Headers({"Retry-After": date}), then - 30) == 30
    assert retry_after(httpx.Headers({"X-RateLimit-Reset": str(int(now) + 9)}), now) == 9
    assert retry_after(httpx.Headers({"ratelimit-reset": "3"}), now) == 3
    assert retry_after(httpx.Headers({"Retry-After": "999999"}), now) == 3600
    assert retry_after(httpx.Headers({}), now) is None


def test_send_in_parts_never_resends_what_went_out() -> None:
    batch = make_batch(3)
    calls = []

    def send_part(message):
        calls.append(message.key)
        if len(calls) == 2:
            raise TransientBatchError("503", retry_after=4)
        from newsletter.delivery.providers.base import DeliveryResult
        return [DeliveryResult(message.key, Outcome.SENT, provider_id="x")]

    results = send_in_parts(batch, batch, send_part)
    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.RETRY, Outcome.RETRY]
    assert results[2].retry_after == 4
    assert len(calls) == 2


def test_resend_rate_limited_while_looking_for_the_bad_reader_keeps_what_went_out(
        make_api) -> None:
    api = make_api("resend")
    api.fake.reject("reader1@example.org")
    original = api.fake.handle
    calls = []

    def handle(request, body):
        calls.append(1)
        if len(calls) == 4:  # whole (422), left (422), left-left (sent), left-right: 429
            from tests.providers_http.fakes import json_response
            return json_response({"name": "rate_limit_exceeded", "message": "Too many"}, 429,
                                 {"retry-after": "1"})
        return original(request, body)

    api.fake.handle = handle
    results = api.provider().send(make_batch(4))
    # Throttled mid-search: reader0 went out, nobody else is tried until the wait is over.
    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.RETRY, Outcome.RETRY,
                                            Outcome.RETRY]
    assert len(api.fake.delivered) == 1 and len(calls) == 4
    assert all(r.retry_after == 1 for r in results[1:])
