"""Issue 22: clicks and opens, opt-in and honest.

Every test sends a real issue with the real CLI (to the outbox), takes the links out of
the .eml files, and replays what readers and machines do against a real `newsletter serve`.
"""

from __future__ import annotations

import email
import email.policy
import html
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from newsletter.compose.tokens import TrackingTokens
from newsletter.stats.numbers import issue_results
from tests.web.conftest import SECRET, Site, start_site, stop_site, wait_for

ON = "[analytics]\nclicks = true\nopens = true\n"
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like "
           "Gecko) Version/17.4 Safari/605.1.15")
GMAIL_PROXY = ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com "
               "GoogleImageProxy)")
DRAFT = """---
subject: Links
---
Read [the essay](https://example.org/essay?a=1&b=2), [the notes](https://example.org/notes),
and [the map](https://example.org/map). Write to [me](mailto:ada@example.com).
"""


@pytest.fixture
def tracked(tmp_path: Path):  # noqa: ANN201
    s = start_site(tmp_path / "site", ON)
    try:
        yield s
    finally:
        stop_site(s)


def send(site: Site, *readers: str) -> dict[str, email.message.EmailMessage]:
    for address in readers:
        assert site.cli("subscribers", "add", address).returncode == 0
    (site.root / "drafts" / "links.md").write_text(DRAFT)
    run = site.cli("send", "links", "--to", "subscribers", "--yes")
    assert run.returncode == 0, run.stderr
    found = {}
    for path in (site.root / "outbox").glob("*links*/*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found[str(msg["To"])] = msg
    assert sorted(found) == sorted(readers)
    return found


def hrefs(msg: email.message.EmailMessage) -> list[str]:
    body = msg.get_body(("html",)).get_content()
    return [html.unescape(u) for u in re.findall(r'href="([^"]+)"', body)]


def clicks_of(msg: email.message.EmailMessage) -> list[str]:
    """The tracked links, in the order of the draft: essay, notes, map."""
    return [u for u in hrefs(msg) if "/c/" in u]


def pixel_of(msg: email.message.EmailMessage) -> str:
    body = msg.get_body(("html",)).get_content()
    return html.unescape(re.search(r'<img src="([^"]+/o/[^"]+)"', body).group(1))


def rows(site: Site, expected: int) -> list[tuple]:
    """The engagement rows, once `expected` are written (the server records after answering)."""
    def ready() -> list[tuple] | None:
        db = site.db()
        try:
            found = db.execute("SELECT kind, url, reader, machine FROM engagement "
                               "ORDER BY id").fetchall()
        finally:
            db.conn.close()
        return found if len(found) >= expected else None
    return wait_for(ready, 15, f"{expected} engagement rows")


def results(site: Site):  # noqa: ANN201
    [r] = issue_results(site.root / "newsletter.db")
    return r


def get(url: str, agent: str = BROWSER, method: str = "GET") -> httpx.Response:
    return httpx.request(method, url, headers={"User-Agent": agent}, timeout=30,
                         follow_redirects=False)


def test_with_analytics_off_a_sent_email_has_no_tracking_of_any_kind(site: Site) -> None:
    [msg] = send(site, "ann@example.com").values()
    body = msg.get_body(("html",)).get_content()
    assert "https://example.org/essay?a=1&amp;b=2" in body
    assert "/c/" not in body and "/o/" not in body and "<img" not in body
    assert "?r=" not in body
    assert {u for u in hrefs(msg) if "example.org" in u} == {
        "https://example.org/essay?a=1&b=2", "https://example.org/notes",
        "https://example.org/map"}


def test_tracked_links_redirect_at_once_to_the_writers_link(tracked: Site) -> None:
    msg = send(tracked, "ann@example.com")["ann@example.com"]
    links = clicks_of(msg)
    assert len(links) == 3 and all(u.startswith(f"{tracked.url}/c/") for u in links)
    reader = TrackingTokens(SECRET.encode(), tracked.url)
    assert [reader.read_link(u.split("/c/")[1].split("?")[0]).url for u in links] == [
        "https://example.org/essay?a=1&b=2", "https://example.org/notes",
        "https://example.org/map"]
    kept = hrefs(msg)
    # The newsletter's own pages (the web version, the home page) are not tracked.
    assert f"{tracked.url}/links/" in kept
    # Untouched: the reader's own links (no per-reader value in a campaign token), mailto.
    assert "mailto:ada@example.com" in kept
    assert any("/unsubscribe?token=" in u for u in kept)
    assert any("/manage?token=" in u for u in kept)
    # The text part shows the real addresses.
    text = msg.get_body(("plain",)).get_content()
    assert "https://example.org/notes" in text and "/c/" not in text
    answer = get(links[0])
    assert answer.status_code == 302
    assert answer.headers["location"] == "https://example.org/essay?a=1&b=2"
    assert rows(tracked, 1)[0][:2] == ("click", "https://example.org/essay?a=1&b=2")


def test_serve_is_never_an_open_redirect(tracked: Site) -> None:
    msg = send(tracked, "ann@example.com")["ann@example.com"]
    link = clicks_of(msg)[0]
    token = link.split("/c/")[1].split("?")[0]
    other = TrackingTokens(b"another-secret-" + b"z" * 40, tracked.url)
    for bad in (
        f"{tracked.url}/c/{token[:-2]}xx",  # altered
        f"{tracked.url}/c/{other.link(1, 'https://evil.example/')}",  # another key
        f"{tracked.url}/c/{TrackingTokens(SECRET.encode(), tracked.url).link(1, None)}",  # open
        f"{tracked.url}/o/{token}",  # a click token as an open image
    ):
        answer = get(bad)
        assert answer.status_code == 404 and "location" not in answer.headers
    made = TrackingTokens(SECRET.encode(), tracked.url).link(1, "https://evil.example/")
    assert get(f"{tracked.url}/c/{made}").status_code == 302  # only the key makes links


def test_unique_people_are_counted_by_pseudonym_not_address(tracked: Site) -> None:
    sent = send(tracked, "ann@example.com", "bob@example.com")
    ann, bob = clicks_of(sent["ann@example.com"]), clicks_of(sent["bob@example.com"])
    # The same pseudonym in each link of one message, another for another reader.
    assert len({u.split("?r=")[1] for u in ann}) == 1
    assert ann[0].split("?r=")[1] != bob[0].split("?r=")[1]
    get(ann[0])
    get(ann[0])
    get(bob[0])
    get(pixel_of(sent["ann@example.com"]))
    found = rows(tracked, 4)
    assert not any("ann" in str(row) or "bob" in str(row) for row in found)
    g = results(tracked).engagement
    assert (g.clickers, g.clicks, g.openers, g.opens) == (2, 3, 1, 1)
    assert [(link.url, link.clicks, link.clickers) for link in g.links] == [
        ("https://example.org/essay?a=1&b=2", 3, 2)]
    assert (g.machine_opens, g.machine_clicks) == (0, 0)


def test_machines_are_counted_apart_and_never_as_people(tracked: Site) -> None:
    sent = send(tracked, "ann@example.com", "bob@example.com", "cat@example.com",
                "dan@example.com")
    ann, bob = sent["ann@example.com"], sent["bob@example.com"]
    cat, dan = sent["cat@example.com"], sent["dan@example.com"]
    # A link checker's HEAD; a security scanner's user agent; no user agent at all.
    assert get(clicks_of(ann)[0], method="HEAD").status_code == 302
    get(clicks_of(ann)[1], agent="Mozilla/5.0 (compatible; Barracuda Sentinel; +scanner)")
    get(clicks_of(ann)[2], agent="")
    # A "reader" who opens every link within seconds: a scanner with a browser's agent.
    for link in clicks_of(bob):
        get(link)
    # Apple Mail Privacy Protection fetches every image when the message arrives.
    get(pixel_of(cat), agent="Mozilla/5.0")
    # Gmail's image proxy fetches when a person opens: one human open, however often.
    get(pixel_of(dan), agent=GMAIL_PROXY)
    get(pixel_of(dan), agent=GMAIL_PROXY)
    # A person, who clicks one link.
    get(clicks_of(dan)[1])
    found = rows(tracked, 10)
    g = results(tracked).engagement
    assert (g.openers, g.opens, g.clickers, g.clicks) == (1, 2, 1, 1)
    assert (g.machine_opens, g.machine_clicks) == (1, 6)
    assert g.machine == {"agent": 2, "apple-mpp": 1, "burst": 3, "head": 1}
    assert [(link.url, link.clicks) for link in g.links] == [("https://example.org/notes", 1)]
    assert sum(1 for row in found if row[3] is None) == 3


def test_a_forged_reader_value_is_not_a_person(tracked: Site) -> None:
    msg = send(tracked, "ann@example.com")["ann@example.com"]
    link = clicks_of(msg)[0]
    pseudonym = link.split("?r=")[1]
    assert get(link.replace(pseudonym, "a" + "B" * 20)).status_code == 302  # still goes there
    get(link.split("?r=")[0])  # none at all
    assert [row[3] for row in rows(tracked, 2)] == ["unsigned", "unsigned"]
    assert results(tracked).engagement.clickers == 0


def test_per_reader_records_who_and_subscribers_remove_erases_it(tmp_path: Path) -> None:
    site = start_site(tmp_path / "site", ON + "per_reader = true\n")
    try:
        sent = send(site, "ann@example.com", "bob@example.com")
        get(clicks_of(sent["ann@example.com"])[0])
        get(pixel_of(sent["ann@example.com"]))
        get(clicks_of(sent["bob@example.com"])[0])
        found = rows(site, 3)
        assert {row[2] for row in found} == {"key:ann@example.com", "key:bob@example.com"}
        run = site.cli("subscribers", "remove", "ann@example.com")
        assert run.returncode == 0, run.stderr
        assert {row[2] for row in rows(site, 1)} == {"key:bob@example.com"}
    finally:
        stop_site(site)


def test_stats_shows_people_and_machines_apart_in_every_form(tracked: Site) -> None:
    sent = send(tracked, "ann@example.com", "bob@example.com")
    get(clicks_of(sent["ann@example.com"])[1])
    get(pixel_of(sent["bob@example.com"]))
    get(pixel_of(sent["ann@example.com"]), agent="Mozilla/5.0")
    rows(tracked, 3)
    data = json.loads(tracked.cli("stats", "--json").stdout)
    [issue] = data["issues"]
    assert issue["engagement"]["openers"] == 1 and issue["engagement"]["clickers"] == 1
    assert issue["rates"]["opened"] == 0.5 and issue["rates"]["clicked"] == 0.5
    assert issue["engagement"]["machine"] == {"apple-mpp": 1}
    assert issue["engagement"]["links"] == [
        {"url": "https://example.org/notes", "clicks": 1, "clickers": 1}]
    table = tracked.cli("stats").stdout
    assert re.search(r"\d+\s+1 \(50\.0%\)\s+1 \(50\.0%\)\s+1/0", table), table
    single = tracked.cli("stats", str(issue["id"])).stdout
    assert "opened        1 (50.0%) people" in single
    assert "1 clicks,    1 people  https://example.org/notes" in single
    assert "machines      1 opens, 0 clicks, not counted above (1 apple-mpp)" in single
    report = tracked.root / "report.html"
    assert tracked.cli("stats", "--html", str(report)).returncode == 0
    page = report.read_text()
    assert "<h2>Opens and clicks</h2>" in page and "https://example.org/notes" in page


def test_newsletter_run_deletes_records_older_than_keep_days(tmp_path: Path) -> None:
    site = start_site(tmp_path / "site", ON + "keep_days = 30\n")
    try:
        sent = send(site, "ann@example.com")
        get(clicks_of(sent["ann@example.com"])[0])
        rows(site, 1)
        db = site.db()
        try:
            old = (datetime.now(UTC) - timedelta(days=31)).isoformat(timespec="microseconds")
            with db.conn:
                db.execute("INSERT INTO engagement (kind, campaign_id, url, reader, machine, at) "
                           "VALUES ('open', 1, NULL, 'a:x', NULL, ?)", [old])
        finally:
            db.conn.close()
        run = site.cli("run", "--no-sync")
        assert "deleted 1 click and open records older than 30 days" in run.stdout, run.stdout
        assert len(rows(site, 1)) == 1
    finally:
        stop_site(site)


def test_a_click_is_answered_at_once_while_the_database_is_busy(tracked: Site) -> None:
    msg = send(tracked, "ann@example.com")["ann@example.com"]
    link = clicks_of(msg)[0]
    db = tracked.db()
    try:
        db.execute("BEGIN IMMEDIATE")  # what a running send's writes look like to serve
        start = time.monotonic()
        answer = get(link)
        assert answer.status_code == 302 and time.monotonic() - start < 2
        db.execute("ROLLBACK")
    finally:
        db.conn.close()
    assert rows(tracked, 1)[0][0] == "click"  # recorded once the database is free
