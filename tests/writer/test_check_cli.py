"""`newsletter check` from the command line: output, --json, --strict and exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.writer.test_check import CLEAN


def test_clean_draft_exits_0(cli: Callable[..., object], write_draft: Callable[..., Path],
                             newsletter_dir: Path) -> None:
    (newsletter_dir / "drafts" / "images").mkdir()
    from tests.writer.conftest import red_png

    (newsletter_dir / "drafts" / "images" / "red.png").write_bytes(red_png())
    write_draft("post.md", CLEAN)
    result = cli("check", "post")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "no problems found" in result.stderr


def test_errors_exit_1_and_name_the_line(cli: Callable[..., object],
                                         write_draft: Callable[..., Path]) -> None:
    write_draft("post.md", "---\nsubject: Hi\npreheader: p\n---\nWords.\n\nTK: a quote\n")
    result = cli("check", "drafts/post.md")
    assert result.exit_code == 1
    assert "drafts/post.md:7: error: leftover placeholder 'TK'" in result.stdout
    assert "[placeholder]" in result.stdout
    assert "1 error, 0 warnings" in result.stderr


def test_warnings_pass_unless_strict(cli: Callable[..., object],
                                     write_draft: Callable[..., Path]) -> None:
    write_draft("post.md", "---\nsubject: Hi\n---\nWords.\n")  # no preheader: a warning
    lenient = cli("check", "post")
    assert lenient.exit_code == 0
    assert "warning:" in lenient.stdout and "[no-preheader]" in lenient.stdout
    strict = cli("check", "post", "--strict")
    assert strict.exit_code == 1


def test_json_output_for_tools(cli: Callable[..., object],
                               write_draft: Callable[..., Path]) -> None:
    write_draft("post.md", "---\nsubject: Hi\n---\nWords. TODO\n")
    result = cli("check", "post", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["errors"] == 1 and data["warnings"] == 1
    assert {f["code"] for f in data["findings"]} == {"placeholder", "no-preheader"}
    assert data["findings"][0]["line"] == 4


def test_a_check_that_cannot_run_exits_2(cli: Callable[..., object],
                                         newsletter_dir: Path) -> None:
    missing = cli("check", "no-such-draft")
    assert missing.exit_code == 2
    assert missing.stderr.startswith("Error: ")
    assert missing.exception is None
    (newsletter_dir / "newsletter.toml").write_text("[newsletter\n")
    broken = cli("check", "whatever")
    assert broken.exit_code == 2
    assert "newsletter.toml" in broken.stderr
