"""Topics end to end: a draft's `topics:` picks who a list send reaches."""

from __future__ import annotations

import email
import email.policy
import sqlite3
from collections.abc import Callable
from pathlib import Path

from newsletter import store
from newsletter.audience.subscribers import (
    EVERYTHING,
    TopicChoice,
    get,
    set_topic_choice,
    topic_choice,
    topic_choice_from_form,
)

TOPICS = '\n[subscribe]\ntopics = ["essays", "links"]\n'


def _readers(root: Path, cli: Callable[..., object]) -> None:
    """ann: links only; bob: everything (added, as imported readers are); cat: no topic at
    all; dan: essays; eve: links, tagged friends."""
    with (root / "newsletter.toml").open("a") as f:
        f.write(TOPICS)
    for address in ("ann", "bob", "cat", "dan"):
        cli("subscribers", "add", f"{address}@example.com")
    cli("subscribers", "add", "eve@example.com", "--tag", "friends")
    db = store.connect(root / "newsletter.db")
    with db.conn:
        for address, chosen in (("ann", ("links",)), ("cat", ()), ("dan", ("essays",)),
                                ("eve", ("links",))):
            reader = get(db, f"{address}@example.com")
            assert reader is not None
            set_topic_choice(db, reader.id, TopicChoice(False, chosen))
    db.conn.close()


