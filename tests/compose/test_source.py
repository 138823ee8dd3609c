"""Reading drafts: front matter (optional, YAML or TOML), titles, dates, slugs."""

from __future__ import annotations

from datetime import date

import pytest

from newsletter.compose.source import parse_draft
from newsletter.errors import ContentError


def test_yaml_front_matter_with_every_key(write_draft):
    path = write_draft(
        "2026-01-02-hello.md",
        """
        ---
        title: Hello “world” — café 🙂
        subject: "Subject: with a colon"
        date: 2025-12-31
        preheader: A short   preview
        layout: letter
        slug: hello-there
        tags: [a, b]
        ---
        Body text.
        """,
    )
    draft = parse_draft(path)
    assert draft.title == "Hello “world” — café 🙂"
    assert draft.subject == "Subject: with a colon"
    assert draft.date == date(2025, 12, 31)
    assert draft.preheader == "A short preview"
    assert draft.layout == "letter"
    assert draft.slug == "hello-there"
    assert draft.extra == {"tags": ["a", "b"]}
    assert draft.body.strip() == "Body text."
    assert draft.body_line == 10


@pytest.mark.parametrize("value", ["2026-03-04", "'2026-03-04'", '"2026-03-04T10:00:00Z"',
                                   "2026-03-04 09:30:00"])
def test_date_quoted_or_not(write_draft, value):
    path = write_draft("x.md", f"---\ntitle: T\ndate: {value}\n---\nBody\n")
    assert parse_draft(path).date == date(2026, 3, 4)


def test_hugo_toml_front_matter(write_draft):
    path = write_draft("x.md", '+++\ntitle = "From Hugo"\ndate = 2024-05-06\n+++\nBody\n')
    draft = parse_draft(path)
    assert (draft.title, draft.date) == ("From Hugo", date(2024, 5, 6))


def test_no_front_matter_title_from_first_heading_taken_out_of_body(write_draft):
    path = write_draft("2026-02-03-notes.md", "\n# Notes from GitHub\n\nSome text.\n")
    draft = parse_draft(path)
    assert draft.title == "Notes from GitHub"
    assert draft.subject == "Notes from GitHub"
    assert "Notes from GitHub" not in draft.body  # the layout shows the title once
    assert draft.date == date(2026, 2, 3)  # from the file name
    assert draft.slug == "2026-02-03-notes"


def test_no_heading_title_from_first_line(write_draft):
    path = write_draft("plain.md", "Just a **first** line\n\nand more.\n")
    draft = parse_draft(path)
    assert draft.title == "Just a first line"
    # A first line standing alone is the title: not shown again right under it.
    assert "first" not in draft.body and "and more." in draft.body
    assert draft.body.count("\n") == 3  # blanked, not deleted: line numbers stay right


def test_a_hard_wrapped_first_paragraph_keeps_its_first_line(write_draft):
    path = write_draft("wrapped.md", "It was a long week, and I\nspent most of it outside.\n")
    draft = parse_draft(path)
    assert draft.title == "It was a long week, and I"
    assert draft.body.startswith("It was a long week")  # content, not lost


def test_heading_later_in_the_body_is_the_title_but_stays(write_draft):
    path = write_draft("x.md", "Intro paragraph.\n\n# Real title\n")
    draft = parse_draft(path)
    assert draft.title == "Real title"
    assert "# Real title" in draft.body


def test_broken_yaml_names_file_and_line(write_draft):
    path = write_draft("bad.md", "---\ntitle: ok\nsubject: [unclosed\n---\nBody\n")
    with pytest.raises(ContentError) as err:
        parse_draft(path)
    message = str(err.value)
    assert f"{path}:3" in message or f"{path}:4" in message
    assert "front matter" in message and "\n" not in message


def test_unclosed_front_matter(write_draft):
    path = write_draft("bad.md", "---\ntitle: ok\nBody\n")
    with pytest.raises(ContentError, match=r"bad.md:1: front matter .* never closed"):
        parse_draft(path)


def test_line_break_in_subject_is_refused(write_draft):
    path = write_draft(
        "bad.md", '---\ntitle: ok\nsubject: "Hi\\r\\nBcc: all@example.com"\n---\nB\n'
    )
    with pytest.raises(ContentError, match=r"bad.md:3: the subject holds a line break"):
        parse_draft(path)


def test_bad_date_and_bad_slug(write_draft):
    path = write_draft("bad.md", "---\ndate: next tuesday\n---\nB\n")
    with pytest.raises(ContentError, match=r"bad.md:2: date 'next tuesday' is not a date"):
        parse_draft(path)
    path = write_draft("bad2.md", "---\nslug: ../../etc\n---\nB\n")
    with pytest.raises(ContentError, match="slug"):
        parse_draft(path)


def test_windows_line_ends_and_bom(newsletter_dir):
    path = newsletter_dir / "drafts" / "win.md"
    path.write_bytes("\ufeff---\r\ntitle: Win\r\n---\r\nBody\r\n".encode())
    draft = parse_draft(path)
    assert draft.title == "Win" and "\r" not in draft.body


def test_not_utf8_is_a_clear_error(newsletter_dir):
    path = newsletter_dir / "drafts" / "latin1.md"
    path.write_bytes("Caf\xe9\n".encode("latin-1"))
    with pytest.raises(ContentError, match="not UTF-8"):
        parse_draft(path)
