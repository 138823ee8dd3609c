"""Filters on reader values act on each reader's value, or are refused (issue 13)."""

from __future__ import annotations

import pytest

from newsletter.compose.issue import build_issue
from newsletter.compose.message import Recipient, personalize
from newsletter.errors import ContentError
from newsletter.settings import load_settings


def message_for(write_draft, body: str, **attributes: str):
    path = write_draft("2026-05-06-f.md", "---\ntitle: T\n---\n" + body)
    settings = load_settings()
    issue = build_issue(settings, path)
    reader = Recipient("ana@example.com", name="Ana", attributes=attributes)
    return personalize(issue, reader, key="1", settings=settings)


def test_urlencode_applies_to_each_readers_value(write_draft):
    m = message_for(write_draft, "[Weather](https://w.example/?city={{ subscriber.city | "
                    "urlencode }}) and {{ subscriber.city | urlencode }}\n",
                    city="São Paulo & co")
    assert 'href="https://w.example/?city=S%C3%A3o%20Paulo%20%26%20co"' in m.html
    assert "S%C3%A3o%20Paulo%20%26%20co" in m.text


def test_a_reader_value_in_a_link_is_always_percent_encoded(write_draft):
    m = message_for(write_draft, "[Map](https://maps.example/?q={{ subscriber.city }}) "
                    "in {{ subscriber.city }}\n", city='Rome&admin=1"><script>')
    assert 'href="https://maps.example/?q=Rome%26admin%3D1%22%3E%3Cscript%3E"' in m.html
    # Outside the attribute the value is text, HTML-escaped as always.
    assert "in Rome&amp;admin=1&quot;&gt;&lt;script&gt;" in m.html


@pytest.mark.parametrize("expr, name", [
    ("subscriber.city | truncate(3)", "truncate"),
    ('subscriber.city | replace("a", "b")', "replace"),
    ("subscriber.city | length", "length"),
    ("subscriber.city | first", "first"),
    ("subscriber.name | wordcount", "wordcount"),
])
def test_other_filters_on_reader_values_are_refused_naming_file_line_and_filter(
        write_draft, expr, name):
    path = write_draft("2026-05-06-f.md", "---\ntitle: T\n---\nHi\n\n{{ " + expr + " }}\n")
    with pytest.raises(ContentError) as err:
        build_issue(load_settings(), path)
    message = str(err.value)
    assert "2026-05-06-f.md:6:" in message
    assert f"the filter `{name}` on subscriber." in message
    assert "default, upper" in message and "urlencode" in message


def test_indexing_a_reader_value_is_refused(write_draft):
    path = write_draft("2026-05-06-f.md", "---\ntitle: T\n---\n{{ subscriber.city[0] }}\n")
    with pytest.raises(ContentError, match=r"f\.md:4: indexing on subscriber\.city"):
        build_issue(load_settings(), path)


def test_filters_on_plain_values_still_work(write_draft):
    m = message_for(write_draft, '{{ "abcdef" | truncate(5, True, "…", 0) }} '
                    "{{ [1, 2, 3] | length }} {{ subscriber.name | default('x') | upper }}\n")
    assert "abcd… 3 ANA" in m.text


def test_str_methods_on_a_reader_value_are_refused(write_draft):
    body = "---\ntitle: T\n---\n{{ subscriber.city.replace('a', 'b') }}\n"
    path = write_draft("2026-05-06-f.md", body)
    refused = r"f\.md:4: the method `replace\(\)` on subscriber\.city"
    with pytest.raises(ContentError, match=refused):
        build_issue(load_settings(), path)
