"""Drafts pasted from Substack or a web editor: one paragraph per line, no blank lines."""

from __future__ import annotations

import re

import pytest

from newsletter.compose.issue import build_issue
from newsletter.compose.source import parse_draft
from newsletter.errors import ContentError
from newsletter.settings import load_settings

TITLE = "After 3,032 days, I'm saying goodbye to Meta"
_SENTENCES = [
    "I joined on a grey Monday in 2018, badge photo taken before I had found the coffee.",
    "For a long time the work felt like the most interesting problem I could be near.",
    "We shipped things that millions of people used before lunch, and some we quietly "
    "took back before dinner.",
    "I learned to write design docs that people actually read, which is rarer than it "
    "sounds.",
    "I also learned how much of a company lives in its calendar invites.",
]


def pasted_post(lines: int = 37) -> str:
    body = [TITLE]
    for n in range(lines - 3):
        # Paragraphs of 1 to 3 sentences, as a real post has: 80 to 300 characters.
        k = n % 3 + 1
        body.append(" ".join(_SENTENCES[(n + j) % len(_SENTENCES)] for j in range(k)))
    body.append("Welcome to Liu's Log")
    body.append("This is where I will write from now on, about once a month, about building "
                "small things.")
    return "\n".join(body) + "\n"


def paragraphs(html: str) -> list[str]:
    article = html.split("<body", 1)[1]
    return [re.sub(r"<[^>]+>", "", p) for p in re.findall(r"<p\b[^>]*>(.*?)</p>", article,
                                                           re.S)]


def test_a_pasted_37_line_post_renders_one_paragraph_per_line(write_draft):
    text = pasted_post()
    assert len(text.splitlines()) == 37 and "\n\n" not in text
    issue = build_issue(load_settings(), write_draft("2026-11-21-goodbye.md", text))
    assert issue.title == TITLE
    paras = [p for p in paragraphs(issue.html) if p.strip()]
    body = [p for p in paras if "I joined" in p or "Welcome" in p or "This is where" in p
            or "calendar" in p or "design docs" in p or "shipped" in p or "problem" in p]
    assert len(body) == 36  # every line but the title, each its own paragraph
    assert max(len(p) for p in body) < 400  # was one 4,841-character paragraph
    # The title is not repeated as the first paragraph under it.
    assert not any("saying goodbye" in p for p in paras)
    # A short closing line stays a paragraph of its own: not a title, not a heading.
    assert "Welcome to Liu’s Log" in paras or "Welcome to Liu's Log" in paras
    assert not re.search(r"<h\d[^>]*>[^<]*Welcome", issue.html)
    assert "Welcome" in issue.text.split("This is where")[0]


def test_front_matter_paragraphs_markdown_keeps_markdown_joining(write_draft):
    text = "---\nparagraphs: markdown\ntitle: Joined\n---\n" + pasted_post()
    issue = build_issue(load_settings(), write_draft("joined.md", text))
    assert max(len(p) for p in paragraphs(issue.html)) > 4000


def test_front_matter_paragraphs_lines_splits_short_lines_too(write_draft):
    text = "---\nparagraphs: lines\ntitle: Poem\n---\nRoses are red\nviolets are blue\n"
    issue = build_issue(load_settings(), write_draft("poem.md", text))
    paras = paragraphs(issue.html)
    assert "Roses are red" in paras and "violets are blue" in paras


def test_an_unknown_paragraphs_value_names_file_line_and_choices(write_draft):
    path = write_draft("bad.md", "---\ntitle: T\nparagraphs: lots\n---\nHi\n")
    with pytest.raises(ContentError, match=r"bad\.md:3: paragraphs 'lots' is not one of: lines"):
        parse_draft(path)


@pytest.mark.parametrize("body", [
    # A hard-wrapped paragraph by a Markdown user: short lines, one paragraph.
    "# Notes\n\nThis week I walked to the\nmarket and bought far too\nmany apples for one "
    "person.\n",
    # Headings, lists and code separated by blank lines, as Markdown is written.
    "# Notes\n\n## Part\n\n- one\n- two\n\n```\ncode line that is long enough to pass one "
    "hundred characters for sure, yes, really quite long\nmore code\n```\n",
])
def test_real_markdown_is_not_read_as_pasted(write_draft, body):
    draft = parse_draft(write_draft("md.md", body))
    assert draft.paragraphs == "markdown"
    issue = build_issue(load_settings(), draft.path)
    if "apples" in body:
        assert any("market and bought" in p and "walked" in p for p in paragraphs(issue.html))
    else:
        assert re.search(r"<li[^>]*>one</li>\s*<li[^>]*>two</li>", issue.html)


def test_a_pasted_post_keeps_neighbouring_list_items_in_one_list(write_draft):
    long = "A line long enough to be a pasted paragraph and not hard-wrapped Markdown, " * 2
    text = f"Title here\n{long}\n- apples\n- pears\n{long}\n"
    issue = build_issue(load_settings(), write_draft("list.md", text))
    assert re.search(r"<li[^>]*>apples</li>\s*<li[^>]*>pears</li>", issue.html)


def test_a_pasted_post_keeps_an_html_block_whole(write_draft):
    long = "A line long enough to be a pasted paragraph and not hard-wrapped Markdown, " * 2
    text = f"Title here\n{long}\n<div class=\"note\">\n<b>Note</b>\n</div>\n{long}\n"
    issue = build_issue(load_settings(), write_draft("html.md", text))
    assert re.search(r"<div[^>]*>\s*<b>Note</b>\s*</div>", issue.html)
