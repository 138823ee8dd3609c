"""Each provider's credentials check (`newsletter doctor`): one harmless authenticated call.

Against the same local fakes the send tests use (they answer the read-only endpoints as
the providers document them, 401/403 on a bad key) and a real aiosmtpd server: a good key
passes, a bad one is a ProviderError naming the variable (never the key), and nothing is
ever sent.
"""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from newsletter.delivery.providers.base import CredentialsAnswer
from newsletter.delivery.providers.registry import provider_class
from newsletter.delivery.providers.smtp import SMTPProvider
from newsletter.errors import ProviderError
from newsletter.settings import ProviderSettings, Settings
from tests.delivery.smtpserver import SMTPServer
from tests.providers_http import conftest as http_fixtures
from tests.providers_http.conftest import API
from tests.providers_http.fakes import FakeMailgun, FakeResend, FakeSendGrid, FakeSES

# The providers_http fixtures: each HTTP provider with its fake running.
api = http_fixtures.api
make_api = http_fixtures.make_api

PATHS = {"postmark": "/server", "sendgrid": "/v3/scopes",
         "mailgun": f"/v3/domains/{FakeMailgun.domain}", "resend": "/domains",
         "ses": "/v2/email/account"}


def check(one: API, **extra: object) -> CredentialsAnswer:
    settings = one.settings(**extra)
    return provider_class(one.name)(settings, settings.provider).check_credentials()


def test_a_good_key_passes_with_one_read_only_request(api: API) -> None:
    answer = check(api)
    assert answer.warning is None
    assert [(r.method, r.path) for r in api.fake.requests] == [("GET", PATHS[api.name])]
    assert api.fake.delivered == []


def test_a_bad_key_is_refused_by_name_never_by_value(api: API) -> None:
    wrong = "wrong-key-" + "9" * 20
    api.monkeypatch.setenv(api.key_env, wrong)
    with pytest.raises(ProviderError, match="refused|security token|invalid") as refused:
        check(api)
    assert f"${api.key_env}" in str(refused.value)
    assert wrong not in str(refused.value)
    assert api.fake.delivered == []


def test_sendgrid_key_without_mail_send_is_an_error(make_api) -> None:
    one = make_api("sendgrid")
    assert isinstance(one.fake, FakeSendGrid)
    one.fake.scopes = ["scopes.read", "stats.read"]
    with pytest.raises(ProviderError, match="lacks the Mail Send permission"):
        check(one)


def test_mailgun_unknown_or_unverified_domain(make_api) -> None:
    one = make_api("mailgun")
    with pytest.raises(ProviderError, match="has no domain mg.other.com"):
        check(one, domain="mg.other.com")
    assert isinstance(one.fake, FakeMailgun)
    one.fake.domain_state = "unverified"
    assert "is unverified" in (check(one).warning or "")


def test_resend_from_domain_not_verified_is_a_warning(make_api) -> None:
    one = make_api("resend")
    assert isinstance(one.fake, FakeResend)
    one.fake.domains = {"example.com": "pending"}
    assert "is pending" in (check(one).warning or "")
    one.fake.domains = {"other.org": "verified"}
    assert "not among this Resend account's domains" in (check(one).warning or "")


def test_ses_sandbox_warns_and_paused_sending_fails(make_api) -> None:
    one = make_api("ses")
    assert isinstance(one.fake, FakeSES)
    assert "messages a day" in check(one).detail
    one.fake.production = False
    assert "sandbox" in (check(one).warning or "")
    one.fake.sending_enabled = False
    with pytest.raises(ProviderError, match="sending is paused"):
        check(one)


def test_outbox_always_works_and_creates_nothing(tmp_path: Path) -> None:
    settings = Settings(root=tmp_path, sender="Liu <liu@example.com>")
    answer = provider_class("outbox")(settings, settings.provider).check_credentials()
    assert "no credentials" in answer.detail
    assert list(tmp_path.iterdir()) == []


def smtp(tmp_path: Path, port: int, **options: object) -> SMTPProvider:
    provider = ProviderSettings(name="smtp", options={
        "host": "127.0.0.1", "port": port, "security": "none", "timeout": 5, **options})
    settings = Settings(root=tmp_path, sender="Liu <liu@example.com>", provider=provider)
    return SMTPProvider(settings, provider)


def test_smtp_logs_in_without_mail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCTOR_SMTP_PASSWORD", "hunter2-secret")
    with SMTPServer(password="hunter2-secret") as server:
        answer = smtp(tmp_path, server.port, username="liu",
                      password_env="DOCTOR_SMTP_PASSWORD").check_credentials()
        assert "EHLO, AUTH as liu" in answer.detail
        assert server.logins == ["liu"] and server.mail_count == 0
        monkeypatch.setenv("DOCTOR_SMTP_PASSWORD", "wrong-password")
        with pytest.raises(ProviderError, match="refused the login for liu") as refused:
            smtp(tmp_path, server.port, username="liu",
                 password_env="DOCTOR_SMTP_PASSWORD").check_credentials()
        assert "wrong-password" not in str(refused.value)
        assert server.mail_count == 0


def test_smtp_starttls(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    folder.mkdir()
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with SMTPServer(tls_context=context) as server:
        answer = smtp(tmp_path, server.port, security="starttls",
                      tls_verify=False).check_credentials()
        assert "EHLO, STARTTLS" in answer.detail
        assert server.mail_count == 0
