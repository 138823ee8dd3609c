"""Markdown as writers from Substack, Hugo, Jekyll, Obsidian and GitHub expect it."""

from __future__ import annotations

import re
import textwrap

from newsletter.compose.markdown import render_markdown


def md(text: str) -> str:
    return render_markdown(textwrap.dedent(text).lstrip("\n"))


def squash(html: str) -> str:
    return re.sub(r">\s+<", "><", html).strip()


def test_list_right_after_a_paragraph_is_a_list():
    html = squash(md("""
        Three things:
        - one
        - two
        """))
    assert html == "<p>Three things:</p><ul><li>one</li><li>two</li></ul>"


def test_ordered_list_after_a_paragraph_must_start_at_one():
    assert "<ol>" in md("Steps:\n1. first\n2. second\n")
    # CommonMark: "2024." in running text is not a list.
    html = md("It happened in\n2024. What a year.\n")
    assert "<ol" not in html and "2024. What a year." in html


def test_nested_lists_indented_by_two_spaces():
    html = squash(md("""
        - a
          - b
            - c
        - d
        """))
    assert html == "<ul><li>a<ul><li>b<ul><li>c</li></ul></li></ul></li><li>d</li></ul>"


def test_nested_lists_indented_by_four_spaces():
    html = squash(md("""
        1. a
            1. b
                - c
        2. d
        """))
    assert html == "<ol><li>a<ol><li>b<ul><li>c</li></ul></li></ol></li><li>d</li></ol>"


def test_nested_list_under_a_numbered_item_indented_by_its_width():
    html = squash(md("1. a\n   - b\n2. c\n"))
    assert html == "<ol><li>a<ul><li>b</li></ul></li><li>c</li></ol>"


def test_item_continuation_paragraph_with_two_spaces():
    html = squash(md("- a\n\n  more about a\n- b\n"))
    assert "<li><p>a</p><p>more about a</p></li>" in html


def test_a_nested_list_after_a_blank_line_lets_the_next_item_go():
    # CommonMark nesting (under the item's text) with a blank line before the nested list:
    # Python-Markdown hands the indented block to the item above whole, next item and all.
    html = squash(md("""
        1. Ship small things

           - every week
        2. Write it down
        """))
    assert html == ("<ol><li><p>Ship small things</p><ul><li>every week</li></ul></li>"
                    "<li><p>Write it down</p></li></ol>")
    html = squash(md("""
        - one
        - two

          1. a
          2. b
        - three
        """))
    assert html == ("<ul><li>one</li><li><p>two</p><ol><li>a</li><li>b</li></ol></li>"
                    "<li><p>three</p></li></ul>")


def test_the_same_with_four_spaces_and_deeper():
    html = squash(md("""
        - one

            - two

                - three
            - four
        - five
        """))
    assert html == ("<ul><li><p>one</p><ul><li><p>two</p><ul><li>three</li></ul></li>"
                    "<li><p>four</p></li></ul></li><li><p>five</p></li></ul>")


def test_an_item_after_an_items_later_paragraph_or_code():
    html = squash(md("1. a\n\n   more about a\n2. b\n"))
    assert html == "<ol><li><p>a</p><p>more about a</p></li><li><p>b</p></li></ol>"
    html = squash(md("- a\n\n      code in a\n- b\n"))
    assert html.count("<li>") == 2 and html.endswith("<li><p>b</p></li></ul>")
    assert "code in a" in html and "- b" not in html


def test_hard_wrapped_items_stay_a_tight_list():
    for text in ("- a\n  more a\n- b\n", "1. a\n   more a\n2. b\n", "- a\nlazy\n- b\n"):
        html = squash(md(text))
        assert html.count("<li>") == 2 and "<p>" not in html, text


def test_an_ordered_item_right_after_a_bullet_starts_a_new_list():
    html = squash(md("- a\n1. b\n2. c\n"))
    assert html == "<ul><li>a</li></ul><ol><li>b</li><li>c</li></ol>"


def test_code_indented_by_four_spaces_outside_lists_stays_code():
    html = squash(md("Text.\n\n    - not a list\n    1. nor this\n\n- a list\n"))
    assert "<pre" in html and "- not a list\n1. nor this" in html
    assert html.endswith("<ul><li>a list</li></ul>")


