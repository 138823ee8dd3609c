"""The smtp provider against a real aiosmtpd server on 127.0.0.1: what the contract can't say."""

from __future__ import annotations

import collections
import dataclasses
import ssl
import subprocess
from pathlib import Path

import pytest

from newsletter.delivery.providers.base import Outcome
from newsletter.delivery.providers.smtp import SMTPProvider
from newsletter.delivery.sending import run_campaign
from newsletter.errors import ConfigError, ProviderError
from newsletter.settings import Settings

from .contract import add_subscribers, emails, new_campaign, rows, write_letter
from .messages import make_message, make_test_message
from .smtpserver import SMTPServer


@pytest.fixture
def server():
    with SMTPServer() as s:
        yield s


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelined"])
def pipelining(request: pytest.FixtureRequest) -> bool:
    """MAIL/RCPT/DATA one at a time, or in one write (aiosmtpd reads either way)."""
    return request.param


def smtp_letter(tmp_path: Path, port: int, **options) -> Settings:
    return write_letter(tmp_path / "letter", {
        "name": "smtp", "host": "127.0.0.1", "port": port, "security": "none", "timeout": 5,
        "retry_delay": 0.01, **options,
    })


def provider(letter: Settings) -> SMTPProvider:
    return SMTPProvider(letter, letter.provider)


def test_one_connection_carries_many_messages(
    server: SMTPServer, tmp_path: Path, pipelining: bool
) -> None:
    letter = smtp_letter(tmp_path, server.port, pipelining=pipelining)
    with provider(letter) as smtp:
        results = smtp.send([make_message(str(i), f"r{i}@example.org") for i in range(5)])
    assert [r.outcome for r in results] == [Outcome.SENT] * 5
    assert [r.provider_id for r in results] == ["Q1", "Q2", "Q3", "Q4", "Q5"]
    assert server.mail_count == 5
    assert server.recipients() == [f"r{i}@example.org" for i in range(5)]


def test_lines_starting_with_a_dot_and_unusual_addresses_arrive_intact(
    server: SMTPServer, tmp_path: Path, pipelining: bool
) -> None:
    # A line that is only "." would end the message early, and ".NET" would lose its dot,
    # without dot-stuffing (RFC 5321 4.5.2); a quoted local part must go as it is written.
    plain = make_message("1", "r1@example.org")
    dotted = dataclasses.replace(plain, raw=plain.raw.replace(
        b"The body.", b"The body.\r\n.\r\n.NET and .. and ...\r\nafter the dots"))
    quoted = make_message("2", '"first last"@example.org')
    letter = smtp_letter(tmp_path, server.port, pipelining=pipelining)
    with provider(letter) as smtp:
        results = smtp.send([dotted, quoted, plain])
    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    assert server.recipients() == ["r1@example.org", '"first last"@example.org',
                                   "r1@example.org"]
    assert [m.data for m in server.received] == [dotted.raw, quoted.raw, plain.raw]
    assert b"\r\n.\r\n.NET and .. and ...\r\nafter the dots" in server.received[0].data


def test_dropped_connections_are_reopened_and_nothing_is_lost(
    server: SMTPServer, tmp_path: Path, pipelining: bool
) -> None:
    server.drop_every = 3  # the server hangs up at every third MAIL FROM
    letter = smtp_letter(tmp_path, server.port, pipelining=pipelining)
    add_subscribers(letter, emails(12))
    campaign_id = new_campaign(letter)
    report = run_campaign(letter, campaign_id, make_test_message)
    assert report.error is None and report.campaign.counts.sent == 12
    assert collections.Counter(server.recipients()) == collections.Counter(emails(12))


def test_421_reconnects_and_sends(server: SMTPServer, tmp_path: Path, pipelining: bool) -> None:
    server.fail("r1@example.org", "421 4.7.0 too many messages on this connection", times=1)
    letter = smtp_letter(tmp_path, server.port, pipelining=pipelining)
    with provider(letter) as smtp:
        results = smtp.send([make_message(str(i), f"r{i}@example.org") for i in range(3)])
    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    assert server.recipients() == ["r0@example.org", "r1@example.org", "r2@example.org"]


