"""Every HTTP adapter against its fake API: what each reader gets, and every way a send fails."""

from __future__ import annotations

import email.utils

import pytest

from newsletter.delivery.providers.base import Outcome, TransientBatchError
from newsletter.errors import ConfigError, ProviderError
from tests.providers_http.conftest import API
from tests.providers_http.messages import REPLY_TO, make_batch, make_message, unsubscribe_url


def address_of(value: str) -> str:
    return email.utils.parseaddr(value)[1]


def test_each_reader_gets_their_own_message(api: API) -> None:
    provider = api.provider()
    batch = make_batch(5)
    results = provider.send(batch)

    assert [r.key for r in results] == [m.key for m in batch]
    assert all(r.outcome is Outcome.SENT and r.provider_id for r in results)
    delivered = {address_of(d.to[0]): d for d in api.fake.delivered}
    assert len(api.fake.delivered) == 5
    for i, message in enumerate(batch):
        got = delivered[message.recipient]
        assert [address_of(t) for t in got.to] == [message.recipient]  # nobody else's address
        assert f"Hello Reader Number{i}," in got.text
        assert unsubscribe_url(i) in got.text
        assert unsubscribe_url(i).replace("&", "&amp;") in got.html
        assert got.headers["List-Unsubscribe"] == f"<{unsubscribe_url(i)}>"
        assert got.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert address_of(got.reply_to or "") == REPLY_TO
        assert got.subject == "Issue 7: on footnotes"
        assert address_of(got.sender) == "liu@example.com"


def test_inline_image_travels_with_the_message(api: API) -> None:
    provider = api.provider()
    results = provider.send([make_message(1, image=True), make_message(2, image=True)])
    assert all(r.outcome is Outcome.SENT for r in results)
    for got in api.fake.delivered:
        if api.name == "ses":
            assert 'src="cid:photo1@example.com"' in got.html  # inside the raw MIME
        else:
            assert any("photo1@example.com" in cid for cid in got.inline), got.inline


def test_a_refused_reader_fails_alone_with_the_providers_reason(api: API) -> None:
    api.fake.reject("reader2@example.org", "inactive")
    provider = api.provider()
    batch = make_batch(4)
    results = provider.send(batch)
    by_key = {r.key: r for r in results}
    bad = by_key[batch[2].key]
    assert bad.outcome is Outcome.FAILED
    assert bad.error and api.name in bad.error
    others = [by_key[m.key] for m in batch if m.key != batch[2].key]
    if api.name in ("sendgrid", "mailgun"):
        # These refuse the whole request: the others are handed back to retry at once.
        assert all(r.outcome is Outcome.RETRY and r.retry_after == 0 for r in others)
        again = provider.send([m for m in batch if m.key != batch[2].key])
        assert all(r.outcome is Outcome.SENT for r in again)
    else:
        assert all(r.outcome is Outcome.SENT for r in others)
    sent_to = sorted(address_of(d.to[0]) for d in api.fake.delivered)
    assert sent_to == ["reader0@example.org", "reader1@example.org", "reader3@example.org"]


def test_too_many_requests_is_transient_with_the_servers_wait(api: API) -> None:
    api.fake.fail_next(429, {"message": "slow down"}, {"Retry-After": "7"})
    provider = api.provider()
    batch = make_batch(3)
    with pytest.raises(TransientBatchError) as caught:
        provider.send(batch)
    assert caught.value.retry_after == 7
    assert api.fake.delivered == []
    assert all(r.outcome is Outcome.SENT for r in provider.send(batch))  # the campaign's retry
    assert len(api.fake.delivered) == 3


def test_rate_limit_reset_header_gives_the_wait(api: API) -> None:
    import time

    api.fake.fail_next(429, {"message": "rate limited"},
                       {"X-RateLimit-Reset": str(int(time.time()) + 30)})
    with pytest.raises(TransientBatchError) as caught:
        api.provider().send(make_batch(1))
    assert 25 <= (caught.value.retry_after or 0) <= 31


def test_server_down_for_a_moment_then_back(api: API) -> None:
    api.fake.fail_next(503, {"message": "maintenance"}, times=2)
    provider = api.provider()
    batch = make_batch(2)
    for _ in range(2):
        with pytest.raises(TransientBatchError, match="503"):
            provider.send(batch)
    assert all(r.outcome is Outcome.SENT for r in provider.send(batch))
    assert len(api.fake.delivered) == 2


