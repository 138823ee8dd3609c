"""`newsletter stats`: per-issue results and list growth, from a real database, as a writer
runs it after real sends, real unsubscribes through `newsletter serve`, and imports."""

from __future__ import annotations

import email
import email.policy
import json
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from newsletter.audience.policy import Feedback, apply
from newsletter.stats.numbers import RANGED_QUERIES, list_growth
from newsletter.store import connect
from tests.conftest import Run
from tests.web.conftest import Site, start_site, stop_site
from tests.writer.conftest import browser  # noqa: F401  (the shared headless Chromium)

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def _one_click_url(eml: Path) -> str:
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    return re.search(r"<(https?://[^>]+/unsubscribe\?[^>]+)>", str(msg["List-Unsubscribe"]))[1]


def _to(eml: Path) -> str:
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    return str(msg["To"]).strip("<>").split("<")[-1].strip(">")


@pytest.fixture
def sent(tmp_path: Path) -> Any:
    """A served newsletter with four readers and one issue sent to them (campaign 1)."""
    site = start_site(tmp_path / "site")
    try:
        for address in ("ann@example.com", "bob@example.com", "cy@example.com",
                        "dee@example.com"):
            added = site.cli("subscribers", "add", address)
            assert added.returncode == 0, added.stderr
        (site.root / "drafts" / "first.md").write_text("---\nsubject: The first\n---\nHello.\n")
        out = site.cli("send", "first", "--to", "subscribers", "--yes")
        assert out.returncode == 0, out.stderr
        emls = {_to(p): p for p in (site.root / "outbox").glob("*first*/*.eml")}
        assert len(emls) == 4
        yield site, emls
    finally:
        stop_site(site)


