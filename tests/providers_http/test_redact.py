"""newsletter.redact: one function hides a secret in every form a server echoes it back in."""

from __future__ import annotations

import base64

import pytest

from newsletter.redact import REDACTED, Redactor

SECRET = "s3cr3t/Key+With=Odd&Chars"


@pytest.mark.parametrize("prefix", ["", "a", "ab", "abc", "user:", "\0user\0"])
def test_base64_of_a_longer_text_holding_the_secret_is_hidden(prefix: str) -> None:
    redact = Redactor()
    redact.add(SECRET)
    blob = base64.b64encode(f"{prefix}{SECRET}!tail".encode()).decode()

    hidden = redact(f"echo: {blob}")

    assert REDACTED in hidden
    left = hidden.removeprefix("echo: ").replace(REDACTED, "\0")
    # What is left around the mark is a few characters, never enough to decode the secret.
    assert all(len(part) < 12 for part in left.split("\0")), hidden


def test_auth_plain_and_basic_forms_of_a_login_are_hidden() -> None:
    redact = Redactor()
    redact.add_login("writer@example.com", "hunter2-long")
    for text in ("\0writer@example.com\0hunter2-long", "writer@example.com:hunter2-long"):
        blob = base64.b64encode(text.encode()).decode()
        assert blob not in redact(f"535 {blob}")
        assert REDACTED in redact(f"535 {blob}")


def test_short_values_and_ordinary_text_are_left_alone() -> None:
    redact = Redactor()
    redact.add("abc", None, "")
    assert redact("abc abc") == "abc abc"
    redact.add(SECRET)
    assert redact("nothing secret here") == "nothing secret here"
    assert redact(SECRET.upper() + " and " + SECRET.encode().hex().upper()) == (
        f"{REDACTED} and {REDACTED}")