def test_a_backslash_at_the_end_of_a_line_is_a_line_break():
    html = md("Roses are red,\\\nviolets are blue.\n\n- Yours,\\\n  Liu\n")
    assert html.startswith("<p>Roses are red,<br>\nviolets are blue.</p>")
    assert "<li>Yours,<br>" in html
    assert md("Two spaces  \nstill work.\n") == "<p>Two spaces<br>\nstill work.</p>"
    # An escaped backslash is a backslash; in code, and at a paragraph's end, it stays.
    assert md("C:\\\\\nD:\n") == "<p>C:\\\nD:</p>"
    assert "<code>a\\</code>" in md("`a\\` b\n") and md("end\\\n") == "<p>end\\</p>"
    assert "a\\\nb" in md("```\na\\\nb\n```\n")


def test_footnotes_with_a_reference_in_brackets_and_a_list_inside():
    html = md("""
        A claim[[^1]] and another[^note].

        [^1]: Sources:
            - one
            - two

        [^note]: Plain note.
        """)
    assert re.search(r'\[<sup id="fnref:1"><a class="footnote-ref" href="#fn:1">1</a></sup>\]',
                     html)
    footnote_1 = html[html.index('<li id="fn:1">'):html.index('<li id="fn:note">')]
    assert "<ul>" in footnote_1 and "<li>one</li>" in footnote_1
    assert 'href="#fn:note"' in html


def test_table():
    html = squash(md("""
        | a | b |
        |---|--:|
        | 1 | 2 |
        """))
    assert "<table><thead><tr><th>a</th>" in html
    assert '<td style="text-align: right;">2</td>' in html


def test_fenced_code_highlighted_with_inline_styles():
    html = md("""
        ```python
        def f():
            return "x"
        ```
        """)
    assert "<pre" in html and 'class="' not in html.split("<pre", 1)[1].split(">", 1)[0]
    assert re.search(r'<span style="[^"]*color: #[0-9A-Fa-f]+[^"]*">def</span>', html)


def test_fenced_code_inside_a_list_item_stays_a_code_block():
    html = md("""
        - run this:

          ```python
          x = 1
          ```
        - done
        """)
    assert "<pre" in html and "x" in html and "```" not in html
    assert html.count("<li>") == 2


def test_smart_quotes_and_dashes():
    html = md('"Quoted" -- it\'s --- done\n')
    assert html == "<p>&ldquo;Quoted&rdquo; &ndash; it&rsquo;s &mdash; done</p>"


def test_heading_ids_and_attribute_lists():
    html = md("## Hello World\n\n## Custom {#mine}\n\nText\n{: .lead }\n")
    assert '<h2 id="hello-world">Hello World</h2>' in html
    assert '<h2 id="mine">Custom</h2>' in html
    assert '<p class="lead">Text</p>' in html


def test_raw_html_passes_through():
    html = md('<div align="center"><b>raw</b></div>\n\nInline <kbd>Ctrl</kbd>.\n')
    assert '<div align="center"><b>raw</b></div>' in html
    assert "<kbd>Ctrl</kbd>" in html


def test_unicode_everywhere():
    html = md("Café — naïve “quotes” 🙂 日本語\n")
    assert "Café — naïve “quotes” 🙂 日本語" in html


def test_list_markers_inside_fenced_code_are_untouched():
    html = md("Text\n```\n- not a list\n  - still code\n```\n")
    assert "- not a list\n  - still code" in html
    assert "<li>" not in html


def test_horizontal_rule_is_not_a_list():
    assert "<hr" in md("Text\n\n* * *\n\nMore\n")


def test_lists_inside_blockquotes():
    html = squash(md("> Quote:\n> - a\n>   - b\n"))
    assert html == "<blockquote><p>Quote:</p><ul><li>a<ul><li>b</li></ul></li></ul></blockquote>"


def test_quote_inside_a_list_item_stays_there():
    html = squash(md("- item\n\n  > quoted\n- next\n"))
    assert "<li><p>item</p><blockquote><p>quoted</p></blockquote></li>" in html