def _stats(site: Site, *args: str) -> dict[str, Any]:
    out = site.cli("stats", "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_an_unsubscribe_from_the_issue_counts_for_that_issue(sent: Any) -> None:
    site, emls = sent
    url = _one_click_url(emls["ann@example.com"])
    assert "&c=1" in url  # the link names the campaign, beside the token
    with httpx.Client(timeout=30) as client:
        assert client.post(url, data=ONE_CLICK).status_code == 200
        # The same reader clicking again is still one unsubscribe.
        assert client.post(url, data=ONE_CLICK).status_code == 200
        # A link whose campaign number was changed to one the reader never got still
        # unsubscribes, but is not counted for that campaign.
        (site.root / "drafts" / "second.md").write_text("---\nsubject: Two\n---\nHi.\n")
        assert site.cli("send", "second", "--to", "cy@example.com").returncode == 0
        bob = _one_click_url(emls["bob@example.com"]).replace("&c=1", "&c=2")
        assert client.post(bob, data=ONE_CLICK).status_code == 200
        # A link mailed before links named their campaign still works, counted for none.
        dee = _one_click_url(emls["dee@example.com"]).replace("&c=1", "")
        assert client.post(dee, data=ONE_CLICK).status_code == 200
    assert site.reader("bob@example.com").status == "unsubscribed"
    [first] = _stats(site)["issues"]  # the test send is left out unless asked for
    assert (first["id"], first["sent"], first["unsubscribes"]) == (1, 4, 1)
    assert first["rates"]["unsubscribes"] == 0.25
    both = _stats(site, "--tests")["issues"]
    assert [(r["id"], r["unsubscribes"]) for r in both] == [(2, 0), (1, 1)]
    text = site.cli("stats", "1").stdout
    assert re.search(r"unsubscribed\s+1 \(25\.0%\)", text), text


def test_bounces_and_complaints_count_once_per_reader_and_issue(sent: Any) -> None:
    site, _emls = sent
    db = connect(site.root / "newsletter.db")
    try:
        for kind, address, n in (("hard_bounce", "ann@example.com", 1),
                                 ("soft_bounce", "bob@example.com", 2),
                                 ("complaint", "cy@example.com", 1)):
            for i in range(n):
                apply(db, Feedback(kind, address, "webhook:postmark",
                                   external_id=f"{kind}-{i}", campaign_id=1))
    finally:
        db.conn.close()
    [first] = _stats(site)["issues"]
    assert (first["hard_bounces"], first["soft_bounces"], first["complaints"]) == (1, 1, 1)
    assert first["rates"]["complaints"] == 0.25


def test_growth_dates_imported_readers_by_their_own_sign_up_date(
        newsletter_dir: Path, cli: Callable[..., Run]) -> None:
    sheet = newsletter_dir / "export.csv"
    sheet.write_text(
        "email,created_at,tags\n"
        "a@example.com,2025-01-05,friends\n"
        "b@example.com,2025-01-20,\n"
        "c@example.com,2025-03-02 10:00:00,friends\n"
    )
    assert cli("subscribers", "import", str(sheet)).exit_code == 0
    assert cli("subscribers", "unsubscribe", "a@example.com").exit_code == 0
    out = cli("stats", "--json", "--by", "month")
    assert out.exit_code == 0, out.stderr
    buckets = json.loads(out.stdout)["growth"]["buckets"]
    first = {b["start"]: (b["joined"], b["active"]) for b in buckets[:3]}
    # Joined in January and March 2025 (not today, the day of the import).
    assert first == {"2025-01-01": (2, 2), "2025-02-01": (0, 2), "2025-03-01": (1, 3)}
    last = buckets[-1]
    assert (last["unsubscribed"], last["active"]) == (1, 2)
    assert sum(b["joined"] for b in buckets) == 3

    friends = json.loads(cli("stats", "--json", "--segment", "tag:friends").stdout)["growth"]
    assert friends["segment"] == "tag:friends"
    assert sum(b["joined"] for b in friends["buckets"]) == 2
    assert friends["buckets"][-1]["active"] == 1

    # Any segment --to takes: an attribute here (the sheet's other columns are attributes).
    sheet.write_text("email,plan\nb@example.com,paid\n")
    assert cli("subscribers", "import", str(sheet)).exit_code == 0
    paid = json.loads(cli("stats", "--json", "--segment", "plan=paid").stdout)["growth"]
    assert (paid["segment"], sum(b["joined"] for b in paid["buckets"])) == ("plan=paid", 1)

    weeks = json.loads(cli("stats", "--json", "--by", "week").stdout)["growth"]["buckets"]
    assert weeks[0]["start"] == "2024-12-30"  # the Monday of 5 January 2025's week

    text = cli("stats").stdout
    assert "List growth per month (everyone)" in text
    assert "No issue has been sent" in text


def test_bad_options_are_one_line_errors(newsletter_dir: Path, cli: Callable[..., Run]) -> None:
    assert cli("subscribers", "add", "a@example.com").exit_code == 0
    for args, words in ((("--by", "day"), "--by 'day'"),
                        (("--segment", "plan=paid"), "no subscriber has the attribute 'plan'"),
                        (("--segment", "tag:a+"), "--segment"),
                        (("42",), "there is no campaign 42")):
        out = cli("stats", *args)
        assert out.exit_code != 0 and out.exception is None
        assert out.stderr.startswith("Error:") and words in out.stderr, out.stderr


def test_no_database_yet_is_an_error_not_empty_numbers(
        newsletter_dir: Path, cli: Callable[..., Run]) -> None:
    out = cli("stats")
    assert out.exit_code != 0 and "no database" in out.stderr
    assert not (newsletter_dir / "newsletter.db").exists()


# Readers with every kind of history the list's growth counts, as (status, created_at,
# confirmed_at, unsubscribed_at, updated_at): confirmed later than they joined, never
# confirmed, pending (joined, never active, even with a confirmation date), left with and
# without an unsubscribe date, a stop dated before the start, and a date after today.
_HISTORIES = (
    ("active", "2025-01-05T09:00:00Z", None, None, "2025-01-05T09:00:00Z"),
    ("active", "2025-01-31T23:59:59Z", "2025-02-01T00:00:00Z", None, "2025-02-01T00:00:00Z"),
    ("pending", "2025-02-10T08:00:00Z", None, None, "2025-02-10T08:00:00Z"),
    ("pending", "2025-02-11T08:00:00Z", "2025-02-12T08:00:00Z", None, "2025-02-12T08:00:00Z"),
    ("unsubscribed", "2025-01-06T10:00:00Z", "2025-01-07T10:00:00Z", "2025-03-03T10:00:00Z",
     "2025-03-03T10:00:00Z"),
    ("bounced", "2025-02-02T10:00:00Z", None, None, "2025-04-14T10:00:00Z"),
    ("complained", "2025-03-09T10:00:00Z", "2025-03-20T10:00:00Z", "2025-01-01T00:00:00Z",
     "2025-03-21T10:00:00Z"),
    ("unsubscribed", "2025-04-01T00:00:00Z", None, "2099-01-01T00:00:00Z",
     "2099-01-01T00:00:00Z"),
)


def _growth_list(root: Path) -> Path:
    database = root / "newsletter.db"
    db = connect(database)
    try:
        db.conn.executemany(
            "INSERT INTO subscribers (email, email_key, status, tags, created_at, "
            "confirmed_at, unsubscribed_at, updated_at) VALUES (?, ?, ?, '[\"all\"]', ?, ?, ?, ?)",
            [(f"r{i}@example.com", f"r{i}@example.com", *history)
             for i, history in enumerate(_HISTORIES)])
    finally:
        db.conn.close()
    return database


def test_the_whole_lists_growth_counts_what_each_reader_did_when(tmp_path: Path) -> None:
    database = _growth_list(tmp_path)
    growth = list_growth(database, "month", today=date(2025, 5, 20))
    got = {b.start.isoformat(): (b.joined, b.confirmed, b.unsubscribed, b.bounced,
                                 b.complained, b.active) for b in growth.buckets}
    assert got == {
        # r0, r1, r4 join; r0 and r4 become active (r4 confirms); r6's complaint is dated
        # before the list began, so it counts in the first month.
        "2025-01-01": (3, 1, 0, 0, 1, 2),
        # r2 and r3 join pending (r3's confirmation counts, but a pending reader is never
        # active); r1 confirms and r5 joins: both active.
        "2025-02-01": (3, 2, 0, 0, 0, 4),
        # r6 joins and confirms; r4 leaves, and r6's stop, dated before it began, ends it
        # when it began.
        "2025-03-01": (1, 1, 1, 0, 0, 3),
        # r7 joins (it leaves in 2099, after today: left out); r5 bounces.
        "2025-04-01": (1, 0, 0, 1, 0, 3),
        "2025-05-01": (0, 0, 0, 0, 0, 3),
    }


def test_the_whole_list_and_a_segment_of_everyone_count_the_same(tmp_path: Path) -> None:
    # The whole list is counted on migration 023's indexes, a segment by scanning the
    # readers: a segment that holds everyone must give the same numbers.
    database = _growth_list(tmp_path)
    for period in ("month", "week"):
        everyone = list_growth(database, period, today=date(2025, 6, 1))
        tagged = list_growth(database, period, "tag:all", today=date(2025, 6, 1))
        assert everyone.buckets == tagged.buckets, period
        assert len(everyone.buckets) > 4


def test_the_whole_lists_growth_reads_only_covering_indexes(tmp_path: Path) -> None:
    # On a million readers a scan of the table per count took seconds (bench/stats.py).
    db = connect(_growth_list(tmp_path))
    try:
        for sql in RANGED_QUERIES:
            plan = " ".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}",
                                                         ["", "2026"]).fetchall())
            assert "USING COVERING INDEX" in plan and "SCAN" not in plan, (sql, plan)
    finally:
        db.conn.close()


