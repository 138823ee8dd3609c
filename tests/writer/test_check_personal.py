"""check: reader values the audience lacks, pasted paragraphs, and check_issue()."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter import store
from newsletter.audience.subscribers import add_subscriber, set_status
from newsletter.compose.issue import build_issue
from newsletter.compose.personal import personalization_problems
from newsletter.settings import load_settings
from newsletter.writer.check import check_draft, check_issue

HEAD = "---\nsubject: Hello\npreheader: Peek\n---\n"


@pytest.fixture
def readers(newsletter_dir: Path):
    settings = load_settings(newsletter_dir)
    db = store.connect(settings.database)
    add_subscriber(db, "ana@example.com", "Ana", attributes={"city": "Lisbon", "plan": "pro"})
    add_subscriber(db, "bo@example.com", "Bo", attributes={"city": "Oslo"})
    add_subscriber(db, "cy@example.com", "", attributes={"plan": ""})
    add_subscriber(db, "old@example.com", "Old", attributes={"nickname": "Oldie"})
    set_status(db, "old@example.com", "unsubscribed")
    yield db
    db.close()


def findings(report, code):
    return [f for f in report.findings if f.code == code]


def test_an_attribute_no_reader_has_is_an_error_naming_line_and_real_attributes(
        readers, write_draft: Callable[..., Path], newsletter_dir: Path):
    path = write_draft("post.md", HEAD + "# Hello\n\nHello {{ subscriber.naem }}!\n")
    report = check_draft(load_settings(newsletter_dir), path)
    [error] = findings(report, "unknown-attribute")
    assert error.severity == "error" and error.line == 7
    assert "subscriber.naem is empty for every reader (3)" in error.message
    assert "attributes readers have: city, plan" in error.message  # not the unsubscribed one


def test_an_attribute_some_readers_lack_is_a_warning_with_the_count(
        readers, write_draft: Callable[..., Path], newsletter_dir: Path):
    body = HEAD + "# Hello\n\nFrom {{ subscriber.city }}, {{ subscriber.plan | default('free') }}\n"
    report = check_draft(load_settings(newsletter_dir), write_draft("post.md", body))
    [warning] = findings(report, "missing-attribute")
    assert warning.severity == "warning" and warning.line == 7
    assert "1 of 3 readers have no subscriber.city" in warning.message
    assert not findings(report, "unknown-attribute")  # plan has a default


def test_send_passes_its_audience(readers, write_draft: Callable[..., Path],
                                  newsletter_dir: Path):
    settings = load_settings(newsletter_dir)
    issue = build_issue(settings, write_draft("post.md", HEAD + "Hi {{ subscriber.nickname }}\n"))
    assert [p.severity for p in personalization_problems(issue, readers)] == ["error"]
    assert personalization_problems(issue, readers, "status = ?", ("unsubscribed",)) == []
    report = check_issue(issue, settings, db=readers, where_sql="email = :e",
                         params={"e": "ana@example.com"})
    [error] = findings(report, "unknown-attribute")
    assert "readers have: city, plan" in error.message


def test_no_database_means_no_attribute_findings(write_draft: Callable[..., Path],
                                                 newsletter_dir: Path):
    path = write_draft("post.md", HEAD + "# Hello\n\nHello {{ subscriber.naem }}!\n")
    report = check_draft(load_settings(newsletter_dir), path)
    assert not findings(report, "unknown-attribute")


def test_a_long_paragraph_of_single_lines_is_a_warning(write_draft: Callable[..., Path],
                                                       newsletter_dir: Path):
    lines = "\n".join(["Short lines joined by Markdown into one paragraph, sadly."] * 30)
    report = check_draft(load_settings(newsletter_dir),
                         write_draft("post.md", HEAD + "# Hello\n\n" + lines + "\n"))
    [warning] = findings(report, "long-paragraph")
    assert warning.line == 7 and "paragraphs: lines" in warning.message
    fixed = HEAD.replace("---\n", "---\nparagraphs: lines\n", 1)
    report = check_draft(load_settings(newsletter_dir),
                         write_draft("post.md", fixed + "# Hello\n\n" + lines + "\n"))
    assert not findings(report, "long-paragraph")


def test_check_cli_names_file_line_and_exits_1_for_a_misspelt_attribute(cli, write_draft,
                                                                      newsletter_dir: Path):
    assert cli("subscribers", "add", "liu@example.com", "--name", "Liu").exit_code == 0
    write_draft("post.md", HEAD + "# Hello\n\nHello {{ subscriber.naem }}!\n")
    run = cli("check", "drafts/post.md")
    assert run.exit_code == 1
    assert ("drafts/post.md:7: error: subscriber.naem is empty for every reader (1): no "
            "subscriber has it (attributes readers have: none)") in run.stdout


def test_the_pasted_post_gets_no_long_paragraph_warning(write_draft, newsletter_dir: Path):
    from tests.compose.test_pasted import pasted_post

    report = check_draft(load_settings(newsletter_dir), write_draft("post.md", pasted_post()))
    assert not findings(report, "long-paragraph")
    joined = "---\nparagraphs: markdown\n---\n" + pasted_post()
    report = check_draft(load_settings(newsletter_dir), write_draft("post.md", joined))
    assert findings(report, "long-paragraph")[0].line == 4  # the body's first line
