"""A send is handed the issue its caller built once, and the pre-send check to run on it.

What goes out, what the check finds and what the guards decide (sent before, sent from
another platform) is the issue as built: the draft file is not read again. The check is
whatever the caller hands in, run against this send's audience. Delivery imports nothing
of the writer's.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

import newsletter
from newsletter.compose.issue import Issue, build_issue
from newsletter.delivery.sending import dry_run, send_draft
from newsletter.errors import DeliveryError
from newsletter.settings import Settings, load_settings
from newsletter.writer.check import pre_send_errors

from .smtpserver import SMTPServer
from .test_refused_resend import use_smtp

DRAFT = """\
---
subject: Spring notes
preheader: what grew
{extra}---
Hello {{{{ subscriber.name | default("reader") }}}}.
"""


@pytest.fixture
def letter(newsletter_dir: Path, cli: Callable) -> Settings:
    for address, tag in (("a@example.com", "friends"), ("b@example.com", "press")):
        assert cli("subscribers", "add", address, "--tag", tag).exit_code == 0
    return load_settings(newsletter_dir)


def test_the_sent_elsewhere_guard_reads_the_issue_as_built(
    letter: Settings, write_draft: Callable
) -> None:
    path = write_draft("spring.md", DRAFT.format(extra="sent: 2025-03-01\n"
                                                 "imported_from: substack:12\n"))
    issue = build_issue(letter, path)
    path.write_text(DRAFT.format(extra=""))  # edited after the build: not read again
    with pytest.raises(DeliveryError, match="spring was already emailed to the list from "
                       "Substack on 2025-03-01"):
        send_draft(letter, issue, "subscribers", check=pre_send_errors)

    report = send_draft(letter, issue, "subscribers", check=pre_send_errors, resend=True)
    assert report.campaign.counts.sent == 2


def test_a_draft_built_without_sent_goes_out_though_the_file_says_sent_later(
    letter: Settings, write_draft: Callable
) -> None:
    path = write_draft("spring.md", DRAFT.format(extra=""))
    issue = build_issue(letter, path)
    path.write_text(DRAFT.format(extra="sent: 2025-03-01\n").replace("Spring", "Autumn"))
    with SMTPServer() as server:  # a real send: an outbox one is a rehearsal the guard ignores
        use_smtp(letter.root, server.port)
        real = load_settings(letter.root)
        report = send_draft(real, issue, "subscribers", check=pre_send_errors)
        assert report.campaign.counts.sent == 2
        assert report.campaign.subject == "Spring notes"  # the subject as built
        # Sent once from here: the resend guard refuses it now, from the same built issue.
        with pytest.raises(DeliveryError, match="--resend"):
            send_draft(real, issue, "subscribers", check=pre_send_errors)


def test_the_check_handed_in_runs_against_the_audience_of_the_send(
    letter: Settings, write_draft: Callable
) -> None:
    issue = build_issue(letter, write_draft("spring.md", DRAFT.format(extra="")))
    seen: list[tuple[str, list[str]]] = []

    def check(built: Issue, settings: Settings, db: sqlite_utils.Database, where_sql: str,
              params: Sequence[Any]) -> list[str]:
        assert built is issue and settings is letter
        emails = [e for (e,) in db.execute(
            f"SELECT email FROM subscribers WHERE {where_sql} ORDER BY email", params)]
        seen.append((where_sql, emails))
        return ["the title is too loud"]

    # The outbox sends nothing anywhere: a check error is a warning there, as in `send`.
    report = send_draft(letter, issue, "tag:friends", check=check)
    assert seen[-1][1] == ["a@example.com"]
    assert "check: the title is too loud" in report.warnings
    assert report.campaign.counts.sent == 1

    built = dry_run(letter, issue, "tag:press", check=check)
    assert seen[-1][1] == ["b@example.com"] and built.messages == 1
    assert "check: the title is too loud" in built.warnings


def test_the_check_reads_the_text_the_issue_was_built_from(
    letter: Settings, write_draft: Callable
) -> None:
    path = write_draft("spring.md", DRAFT.format(extra=""))
    issue = build_issue(letter, path)
    path.write_text("No front matter, no title: check would say no subject.\n")
    db = sqlite_utils.Database(letter.database)
    try:
        errors = pre_send_errors(issue, letter, db, "status = 'active'", [])
    finally:
        db.conn.close()
    assert not [e for e in errors if "sets no subject" in e]
    path.unlink()  # and it needs no file at all
    report = send_draft(letter, issue, "a@example.com", check=pre_send_errors)
    assert report.campaign.counts.sent == 1


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, function-level imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


PACKAGE = Path(newsletter.__file__).parent


def test_delivery_imports_nothing_of_the_writer() -> None:
    offenders = sorted(
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in (PACKAGE / "delivery").rglob("*.py")
        for name in _imports(path)
        if name == "newsletter.writer" or name.startswith("newsletter.writer.")
    )
    assert offenders == []


def test_the_writer_modules_import_each_other_one_way_and_compose_source_stays_below() -> None:
    writer = {f"newsletter.writer.{p.stem}": p for p in (PACKAGE / "writer").glob("*.py")
              if p.stem != "__init__"}
    arrows = {name: {m for m in _imports(path) if m in writer and m != name}
              for name, path in writer.items()}
    circles = sorted(f"{a} <-> {b}" for a, targets in arrows.items() for b in targets
                     if a in arrows.get(b, set()))
    assert circles == []
    upward = sorted(m for m in _imports(PACKAGE / "compose" / "source.py")
                    if m.startswith(("newsletter.writer", "newsletter.delivery")))
    assert upward == []