def _sent_to(root: Path, slug: str) -> set[str]:
    found = set()
    for path in (root / "outbox").glob(f"*{slug}*/*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found.add(str(msg["To"]).split("@")[0].strip("<").split("<")[-1])
    return found


def test_a_send_with_a_topic_reaches_those_who_chose_it_and_those_who_get_everything(
        newsletter_dir: Path, write_draft: Callable[..., Path], cli: Callable[..., object]
) -> None:
    _readers(newsletter_dir, cli)
    write_draft("2026-01-01-links.md", "---\nsubject: Links\ntopics: [links]\n---\nHi.\n")
    dry = cli("send", "2026-01-01-links", "--to", "subscribers", "--dry-run")
    assert dry.exit_code == 0, dry.stderr  # type: ignore[attr-defined]
    assert "3 messages built" in dry.stdout  # type: ignore[attr-defined]
    assert ("Recipients by topic links: 2 reader(s) chose it, 1 get everything."
            in dry.stdout)  # type: ignore[attr-defined]
    sent = cli("send", "2026-01-01-links", "--to", "subscribers", "--yes")
    assert sent.exit_code == 0, sent.stderr  # type: ignore[attr-defined]
    assert ("Recipients by topic links: 2 reader(s) chose it, 1 get everything."
            in sent.stdout)  # type: ignore[attr-defined]
    assert _sent_to(newsletter_dir, "links") == {"ann", "bob", "eve"}

    # A tag narrows it further: only eve is tagged friends (and chose links).
    write_draft("2026-01-02-more.md", "---\nsubject: More\ntopics: links\n---\nHi.\n")
    sent = cli("send", "2026-01-02-more", "--to", "tag:friends", "--yes")
    assert sent.exit_code == 0, sent.stderr  # type: ignore[attr-defined]
    assert _sent_to(newsletter_dir, "more") == {"eve"}

    # An issue without a topic goes to everyone on the list, cat (no topics) included.
    write_draft("2026-01-03-all.md", "---\nsubject: For all\n---\nHi.\n")
    sent = cli("send", "2026-01-03-all", "--to", "subscribers", "--yes")
    assert sent.exit_code == 0, sent.stderr  # type: ignore[attr-defined]
    assert _sent_to(newsletter_dir, "all") == {"ann", "bob", "cat", "dan", "eve"}


def test_an_unknown_topic_in_a_draft_is_an_error_naming_it(
        newsletter_dir: Path, write_draft: Callable[..., Path], cli: Callable[..., object]
) -> None:
    _readers(newsletter_dir, cli)
    write_draft("2026-01-01-typo.md", "---\nsubject: Typo\ntopics: [link]\n---\nHi.\n")
    result = cli("send", "2026-01-01-typo", "--to", "subscribers", "--yes")
    assert result.exit_code != 0  # type: ignore[attr-defined]
    err = result.stderr  # type: ignore[attr-defined]
    assert err.startswith("Error: ") and err.count("\n") == 1
    assert "the topic 'link' is not one of [subscribe] topics" in err
    assert "(essays, links)" in err
    assert not (newsletter_dir / "outbox").exists()


def test_everything_is_stored_apart_from_no_topics(newsletter_dir: Path,
                                                   cli: Callable[..., object]) -> None:
    _readers(newsletter_dir, cli)
    db = store.connect(newsletter_dir / "newsletter.db")
    known = ("essays", "links")
    ids = {r: get(db, f"{r}@example.com").id for r in ("bob", "cat")}  # type: ignore[union-attr]
    assert topic_choice(db, ids["bob"], known) == EVERYTHING
    assert topic_choice(db, ids["cat"], known) == TopicChoice(False, ())
    db.conn.close()


def test_the_form_choice() -> None:
    known = ("essays", "links")
    shown = {"topics_shown": ["1"]}
    assert topic_choice_from_form(known, {**shown, "everything": ["1"],
                                          "topics": ["essays", "links"]}) == EVERYTHING
    assert topic_choice_from_form(known, {**shown, "everything": ["1"]}) == EVERYTHING
    # "links" unticked beside "everything": the reader does not want links.
    assert topic_choice_from_form(known, {**shown, "everything": ["1"], "topics": ["essays"]}
                                  ) == TopicChoice(False, ("essays",))
    assert topic_choice_from_form(known, shown) == TopicChoice(False, ())
    assert topic_choice_from_form(known, {"topics": ["links"]}) == TopicChoice(False, ("links",))
    assert topic_choice_from_form(known, {}) is None  # a form without boxes: keep


def test_migration_keeps_a_web_readers_ticked_topics_and_gives_others_everything(
        tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    conn.commit()
    conn.close()
    # Every migration before topics, then readers as the old version stored them.
    db = store.connect(path)
    db.execute("DROP TABLE outgoing")
    db.execute("DELETE FROM _migrations WHERE name IN ('012_reader_topics', '013_outgoing')")
    db.execute("ALTER TABLE subscribers DROP COLUMN topics")
    for n, (address, source, tags) in enumerate((("web1", "web", '["links"]'),
                                                 ("web2", "web", "[]"),
                                                 ("imp", "import:x.csv", '["links"]'))):
        db.execute("INSERT INTO subscribers (id, email, email_key, tags, source, created_at, "
                   "updated_at) VALUES (?, ?, ?, ?, ?, 'now', 'now')",
                   [n + 1, f"{address}@example.com", f"{address}@example.com", tags, source])
    db.conn.close()
    db = store.connect(path)
    rows = dict(db.execute("SELECT email, topics FROM subscribers").fetchall())
    db.conn.close()
    assert rows == {"web1@example.com": '["links"]', "web2@example.com": None,
                    "imp@example.com": None}


def test_default_topics_is_all_or_none(newsletter_dir: Path) -> None:
    import pytest

    from newsletter.errors import ConfigError
    from newsletter.settings import load_settings

    with (newsletter_dir / "newsletter.toml").open("a") as f:
        f.write(TOPICS + 'default_topics = "some"\n')
    with pytest.raises(ConfigError, match='default_topics = .some. must be "all"'):
        load_settings(newsletter_dir)


def test_a_topic_nobody_gets_says_so(newsletter_dir: Path, write_draft: Callable[..., Path],
                                     cli: Callable[..., object]) -> None:
    with (newsletter_dir / "newsletter.toml").open("a") as f:
        f.write(TOPICS)
    cli("subscribers", "add", "ann@example.com")
    db = store.connect(newsletter_dir / "newsletter.db")
    with db.conn:
        set_topic_choice(db, 1, TopicChoice(False, ("links",)))
    db.conn.close()
    write_draft("2026-01-01-essay.md", "---\nsubject: Essay\ntopics: [essays]\n---\nHi.\n")
    result = cli("send", "2026-01-01-essay", "--to", "subscribers", "--yes")
    assert result.exit_code != 0  # type: ignore[attr-defined]
    assert ("there are no active subscribers with topic essays (or everything) to send to"
            in result.stderr)  # type: ignore[attr-defined]
