"""Each platform's export, the status and consent rules, and bad input, on a real SQLite file."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pytest

from newsletter.audience import importers
from newsletter.audience import subscribers as subs
from newsletter.errors import SubscriberError
from tests.audience.conftest import DATA, rows

MAILCHIMP = [
    "subscribed_members_export_abc123.csv",
    "unsubscribed_members_export_abc123.csv",
    "cleaned_members_export_abc123.csv",
]


def by_email(db) -> dict[str, subs.Subscriber]:
    return {s.email: s for s in subs.iter_subscribers(db)}


def test_substack_current_and_older_exports(db) -> None:
    s = importers.import_file(db, DATA / "substack_email_list.2024-05-01.csv")
    assert (s.formats, s.added, s.skipped_total) == (["Substack"], 3, 0)
    s = importers.import_file(db, DATA / "substack_email_list.old.csv")
    assert (s.formats, s.added) == (["Substack"], 2)
    got = by_email(db)
    assert got["ada@example.com"].status == "active"
    assert got["ada@example.com"].attributes == {
        "paid": True, "plan": "yearly", "expiry": "2025-05-01T00:00:00.000Z"
    }
    assert got["ada@example.com"].created_at == "2021-01-07T17:42:14Z"
    assert got["Bob.Smith@example.org"].status == "active"
    assert got["gone@example.net"].status == "unsubscribed"  # email_disabled true
    assert got["stopped@example.com"].status == "unsubscribed"
    assert got["old.reader@example.com"].created_at == "2019-11-11T11:11:11Z"
    assert got["ada@example.com"].source == "import:substack:substack_email_list.2024-05-01.csv"


def test_mailchimp_three_files_map_status_names_tags_and_consent(db) -> None:
    for name in MAILCHIMP:
        importers.import_file(db, DATA / name)
    got = by_email(db)
    liu = got["liu@example.com"]
    assert (liu.name, liu.status, liu.tags) == ("Liu Wei", "active", ["VIP", "Customer"])
    assert liu.attributes == {"Phone Number": "+1 555 0100"}
    assert (liu.created_at, liu.confirmed_at, liu.optin_ip) == (
        "2019-03-05T18:12:41Z", "2019-03-05T18:13:02Z", "203.0.113.7"
    )
    sam = got["sam@example.com"]  # no OPTIN_TIME: confirmation time and IP stand in
    assert (sam.created_at, sam.optin_ip) == ("2020-07-01T08:00:00Z", "198.51.100.1")
    left = got["left@example.com"]
    assert (left.status, left.unsubscribed_at, left.name) == (
        "unsubscribed", "2022-05-05T05:05:05Z", "Lee Ft"
    )
    bounced = got["bounced@example.com"]
    assert (bounced.status, bounced.unsubscribed_at) == ("bounced", "2021-09-09T09:09:09Z")


def test_mailchimp_export_zip_holds_all_three(db, tmp_path: Path) -> None:
    archive = tmp_path / "members_export_abc123.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in MAILCHIMP:
            z.write(DATA / name, name)
        z.writestr("__MACOSX/._subscribed_members_export_abc123.csv", b"junk")
    s = importers.import_file(db, archive)
    assert (s.added, s.skipped_total, s.formats) == (4, 0, ["Mailchimp"])
    assert {e: x.status for e, x in by_email(db).items()} == {
        "liu@example.com": "active", "sam@example.com": "active",
        "left@example.com": "unsubscribed", "bounced@example.com": "bounced",
    }
    assert by_email(db)["left@example.com"].source == (
        "import:mailchimp:members_export_abc123.zip"
    )


def test_buttondown(db) -> None:
    s = importers.import_file(db, DATA / "buttondown-subscribers.csv")
    assert (s.formats, s.added, s.skipped_total) == (["Buttondown"], 4, 0)
    got = by_email(db)
    reader = got["reader@example.com"]
    assert reader.name == "Rea Der" and reader.tags == ["python", "early"]
    assert reader.attributes == {
        "name": "Rea Der", "city": "Lisbon", "notes": "met at PyCon",
        "referrer_url": "https://example.com/blog", "utm_source": "twitter",
        "utm_medium": "social", "utm_campaign": "launch",
    }
    assert (reader.created_at, reader.confirmed_at, reader.optin_ip) == (
        "2021-03-04T18:52:08Z", "2021-03-04T18:55:00Z", "203.0.113.9"
    )
    assert got["premium@example.com"].created_at == "2021-05-01T08:00:00Z"  # to UTC
    assert got["waiting@example.com"].status == "pending"
    assert got["quit@example.com"].status == "unsubscribed"
    assert got["quit@example.com"].unsubscribed_at == "2023-03-03T03:03:03Z"


def test_listmonk_attributes_and_blocklist(db) -> None:
    importers.import_file(db, DATA / "listmonk-subscribers.csv")
    got = by_email(db)
    one = got["list.one@example.com"]
    assert one.name == "List One" and one.status == "active"
    assert one.attributes == {"city": "Bengaluru", "plan": {"tier": "pro"}}
    assert one.created_at == "2020-12-01T10:00:00Z"
    assert got["blocked@example.com"].status == "unsubscribed"


def test_ghost_labels_and_email_opt_out(db) -> None:
    importers.import_file(db, DATA / "ghost-members-2024-05-01.csv")
    got = by_email(db)
    reader = got["ghost.reader@example.com"]
    assert (reader.status, reader.tags) == ("active", ["vip", "beta"])
    assert reader.attributes == {"note": "friend of the blog", "tiers": "Free"}
    assert got["muted@example.com"].status == "unsubscribed"  # subscribed_to_emails false


def test_beehiiv_names_and_status(db) -> None:
    importers.import_file(db, DATA / "beehiiv-export.csv")
    got = by_email(db)
    assert (got["bee@example.com"].name, got["bee@example.com"].status) == ("Bea Hive", "active")
    assert got["bee@example.com"].created_at == "2023-01-01T12:00:00Z"
    assert got["bee@example.com"].attributes == {"subscription_tier": "free",
                                                 "utm_source": "newsletter"}
    inactive = got["inactive@example.com"]
    assert (inactive.status, inactive.unsubscribed_at) == ("unsubscribed", "2023-06-01T00:00:00Z")


def test_plain_lists_with_and_without_header(db) -> None:
    s = importers.import_file(db, DATA / "plain.txt")
    assert (s.formats, s.rows, s.added) == (["plain list"], 3, 3)
    s = importers.import_file(db, DATA / "plain_with_names.csv")
    assert s.added == 2
    got = by_email(db)
    assert set(got) == {"one@example.com", "two@example.com", "Three@example.com",
                        "four@example.com", "five@example.com"}
    assert got["five@example.com"].name == "Five, Jr."


def test_messy_real_world_file(db, tmp_path: Path) -> None:
    """BOM, CRLF, quoted commas and newlines, duplicates in other cases, blank and bad rows."""
    rejects = tmp_path / "rejects.csv"
    s = importers.import_file(db, DATA / "messy_mailchimp.csv", rejects=rejects)
    assert s.added == 3
    assert dict(s.skipped) == {"invalid address": 2, "missing address": 1, "bad date": 1,
                               "duplicate": 1}
    got = by_email(db)
    assert set(got) == {"good@example.com", "multi@example.com", "ok2@example.com"}
    assert got["good@example.com"].name == "Smith, Jane Doe"
    assert got["multi@example.com"].name == "Line one line two Person"
    assert got["multi@example.com"].tags == ["a", "b"]
    assert got["good@example.com"].created_at == "2020-01-01T00:00:00Z"  # first one wins
    with open(rejects, encoding="utf-8", newline="") as f:
        kept = list(csv.reader(f))
    assert kept[0][:3] == ["where", "reason", "Email Address"]
    where = {row[0]: row[1] for row in kept[1:]}
    assert set(where) == {"line 7", "line 8", "line 9", "line 11", "line 6"}
    assert "must have an @-sign" in where["line 7"]
    assert "no email address" in where["line 8"]
    assert "'yesterday' is not a date" in where["line 9"]
    assert "first at line 2" in where["line 6"]
    assert any(line.startswith("  skipped line 7:") for line in s.lines())


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def test_rejects_file_escapes_formulas_as_export_does_and_keeps_duplicate_rows(
    db, tmp_path: Path
) -> None:
    # Before: cells went to --rejects as they were (a spreadsheet ran =HYPERLINK(…)), and
    # a duplicate's line held only the address: its name and other columns were gone.
    sheet = tmp_path / "list.csv"
    sheet.write_text(
        "email,name,+city\n"
        '"=HYPERLINK(""http://evil"")",Mallory,-1 Main St\n'
        "dup@example.com,Dup One,Paris\n"
        'DUP@example.com,"Dup Two, Jr.",@SUM(A1)\n'
        "ok@example.com,Ok,Lyon\n"
    )
    rejects = tmp_path / "rejects.csv"
    s = importers.import_file(db, sheet, rejects=rejects)
    assert (s.added, dict(s.skipped)) == (2, {"invalid address": 1, "duplicate": 1})
    with open(rejects, encoding="utf-8", newline="") as f:
        kept = list(csv.reader(f))
    for row in kept:  # what a spreadsheet sees: no cell starts a formula
        for cell in row:
            assert not cell.startswith(FORMULA_START), cell
    assert kept[0] == ["where", "reason", "email", "name", "'+city"]
    assert kept[1][0] == "line 2" and "is not a valid email address" in kept[1][1]
    assert kept[1][2:] == ["'=HYPERLINK(\"http://evil\")", "Mallory", "'-1 Main St"]
    assert kept[2] == ["line 4", "dup@example.com again (first at line 3)",
                       "DUP@example.com", "Dup Two, Jr.", "'@SUM(A1)"]
    # Escaped exactly as export does: the import takes the quote off again.
    assert [subs.unescape_cell(c) for c in kept[2][2:]] == [
        "DUP@example.com", "Dup Two, Jr.", "@SUM(A1)"]
    assert len(kept) == 3


def test_rejects_for_duplicates_across_the_files_of_a_zip_keep_their_own_row(
    db, tmp_path: Path
) -> None:
    # Mailchimp's ZIP: the same reader in the subscribed and the unsubscribed file.
    archive = tmp_path / "mailchimp.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("subscribed.csv", "Email Address,First Name\nada@example.com,Ada\n")
        z.writestr("unsubscribed.csv", "Email Address,First Name,UNSUB_TIME\n"
                   "ADA@example.com,Ada L.,2024-05-01 10:00:00\n")
    rejects = tmp_path / "rejects.csv"
    importers.import_file(db, archive, rejects=rejects)
    with open(rejects, encoding="utf-8", newline="") as f:
        kept = list(csv.reader(f))
    assert kept == [
        ["where", "reason", "Email Address", "First Name", "UNSUB_TIME"],
        ["mailchimp.zip:unsubscribed.csv line 2",
         "ada@example.com again (first at mailchimp.zip:subscribed.csv line 2)",
         "ADA@example.com", "Ada L.", "2024-05-01 10:00:00"],
    ]


def test_an_import_never_makes_a_stopped_subscriber_active(db, tmp_path: Path) -> None:
    subs.add_subscriber(db, "left@example.com")
    subs.unsubscribe(db, "left@example.com")
    subs.add_subscriber(db, "bounced@example.com")
    subs.set_status(db, "bounced@example.com", "bounced")
    subs.add_subscriber(db, "angry@example.com")
    subs.set_status(db, "angry@example.com", "complained")
    subs.add_subscriber(db, "stays@example.com", tags=["old"])
    before = {s.email: s for s in subs.iter_subscribers(db)}
    file = tmp_path / "list.csv"
    file.write_text(
        "email,name,status,tags\n"
        "LEFT@example.com,Left,active,\n"
        "bounced@example.com,,active,\n"
        "angry@example.com,,active,\n"
        "stays@example.com,Stays,active,\"[\"\"new\"\"]\"\n"
    )
    s = importers.import_file(db, file)
    got = by_email(db)
    for email in ("left@example.com", "bounced@example.com", "angry@example.com"):
        assert got[email].status == before[email].status
        assert got[email].unsubscribed_at == before[email].unsubscribed_at
    assert got["left@example.com"].name == "Left"  # other fields may still update
    assert got["stays@example.com"].tags == ["old", "new"]
    assert (s.added, s.updated, s.unchanged) == (0, 2, 2)


def test_an_import_can_stop_an_active_subscriber(db, tmp_path: Path) -> None:
    subs.add_subscriber(db, "liu@example.com")
    importers.import_file(db, DATA / "unsubscribed_members_export_abc123.csv")
    file = tmp_path / "unsub.csv"
    file.write_text((DATA / "unsubscribed_members_export_abc123.csv").read_text()
                    .replace("left@example.com", "liu@example.com"))
    s = importers.import_file(db, file)
    liu = subs.get(db, "liu@example.com")
    assert (s.updated, liu.status, liu.unsubscribed_at) == (
        1, "unsubscribed", "2022-05-05T05:05:05Z"
    )


def test_the_same_person_twice_in_a_file_a_stop_wins(db, tmp_path: Path) -> None:
    file = tmp_path / "twice.csv"
    file.write_text("email,name,status,tags\na@example.com,,active,\nA@EXAMPLE.com,,bounced,\n")
    s = importers.import_file(db, file)
    assert (s.added, dict(s.skipped)) == (1, {"duplicate": 1})
    assert subs.get(db, "a@example.com").status == "bounced"


def test_reimporting_the_same_file_changes_nothing(db) -> None:
    importers.import_file(db, DATA / "buttondown-subscribers.csv")
    before = rows(db)
    s = importers.import_file(db, DATA / "buttondown-subscribers.csv")
    assert (s.added, s.updated, s.unchanged) == (0, 0, 4)
    assert rows(db) == before


def test_dry_run_reports_and_writes_nothing(db) -> None:
    subs.add_subscriber(db, "liu@example.com")
    before = rows(db)
    s = importers.import_file(db, DATA / "subscribed_members_export_abc123.csv", dry_run=True)
    assert (s.added, s.updated, s.dry_run) == (1, 1, True)
    assert "Dry run: nothing was written." in s.lines()
    assert rows(db) == before


def test_tag_option_tags_every_imported_row(db) -> None:
    importers.import_file(db, DATA / "plain.txt", tags=["from-plain", " "])
    assert {tuple(s.tags) for s in subs.iter_subscribers(db)} == {("from-plain",)}


def test_explicit_format_is_checked_against_the_header(db) -> None:
    with pytest.raises(SubscriberError, match="not a Ghost export: it has no subscribed_to_emails"):
        importers.import_file(db, DATA / "beehiiv-export.csv", format="ghost")
    with pytest.raises(SubscriberError, match="unknown format 'hotmail'"):
        importers.import_file(db, DATA / "plain.txt", format="hotmail")
    s = importers.import_file(db, DATA / "beehiiv-export.csv", format="beehiiv")
    assert s.added == 2


@pytest.mark.parametrize("content,message", [
    (b"id,when,what\n1,2,3\n", "no column holds the email addresses"),
    (b"", "is empty"),
    (b"\n\n", "is empty"),
    (b"email\nj\xe9r\xf4me@example.com\n", "not UTF-8"),
])
def test_unreadable_files_are_refused_and_nothing_is_written(
    db, tmp_path: Path, content: bytes, message: str
) -> None:
    file = tmp_path / "bad.csv"
    file.write_bytes(content)
    with pytest.raises(SubscriberError, match=message):
        importers.import_file(db, file)
    assert rows(db) == []


def test_a_file_failing_half_way_writes_nothing(db, tmp_path: Path) -> None:
    file = tmp_path / "half.csv"
    good = "".join(f"r{i}@example.com\n" for i in range(20000))
    file.write_bytes(("email\n" + good).encode() + b"caf\xe9@example.com\n")
    with pytest.raises(SubscriberError, match="not UTF-8"):
        importers.import_file(db, file)
    assert rows(db) == []


def test_too_many_fields_is_a_bad_row(db, tmp_path: Path) -> None:
    file = tmp_path / "wide.csv"
    file.write_text("email,name,status,tags\na@example.com,A,active,,surplus\nb@example.com,B,,\n")
    s = importers.import_file(db, file)
    assert (s.added, dict(s.skipped)) == (1, {"too many fields": 1})


def test_missing_file(db, tmp_path: Path) -> None:
    with pytest.raises(SubscriberError, match="cannot read"):
        importers.import_file(db, tmp_path / "nope.csv")
