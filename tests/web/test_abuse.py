"""Bots, link scanners and proxies: what a flood of requests can and cannot do."""

from __future__ import annotations

import email
import email.policy
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from newsletter.errors import ConfigError
from newsletter.settings import load_settings
from newsletter.web.context import client_ip
from tests.web.conftest import Site, start_site, stop_site, subscribe, wait_for, write_site


@pytest.fixture
def two_workers(tmp_path: Path):  # noqa: ANN201
    s = start_site(tmp_path / "site", workers=2)
    try:
        yield s
    finally:
        stop_site(s)


def test_a_bot_posting_1000_forms_sends_at_most_the_capped_emails(two_workers: Site) -> None:
    """Same address: 3 emails a day. Many addresses from one IP: 20 sign-ups an hour.

    Two worker processes: the counters live in SQLite, so the caps hold across them.
    """
    site = two_workers
    with httpx.Client(base_url=site.url, timeout=30) as c:

        def post(i: int) -> int:
            address = "victim@example.com" if i % 2 else f"bot{i}@example.com"
            return subscribe(site, c, address).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(post, range(1000)))
    assert set(codes) <= {200, 429} and codes.count(500) == 0
    sent = site.outbox()
    to_victim = [p for p in sent if p.name.endswith("-victim@example.com.eml")]
    assert 1 <= len(to_victim) <= 3
    assert len(sent) <= 20  # the per-IP cap: the rest were refused with 429
    assert codes.count(429) >= 1000 - 20


def test_fifty_gets_of_every_link_in_a_message_change_nothing(site: Site) -> None:
    with site.client() as c:
        subscribe(site, c, "scan@example.com")
    msg = email.message_from_bytes(site.outbox()[0].read_bytes(), policy=email.policy.default)
    html = msg.get_body(("html",)).get_content()
    links = set(re.findall(r'href="([^"]+)"', html))
    links |= set(re.findall(r"<(https?://[^>]+)>", str(msg["List-Unsubscribe"])))
    links = {link.replace("&amp;", "&") for link in links if link.startswith(site.url)}
    assert any("/confirm?" in link for link in links)
    assert any("/unsubscribe?" in link for link in links)
    before = site.reader("scan@example.com")
    with httpx.Client(timeout=30, follow_redirects=True) as c:
        for link in sorted(links):
            for _ in range(50):
                assert c.get(link).status_code == 200
                c.head(link)
    after = site.reader("scan@example.com")
    assert after == before and after.status == "pending"


def test_client_ip_comes_from_x_forwarded_for_only_through_a_trusted_proxy(
        tmp_path: Path) -> None:
    write_site(tmp_path, 1, '[server]\ntrusted_proxies = ["10.0.0.0/8", "::1"]\n')
    config = load_settings(tmp_path).web
    assert client_ip("10.1.2.3", "203.0.113.9", config) == "203.0.113.9"
    # A client cannot choose its IP: the entry left of our proxy's is the client's own lie.
    assert client_ip("10.1.2.3", "198.51.100.1, 203.0.113.9", config) == "203.0.113.9"
    assert client_ip("10.1.2.3", "203.0.113.9, 10.9.9.9", config) == "203.0.113.9"
    assert client_ip("192.0.2.7", "203.0.113.9", config) == "192.0.2.7"  # not via the proxy
    assert client_ip("10.1.2.3", None, config) == "10.1.2.3"


def test_bad_server_settings_are_one_message_listing_every_problem(tmp_path: Path) -> None:
    write_site(tmp_path, 1, '[server]\ntrusted_proxies = ["not-an-ip"]\nmax_body = 0\n'
                            'colour = "red"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    text = str(info.value)
    assert "'not-an-ip' is not an IP address" in text and "max_body = 0" in text
    assert "[server] colour is not a setting" in text


def test_sigterm_stops_both_workers_cleanly_after_answering(two_workers: Site) -> None:
    site = two_workers
    with site.client() as c:
        assert all(c.get("/healthz").status_code == 200 for _ in range(20))
    site.process.terminate()
    assert site.process.wait(20) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(site.url + "/healthz", timeout=2)


def test_a_provider_that_is_down_keeps_the_email_queued_and_the_log_names_no_one(
        tmp_path: Path) -> None:
    # Issue 18: the reader's request never waits on the provider (it used to answer 503
    # "try again in a few minutes"); the email stays queued and is retried.
    from tests.conftest import dead_port

    dead = f'name = "smtp"\nhost = "127.0.0.1"\nport = {dead_port()}\nsecurity = "none"'
    site = start_site(tmp_path / "site", provider=dead)
    try:
        with site.client() as c:
            r = subscribe(site, c, "waiting@example.com")
        assert r.status_code == 200 and "Check your inbox" in r.text
        assert site.reader("waiting@example.com").status == "pending"

        def tried() -> list[tuple[str, str]]:
            db = site.db()
            try:
                return db.execute("SELECT state, error FROM outgoing WHERE error IS NOT NULL"
                                  ).fetchall()
            finally:
                db.conn.close()

        [(state, error)] = wait_for(tried, 20, "the worker's first try")
        assert state in ("queued", "sending") and "waiting@example.com" not in error
    finally:
        stop_site(site)
    log = site.log.read_text()
    assert "confirmation email failed" in log and "waiting@example.com" not in log


def test_the_recorded_ip_is_the_proxys_client_only_when_the_proxy_is_trusted(
        tmp_path: Path) -> None:
    from newsletter.audience.events import history

    spoof = {"X-Forwarded-For": "203.0.113.5"}
    plain = start_site(tmp_path / "plain")
    proxied = start_site(tmp_path / "proxied", '[server]\ntrusted_proxies = ["127.0.0.1"]\n')
    try:
        for s in (plain, proxied):
            with s.client(headers=spoof) as c:
                assert subscribe(s, c, "ip@example.com").status_code == 200
    finally:
        stop_site(plain)
        stop_site(proxied)
    ips = []
    for s in (plain, proxied):
        reader = s.reader("ip@example.com")
        ips.append((reader.optin_ip, history(s.db(), reader.id)[0].ip))
    assert ips == [("127.0.0.1", "127.0.0.1"), ("203.0.113.5", "203.0.113.5")]
