"""A list send refused because an earlier send of the draft is unfinished says how to finish it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from newsletter.store import connect

from .smtpserver import SMTPServer

DRAFT = """\
---
subject: Spring notes
preheader: what grew
---
Hello {{ subscriber.name | default("reader") }}.
"""


@pytest.fixture
def smtp(newsletter_dir: Path) -> Iterator[SMTPServer]:
    """Sends go to a real SMTP server: an outbox send is a rehearsal the guard ignores."""
    with SMTPServer() as server:
        use_smtp(newsletter_dir, server.port)
        yield server


def use_smtp(root: Path, port: int) -> None:
    """Point newsletter.toml's [provider] at the test server."""
    text = (root / "newsletter.toml").read_text().split("[provider]")[0]
    (root / "newsletter.toml").write_text(text + "\n".join([
        "[provider]", 'name = "smtp"', 'host = "127.0.0.1"', f"port = {port}",
        'security = "none"', "timeout = 5", "retry_delay = 0.02"]) + "\n")


def _interrupt(root: Path, state: str) -> None:
    """Leave campaign 1 as a killed send would: one row not settled, status stopped."""
    db = connect(root / "newsletter.db")
    with db.conn:
        db.execute("UPDATE deliveries SET state = ? WHERE id = "
                   "(SELECT max(id) FROM deliveries WHERE campaign_id = 1)", [state])
        db.execute("UPDATE campaigns SET status = 'stopped', finished_at = NULL WHERE id = 1")
    db.conn.close()


def test_an_unfinished_tag_send_is_named_with_the_command_that_finishes_it(
    cli: Callable, newsletter_dir: Path, write_draft: Callable, smtp: SMTPServer
) -> None:
    write_draft("spring.md", DRAFT)
    for address in ("a@example.com", "b@example.com"):
        assert cli("subscribers", "add", address, "--tag", "friends").exit_code == 0
    assert cli("send", "spring", "--to", "tag:friends", "--yes").exit_code == 0
    _interrupt(newsletter_dir, "queued")

    run = cli("send", "spring", "--to", "subscribers", "--yes")
    assert run.exit_code != 0
    assert "was partly sent" in run.stderr and "being sent" not in run.stderr
    assert "--to tag:friends` (1 not yet sent)" in run.stderr

    _interrupt(newsletter_dir, "uncertain")
    run = cli("send", "spring", "--to", "subscribers", "--yes")
    assert run.exit_code != 0
    assert "--retry-uncertain" in run.stderr and "being sent" not in run.stderr
    # The advice works: settling the uncertain row finishes campaign 1.
    assert cli("send", "spring", "--to", "tag:friends", "--yes",
               "--retry-uncertain").exit_code == 0
    assert "done" in cli("campaigns").stdout


def test_to_names_what_it_takes_when_forms_are_mixed(
    cli: Callable, newsletter_dir: Path, write_draft: Callable
) -> None:
    write_draft("spring.md", DRAFT)
    assert cli("subscribers", "add", "a@example.com").exit_code == 0
    for to in ("subscribers,b@example.com", "tag:a,tag:b", "a@example.com,tag:x"):
        run = cli("send", "spring", "--to", to, "--yes")
        assert run.exit_code != 0
        assert run.stderr.startswith("Error: --to takes `subscribers`, `tag:NAME`"), run.stderr
        assert run.stderr.count("\n") == 1
    # Letter case does not matter for the list itself.
    run = cli("send", "spring", "--to", "SUBSCRIBERS", "--yes")
    assert run.exit_code == 0, run.stderr
    assert "1 sent" in run.stdout


def test_the_same_post_under_another_file_name_is_refused(
    cli: Callable, newsletter_dir: Path, write_draft: Callable, smtp: SMTPServer
) -> None:
    write_draft("spring.md", DRAFT)
    assert cli("subscribers", "add", "a@example.com").exit_code == 0
    assert cli("send", "spring", "--to", "subscribers", "--yes").exit_code == 0

    write_draft("spring-copy.md", DRAFT)  # the same post, saved again
    run = cli("send", "spring-copy", "--to", "subscribers", "--yes")
    assert run.exit_code != 0 and run.stderr.count("\n") == 1
    assert "same subject as spring, sent to the list already (campaign 1 on 20" in run.stderr
    assert "--resend" in run.stderr

    # Retitled, same text: still the same post.
    write_draft("retitled.md", DRAFT.replace("Spring notes", "Spring notes, again"))
    run = cli("send", "retitled", "--to", "subscribers", "--yes")
    assert run.exit_code != 0
    assert "same text as spring" in run.stderr and "campaign 1 on " in run.stderr

    # A test send is never refused; --resend sends the copy to the list.
    assert cli("send", "spring-copy", "--to", "me@example.com", "--yes").exit_code == 0
    run = cli("send", "spring-copy", "--to", "subscribers", "--yes", "--resend")
    assert run.exit_code == 0, run.stderr

    # A different post goes out without --resend.
    write_draft("summer.md", "---\nsubject: Summer notes\n---\nSomething else entirely.\n")
    assert cli("send", "summer", "--to", "subscribers", "--yes").exit_code == 0


