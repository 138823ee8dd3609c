"""The fast path for plain addresses gives exactly what email-validator gives."""

from __future__ import annotations

import itertools
import random

import pytest
from email_validator import EmailNotValidError, validate_email

from newsletter.audience.subscribers import _fast_normalize, normalize_email
from newsletter.errors import SubscriberError

LOCALS = [
    "a", "A", "Liu", "first.last", "First.Last", "x+tag", "o'brien", "a_b-c", "1", "a.b.c",
    "!#$%&'*+/=?^_`{|}~-", ".a", "a.", "a..b", "", "Postmaster", "INFO", "info2", "Sales",
    "x" * 64, "x" * 65, "x" * 200, "a b", '"quoted"', "ü", "用户", "a\u0301", "(comment)a",
    "a@b", "tab\t", "é", "ß", "İ",
]
DOMAINS = [
    "example.com", "EXAMPLE.COM", "Example.Org", "sub.example.co.uk", "a-b.example.com",
    "-a.example.com", "a-.example.com", "a--b.example.com", "ab--cd.example.com",
    "xn--bcher-kva.example", "XN--BCHER-KVA.EXAMPLE", "bücher.example", "BÜCHER.example",
    "example", "example.c", "example.c0m", "example.123", "1.2.3.4", "[127.0.0.1]",
    "localhost", "a.localhost", "x.local", "x.test", "x.invalid", "x.onion", "x.arpa",
    "x.example", "example..com", ".example.com", "example.com.", "e_xample.com",
    ("a" * 63) + ".com", ("a" * 64) + ".com", ".".join(["a" * 50] * 5) + ".com",
    "ﬁ.example", "example.ｃｏｍ", "例え.テスト", "exa mple.com", "EXAMPLE.coM",
]


def reference(text: str) -> str | None:
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def corpus() -> list[str]:
    addresses = [f"{local}@{domain}" for local, domain in itertools.product(LOCALS, DOMAINS)]
    rnd = random.Random(3)
    alphabet = "aZ09.-_+@!'`{}|~ÄéΩ用\u200b"
    for _ in range(3000):  # random junk built from the characters that matter
        local = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 8)))
        domain = "".join(rnd.choice(alphabet.replace("@", "")) for _ in range(rnd.randint(0, 10)))
        addresses.append(f"{local}@{domain}.{rnd.choice(['com', 'co', 'x1', 'DE', 'a'])}")
    atext = "abcXYZ019!#$%&'*+/=?^_`{|}~-."
    host = "abzAZ09-"
    for _ in range(3000):  # plausible ASCII addresses: where the fast path has to be right
        local = "".join(rnd.choice(atext) for _ in range(rnd.randint(1, 10)))
        labels = ["".join(rnd.choice(host) for _ in range(rnd.randint(1, 6)))
                  for _ in range(rnd.randint(1, 3))]
        tld = rnd.choice(["com", "ORG", "io", "x", "c0", "test", "Local", "uk"])
        addresses.append(f"{local}@{'.'.join(labels)}.{tld}")
    return addresses


def test_fast_path_agrees_with_email_validator_on_tricky_addresses() -> None:
    addresses = corpus()
    fast_used = 0
    for text in addresses:
        fast = _fast_normalize(text)
        if fast is not None:
            fast_used += 1
            assert fast == reference(text), text
    assert fast_used > 800  # the fast path really is exercised


def test_normalize_email_equals_email_validator_everywhere() -> None:
    for text in corpus():
        expected = reference(text)
        if expected is None:
            with pytest.raises(SubscriberError):
                normalize_email(text)
        else:
            assert normalize_email(text) == expected, text


def test_case_insensitive_mailbox_names_are_lower_cased_like_email_validator() -> None:
    assert normalize_email("Postmaster@Example.com") == "postmaster@example.com"
    assert normalize_email("Liu@Example.com") == "Liu@example.com"
