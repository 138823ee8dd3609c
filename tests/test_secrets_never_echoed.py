"""Settings never echo a secret pasted where a variable's name belongs."""

from __future__ import annotations

from pathlib import Path

import pytest

# A Postmark server token, a SendGrid key and a Resend key, as a user would paste them.
PASTED = [
    ("postmark", "api_key_env", "pm-7a1c9e3f-5b2d-4e8a-9f1c-2d3e4f5a6b7c"),
    ("sendgrid", "api_key_env", "SG.aBcDeFgHiJkLmNoPqRsT.uVwXyZ0123456789aBcDeFgHiJkLmNoPqRs"),
    ("resend", "api_key_env", "re_c1tpEyD8_NKFusih9vKVQknRAQfmFcWCv"),
    ("smtp", "password_env", "correct horse battery staple"),
]


@pytest.mark.parametrize(("provider", "setting", "secret"), PASTED)
def test_a_secret_pasted_into_an_env_setting_is_refused_and_never_printed(
    newsletter_dir: Path, write_draft, cli, provider: str, setting: str, secret: str
) -> None:
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(
        toml.read_text().replace(
            'name = "outbox"', f'name = "{provider}"\nhost = "127.0.0.1"\n{setting} = "{secret}"'
        )
    )
    write_draft("2026-11-21-hi.md", "# Hi\n\nHello.\n")
    cli("subscribers", "add", "reader@example.com")
    result = cli("send", "hi", "--to", "reader@example.com", "--yes")
    assert result.exit_code == 2
    assert f"provider.{setting} must be the name of an environment variable" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_an_env_setting_naming_a_variable_still_says_which_one_is_unset(
    newsletter_dir: Path, write_draft, cli
) -> None:
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(
        toml.read_text().replace(
            'name = "outbox"', 'name = "postmark"\napi_key_env = "MY_POSTMARK_TOKEN"'
        )
    )
    write_draft("2026-11-21-hi.md", "# Hi\n\nHello.\n")
    result = cli("send", "hi", "--to", "reader@example.com", "--yes")
    assert result.exit_code == 2
    assert "the environment variable MY_POSTMARK_TOKEN is not set" in result.stderr


def test_a_password_in_an_endpoint_url_is_refused_and_never_printed(
    newsletter_dir: Path, write_draft, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(
        toml.read_text().replace(
            'name = "outbox"',
            'name = "postmark"\nendpoint = "http://apiuser:S3cretPassw0rd@127.0.0.1:9"',
        )
    )
    monkeypatch.setenv("POSTMARK_SERVER_TOKEN", "pm-test-token-0123456789")
    write_draft("2026-11-21-hi.md", "# Hi\n\nHello.\n")
    result = cli("send", "hi", "--to", "reader@example.com", "--yes")
    assert result.exit_code == 2
    assert "provider.endpoint must not hold a password" in result.stderr
    assert "S3cretPassw0rd" not in result.stdout + result.stderr


def test_a_short_newsletter_secret_is_refused_and_never_printed(
    newsletter_dir: Path, write_draft, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Anyone on the list holds a token made over their own, known address: with a
    # short key they could guess it offline and forge everyone's unsubscribe links.
    monkeypatch.setenv("NEWSLETTER_SECRET", "hunter2")
    write_draft("2026-11-21-hi.md", "# Hi\n\nHello {{ unsubscribe_url }}\n")
    result = cli("build", "hi")
    assert result.exit_code == 2
    assert "NEWSLETTER_SECRET is shorter than 32 characters" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert not (newsletter_dir / "build").exists()


@pytest.mark.parametrize(
    "setting", ["server_token", "apikey", "api-key", "smtp_password", "aws_secret_access_key"]
)
def test_a_secret_under_another_name_in_newsletter_toml_is_refused(
    newsletter_dir: Path, write_draft, cli, setting: str
) -> None:
    # No adapter reads these: the key would stay in the committed file, silently unused.
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(toml.read_text().replace(
        'name = "outbox"', f'name = "postmark"\n{setting} = "pm-7a1c9e3f-5b2d-4e8a-9f1c"'
    ))
    write_draft("2026-11-21-hi.md", "# Hi\n\nHello.\n")
    result = cli("build", "hi")
    assert result.exit_code == 2
    assert f"provider.{setting} must not hold a secret" in result.stderr
    assert "pm-7a1c9e3f" not in result.stdout + result.stderr
