"""Hosting is explicit in settings: `[server] url` chooses where reader links go.

Three ways (docs/deploy.md): no url (serve at base_url), a URL (the archive on a static
host at base_url, serve at that URL), "none" (no server: unsubscribe by mailto).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from newsletter.compose.issue import build_issue
from newsletter.compose.message import Recipient, personalize
from newsletter.compose.tokens import verify_unsubscribe_token
from newsletter.errors import ConfigError
from newsletter.settings import hosting_warnings, load_settings
from newsletter.writer.check import check_draft
from tests.conftest import DEFAULT_TOML, Run

DRAFT = "---\ntitle: Hello\npreheader: A line\n---\nHello {{ subscriber.name }}.\n"


def _letter(root: Path, server: str, newsletter: str = "") -> Path:
    toml = DEFAULT_TOML.replace("[provider]", f"{newsletter}\n[provider]")
    (root / "newsletter.toml").write_text(f"{toml}\n[server]\n{server}\n")
    (root / "drafts" / "hello.md").write_text(DRAFT)
    return root / "drafts" / "hello.md"


def _message(root: Path, draft: Path):  # noqa: ANN202
    settings = load_settings(root)
    issue = build_issue(settings, draft)
    reader = Recipient("ann@example.org", "Ann", {}, key="ann@example.org")
    return settings, personalize(issue, reader, key="1", settings=settings)


def test_by_default_reader_links_go_to_base_url(newsletter_dir: Path) -> None:
    settings, message = _message(newsletter_dir, _letter(newsletter_dir, ""))
    assert settings.web.hosting == "serve" and settings.server_url == settings.base_url
    assert message.unsubscribe_url.startswith("https://example.com/news/unsubscribe?token=")
    assert message.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"


def test_a_server_url_takes_reader_links_and_tokens_stay_bound_to_base_url(
        newsletter_dir: Path) -> None:
    draft = _letter(newsletter_dir, 'url = "https://news-api.example.com/"')
    settings, message = _message(newsletter_dir, draft)
    assert settings.web.hosting == "static"
    assert settings.server_url == "https://news-api.example.com"
    for url in (message.unsubscribe_url, message.manage_url):
        assert url and url.startswith("https://news-api.example.com/")
    assert f"<{message.unsubscribe_url}>" in message.header("List-Unsubscribe")
    assert "https://example.com/news/hello/" in message.html  # "View online": the archive
    token = parse_qs(urlsplit(message.unsubscribe_url).query)["token"][0]
    # Bound to the newsletter's identity, base_url: links already mailed keep working.
    key = verify_unsubscribe_token(settings.secret_key(), token, "https://example.com/news",
                                   accept_legacy=False)
    assert key == "ann@example.org"


def test_no_server_unsubscribes_by_mailto_only(newsletter_dir: Path) -> None:
    draft = _letter(newsletter_dir, 'url = "none"',
                    'unsubscribe_mailto = "leave@example.com"')
    settings, message = _message(newsletter_dir, draft)
    assert settings.web.hosting == "none" and settings.server_url is None
    assert message.unsubscribe_url is None and message.manage_url is None
    assert message.header("List-Unsubscribe").startswith(
        "<mailto:leave@example.com?subject=unsubscribe%20")
    assert message.header("List-Unsubscribe-Post") is None
    assert 'href="mailto:leave@example.com?subject=unsubscribe"' in message.html
    assert "/manage" not in message.html and "/unsubscribe?" not in message.html
    [warning] = hosting_warnings(settings)
    assert "5,000 messages a day" in warning and "RFC 8058" in warning
    findings = [f for f in check_draft(settings, draft).findings if f.code == "no-server"]
    assert [f.severity for f in findings] == ["warning"]
    assert "no page to manage" in findings[0].message and "sign-up" in findings[0].message


@pytest.mark.parametrize(("server", "newsletter", "said"), [
    ('url = "news-api.example.com"', "",
     "[server] url = 'news-api.example.com' must be the address `newsletter serve` answers at"),
    ("url = 3", "", "[server] url = 3 must be"),
    ('url = "none"', "",
     '[server] url = "none" (no server) needs [newsletter] unsubscribe_mailto'),
])
def test_a_wrong_server_url_is_an_error_at_load(
        newsletter_dir: Path, server: str, newsletter: str, said: str) -> None:
    _letter(newsletter_dir, server, newsletter)
    with pytest.raises(ConfigError) as raised:
        load_settings(newsletter_dir)
    assert said in str(raised.value)


def test_a_server_url_needs_base_url_for_the_archive(newsletter_dir: Path) -> None:
    toml = DEFAULT_TOML.replace('base_url = "https://example.com/news"\n', "")
    (newsletter_dir / "newsletter.toml").write_text(
        f'{toml}\n[server]\nurl = "https://news-api.example.com"\n')
    with pytest.raises(ConfigError, match=r"\[server\] url puts reader links on their own "
                                          r"server, so the archive needs \[newsletter\] base_url"):
        load_settings(newsletter_dir)


def test_serve_is_refused_when_the_settings_say_no_server_runs(
        newsletter_dir: Path, cli: Callable[..., Run]) -> None:
    _letter(newsletter_dir, 'url = "none"', 'unsubscribe_mailto = "leave@example.com"')
    for args in (("serve",), ("serve", "--embed")):
        out = cli(*args)
        assert out.exit_code != 0 and out.exception is None
        assert out.stderr.startswith("Error: ") and 'url = "none" says no server' in out.stderr
