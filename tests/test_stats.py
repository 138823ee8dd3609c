"""`newsletter stats`: per-issue results and list growth, from a real database, as a writer
runs it after real sends, real unsubscribes through `newsletter serve`, and imports."""

from __future__ import annotations

import email
import email.policy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from newsletter.audience.policy import Feedback, apply
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
