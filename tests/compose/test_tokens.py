"""Unsubscribe tokens: opaque, stable, and refused when forged or altered."""

from __future__ import annotations

import base64

import pytest

from newsletter.compose.tokens import unsubscribe_token, unsubscribe_url, verify_unsubscribe_token

SECRET = b"s" * 48


@pytest.mark.parametrize("key", ["reader@example.com", "Zoë.Ünicode@bücher.example", "42", ""])
def test_round_trip(key):
    token = unsubscribe_token(SECRET, key)
    assert verify_unsubscribe_token(SECRET, token) == key


def test_opaque_url_safe_and_stable():
    token = unsubscribe_token(SECRET, "reader@example.com")
    assert token == unsubscribe_token(SECRET, "reader@example.com")  # old links keep working
    assert "reader" not in token and "example" not in token and "@" not in token
    decoded = base64.urlsafe_b64decode(token[1:] + "=" * (-len(token[1:]) % 4))
    assert b"reader" not in decoded
    assert all(c.isalnum() or c in "-_" for c in token)
    url = unsubscribe_url("https://example.com/news/", token)
    assert url == f"https://example.com/news/unsubscribe?token={token}"


def test_different_subscribers_get_unrelated_tokens():
    a = unsubscribe_token(SECRET, "a@example.com")
    b = unsubscribe_token(SECRET, "b@example.com")
    assert a != b and a[:12] != b[:12]


def test_forged_or_altered_tokens_are_refused():
    token = unsubscribe_token(SECRET, "reader@example.com")
    assert verify_unsubscribe_token(b"another secret" * 3, token) is None
    for i in range(1, len(token)):
        flipped = "A" if token[i] != "A" else "B"
        assert verify_unsubscribe_token(SECRET, token[:i] + flipped + token[i + 1 :]) is None
    assert verify_unsubscribe_token(SECRET, token[:-1]) is None
    assert verify_unsubscribe_token(SECRET, token + "A") is None
    assert verify_unsubscribe_token(SECRET, "2" + token[1:]) is None
    for junk in ["", "1", "1!!!", "1" + "A" * 30, "x" * 5000]:
        assert verify_unsubscribe_token(SECRET, junk) is None


def test_a_token_for_one_subscriber_cannot_be_turned_into_another():
    # Splicing the tag of one token onto the ciphertext of another fails.
    a = base64.urlsafe_b64decode(unsubscribe_token(SECRET, "aaaa@example.com")[1:] + "==")
    b = base64.urlsafe_b64decode(unsubscribe_token(SECRET, "bbbb@example.com")[1:] + "==")
    mixed = "1" + base64.urlsafe_b64encode(a[:16] + b[16:]).rstrip(b"=").decode()
    assert verify_unsubscribe_token(SECRET, mixed) is None


def test_tokens_are_bound_to_one_newsletter():
    # Two newsletters sharing a NEWSLETTER_SECRET used to accept each other's links.
    ours, theirs = "https://ours.example/news", "https://theirs.example"
    token = unsubscribe_token(SECRET, "reader@example.com", ours)
    assert token.startswith("2")
    assert verify_unsubscribe_token(SECRET, token, ours) == "reader@example.com"
    assert verify_unsubscribe_token(SECRET, token, "https://OURS.example/news/") == (
        "reader@example.com")
    assert verify_unsubscribe_token(SECRET, token, theirs) is None
    assert verify_unsubscribe_token(SECRET, token) is None  # unbound check refuses v2


def test_links_sent_before_binding_still_work_unless_refused():
    old = unsubscribe_token(SECRET, "reader@example.com")  # v1, as issues sent before carry
    assert old.startswith("1")
    ours = "https://ours.example/news"
    assert verify_unsubscribe_token(SECRET, old, ours) == "reader@example.com"
    assert verify_unsubscribe_token(SECRET, old, ours, accept_legacy=False) is None