def test_reply_lost_after_the_message_was_handed_over_is_uncertain(
    server: SMTPServer, tmp_path: Path, pipelining: bool
) -> None:
    server.drop_after_data.add(emails(3)[1])
    letter = smtp_letter(tmp_path, server.port, pipelining=pipelining)
    add_subscribers(letter, emails(3))
    campaign_id = new_campaign(letter)
    report = run_campaign(letter, campaign_id, make_test_message)
    got = rows(letter, campaign_id)
    assert [r["state"] for r in got] == ["sent", "uncertain", "sent"]
    assert "before the server confirmed" in got[1]["error"]
    assert report.campaign.status == "stopped"  # the uncertain row awaits a decision
    assert sorted(server.recipients()) == emails(3)  # delivered once, never re-sent silently

    server.drop_after_data.clear()
    again = run_campaign(letter, campaign_id, make_test_message, retry_uncertain=True)
    assert again.uncertain_requeued == 1 and again.campaign.status == "done"
    assert server.recipients().count(emails(3)[1]) == 2  # the user chose to risk it


def test_login_with_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SMTPServer(password="hunter2-secret") as server:
        letter = smtp_letter(tmp_path, server.port, username="liu",
                             password_env="TEST_SMTP_PASSWORD")
        with pytest.raises(ConfigError, match="TEST_SMTP_PASSWORD is not set"):
            provider(letter).open()
        monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong-password")
        with pytest.raises(ProviderError, match="refused the login for liu") as refused:
            provider(letter).open()
        assert "wrong-password" not in str(refused.value)
        monkeypatch.setenv("TEST_SMTP_PASSWORD", "hunter2-secret")
        with provider(letter) as smtp:
            assert smtp.send([make_message("1", "a@example.org")])[0].outcome == Outcome.SENT
        assert server.logins == ["liu"]