def test_read_timeout_marks_the_batch_uncertain_and_stops(api: API) -> None:
    # The fake takes the request and answers too late: the API has it, the client gave up.
    api.fake.delay = 1.0
    provider = api.provider(timeout=0.2)
    batch = make_batch(1)
    with pytest.raises(ProviderError, match="timeout.*may or may not have gone out") as caught:
        provider.send(batch)
    results = caught.value.results  # type: ignore[attr-defined]
    assert [(r.key, r.outcome) for r in results] == [(batch[0].key, Outcome.UNCERTAIN)]


def test_unreachable_server_stops_the_send(api: API) -> None:
    from tests.conftest import refusing_port

    with refusing_port() as port:  # held for the whole test: nobody else can listen there
        provider = api.provider(endpoint=f"http://127.0.0.1:{port}")
        with pytest.raises(ProviderError, match="cannot reach"):
            provider.send(make_batch(1))


def test_wrong_key_stops_the_send_without_showing_the_key(api: API) -> None:
    wrong = "WRONG-secret-value-98765"
    api.monkeypatch.setenv(api.key_env, wrong)
    if api.name == "ses":
        api.monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "WRONG-secret-access-key-4321")
    provider = api.provider()
    with pytest.raises(ProviderError) as caught:
        provider.send(make_batch(2))
    message = str(caught.value)
    assert api.key_env in message  # says where to look
    assert "WRONG-secret" not in message  # even though the fake echoed it back
    assert "WRONG-secret" not in repr(provider)
    assert api.fake.delivered == []


def test_missing_key_names_the_variable(api: API) -> None:
    api.monkeypatch.delenv(api.key_env)
    settings = api.settings()
    from newsletter.delivery.providers.registry import provider_class

    provider = provider_class(api.name)(settings, settings.provider)
    with pytest.raises(ConfigError, match=api.key_env):
        provider.open()
    provider.close()
    provider.close()  # safe twice, and after a failed open


def test_key_can_come_from_another_variable(api: API) -> None:
    if api.name == "ses":
        api.monkeypatch.setenv("MY_AWS_ID", api.fake.key)
        provider = api.provider(access_key_env="MY_AWS_ID")
    else:
        api.monkeypatch.setenv("MY_MAIL_KEY", api.fake.key)
        api.monkeypatch.delenv(api.key_env)
        provider = api.provider(api_key_env="MY_MAIL_KEY")
    assert provider.send(make_batch(1))[0].outcome is Outcome.SENT


def test_a_full_batch_is_accepted_by_the_documented_limit(api: API) -> None:
    provider = api.provider()
    size = type(provider).max_batch  # the whole documented batch in one request
    results = provider.send(make_batch(size))
    assert all(r.outcome is Outcome.SENT for r in results)
    assert len(api.fake.delivered) == size
    assert len(api.fake.requests) == 1


def test_documented_limits_and_rates() -> None:
    from newsletter.delivery.providers.registry import provider_class

    expected = {"postmark": (500, None), "sendgrid": (1000, None), "mailgun": (1000, None),
                "resend": (100, 2.0), "ses": (1, 14.0)}
    for name, (batch, rate) in expected.items():
        cls = provider_class(name)
        assert (cls.max_batch, cls.default_rate) == (batch, rate)
    assert not provider_class("resend").idempotent  # keys cover a request, not a message
    assert provider_class("ses").rate_unit == "message"
    assert provider_class("postmark").rate_unit == "request"


def test_a_key_echoed_in_a_refusal_never_reaches_the_delivery_log(api: API) -> None:
    import base64

    secrets = [api.fake.key]
    if api.name == "mailgun":  # its Basic credentials
        secrets.append(base64.b64encode(f"api:{api.fake.key}".encode()).decode())
    if api.name == "ses":
        secrets.append(api.fake.secret)
    echo = " ".join(secrets)
    body = {"message": f"bad request from {echo}", "Message": f"bad request from {echo}",
            "ErrorCode": 300, "errors": [{"message": f"bad {echo}", "field": None}],
            "name": "validation_error"}
    api.fake.fail_next(400 if api.name != "postmark" else 422, body,
                       {"x-amzn-ErrorType": "BadRequestException"})
    results = api.provider().send(make_batch(1))
    assert results[0].outcome is Outcome.FAILED
    assert "[redacted]" in (results[0].error or "")
    for secret in secrets:
        assert secret not in (results[0].error or "")


@pytest.mark.parametrize("option,value,message", [
    ("endpoint", "api.postmarkapp.com", "is not a URL"),
    ("timeout", "soon", "number of seconds"),
    ("timeout", 0, "number of seconds"),
])
def test_bad_settings_are_config_errors(api: API, option: str, value: object,
                                        message: str) -> None:
    from newsletter.delivery.providers.registry import provider_class

    settings = api.settings(**{option: value})
    provider = provider_class(api.name)(settings, settings.provider)
    with pytest.raises(ConfigError, match=message):
        provider.open()


