"""Every table of newsletter.toml is checked when settings load, through the real CLI.

For each table: a key that is not a setting, a value of the wrong type, both reported
together in one `Error:` line, exit 2, no traceback, before the command does anything.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter.errors import ConfigError
from newsletter.settings import load_settings
from tests.conftest import DEFAULT_TOML

SMTP = '[provider]\nname = "smtp"\nhost = "127.0.0.1"\n'
NEWSLETTER_KEYS = '[newsletter]\ncolour = "red"\nlayout = 3\n'  # moved up by _write

# (what newsletter.toml gets instead of its [provider] table, what the error must say)
CASES = {
    "newsletter": (
        '[provider]\nname = "outbox"\n' + NEWSLETTER_KEYS,
        ["unknown setting newsletter.colour", "newsletter.layout must be a string"],
    ),
    "provider": (
        SMTP + 'hots = "mail.example.com"\nport = "587"\n',
        ["unknown setting provider.hots for the smtp provider (known: ", "host, ",
         "did you mean host?", "provider.port = '587' must be a whole number from 1 to 65535"],
    ),
    "bounces": (
        '[provider]\nname = "outbox"\n[bounces]\nsoftlimit = 3\nsoft_limit = "3"\n',
        ["unknown setting bounces.softlimit", "did you mean soft_limit?",
         "bounces.soft_limit must be a whole number of 1 or more"],
    ),
    "webhooks": (
        '[provider]\nname = "outbox"\n[webhooks]\nses_enable = true\nmax_body_bytes = "big"\n',
        ["unknown setting webhooks.ses_enable", "did you mean ses_enabled?",
         "webhooks.max_body_bytes must be a whole number of 1024 or more"],
    ),
    "mailbox": (
        '[provider]\nname = "outbox"\n[mailbox]\nhots = "imap.example.com"\n'
        'username = "me"\nport = "993"\n',
        ["unknown setting mailbox.hots", "did you mean host?", "mailbox.host is missing",
         "mailbox.port must be a whole number from 1 to 65535"],
    ),
    "subscribe": (
        '[provider]\nname = "outbox"\n[subscribe]\ntopic = ["essays"]\nconsent = 3\n',
        ["[subscribe] topic is not a setting", "did you mean topics?",
         "[subscribe] consent must be text"],
    ),
    "server": (
        '[provider]\nname = "outbox"\n[server]\nworker = 2\nport = "80"\n',
        ["[server] worker is not a setting", "did you mean workers?",
         "[server] port = '80' must be a whole number of at least 1"],
    ),
    "publish": (
        '[provider]\nname = "outbox"\n[publish]\nlanguage = "en"\nfeed_entries = "20"\n',
        ["[publish]: unknown key 'language'", "feed_entries must be a whole number of 1 or more"],
    ),
    "schedule": (
        '[provider]\nname = "outbox"\n[schedule]\nif_edit = "hold"\nif_edited = true\n',
        ["unknown setting schedule.if_edit", "did you mean if_edited?",
         'schedule.if_edited must be "send"'],
    ),
}


def _replace_provider(root: Path, text: str) -> None:
    """newsletter.toml with `text` instead of its [provider] table.

    Keys under a second [newsletter] header in `text` join the first one (TOML has one).
    """
    toml = root / "newsletter.toml"
    head = toml.read_text().split("[provider]")[0]
    if NEWSLETTER_KEYS in text:
        text = text.replace(NEWSLETTER_KEYS, "")
        head = head.replace("[newsletter]\n", NEWSLETTER_KEYS)
    toml.write_text(head + text)


def one_error(run: object) -> str:
    """The single `Error: …` line of a failed command (exit 2, no traceback)."""
    assert run.exit_code == 2, (run.stdout, run.stderr)  # type: ignore[attr-defined]
    assert "Traceback" not in run.stderr  # type: ignore[attr-defined]
    lines = run.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    return str(lines[0])


@pytest.mark.parametrize("table", sorted(CASES))
def test_a_wrong_key_and_a_wrong_type_are_reported_together(
    table: str, newsletter_dir: Path, cli: Callable[..., object]
) -> None:
    text, expected = CASES[table]
    _replace_provider(newsletter_dir, text)
    line = one_error(cli("drafts"))
    for part in expected:
        assert part in line, (part, line)


def test_every_table_wrong_at_once_is_one_error_naming_each(
    newsletter_dir: Path, cli: Callable[..., object]
) -> None:
    text = SMTP + "hots = 1\n" + "".join(
        body.split("\n", 2)[2] for name, (body, _) in CASES.items() if name != "provider")
    _replace_provider(newsletter_dir, text)
    line = one_error(cli("drafts"))
    for _, expected in CASES.values():
        assert expected[0] in line, (expected[0], line)


def test_a_bad_table_stops_a_send_before_anything_goes_out(
    newsletter_dir: Path, write_draft: Callable[..., Path], cli: Callable[..., object]
) -> None:
    # [webhooks] is used only by `serve`; it is still checked before a send starts.
    write_draft("hello.md", "---\nsubject: Hello\n---\nHello.\n")
    _replace_provider(newsletter_dir, '[provider]\nname = "outbox"\n[webhooks]\nses_enabled = 1\n')
    line = one_error(cli("send", "hello", "--to", "me@example.com", "--yes"))
    assert "webhooks.ses_enabled must be true or false" in line
    assert not (newsletter_dir / "outbox").exists()


def test_base_url_under_provider_says_where_it_belongs(
    newsletter_dir: Path, cli: Callable[..., object]
) -> None:
    _replace_provider(newsletter_dir, SMTP + 'base_url = "https://example.com/news"\n')
    line = one_error(cli("drafts"))
    assert "provider.base_url belongs in [newsletter]: move it there" in line


def test_a_provider_setting_under_newsletter_says_where_it_belongs(
    newsletter_dir: Path, cli: Callable[..., object]
) -> None:
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(toml.read_text().replace("[newsletter]\n", "[newsletter]\nrate = 5\n"))
    assert "newsletter.rate belongs in [provider]: move it there" in one_error(cli("drafts"))


def test_an_unknown_provider_name_is_an_error_at_load(
    newsletter_dir: Path, cli: Callable[..., object]
) -> None:
    _replace_provider(newsletter_dir, '[provider]\nname = "carrier-pigeon"\n')
    line = one_error(cli("drafts"))
    assert 'unknown provider "carrier-pigeon": known providers are ' in line
    assert "outbox" in line and "smtp" in line


@pytest.mark.parametrize(("provider", "extra", "expected"), [
    ("postmark", 'message_stream = 5\n', "[provider] message_stream = 5 must be text"),
    ("sendgrid", 'track_opens = "yes"\n', "[provider] track_opens = 'yes' must be true or false"),
    ("mailgun", 'domian = "mg.example.com"\n', "did you mean domain?"),
    ("mailgun", 'domian = "mg.example.com"\n', "provider.domain is missing: the mailgun "
                                                "provider needs it"),
    ("mailgun", 'domain = "mg.example.com"\nregion = "ap"\n',
     '[provider] region = "ap" is not one of us, eu'),
    ("postmark", 'endpoint = "api.postmarkapp.com"\n',
     'provider.endpoint = "api.postmarkapp.com" is not a URL'),
    ("resend", 'timeout = 0\n', "[provider] timeout = 0 must be a number of at least 0.1"),
    ("ses", 'regoin = "eu-west-1"\n', "did you mean region?"),
    ("outbox", 'folder = "sent"\n', "unknown setting provider.folder for the outbox provider"),
    ("smtp", 'security = "ssl"\n', '[provider] security = "ssl" is not one of starttls, tls, '
                                   'none'),
    ("smtp", 'pipelining = "sometimes"\n', '[provider] pipelining = "sometimes" is not one of '
                                           "auto (or true/false)"),
    ("smtp", 'retry_delay = -1\n', "[provider] retry_delay = -1 must be a number of at least 0"),
])
def test_each_builtin_provider_checks_its_declared_options(
    provider: str, extra: str, expected: str, tmp_path: Path
) -> None:
    (tmp_path / "newsletter.toml").write_text(
        DEFAULT_TOML.split("[provider]")[0] + f'[provider]\nname = "{provider}"\n' + extra)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert expected in str(info.value)


def test_declared_options_load_typed_and_untouched(tmp_path: Path) -> None:
    (tmp_path / "newsletter.toml").write_text(
        DEFAULT_TOML.split("[provider]")[0]
        + '[provider]\nname = "smtp"\nhost = "mail.example.com"\nport = 2525\n'
          'security = "STARTTLS"\npipelining = false\nrate = 5\nconcurrency = 2\n'
          "[server]\nport = 9000\n[bounces]\nsoft_limit = 2\n")
    settings = load_settings(tmp_path)
    assert settings.provider.name == "smtp"
    assert settings.provider.options == {"host": "mail.example.com", "port": 2525,
                                         "security": "STARTTLS", "pipelining": False}
    assert (settings.provider.rate, settings.provider.concurrency) == (5.0, 2)
    assert settings.web.port == 9000 and settings.web.configured
    assert settings.bounces.soft_limit == 2
    assert settings.mailbox is None and settings.schedule.if_edited == "send"
