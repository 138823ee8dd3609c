"""`newsletter subscribers …` through the real CLI, on a real newsletter folder and database."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from newsletter import store
from newsletter.audience.formats import FORMATS
from tests.audience.conftest import DATA, rows

REPO = Path(__file__).resolve().parents[2]


def one_error_line(run) -> str:
    """The one `Error: …` line a failed command printed, checking that it failed cleanly."""
    assert run.exception is None, repr(run.exception)
    assert run.exit_code == 4, run.exit_code  # a SubscriberError
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), run.stderr
    return lines[0]


def test_add_list_count(cli, newsletter_dir: Path) -> None:
    r = cli("subscribers", "add", "Liu@Example.com", "--name", "Liu", "--tag", "a", "--tag", "b")
    assert (r.exit_code, r.stdout) == (0, "Added: Liu@example.com\n")
    assert cli("subscribers", "add", "liu@EXAMPLE.com").stdout == "Unchanged: Liu@example.com\n"
    cli("subscribers", "add", "sam@example.com")
    r = cli("subscribers", "list")
    assert r.stdout == "Liu@example.com\tactive\tLiu\ta,b\nsam@example.com\tactive\n"
    r = cli("subscribers", "list", "--tag", "b", "--json")
    [line] = r.stdout.splitlines()
    data = json.loads(line)
    assert (data["email"], data["tags"], data["source"]) == ("Liu@example.com", ["a", "b"], "cli")
    assert cli("subscribers", "list", "--search", "SAM", "--limit", "1").stdout.startswith("sam@")
    r = cli("subscribers", "count")
    assert r.stdout.splitlines()[0].split() == ["active", "2"]
    assert r.stdout.splitlines()[-1].split() == ["total", "2"]
    assert json.loads(cli("subscribers", "count", "--json").stdout)["active"] == 2
    assert (newsletter_dir / "newsletter.db").exists()


def test_errors_are_one_line_with_the_fix(cli, newsletter_dir: Path) -> None:
    r = cli("subscribers", "add", "not-an-address")
    assert r.exit_code == 4 and r.stdout == ""
    assert r.stderr == (
        "Error: 'not-an-address' is not a valid email address: "
        "An email address must have an @-sign.\n"
    )
    r = cli("subscribers", "unsubscribe", "nobody@example.com")
    assert r.exit_code == 4
    assert r.stderr.startswith("Error: nobody@example.com is not on the list")
    r = cli("subscribers", "list", "--status", "sleeping")
    assert r.stderr.startswith("Error: unknown status 'sleeping': use one of active,")
    r = cli("subscribers", "import", "missing.csv")
    assert r.exit_code == 4 and r.stderr.startswith("Error: cannot read missing.csv")


def test_unsubscribe_then_resubscribe_only_explicitly(cli, newsletter_dir: Path) -> None:
    cli("subscribers", "add", "ada@example.com")
    r = cli("subscribers", "unsubscribe", "ADA@example.com")
    assert r.exit_code == 0 and r.stdout.startswith("Unsubscribed: ada@example.com")
    r = cli("subscribers", "add", "ada@example.com")
    assert r.exit_code == 4 and "--resubscribe" in r.stderr
    r = cli("subscribers", "add", "ada@example.com", "--resubscribe")
    assert r.stdout == "Resubscribed: ada@example.com\n"
    assert cli("subscribers", "list", "--status", "active").stdout.startswith("ada@example.com")


def test_remove(cli, newsletter_dir: Path) -> None:
    cli("subscribers", "add", "ada@example.com")
    r = cli("subscribers", "remove", "ada@example.com")
    assert r.stdout == (
        "Forgotten: ada@example.com (1 history events erased, 0 deliveries kept with the "
        "address hashed)\n"
    )
    assert cli("subscribers", "list").stdout == ""


def test_show_prints_the_reader_and_their_history(cli, newsletter_dir: Path) -> None:
    cli("subscribers", "add", "ada@example.com", "--name", "Ada \x1b[31mL", "--tag", "friends")
    cli("subscribers", "unsubscribe", "ada@example.com")
    r = cli("subscribers", "show", "ADA@example.com")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:4] == ["email         ada@example.com", "name          Ada [31mL",
                         "status        unsubscribed", "tags          friends"]
    assert "\x1b" not in r.stdout
    assert "History (2 events):" in lines
    assert lines[-2].endswith("subscribed - -> active  via cli (added)")
    assert lines[-1].endswith("unsubscribed active -> unsubscribed  via cli")
    data = json.loads(cli("subscribers", "show", "ada@example.com", "--json").stdout)
    assert (data["email"], data["status"], data["tags"]) == (
        "ada@example.com", "unsubscribed", ["friends"])
    assert [(e["kind"], e["source"]) for e in data["history"]] == [
        ("subscribed", "cli"), ("unsubscribed", "cli")]
    r = cli("subscribers", "show", "nobody@example.com")
    assert r.exit_code != 0 and r.stderr.startswith("Error: nobody@example.com is not on the list")


def test_add_refuses_a_name_longer_than_200(cli, newsletter_dir: Path) -> None:
    r = cli("subscribers", "add", "ada@example.com", "--name", "A" * 201)
    assert r.exit_code != 0 and r.stdout == ""
    assert r.stderr == (
        "Error: the name is 201 characters long; at most 200 are kept: shorten it\n"
    )
    assert cli("subscribers", "add", "ada@example.com", "--name", "A" * 200).exit_code == 0


def test_import_prints_the_summary_and_keeps_rejects(cli, newsletter_dir: Path) -> None:
    r = cli("subscribers", "import", str(DATA / "messy_mailchimp.csv"), "--dry-run")
    assert r.exit_code == 0
    assert r.stdout.splitlines()[0] == (
        "Would import 8 rows (Mailchimp): 3 added, 0 updated, 0 unchanged, 5 skipped "
        "(invalid address: 2, missing address: 1, bad date: 1, duplicate: 1)"
    )
    assert r.stdout.splitlines()[-1] == "Dry run: nothing was written."
    assert cli("subscribers", "list").stdout == ""
    r = cli("subscribers", "import", str(DATA / "messy_mailchimp.csv"), "--tag", "mc",
            "--rejects", "rejects.csv")
    assert r.stdout.startswith("Imported 8 rows (Mailchimp): 3 added")
    assert "  skipped line 7: 'not-an-address' is not a valid email address" in r.stdout
    assert len((newsletter_dir / "rejects.csv").read_text().splitlines()) == 1 + 5
    assert cli("subscribers", "list", "--tag", "mc").stdout.count("\n") == 3


def test_import_with_explicit_format(cli, newsletter_dir: Path) -> None:
    r = cli("subscribers", "import", str(DATA / "ghost-members-2024-05-01.csv"),
            "--format", "substack")
    assert r.exit_code == 4
    assert "is not a Substack export: it has no active_subscription, email_disabled" in r.stderr
    r = cli("subscribers", "import", str(DATA / "ghost-members-2024-05-01.csv"),
            "--format", "ghost")
    assert "2 added" in r.stdout


@pytest.mark.parametrize("format,fix", [
    ("auto", f", or pass --format with one of {', '.join(FORMATS)}"),
    ("sheet", ""),  # the format was given: only the column can be the fix
    ("ghost", ""),  # not "try --format auto": it would fail the same way
])
def test_a_sheet_without_an_email_column_says_which_column_to_name(
    cli, newsletter_dir: Path, format: str, fix: str
) -> None:
    # Before: "cannot tell which platform … pass --format with one of …" (auto) and "it has
    # no email column; try --format auto" (sheet): neither said what to change.
    (newsletter_dir / "noemail.csv").write_text("name,city\nAda,London\n")
    run = cli("subscribers", "import", "noemail.csv", "--format", format)
    assert one_error_line(run) == (
        'Error: noemail.csv: no column holds the email addresses (header: name,city): name '
        f'the column that has them "email" and import again{fix}'
    )
    assert cli("subscribers", "count", "--json").stdout.startswith('{"active": 0,')
    assert rows(store.connect(newsletter_dir / "newsletter.db")) == []


def test_a_json_file_is_not_a_list_export(cli, newsletter_dir: Path) -> None:
    # Before: "cannot tell which platform this export comes from (header: {)".
    posts = REPO / "examples" / "ghost-export.json"  # Ghost's posts export
    for format in ("auto", "ghost"):
        run = cli("subscribers", "import", str(posts), "--format", format)
        assert one_error_line(run) == (
            f"Error: {posts} is JSON, not a subscriber list export: subscribers are imported "
            "from the CSV (or ZIP) a platform exports; posts go in with "
            f"`newsletter import-posts {posts}`"
        )
    members = newsletter_dir / "members.json"  # a list, but as JSON
    members.write_text('[{"email": "ada@example.com"}]\n')
    assert "members.json is JSON, not a subscriber list export" in one_error_line(
        cli("subscribers", "import", "members.json"))
    assert rows(store.connect(newsletter_dir / "newsletter.db")) == []


def test_export_is_csv_in_our_format(cli, newsletter_dir: Path) -> None:
    cli("subscribers", "add", "ada@example.com", "--name", 'Ada "The Countess", L.', "--tag", "x,y")
    cli("subscribers", "add", "bob@example.com")
    cli("subscribers", "unsubscribe", "bob@example.com")
    r = cli("subscribers", "export")
    assert r.stdout.startswith("email,name,status,tags,attributes,source,created_at,")
    got = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(g["email"], g["status"]) for g in got] == [
        ("ada@example.com", "active"), ("bob@example.com", "unsubscribed")
    ]
    assert json.loads(got[0]["tags"]) == ["x,y"]
    r = cli("subscribers", "export", "--status", "unsubscribed", "-o", "out.csv")
    assert r.stdout == "" and "Exported 1 subscribers to out.csv" in r.stderr
    assert (newsletter_dir / "out.csv").read_text().count("\n") == 2
    assert not (newsletter_dir / "out.csv.partial").exists()
    r = cli("subscribers", "export", "-o", "no/such/dir/out.csv")
    assert r.exit_code == 4
    assert r.stderr == "Error: cannot write no/such/dir/out.csv: No such file or directory\n"
    r = cli("subscribers", "import", str(DATA / "plain.txt"), "--rejects", "no/dir/r.csv")
    assert r.exit_code == 4 and r.stderr.startswith("Error: cannot write the rejects file")


def test_export_then_import_into_a_fresh_newsletter_gives_the_same_list(
    cli, newsletter_dir: Path, tmp_path: Path
) -> None:
    for name in ("subscribed_members_export_abc123.csv", "unsubscribed_members_export_abc123.csv",
                 "cleaned_members_export_abc123.csv", "buttondown-subscribers.csv",
                 "listmonk-subscribers.csv", "ghost-members-2024-05-01.csv"):
        assert cli("subscribers", "import", str(DATA / name)).exit_code == 0
    cli("subscribers", "add", "zoë@bücher.example", "--name", "Zoë, \"Z\"", "--tag", "ü,ber")
    cli("subscribers", "add", "complainer@example.com")
    cli("subscribers", "unsubscribe", "complainer@example.com")
    export = tmp_path / "export.csv"
    assert cli("subscribers", "export", "-o", str(export)).exit_code == 0

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "newsletter.toml").write_text((newsletter_dir / "newsletter.toml").read_text())
    r = cli("--dir", str(fresh), "subscribers", "import", str(export))
    assert r.exit_code == 0, r.stderr
    assert "(newsletter export)" in r.stdout and "0 skipped" in r.stdout

    original = rows(store.connect(newsletter_dir / "newsletter.db"))
    copy = rows(store.connect(fresh / "newsletter.db"))
    assert len(copy) == len(original) == 14
    for a, b in zip(original, copy, strict=True):
        a["attributes"], b["attributes"] = json.loads(a["attributes"]), json.loads(b["attributes"])
        assert a == b
    # And importing the export again into the original changes nothing.
    r = cli("subscribers", "import", str(export))
    assert "0 added, 0 updated, 14 unchanged" in r.stdout


def test_show_tells_where_a_change_came_from_and_the_consent_text(
    cli, newsletter_dir: Path
) -> None:
    from newsletter.audience import events

    cli("subscribers", "add", "ada@example.com")
    db = store.connect(newsletter_dir / "newsletter.db")
    [sub] = db.execute("SELECT id FROM subscribers").fetchall()
    events.change_status(
        db, sub[0], "unsubscribed",
        events.Origin("web", "203.0.113.9", "Firefox/130", "Yes, send me the letter"),
        at="2026-01-02T03:04:05Z",
    )
    db.conn.close()
    lines = cli("subscribers", "show", "ada@example.com").stdout.splitlines()
    assert lines[-2:] == [
        "  2026-01-02T03:04:05Z  unsubscribed active -> unsubscribed  via web  "
        "from 203.0.113.9 Firefox/130",
        "    consent: Yes, send me the letter",
    ]
    [_, web] = json.loads(cli("subscribers", "show", "ada@example.com", "--json").stdout)[
        "history"]
    assert (web["ip"], web["user_agent"], web["consent"]) == (
        "203.0.113.9", "Firefox/130", "Yes, send me the letter")