def test_keys_never_reach_the_logs(api: API, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at DEBUG
    provider = api.provider()
    provider.send(make_batch(2))
    api.fake.fail_next(429, {"message": f"slow down {api.fake.key}"})
    with pytest.raises(TransientBatchError) as caught:
        provider.send(make_batch(1))
    assert api.fake.key not in str(caught.value)
    assert caplog.records  # the requests were logged …
    secrets = [api.fake.key] + ([api.fake.secret] if api.name == "ses" else [])
    for secret in secrets:  # … without the key
        assert secret not in caplog.text


SPECIAL_KEY = "Ke/y+wIth=sPecial&chars:0123"


def _echoes(secret: str, login: str | None = None) -> dict[str, str]:
    """The forms a server has been seen to echo a secret back in."""
    import base64
    from urllib.parse import quote

    forms = {"exact": secret, "swapped case": secret.swapcase(),
             "url-encoded": quote(secret, safe=""), "hex": secret.encode().hex(),
             "HEX": secret.encode().hex().upper(),
             "base64": base64.b64encode(secret.encode()).decode()}
    if login:
        forms["basic"] = base64.b64encode(f"{login}:{secret}".encode()).decode()
    return forms


@pytest.mark.parametrize("form", ["exact", "swapped case", "url-encoded", "hex", "HEX",
                                  "base64", "basic"])
def test_a_key_echoed_in_any_encoding_is_redacted(make_api, form: str) -> None:
    for name in ("postmark", "sendgrid", "mailgun", "resend", "ses"):
        api = make_api(name)
        if name == "ses":
            api.fake.secret = SPECIAL_KEY
            api.monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SPECIAL_KEY)
        else:
            api.fake.key = SPECIAL_KEY
            api.monkeypatch.setenv(api.key_env, SPECIAL_KEY)
        forms = _echoes(SPECIAL_KEY, "api" if name == "mailgun" else None)
        if form not in forms:
            continue
        echo = forms[form]
        body = {"message": f"bad request from {echo}", "Message": f"bad request from {echo}",
                "ErrorCode": 300, "errors": [{"message": f"bad {echo}", "field": None}],
                "name": "validation_error"}
        provider = api.provider()
        api.fake.fail_next(400 if name != "postmark" else 422, body,
                           {"x-amzn-ErrorType": "BadRequestException"})
        api.fake.fail_next(429, {"message": f"slow down {echo}"})
        results = provider.send(make_batch(1))
        with pytest.raises(TransientBatchError) as caught:
            provider.send(make_batch(1))
        for text in (results[0].error or "", caught.value.reason):
            assert "[redacted]" in text, (name, text)
            for secret in forms.values():
                assert secret.lower() not in text.lower(), (name, form, text)


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_timeout_after_sending_is_uncertain(make_api, status: int) -> None:
    api = make_api("postmark")
    provider = api.provider()
    api.fake.fail_next(status, {"message": "upstream timed out"})
    batch = make_batch(3)
    with pytest.raises(ProviderError, match=f"HTTP {status}.*uncertain") as caught:
        provider.send(batch)
    outcomes = {r.key: r.outcome for r in caught.value.results}  # type: ignore[attr-defined]
    assert outcomes == {m.key: Outcome.UNCERTAIN for m in batch}


def test_the_transport_retries_what_was_not_sent_and_never_what_may_have_been(make_api) -> None:
    from newsletter.http import MaybeSent, Transport

    api = make_api("postmark")
    transport = Transport("postmark", api.fake.url, {"X-Postmark-Server-Token": api.fake.key},
                          timeout=0.5)
    waits: list[float] = []
    JSON = {"Content-Type": "application/json"}  # noqa: N806
    body = api.provider().build_request(make_batch(1))  # type: ignore[attr-defined]
    try:
        api.fake.fail_next(429, {"Message": "slow down"}, {"Retry-After": "0.1"}, times=2)
        response = transport.request("POST", "/email/batch", content=body, retries=2, headers=JSON,
                                     sleep=waits.append)
        assert response.status_code == 200
        assert waits == [0.1, 0.1]
        assert len(api.fake.requests) == 3

        api.fake.after_accept("late", late_by=1.5)
        with pytest.raises(MaybeSent):
            transport.request("POST", "/email/batch", content=body, retries=5, headers=JSON,
                              sleep=waits.append)
        assert len(api.fake.requests) == 4  # not sent again
    finally:
        transport.close()
