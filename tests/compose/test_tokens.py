"""Link tokens: opaque, stable, bound to one newsletter and one kind, refused when forged.

The golden tokens below were made by turn 3's code (before v3) with GOLDEN_SECRET: they
are in readers' mailboxes and must keep working.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from newsletter.compose.tokens import (
    Kind,
    Link,
    TokenMaker,
    address_hash,
    read_token,
    unsubscribe_token,
    unsubscribe_url,
    verify_unsubscribe_token,
)
from newsletter.settings import load_settings
from tests.legacy_tokens import unsubscribe_token as legacy_token

SECRET = b"s" * 48
OURS, THEIRS = "https://ours.example/news", "https://theirs.example"

GOLDEN_SECRET = "golden-secret-for-tokens-made-by-turn-3-code-0123456789"
GOLDEN_BASE = "https://golden.example/news"
GOLDEN_V1 = {
    "reader@example.com": "18f7t90jOp2isoZnD0p9Rr-FJd9X8TSsu7u0cwXP5L4J3PQ",
    "zoë.ünicode@bücher.example": "1pxxby5tvQjMdpyhHVH7l1IXQg-NN9IKbX9ox024jxjANC8VmJX4Y81x0SMlQ",
}
GOLDEN_V2 = {  # bound to GOLDEN_BASE
    "reader@example.com": "21IeSgAkCZjI019YcNGw1N1fNA6oeZ48W8E9qR6bAYsleqA",
    "zoë.ünicode@bücher.example": "2jcgtrh9FKG12BnBSpDzaoVSz5omfQ7Vfz2Ak3MH8Y_G1wammsMxxfhdHNMXm",
}
# itsdangerous, subscriber 7 / ann@example.com, newsletter "Golden Notes" at GOLDEN_BASE.
GOLDEN_CONFIRM = "WzcsIjcxZDRmNTVmNzJmYTEyOGQiXQ.axcFxA._wMpQzSz9AVPi8Oe2WqGxJZrfqY"
GOLDEN_MANAGE = "WzcsIjcxZDRmNTVmNzJmYTEyOGQiXQ.axcFxA.gzmseeE9oXZphXS6RteUnjGGyA4"
# The same, subscriber 12 / bo@example.org, for a newsletter with no base_url (its name binds).
GOLDEN_CONFIRM_BY_NAME = "WzEyLCJiY2FiOGFiZDgyN2JkY2RkIl0.axcFxg.yfGeMVUij6Tmw3xEgX3fl8lKUeg"


@pytest.mark.parametrize("key", ["reader@example.com", "Zoë.Ünicode@bücher.example", "42", ""])
def test_round_trip(key):
    token = unsubscribe_token(SECRET, key, OURS)
    assert token.startswith("3")
    assert verify_unsubscribe_token(SECRET, token, OURS) == key
    old = legacy_token(SECRET, key)
    assert verify_unsubscribe_token(SECRET, old, OURS) == key


def test_opaque_url_safe_short_and_stable():
    token = unsubscribe_token(SECRET, "reader@example.com", OURS)
    assert token == unsubscribe_token(SECRET, "reader@example.com", OURS)  # one link per reader
    assert "reader" not in token and "example" not in token and "@" not in token
    decoded = base64.urlsafe_b64decode(token[1:] + "=" * (-len(token[1:]) % 4))
    assert b"reader" not in decoded
    assert all(c.isalnum() or c in "-_" for c in token)
    # 16-byte tag + 1 kind byte + the address, base64: one character longer than v2's.
    assert len(token) == len(legacy_token(SECRET, "reader@example.com", OURS)) + 1 == 48
    url = unsubscribe_url("https://example.com/news/", token)
    assert url == f"https://example.com/news/unsubscribe?token={token}"


def test_different_subscribers_get_unrelated_tokens():
    a = unsubscribe_token(SECRET, "a@example.com", OURS)
    b = unsubscribe_token(SECRET, "b@example.com", OURS)
    assert a != b and a[:12] != b[:12]


@pytest.mark.parametrize("version", ["1", "3"])
def test_forged_altered_or_truncated_tokens_are_refused(version):
    token = (unsubscribe_token(SECRET, "reader@example.com", OURS) if version == "3"
             else legacy_token(SECRET, "reader@example.com"))
    assert verify_unsubscribe_token(b"another secret" * 3, token, OURS) is None
    for i in range(1, len(token)):
        flipped = "A" if token[i] != "A" else "B"
        assert verify_unsubscribe_token(SECRET, token[:i] + flipped + token[i + 1 :], OURS) is None
    for cut in (1, 2, len(token) // 2, 17):
        assert verify_unsubscribe_token(SECRET, token[:-cut], OURS) is None
    assert verify_unsubscribe_token(SECRET, token + "A", OURS) is None
    for other in "1234":
        if other != version:
            assert verify_unsubscribe_token(SECRET, other + token[1:], OURS) is None
    for junk in ["", "1", "3", "1!!!", "3!!!", "1" + "A" * 30, "3" + "A" * 30, "x" * 5000]:
        assert verify_unsubscribe_token(SECRET, junk, OURS) is None


def test_a_token_for_one_subscriber_cannot_be_turned_into_another():
    # Splicing the tag of one token onto the ciphertext of another fails.
    for make, version in ((lambda k: unsubscribe_token(SECRET, k, OURS), "3"),
                          (lambda k: legacy_token(SECRET, k), "1")):
        a = base64.urlsafe_b64decode(make("aaaa@example.com")[1:] + "==")
        b = base64.urlsafe_b64decode(make("bbbb@example.com")[1:] + "==")
        mixed = version + base64.urlsafe_b64encode(a[:16] + b[16:]).rstrip(b"=").decode()
        assert verify_unsubscribe_token(SECRET, mixed, OURS) is None


def test_tokens_are_bound_to_one_newsletter():
    # Two newsletters sharing a NEWSLETTER_SECRET used to accept each other's links.
    token = unsubscribe_token(SECRET, "reader@example.com", OURS)
    assert verify_unsubscribe_token(SECRET, token, OURS) == "reader@example.com"
    assert verify_unsubscribe_token(SECRET, token, "https://OURS.example/news/") == (
        "reader@example.com")
    assert verify_unsubscribe_token(SECRET, token, THEIRS) is None
    assert verify_unsubscribe_token(SECRET, token) is None  # an unbound check refuses it
    v2 = legacy_token(SECRET, "reader@example.com", OURS)
    assert verify_unsubscribe_token(SECRET, v2, OURS) == "reader@example.com"
    assert verify_unsubscribe_token(SECRET, v2, THEIRS) is None
    assert verify_unsubscribe_token(SECRET, v2) is None  # unbound check refuses v2


def test_links_sent_before_binding_still_work_unless_refused():
    old = legacy_token(SECRET, "reader@example.com")  # v1, as issues sent before carry
    assert old.startswith("1")
    assert verify_unsubscribe_token(SECRET, old) == "reader@example.com"
    assert verify_unsubscribe_token(SECRET, old, OURS) == "reader@example.com"
    assert verify_unsubscribe_token(SECRET, old, OURS, accept_legacy=False) is None


def test_a_token_says_its_kind_and_another_kind_is_refused():
    tokens = TokenMaker(SECRET, OURS)
    unsub = tokens.make("reader@example.com")
    manage = tokens.make("reader@example.com", Kind.MANAGE)
    assert manage != unsub
    assert tokens.read(manage) == Link(Kind.MANAGE, "reader@example.com")
    assert tokens.verify(manage, Kind.MANAGE) == "reader@example.com"
    assert tokens.verify(manage) is None  # not an unsubscribe link
    assert verify_unsubscribe_token(SECRET, manage, OURS) is None
    assert tokens.verify(unsub, Kind.MANAGE) is None
    # v1/v2 were only ever unsubscribe tokens.
    assert tokens.verify(legacy_token(SECRET, "reader@example.com"), Kind.MANAGE) is None
    with pytest.raises(ValueError, match="timed"):
        tokens.make("reader@example.com", Kind.CONFIRM)  # a timed kind: make_token


def test_a_campaign_id_round_trips():
    tokens = TokenMaker(SECRET, OURS)
    token = tokens.make("reader@example.com", campaign=1234567)
    assert tokens.read(token) == Link(Kind.UNSUBSCRIBE, "reader@example.com", 1234567)
    assert tokens.verify(token) == "reader@example.com"
    assert token == tokens.make("reader@example.com", campaign=1234567)
    assert token != tokens.make("reader@example.com", campaign=1234568)
    assert token != tokens.make("reader@example.com")
    assert TokenMaker(SECRET, THEIRS).read(token) is None
    assert tokens.read(tokens.make("", Kind.MANAGE, 0)) == Link(Kind.MANAGE, "", 0)
    with pytest.raises(ValueError):
        tokens.make("a\x00b@example.com")


def test_golden_unsubscribe_tokens_from_sent_issues_still_verify():
    secret = GOLDEN_SECRET.encode()
    for key, token in GOLDEN_V1.items():
        assert legacy_token(secret, key) == token  # the test maker is turn 3's
        assert verify_unsubscribe_token(secret, token) == key
        assert verify_unsubscribe_token(secret, token, GOLDEN_BASE) == key
        assert verify_unsubscribe_token(secret, token, GOLDEN_BASE, accept_legacy=False) is None
    for key, token in GOLDEN_V2.items():
        assert legacy_token(secret, key, GOLDEN_BASE) == token
        assert verify_unsubscribe_token(secret, token, GOLDEN_BASE) == key
        assert verify_unsubscribe_token(secret, token, GOLDEN_BASE + "/") == key
        assert verify_unsubscribe_token(secret, token, THEIRS) is None
        assert verify_unsubscribe_token(SECRET, token, GOLDEN_BASE) is None


def _golden_settings(root: Path, base_url: str | None, monkeypatch: pytest.MonkeyPatch):
    root.mkdir()
    toml = '[newsletter]\nname = "Golden Notes"\nfrom = "Ada <ada@example.com>"\n'
    if base_url:
        toml += f'base_url = "{base_url}"\n'
    (root / "newsletter.toml").write_text(toml)
    monkeypatch.setenv("NEWSLETTER_SECRET", GOLDEN_SECRET)
    return load_settings(root)


def test_golden_confirm_and_manage_links_still_verify(tmp_path, monkeypatch):
    settings = _golden_settings(tmp_path / "ours", GOLDEN_BASE, monkeypatch)
    ann = (7, address_hash("ann@example.com"))
    # The golden tokens were stamped when made: check the signature, not the age.
    assert read_token(settings, "confirm", GOLDEN_CONFIRM, max_age=None) == ann
    assert read_token(settings, Kind.CONFIRM, GOLDEN_CONFIRM, max_age=None) == ann
    assert read_token(settings, Kind.MANAGE, GOLDEN_MANAGE, max_age=None) == ann
    # Kind-swapped, expired, altered, truncated: refused.
    assert read_token(settings, Kind.MANAGE, GOLDEN_CONFIRM, max_age=None) is None
    assert read_token(settings, Kind.CONFIRM, GOLDEN_MANAGE, max_age=None) is None
    assert read_token(settings, Kind.CONFIRM, GOLDEN_CONFIRM, max_age=-1) is None  # expired
    assert read_token(settings, Kind.CONFIRM, GOLDEN_CONFIRM[:-1] + "x", max_age=None) is None
    assert read_token(settings, Kind.CONFIRM, GOLDEN_CONFIRM[:-3], max_age=None) is None
    assert verify_unsubscribe_token(settings.secret_key(), GOLDEN_CONFIRM, GOLDEN_BASE) is None
    # Another newsletter (same secret, another base_url) refuses them.
    other = _golden_settings(tmp_path / "theirs", THEIRS, monkeypatch)
    assert read_token(other, Kind.CONFIRM, GOLDEN_CONFIRM, max_age=None) is None
    by_name = _golden_settings(tmp_path / "by-name", None, monkeypatch)
    assert read_token(by_name, Kind.CONFIRM, GOLDEN_CONFIRM_BY_NAME, max_age=None) == (
        12, address_hash("bo@example.org"))
    assert read_token(settings, Kind.CONFIRM, GOLDEN_CONFIRM_BY_NAME, max_age=None) is None