def test_starttls_required_but_not_offered_is_a_clear_error(
    server: SMTPServer, tmp_path: Path
) -> None:
    letter = smtp_letter(tmp_path, server.port, security="starttls")
    with pytest.raises(ProviderError, match="does not offer STARTTLS"):
        provider(letter).open()


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_encrypted_connections(
    security: str, tls_context: ssl.SSLContext, tmp_path: Path
) -> None:
    with SMTPServer(tls_context=tls_context, implicit_tls=security == "tls") as server:
        letter = smtp_letter(tmp_path, server.port, security=security)
        # A self-signed certificate is refused unless verification is turned off.
        with pytest.raises(ProviderError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            provider(letter).open()
        letter = smtp_letter(tmp_path, server.port, security=security, tls_verify=False)
        with provider(letter) as smtp:
            assert smtp.send([make_message("1", "a@example.org")])[0].outcome == Outcome.SENT
        assert server.recipients() == ["a@example.org"]


def with_options(letter: Settings, **options: object) -> Settings:
    """`letter` with [provider] options set in code, past the check settings make at load."""
    ps = dataclasses.replace(letter.provider, options={**letter.provider.options, **options})
    return dataclasses.replace(letter, provider=ps)


def test_bad_security_setting_is_a_config_error(tmp_path: Path) -> None:
    # newsletter.toml is checked when it loads; options set in code when the provider is made.
    with pytest.raises(ConfigError, match='security = "ssl" is not one of starttls, tls, none'):
        provider(smtp_letter(tmp_path, 25, security="ssl"))
    letter = with_options(smtp_letter(tmp_path, 25), security="ssl")
    with pytest.raises(ConfigError, match='security = "ssl" is not one of starttls, tls, none'):
        provider(letter)


def test_bad_numbers_in_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[provider\] timeout = 'soon' must be a number"):
        provider(smtp_letter(tmp_path, 25, timeout="soon"))
    with pytest.raises(ConfigError, match="batch = 2.5 must be a whole number of at least 1"):
        provider(smtp_letter(tmp_path, 25, batch=2.5))
    good = smtp_letter(tmp_path, 25)
    with pytest.raises(ConfigError, match=r"\[provider\] timeout = 'soon' must be a number"):
        provider(with_options(good, timeout="soon"))
    with pytest.raises(ConfigError, match="batch = 2.5 must be a whole number of at least 1"):
        provider(with_options(good, batch=2.5))


# -- settings, servers that are not SMTP servers, secrets in replies ---------------------


@pytest.mark.parametrize("port", [0, 70000, -1, "587"])
def test_a_port_outside_the_range_is_a_settings_error(tmp_path: Path, port: object) -> None:
    with pytest.raises(ConfigError, match=r"provider\.port = .* from 1 to 65535"):
        smtp_letter(tmp_path, port)  # type: ignore[arg-type]


def test_an_endpoint_port_outside_the_range_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port outside 1–65535"):
        write_letter(tmp_path / "letter", {"name": "postmark",
                                           "endpoint": "http://127.0.0.1:70000"})


class _SocketServer:
    """A plain TCP server on 127.0.0.1; `talk(conn)` runs for each connection."""

    def __init__(self, talk) -> None:  # noqa: ANN001
        import socket
        import threading

        self.talk = talk
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn) -> None:  # noqa: ANN001
        try:
            self.talk(conn)
        except OSError:
            pass

    def __enter__(self) -> _SocketServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_a_server_that_never_speaks_fails_within_the_timeout(tmp_path: Path) -> None:
    import threading
    import time

    quiet = threading.Event()
    with _SocketServer(lambda conn: quiet.wait(30)) as silent:
        letter = smtp_letter(tmp_path, silent.port, timeout=1)
        started = time.monotonic()
        with pytest.raises(ProviderError, match="not an SMTP server") as caught:
            provider(letter).open()
        took = time.monotonic() - started
        quiet.set()
    assert took < 2.5, took
    assert f"127.0.0.1:{silent.port}" in str(caught.value)
    assert "sent nothing in 1 s" in str(caught.value)


PASSWORD = "pa55/w0rd+Secret=ok"
USER = "writer@example.com"


def _echo_forms() -> dict[str, str]:
    import base64
    from urllib.parse import quote

    return {
        "exact": PASSWORD,
        "upper": PASSWORD.upper(),
        "url": quote(PASSWORD, safe=""),
        "hex": PASSWORD.encode().hex(),
        "base64": base64.b64encode(PASSWORD.encode()).decode(),
        "plain": base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
        "basic": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    }


@pytest.mark.parametrize("form", sorted(_echo_forms()))
def test_a_reply_echoing_the_password_is_redacted(tmp_path: Path, monkeypatch, form: str) -> None:
    echo = _echo_forms()[form]

    def talk(conn) -> None:  # noqa: ANN001
        conn.sendall(b"220 echo.example ESMTP\r\n")
        reader = conn.makefile("rb")
        while line := reader.readline():
            verb = line.split(b" ", 1)[0].upper().strip()
            if verb in (b"EHLO", b"HELO"):
                conn.sendall(b"250-echo.example\r\n250 AUTH PLAIN\r\n")
            elif verb == b"AUTH":
                conn.sendall(f"535 5.7.8 bad credentials {echo} ({line.decode().strip()})\r\n"
                             .encode())
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"502 no\r\n")

    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", PASSWORD)
    with _SocketServer(talk) as server:
        letter = smtp_letter(tmp_path, server.port, username=USER)
        with pytest.raises(ProviderError, match="refused the login") as caught:
            provider(letter).open()
    message = str(caught.value)
    assert "[redacted]" in message
    for secret in _echo_forms().values():
        assert secret.lower() not in message.lower(), (form, message)