def test_a_tag_send_begun_before_tags_ignored_case_is_resumed(
    cli: Callable, newsletter_dir: Path, write_draft: Callable
) -> None:
    write_draft("spring.md", DRAFT)
    for address in ("a@example.com", "b@example.com"):
        assert cli("subscribers", "add", address, "--tag", "Friends").exit_code == 0
    assert cli("send", "spring", "--to", "tag:Friends", "--yes").exit_code == 0
    _interrupt(newsletter_dir, "queued")
    db = connect(newsletter_dir / "newsletter.db")
    with db.conn:  # what an earlier version stored: the tag as typed
        db.execute("UPDATE campaigns SET audience = 'tag:Friends' WHERE id = 1")
    db.conn.close()
    run = cli("send", "spring", "--to", "tag:friends", "--yes")
    assert run.exit_code == 0, run.stderr
    assert "Campaign 1 " in run.stdout and "2 sent" in run.stdout


def test_an_outbox_send_is_a_rehearsal_and_the_real_send_after_it_is_not_a_resend(
    cli: Callable, newsletter_dir: Path, write_draft: Callable
) -> None:
    # The README's quick start: the list sent through the default outbox provider.
    write_draft("spring.md", DRAFT)
    assert cli("subscribers", "add", "a@example.com").exit_code == 0
    rehearsal = cli("send", "spring", "--to", "subscribers", "--yes")
    assert rehearsal.exit_code == 0, rehearsal.stderr
    assert "A rehearsal: the outbox wrote the messages as .eml files and mailed nobody" \
        in rehearsal.stdout
    listed = cli("drafts").stdout
    assert "rehearsed (outbox) 20" in listed and "sent 20" not in listed
    # A second rehearsal is no resend either: nobody was mailed.
    assert cli("send", "spring", "--to", "subscribers", "--yes").exit_code == 0

    with SMTPServer() as server:
        use_smtp(newsletter_dir, server.port)
        real = cli("send", "spring", "--to", "subscribers", "--yes")
        assert real.exit_code == 0, real.stderr
        assert "1 sent" in real.stdout and "rehearsal" not in real.stdout
        assert [r.recipient for r in server.received] == ["a@example.com"]
        assert "sent 20" in cli("drafts").stdout
        # The real send counts: a second one is refused as a resend.
        again = cli("send", "spring", "--to", "subscribers", "--yes")
        assert again.exit_code != 0
        assert again.stderr.startswith("Error: spring was sent to the list already (campaign 3")
        assert len(server.received) == 1


def test_a_real_send_never_finishes_a_half_done_rehearsal(
    cli: Callable, newsletter_dir: Path, write_draft: Callable
) -> None:
    write_draft("spring.md", DRAFT)
    for address in ("a@example.com", "b@example.com"):
        assert cli("subscribers", "add", address).exit_code == 0
    assert cli("send", "spring", "--to", "subscribers", "--yes").exit_code == 0
    _interrupt(newsletter_dir, "queued")  # the rehearsal stopped with a@ written, b@ not

    with SMTPServer() as server:
        use_smtp(newsletter_dir, server.port)
        real = cli("send", "spring", "--to", "subscribers", "--yes")
        assert real.exit_code == 0, real.stderr
        # Both readers are mailed: a@'s .eml file in the outbox reached nobody.
        assert sorted(r.recipient for r in server.received) == ["a@example.com",
                                                                  "b@example.com"]
        assert "Campaign 2 " in real.stdout and "was being sent through outbox" \
            not in real.stderr
        # That real send counts: a second one is refused.
        again = cli("send", "spring", "--to", "subscribers", "--yes")
        assert again.exit_code != 0 and "sent to the list already (campaign 2" in again.stderr
