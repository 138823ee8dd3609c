"""A failure is said, never turned into "nothing": an unreadable database stops `publish`
before it changes the site, and a broken welcome draft makes `run` say so (issue 18)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from newsletter.writer.publish import MANIFEST
from tests.writer.test_publish import make_letter, site_files

WELCOME = "---\ntitle: Welcome\ntrigger: welcome\n---\nGlad you are here.\n"


def test_an_unreadable_database_stops_publish_and_the_site_stays(
        cli: Callable[..., Any], newsletter_dir: Path) -> None:
    make_letter(newsletter_dir)
    assert cli("publish").exit_code == 0
    site = newsletter_dir / "site"
    before = site_files(site)
    assert any(name.endswith("index.html") and "first" in name for name in before)
    db = newsletter_dir / "newsletter.db"
    for extra in ("-wal", "-shm"):
        (newsletter_dir / f"newsletter.db{extra}").unlink(missing_ok=True)
    db.write_bytes(b"this is not a database, it was overwritten by mistake " * 100)

    run = cli("publish")

    assert run.exit_code != 0
    assert run.exception is None
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("Error: the database ")
    assert str(db) in lines[0] and "backup" in lines[0]
    assert site_files(site) == before  # not one page taken down


def test_a_database_never_sent_from_publishes_nothing_sent(
        cli: Callable[..., Any], newsletter_dir: Path) -> None:
    # No file, or an empty one: nothing was sent yet (not an error).
    (newsletter_dir / "newsletter.db").write_bytes(b"")
    run = cli("publish")
    assert run.exit_code == 0, run.stderr
    assert cli("drafts").exit_code == 0


def test_a_broken_welcome_draft_is_an_error_not_nothing_due(
        cli: Callable[..., Any], write_draft: Callable[..., Path]) -> None:
    path = write_draft("welcome.md", WELCOME)
    assert cli("run", "--no-sync").exit_code == 0  # enables it
    assert cli("subscribers", "add", "new@example.com", "--welcome").exit_code == 0
    path.write_text("---\ntitle: Welcome\ntrigger: welcome\nsubject: [unclosed\n---\nHi.\n")

    run = cli("run", "--no-sync")

    assert run.exit_code != 0
    assert "nothing was due" not in run.stdout + run.stderr
    assert "welcome welcome: not sent: " in run.stdout + run.stderr
    assert "welcome.md" in run.stdout + run.stderr


def test_a_welcome_draft_whose_trigger_line_broke_is_still_reported(
        cli: Callable[..., Any], write_draft: Callable[..., Path]) -> None:
    # The campaign made from it says it is the welcome, whatever its text says now.
    path = write_draft("welcome.md", WELCOME)
    assert cli("run", "--no-sync").exit_code == 0
    path.write_text("---\ntitle: Welcome\ntrigger: [welcome\n---\nHi.\n")
    run = cli("run", "--no-sync")
    assert run.exit_code != 0
    assert "welcome welcome: not sent: " in run.stdout + run.stderr


def test_a_damaged_publish_manifest_is_an_error_not_an_empty_site(
        cli: Callable[..., Any], newsletter_dir: Path) -> None:
    make_letter(newsletter_dir)
    assert cli("publish").exit_code == 0
    site = newsletter_dir / "site"
    (site / MANIFEST).write_text('{"files": ["2026-10-01-first/index.html"')  # cut short
    before = site_files(site)

    run = cli("publish")

    assert run.exit_code != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"Error: cannot read {site / MANIFEST} (it is not the JSON")
    assert site_files(site) == before
