"""A list send refused because an earlier send of the draft is unfinished says how to finish it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from newsletter.store import connect

DRAFT = """\
---
subject: Spring notes
preheader: what grew
---
Hello {{ subscriber.name | default("reader") }}.
"""


def _interrupt(root: Path, state: str) -> None:
    """Leave campaign 1 as a killed send would: one row not settled, status stopped."""
    db = connect(root / "newsletter.db")
    with db.conn:
        db.execute("UPDATE deliveries SET state = ? WHERE id = "
                   "(SELECT max(id) FROM deliveries WHERE campaign_id = 1)", [state])
        db.execute("UPDATE campaigns SET status = 'stopped', finished_at = NULL WHERE id = 1")
    db.conn.close()


def test_an_unfinished_tag_send_is_named_with_the_command_that_finishes_it(
    cli: Callable, newsletter_dir: Path, write_draft: Callable
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
    cli: Callable, newsletter_dir: Path, write_draft: Callable
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
