"""The text part reads well on its own."""

from __future__ import annotations

import textwrap

from newsletter.compose.markdown import render_markdown
from newsletter.compose.plaintext import html_to_text


def text_of(markdown: str) -> str:
    return html_to_text(render_markdown(textwrap.dedent(markdown).lstrip("\n")))


def test_headings_lists_links_and_footnotes():
    text = text_of("""
        ## Section

        See [the docs](https://example.com/docs) or <https://example.com>.
        Mail [me](mailto:me@example.com).

        - one
          - nested
        - two

        1. first
        2. second

        A claim[^1].

        [^1]: The source, with a [link](https://example.org).
        """)
    assert "Section\n-------" in text
    assert "the docs (https://example.com/docs)" in text
    assert "or https://example.com." in text
    assert "me (me@example.com)" in text
    assert "- one\n  - nested\n- two" in text
    assert "1. first\n2. second" in text
    assert "A claim[1]." in text
    assert "[1] The source, with a link (https://example.org)." in text
    assert "↩" not in text and "<" not in text


def test_code_quotes_tables_and_entities():
    text = text_of("""
        > Quoted “text” & more

        ```
        x = 1 < 2
        ```

        | Year | Count |
        |------|------:|
        | 2026 | 12 |
        """)
    assert "> Quoted “text” & more" in text
    assert "    x = 1 < 2" in text
    assert "Year | Count\n-----|------\n2026 | 12" in text


def test_long_paragraphs_wrap_but_urls_stay_whole():
    url = "https://example.com/" + "a" * 90
    text = text_of("word " * 40 + f"[x]({url})\n")
    assert all(len(line) <= 72 for line in text.splitlines() if url not in line)
    assert url in text


def test_line_breaks_stay_line_breaks():
    text = text_of("""
        Roses are red,\\
        violets are blue.

        Yours,\\
        Liu
        """)
    assert text == "Roses are red,\nviolets are blue.\n\nYours,\nLiu\n"
