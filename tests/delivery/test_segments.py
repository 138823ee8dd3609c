"""`--to` segments through the real CLI on a real database: tags, topics and reader
attributes, the rules for readers who lack an attribute, errors, injection attempts, and
sends (now, resumed, scheduled) that reach exactly the matching readers."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter import store
from newsletter.audience.segments import parse_segment
from newsletter.audience.subscribers import TopicChoice, get, set_topic_choice
from newsletter.delivery.recipients import parse_audience

DRAFT = "---\nsubject: Paid post\n---\nHello {{ subscriber.name | default('friend') }}.\n"

# Our own export format: `subscribers import` reads it back as written.
READERS = [
    ("ann", "active", ["friends"], {"plan": "paid", "city": "Oslo"}),
    ("bob", "active", ["friends", "press"], {"Plan": "free", "city": " New York "}),
    ("cat", "active", [], {"plan": "paid", "city": "Bergen", "note": "a+b, c"}),
    ("dan", "active", [], {}),
    ("eve", "active", [], {"plan": "Paid"}),
    ("fay", "unsubscribed", [], {"plan": "paid"}),
    ("gus", "active", [], {"paid": True, "seats": 3, "city": "", "a'b": "x"}),
]


def _csv(rows: list[tuple[str, str, list[str], dict[str, object]]]) -> str:
    def cell(value: object) -> str:
        return '"' + json.dumps(value).replace('"', '""') + '"'
    lines = ["email,name,status,tags,attributes"]
    lines += [f"{n}@example.com,{n.title()},{status},{cell(tags)},{cell(attrs)}"
              for n, status, tags, attrs in rows]
    return "\n".join(lines) + "\n"


@pytest.fixture
def letter(newsletter_dir: Path, write_draft: Callable[..., Path],
           cli: Callable[..., object]) -> Path:
    write_draft("2026-12-08-paid.md", DRAFT)
    (newsletter_dir / "readers.csv").write_text(_csv(READERS), encoding="utf-8")
    run = cli("subscribers", "import", "readers.csv")
    assert run.exit_code == 0, run.stderr  # type: ignore[attr-defined]
    return newsletter_dir


def who(cli: Callable[..., object], expr: str, option: str = "--to") -> list[str]:
    """The active readers `expr` picks, by name, as `subscribers list` shows them."""
    run = cli("subscribers", "list", "--status", "active", option, expr)
    assert run.exit_code == 0, run.stderr  # type: ignore[attr-defined]
    return sorted(line.split("@")[0] for line in run.stdout.splitlines())  # type: ignore


def sent_to(root: Path) -> list[str]:
    found = []
    for path in (root / "outbox").rglob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found.append(msg["To"].addresses[0].username)
    return sorted(found)


@pytest.mark.parametrize(("expr", "names"), [
    ("plan=paid", ["ann", "cat"]),
    ("PLAN=paid", ["ann", "cat"]),  # names ignore letter case ("Plan" is bob's)
    ("plan=Paid", ["eve"]),  # values do not
    ("plan=free", ["bob"]),
    ("plan!=paid", ["bob", "dan", "eve", "gus"]),  # who lacks it matches !=
    ("-plan=paid", ["bob", "dan", "eve", "gus"]),
    ("city!=Oslo", ["bob", "cat", "dan", "eve", "gus"]),
    ('city="New York"', ["bob"]),  # trimmed on both sides
    ('city=" New York  "', ["bob"]),
    ("has:city", ["ann", "bob", "cat"]),  # gus's city is empty: he lacks it
    ("-has:city", ["dan", "eve", "gus"]),
    ("has:CITY+plan!=paid", ["bob"]),
    ("paid=true", ["gus"]),  # JSON true reads as `true`
    ("seats=3", ["gus"]),
    ('note="a+b, c"', ["cat"]),
    ('"a\'b"=x', ["gus"]),
    ("tag:friends+plan=paid", ["ann"]),
    ("tag:friends,-plan=paid", ["bob"]),
    ("-tag:press", ["ann", "cat", "dan", "eve", "gus"]),
    ("tag:friends+-tag:press+city=Oslo", ["ann"]),
    ("subscribers", ["ann", "bob", "cat", "dan", "eve", "gus"]),
])
def test_each_operator_and_combination_picks_exactly_its_readers(
    letter: Path, cli: Callable[..., object], expr: str, names: list[str]
) -> None:
    assert who(cli, expr) == names


def test_a_reader_without_an_attribute_never_matches_equal_and_always_matches_not_equal(
    letter: Path, cli: Callable[..., object]
) -> None:
    # dan has no attributes at all; gus has city "" (as good as none).
    for expr in ("plan=paid", "city=Oslo", "has:plan", "plan=free"):
        assert "dan" not in who(cli, expr)
    for expr in ("plan!=paid", "city!=Oslo", "city!=Bergen", "-has:plan"):
        assert "dan" in who(cli, expr)
    assert "gus" not in who(cli, "has:city") and "gus" in who(cli, "city!=Oslo")


def test_the_tag_alias_takes_the_same_language(letter: Path, cli: Callable[..., object]) -> None:
    assert who(cli, "friends", option="--tag") == ["ann", "bob"]
    assert who(cli, "friends+plan=paid", option="--tag") == ["ann"]
    both = cli("subscribers", "list", "--to", "tag:friends", "--tag", "friends")
    assert both.exit_code != 0  # type: ignore[attr-defined]
    assert "give one of them" in both.stderr  # type: ignore[attr-defined]


def test_topics_combine_with_attributes(letter: Path, cli: Callable[..., object]) -> None:
    with (letter / "newsletter.toml").open("a") as f:
        f.write('\n[subscribe]\ntopics = ["essays", "links"]\n')
    db = store.connect(letter / "newsletter.db")
    with db.conn:
        for name, chosen in (("ann", ("links",)), ("cat", ("essays",))):
            reader = get(db, f"{name}@example.com")
            assert reader is not None
            set_topic_choice(db, reader.id, TopicChoice(False, chosen))
    db.conn.close()
    # topic:links: who chose it and who gets everything (every reader but cat).
    assert who(cli, "topic:links+plan=paid") == ["ann"]
    assert who(cli, "topic:Essays+plan=paid") == ["cat"]
    assert who(cli, "-topic:links") == ["cat"]
    bad = cli("subscribers", "count", "--to", "topic:linx")
    assert bad.exit_code != 0  # type: ignore[attr-defined]
    assert "no topic 'linx': topics are essays, links" in bad.stderr  # type: ignore


def test_count_answers_how_many_a_send_would_reach(letter: Path,
                                                   cli: Callable[..., object]) -> None:
    run = cli("subscribers", "count", "--to", "plan=paid", "--json")
    assert run.exit_code == 0, run.stderr  # type: ignore[attr-defined]
    counts = json.loads(run.stdout)  # type: ignore[attr-defined]
    assert (counts["active"], counts["unsubscribed"], counts["to"]) == (2, 1, "plan=paid")
    text = cli("subscribers", "count", "--to", 'city="New York"').stdout  # type: ignore
    assert 'A send --to city="New York" reaches the 1 active.' in text
    exported = cli("subscribers", "export", "--to", "tag:friends+plan=paid").stdout  # type: ignore
    assert [line.split(",")[0] for line in exported.splitlines()[1:]] == ["ann@example.com"]


@pytest.mark.parametrize(("expr", "named"), [
    ("plann=paid", "no subscriber has the attribute 'plann'; attributes in use: a'b, city, "),
    ("has:town", "no subscriber has the attribute 'town'"),
    ("tag:friend+plan=paid", "no subscriber has the tag 'friend'"),
    ("plan=", "has an empty value for plan"),
    ("=paid", "has an empty attribute name"),
    ("has:", "has an empty attribute name"),
    ('city="New York', "has a quote that is not closed"),
    ('city="New"York', "has text after the closing quote"),
    ('city=New"York', "has a quote that is not closed"),
    ('city=New"Yo"rk', "has a quote inside"),
    ("tag:friends+", "has an empty term"),
    ("tag:friends,plan=paid", "has a term to include after a comma"),
    ("plan", "has 'plan', which is not a term"),
    ("size:big", "has 'size:big', which is not a term"),
    ("tag:friends,ann@example.com", "not a"),  # a mix (send), addresses (subscribers)
])
def test_an_unknown_attribute_or_a_malformed_expression_is_one_error_line(
    letter: Path, cli: Callable[..., object], expr: str, named: str
) -> None:
    for args in (["send", "paid", "--to", expr, "--yes"],
                 ["send", "paid", "--to", expr, "--dry-run"],
                 ["send", "paid", "--to", expr, "--at", "2031-06-01 07:00"],
                 ["subscribers", "count", "--to", expr]):
        run = cli(*args)
        assert run.exit_code != 0, args  # type: ignore[attr-defined]
        err = run.stderr  # type: ignore[attr-defined]
        assert err.startswith("Error: ") and err.count("\n") == 1, err
        assert named in err, err
        if "tag" not in named:
            assert "--to takes `subscribers`, `tag:NAME`" in err, err
    assert not (letter / "outbox").exists()


@pytest.mark.parametrize("expr", [
    "plan') OR 1=1 --=paid",
    "\"plan' OR '1'='1\"=paid",
    "plan=paid' OR '1'='1",
    'plan="paid\\" OR 1=1 --"',
    "has:city) OR (1=1",
    "tag:friends') OR 1=1 --",
    "topic:x') OR 1=1; DROP TABLE subscribers; --",
    "plan=x'; DROP TABLE subscribers; --",
])
def test_names_and_values_never_become_sql(letter: Path, cli: Callable[..., object],
                                           expr: str) -> None:
    run = cli("subscribers", "count", "--to", expr, "--json")
    if run.exit_code == 0:  # type: ignore[attr-defined]
        # A value is only ever compared: nobody has these values.
        counts = json.loads(run.stdout)  # type: ignore[attr-defined]
        assert counts["active"] == 0 and counts["total"] == 0, counts
    else:
        err = run.stderr  # type: ignore[attr-defined]
        assert err.startswith("Error: ") and err.count("\n") == 1, err
        assert "no subscriber has the" in err or "no topic" in err or "--to takes" in err, err
    assert len(who(cli, "subscribers")) == 6  # the table is whole


def test_the_canonical_text_reads_back_as_the_same_segment() -> None:
    for text in ('tag:Friends+PLAN=paid,-tag:press', 'city=" New York "', 'note="a+b, c"',
                 'x="say \\"hi\\""', '"a\'b"=x', '"odd:name"=1', "has:city+-has:town",
                 "v=a@b.org", "topic:Links", "-plan=paid"):
        segment = parse_segment(text)
        assert parse_segment(segment.spec) == segment, (text, segment.spec)
        assert parse_audience(segment.spec).spec == segment.spec
    assert parse_segment("tag:Friends+PLAN=paid,-tag:press").spec == (
        "tag:friends+plan=paid,-tag:press")
    # Tag-only expressions keep the text they always had (stored campaigns resume).
    assert parse_audience("tag:Founders,-tag:press").spec == "tag:founders,-tag:press"
    assert parse_audience("tag:early birds").spec == "tag:early birds"
    assert parse_audience("liu+news@example.com").kind == "test"


def test_a_send_to_a_segment_reaches_exactly_its_readers_and_the_campaign_records_it(
    letter: Path, cli: Callable[..., object]
) -> None:
    dry = cli("send", "paid", "--to", "tag:friends+plan=paid", "--dry-run")
    assert dry.exit_code == 0, dry.stderr  # type: ignore[attr-defined]
    assert "1 messages built" in dry.stdout  # type: ignore[attr-defined]
    run = cli("send", "paid", "--to", "plan=paid+PLAN!=free", "--yes")
    assert run.exit_code == 0, run.stderr  # type: ignore[attr-defined]
    assert sent_to(letter) == ["ann", "cat"]
    listing = cli("campaigns").stdout  # type: ignore[attr-defined]
    assert "plan=paid and plan!=free" in listing
    shown = cli("campaigns", "1", "--json")
    assert json.loads(shown.stdout)["audience"] == "plan=paid+plan!=free"  # type: ignore


def test_a_resumed_send_keeps_the_readers_it_started_with(
    letter: Path, cli: Callable[..., object]
) -> None:
    assert cli("send", "paid", "--to", "city=Oslo", "--yes").exit_code == 0  # type: ignore
    db = store.connect(letter / "newsletter.db")
    with db.conn:  # as a killed send leaves it
        db.execute("UPDATE deliveries SET state = 'queued' WHERE campaign_id = 1")
        db.execute("UPDATE campaigns SET status = 'stopped', finished_at = NULL WHERE id = 1")
    db.conn.close()
    # A reader who moves to Oslo meanwhile is not added to the send under way...
    (letter / "moved.csv").write_text(_csv([("dan", "active", [], {"city": "Oslo"})]))
    assert cli("subscribers", "import", "moved.csv").exit_code == 0  # type: ignore
    run = cli("send", "paid", "--to", "city=Oslo", "--yes")
    assert run.exit_code == 0, run.stderr  # type: ignore[attr-defined]
    assert "Campaign 1 " in run.stdout  # type: ignore[attr-defined]
    db = store.connect(letter / "newsletter.db")
    emails = [r[0] for r in db.execute("SELECT email FROM deliveries WHERE campaign_id = 1")]
    db.conn.close()
    assert emails == ["ann@example.com"]


def test_values_that_differ_in_case_are_different_audiences_when_resuming(
    letter: Path, cli: Callable[..., object]
) -> None:
    assert cli("send", "paid", "--to", "plan=paid", "--yes").exit_code == 0  # type: ignore
    db = store.connect(letter / "newsletter.db")
    with db.conn:
        db.execute("UPDATE deliveries SET state = 'queued' WHERE campaign_id = 1")
        db.execute("UPDATE campaigns SET status = 'stopped', finished_at = NULL WHERE id = 1")
    db.conn.close()
    # plan=Paid is eve only: it does not finish the plan=paid send as if it were the same.
    run = cli("send", "paid", "--to", "plan=Paid", "--yes")
    assert run.exit_code == 0, run.stderr  # type: ignore[attr-defined]
    assert "Campaign 2 (2026-12-08-paid → plan=Paid" in run.stdout  # type: ignore
    db = store.connect(letter / "newsletter.db")
    rows = db.execute("SELECT campaign_id, email FROM deliveries ORDER BY id").fetchall()
    db.conn.close()
    assert rows == [(1, "ann@example.com"), (1, "cat@example.com"), (2, "eve@example.com")]


def test_a_scheduled_send_to_a_segment_goes_out_through_newsletter_run(
    letter: Path, cli: Callable[..., object]
) -> None:
    run = cli("send", "paid", "--to", "tag:friends+plan!=paid", "--at", "2031-06-01 07:00")
    assert run.exit_code == 0, run.stderr  # type: ignore[attr-defined]
    db = store.connect(letter / "newsletter.db")
    assert db.execute("SELECT audience FROM schedules").fetchall() == [
        ("tag:friends+plan!=paid",)]
    with db.conn:  # the time has come
        db.execute("UPDATE schedules SET send_at = '2020-01-01T00:00:00Z'")
    db.conn.close()
    ran = cli("run", "--no-sync")
    assert ran.exit_code == 0, ran.stderr  # type: ignore[attr-defined]
    assert sent_to(letter) == ["bob"]
    assert "tag friends and plan!=paid" in cli("campaigns").stdout  # type: ignore


def test_a_scheduled_send_naming_an_unknown_attribute_is_refused_when_scheduled(
    letter: Path, cli: Callable[..., object]
) -> None:
    run = cli("send", "paid", "--to", "tier=gold", "--at", "2031-06-01 07:00")
    assert run.exit_code != 0  # type: ignore[attr-defined]
    assert "no subscriber has the attribute 'tier'" in run.stderr  # type: ignore


SUBSTACK = (
    "email,active_subscription,expiry,plan,email_disabled,created_at\n"
    "pay@example.com,true,2027-05-01T00:00:00.000Z,yearly,false,2021-01-07T17:42:14.000Z\n"
    "comp@example.com,true,2027-05-01T00:00:00.000Z,comp,false,2021-01-07T17:42:14.000Z\n"
    "gift@example.com,true,2027-05-01T00:00:00.000Z,gift,false,2021-01-07T17:42:14.000Z\n"
    "free@example.com,false,,,false,2022-02-03T04:05:06.000Z\n"
)


def test_imported_substack_paid_comp_and_gift_readers_can_be_reached(
    newsletter_dir: Path, write_draft: Callable[..., Path], cli: Callable[..., object]
) -> None:
    write_draft("2026-12-08-paid.md", DRAFT)
    (newsletter_dir / "email_list.csv").write_text(SUBSTACK)
    assert cli("subscribers", "import", "email_list.csv").exit_code == 0  # type: ignore
    assert who(cli, "paid=true") == ["comp", "gift", "pay"]
    assert who(cli, "paid!=true") == ["free"]
    assert who(cli, "plan=comp") == ["comp"] and who(cli, "plan=gift") == ["gift"]
    run = cli("send", "paid", "--to", "paid=true", "--yes")
    assert run.exit_code == 0, run.stderr  # type: ignore[attr-defined]
    assert sent_to(newsletter_dir) == ["comp", "gift", "pay"]


def test_a_substack_reader_whose_subscription_lapsed_is_no_longer_paid_after_reimport(
    newsletter_dir: Path, cli: Callable[..., object]
) -> None:
    (newsletter_dir / "email_list.csv").write_text(SUBSTACK)
    assert cli("subscribers", "import", "email_list.csv").exit_code == 0  # type: ignore
    lapsed = SUBSTACK.replace("pay@example.com,true", "pay@example.com,false")
    (newsletter_dir / "email_list.csv").write_text(lapsed)
    assert cli("subscribers", "import", "email_list.csv").exit_code == 0  # type: ignore
    assert who(cli, "paid=true") == ["comp", "gift"]
    assert "pay" in who(cli, "paid=false")


def test_odd_keys_booleans_and_attributes_that_are_not_an_object(
    letter: Path, cli: Callable[..., object]
) -> None:
    odd = [("hal", "active", [], {'say "hi"': " yo ", "paid": False, "Plan": "paid"}),
           ("ivy", "active", [], {"seats": 1})]
    (letter / "odd.csv").write_text(_csv(odd), encoding="utf-8")
    assert cli("subscribers", "import", "odd.csv").exit_code == 0  # type: ignore
    db = store.connect(letter / "newsletter.db")
    with db.conn:  # a row another tool wrote: never an SQL error, just no attributes
        db.execute("UPDATE subscribers SET attributes = '[1, 2]' WHERE email = 'eve@example.com'")
    db.conn.close()
    assert who(cli, '"say \\"hi\\""=yo') == ["hal"]
    assert who(cli, 'has:"say \\"hi\\""') == ["hal"]
    assert who(cli, '"say \\"hi\\""!=yo') == ["ann", "bob", "cat", "dan", "eve", "gus", "ivy"]
    assert who(cli, "paid=false") == ["hal"]
    assert who(cli, "paid=true") == ["gus"]
    assert who(cli, "seats=1") == ["ivy"]  # a number 1 is not JSON true, nor true 1
    assert who(cli, "paid=1") == []
    assert who(cli, "plan=paid") == ["ann", "cat", "hal"]  # "Plan" and "plan" alike
    assert "eve" in who(cli, "plan!=paid") and "eve" in who(cli, "-has:plan")
    db = store.connect(letter / "newsletter.db")
    with db.conn:  # not JSON at all (`list` cannot show it, but a count or a send go on)
        db.execute("UPDATE subscribers SET attributes = 'not json' WHERE email = 'dan@example.com'")
    db.conn.close()
    for expr, active in (("plan!=paid", 5), ("plan=paid", 3), ("has:seats", 2)):
        run = cli("subscribers", "count", "--to", expr, "--json")
        assert run.exit_code == 0, run.stderr  # type: ignore[attr-defined]
        assert json.loads(run.stdout)["active"] == active, expr  # type: ignore


def test_a_mistyped_address_in_a_test_send_is_named_as_an_address(
    letter: Path, cli: Callable[..., object]
) -> None:
    run = cli("send", "paid", "--to", "ann@example.com,bob@example", "--yes")
    assert run.exit_code != 0  # type: ignore[attr-defined]
    assert "not a mix" not in run.stderr and "bob@example" in run.stderr  # type: ignore
    assert run.stderr.count("\n") == 1  # type: ignore[attr-defined]