@pytest.mark.browser
def test_the_html_report_draws_its_charts_offline(
        newsletter_dir: Path, cli: Callable[..., Run], write_draft: Callable[..., Path],
        browser: Any) -> None:  # noqa: F811
    sheet = newsletter_dir / "export.csv"
    sheet.write_text("email,created_at\n" + "".join(
        f"r{i}@example.com,2025-{1 + i % 12:02d}-10\n" for i in range(30)))
    assert cli("subscribers", "import", str(sheet)).exit_code == 0
    write_draft("one.md", "---\nsubject: One <b>&</b> done\n---\nHello.\n")
    assert cli("send", "one", "--to", "subscribers", "--yes").exit_code == 0
    db = connect(newsletter_dir / "newsletter.db")
    try:
        apply(db, Feedback("complaint", "r3@example.com", "webhook:ses", campaign_id=1))
    finally:
        db.conn.close()
    report = newsletter_dir / "report.html"
    out = cli("stats", "--html", str(report))
    assert out.exit_code == 0, out.stderr
    page = report.read_text()
    assert "<script" not in page and "One &lt;b&gt;&amp;&lt;/b&gt; done" in page

    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    try:
        browser.get(report.as_uri())
        charts = browser.execute_script("""
            return [...document.querySelectorAll('figure.chart svg')].map(svg => {
              const box = svg.getBoundingClientRect();
              const marks = [...svg.querySelectorAll('.series path, .series rect')]
                .filter(m => { const b = m.getBBox(); return b.width > 0 || b.height > 0; });
              return {width: box.width, height: box.height, marks: marks.length};
            });""")
    finally:
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    # List size, joined and left, and the per-issue chart: each drawn with its marks.
    assert len(charts) == 3, charts
    for chart in charts:
        assert chart["width"] > 300 and chart["height"] > 100 and chart["marks"] > 0, charts
