"""Bad input through the real CLI: one line `Error: …` on stderr, a non-zero exit, no
traceback, nothing half-written."""

from __future__ import annotations

from collections.abc import Callable

import pytest


def one_error_line(result) -> str:
    """The single `Error: …` line a failed command printed (fails the test otherwise)."""
    assert result.exception is None, repr(result.exception)
    assert result.exit_code != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# --- a front matter date that is not a real day -------------------------------------------


@pytest.mark.parametrize("command", [["build"], ["send", "--to", "me@example.com"]])
def test_front_matter_date_that_is_no_day_is_one_error_line(
    cli: Callable, write_draft: Callable, command: list[str]
) -> None:
    # YAML reads 2026-13-45 as a date; PyYAML then fails to make one (was a traceback).
    write_draft("2026-01-10-bad-date.md", "---\ntitle: Hi\ndate: 2026-13-45\n---\nBody\n")
    line = one_error_line(cli(command[0], "bad-date", *command[1:]))
    assert "2026-01-10-bad-date.md:3:" in line
    assert "YYYY-MM-DD" in line


def test_front_matter_bad_date_does_not_hide_the_other_drafts(
    cli: Callable, write_draft: Callable
) -> None:
    write_draft("2026-01-10-bad-date.md", "---\ntitle: Hi\ndate: 2026-02-30\n---\nBody\n")
    write_draft("2026-01-11-fine.md", "---\ntitle: Fine one\n---\nBody\n")
    result = cli("drafts")
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Fine one" in result.stdout
    assert "bad-date" in result.stdout and "cannot read" in result.stdout


def test_check_of_a_bad_date_reports_it_as_a_finding(cli: Callable, write_draft: Callable) -> None:
    write_draft("2026-01-10-bad-date.md", "---\ntitle: Hi\ndate: 2026-13-45\n---\nBody\n")
    result = cli("check", "bad-date")
    assert result.exception is None, repr(result.exception)
    assert result.exit_code in (1, 2)
    assert "Traceback" not in result.stderr
    assert "not a real date" in result.stdout + result.stderr
