"""`subscribers unsubscribe` takes the link from an issue: its token names the reader."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

DRAFT = "---\nsubject: Hello\npreheader: hi\n---\nHello {{ subscriber.name }}.\n"


def test_the_link_from_a_sent_issue_unsubscribes_that_reader_only(
    cli: Callable, newsletter_dir: Path, write_draft: Callable
) -> None:
    write_draft("hello.md", DRAFT)
    for address in ("Ana@Example.com", "bo@example.org"):
        assert cli("subscribers", "add", address).exit_code == 0
    assert cli("send", "hello", "--to", "subscribers", "--yes").exit_code == 0
    sent = {}
    for path in (newsletter_dir / "outbox").rglob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        sent[message["To"].addresses[0].addr_spec] = message["List-Unsubscribe"].strip("<>")
    link = sent["Ana@example.com"]

    run = cli("subscribers", "unsubscribe", link)
    assert run.exit_code == 0, run.stderr
    assert "Unsubscribed: Ana@example.com" in run.stdout
    listed = cli("subscribers", "list", "--status", "active").stdout
    assert "bo@example.org" in listed and "Ana@example.com" not in listed


def test_an_altered_or_foreign_link_is_refused(
    cli: Callable, newsletter_dir: Path, write_draft: Callable
) -> None:
    write_draft("hello.md", DRAFT)
    assert cli("subscribers", "add", "ana@example.com").exit_code == 0
    assert cli("send", "hello", "--to", "subscribers", "--yes").exit_code == 0
    path = next((newsletter_dir / "outbox").rglob("*.eml"))
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    link = message["List-Unsubscribe"].strip("<>")
    token = parse_qs(urlsplit(link).query)["token"][0]
    altered = link.replace(token, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    for bad in (altered, "https://example.com/news/unsubscribe?token=1forged"):
        run = cli("subscribers", "unsubscribe", bad)
        assert run.exit_code != 0
        assert run.stderr.startswith("Error: that unsubscribe link was not made by this")
    assert "ana@example.com" in cli("subscribers", "list", "--status", "active").stdout
