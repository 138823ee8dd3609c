"""`newsletter serve` options, the embeddable form, and the signed confirmation tokens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from newsletter.compose import tokens
from newsletter.settings import load_settings


def test_embed_prints_the_form_posting_to_base_url(cli: Callable, newsletter_dir: Path) -> None:
    with (newsletter_dir / "newsletter.toml").open("a") as f:
        f.write('\n[subscribe]\ntopics = ["essays", "links & <notes>"]\n')
    run = cli("serve", "--embed")
    assert run.exit_code == 0, run.stderr
    out = run.stdout
    assert 'action="https://example.com/news/subscribe"' in out
    for field in ('name="email"', 'name="name"', 'name="topics"', 'name="website"'):
        assert field in out
    assert "links &amp; &lt;notes&gt;" in out and "<notes>" not in out


def test_bad_server_settings_stop_serve_with_one_line(cli: Callable, newsletter_dir: Path) -> None:
    with (newsletter_dir / "newsletter.toml").open("a") as f:
        f.write('\n[subscribe]\nconfirmations_per_day = "lots"\n')
    run = cli("serve", "--port", "1")
    assert run.exit_code != 0
    assert run.stderr.startswith("Error: ") and "confirmations_per_day" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_confirmation_tokens_carry_purpose_identity_and_expiry(newsletter_dir: Path) -> None:
    settings = load_settings(newsletter_dir)
    token = tokens.make_token(settings, tokens.CONFIRM, 7, "ann@example.com")
    assert tokens.read_token(settings, tokens.CONFIRM, token) == (
        7, tokens.address_hash("ann@example.com"))
    assert "ann" not in token  # no readable address in the link
    assert tokens.read_token(settings, "manage", token) is None  # another purpose
    other = settings.__class__(**{**settings.__dict__, "base_url": "https://other.example"})
    assert tokens.read_token(other, tokens.CONFIRM, token) is None  # another newsletter
    assert tokens.read_token(settings, tokens.CONFIRM, token, max_age=-1) is None  # expired
    # A changed signature character (not the last one: its low bits may be padding).
    forged = token[:-4] + ("A" if token[-4] != "A" else "B") + token[-3:]
    assert tokens.read_token(settings, tokens.CONFIRM, forged) is None
