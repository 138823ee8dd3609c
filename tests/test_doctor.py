"""`newsletter doctor` on a newsletter set up right, then with one thing broken at a time.

Real parts: `newsletter serve` on 127.0.0.1 (tests/web/conftest.py), the Postmark fake
(a local HTTP server answering as Postmark documents), a real DNS server (dnslib on a
127.0.0.1 UDP port) holding the From domain's zone, and for the address checks a small
reverse proxy in front of serve that gets one path wrong, as a misconfigured proxy does.
Each broken item makes doctor flag exactly its line, with the exit code `check` uses.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer
from typer.testing import CliRunner
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from newsletter.cli import app
from newsletter.settings import recorded_fingerprint
from tests.providers_http.fakes import FakePostmark
from tests.web.conftest import BIN, SECRET, Site, free_port, start_site, stop_site

DOMAIN = "example.com"  # the From domain of tests/web/conftest.py's site
SELECTOR = "pm20261207"  # Postmark's selectors are per account: set in [provider]
DKIM_KEY = ("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwz0cS3n0fK8"
            + "Q" * 300 + "IDAQAB")
GOOD_ZONE = {
    DOMAIN: ["v=spf1 include:spf.mtasv.net ~all", "google-site-verification=abc123"],
    f"{SELECTOR}._domainkey.{DOMAIN}": [DKIM_KEY],
    f"_dmarc.{DOMAIN}": ["v=DMARC1; p=none; rua=mailto:dmarc@example.com"],
}
CHECKS = ["settings", "secret", "provider", "healthz", "archive", "one-click", "spf", "dkim",
          "dmarc", "backup", "layouts"]


class Zone(BaseResolver):
    """TXT records by name; NXDOMAIN for names under none of them."""

    def __init__(self, records: dict[str, list[str]]):
        self.records = {k: list(v) for k, v in records.items()}

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if request.q.qtype == QTYPE.TXT and name in self.records:
            for value in self.records[name]:
                # One TXT record of 255-byte strings, as long keys are published.
                chunks = [value[i:i + 255] for i in range(0, len(value), 255)]
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(chunks), ttl=60))
        elif not any(n == name or n.endswith("." + name) for n in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class Proxy:
    """A reverse proxy in front of serve that answers `broken` (method, path) itself."""

    def __init__(self, upstream: str, broken: dict[tuple[str, str], int]):
        self.upstream = upstream
        self.broken = broken
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        status = self.broken.get((request.method, request.path))
        if status is not None:
            return Response("not here", status=status)(environ, start_response)
        query = f"?{request.query_string.decode()}" if request.query_string else ""
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        answer = httpx.request(request.method, f"{self.upstream}{request.path}{query}",
                               headers=headers, content=request.get_data(), timeout=10)
        kept = [(k, v) for k, v in answer.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding",
                                     "connection")]
        return Response(answer.content, status=answer.status_code, headers=kept)(
            environ, start_response)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Ready:
    site: Site
    fake: FakePostmark
    zone: Zone
    dns: str
    good_toml: str = ""

    @property
    def toml(self) -> Path:
        return self.site.root / "newsletter.toml"

    def doctor(self, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
        """`newsletter doctor --json`: (exit code, the JSON)."""
        result = self.run("--json", *args, **env)
        return result.exit_code, json.loads(result.stdout)

    def run(self, *args: str, **env: str) -> Any:
        """`newsletter doctor` in this process (a subprocess costs a second a run here)."""
        return CliRunner().invoke(
            app, ["--dir", str(self.site.root), "doctor", "--dns", self.dns, "--timeout", "5",
                  *args],
            env={"NEWSLETTER_SECRET": SECRET, "POSTMARK_SERVER_TOKEN": self.fake.key, **env})

    def behind_proxy(self, broken: dict[tuple[str, str], int]) -> Proxy:
        """base_url now names a proxy in front of serve that gets `broken` wrong."""
        proxy = Proxy(self.site.url, broken)
        self.set_base_url(proxy.url)
        return proxy

    def set_base_url(self, url: str) -> None:
        self.toml.write_text(self.toml.read_text().replace(f'base_url = "{self.site.url}"',
                                                           f'base_url = "{url}"'))


def record_backup(root: Path, when: dt.datetime) -> None:
    """What `newsletter backup` records in meta (issue 20), written here directly."""
    conn = sqlite3.connect(root / "newsletter.db")
    with conn:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_backup_at', ?)",
                     (when.isoformat(timespec="seconds").replace("+00:00", "Z"),))
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_backup_file', ?)",
                     ("backups/newsletter-backup.tar.gz",))
    conn.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ready]:
    """serve, the Postmark fake and the DNS server, started once for this module."""
    zone = Zone(GOOD_ZONE)
    dns = DNSServer(zone, address="127.0.0.1", port=0,
                    logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data",
                                     logf=lambda _: None))
    dns.start_thread()
    with FakePostmark() as fake, pytest.MonkeyPatch.context() as env:
        env.setenv("POSTMARK_SERVER_TOKEN", fake.key)
        provider = (f'name = "postmark"\nendpoint = "{fake.url}"\ntimeout = 5\n'
                    f'dkim_selector = "{SELECTOR}"')
        site = start_site(tmp_path_factory.mktemp("doctor") / "site", provider=provider)
        try:
            ready = Ready(site, fake, zone, f"127.0.0.1:{dns.server.server_address[1]}")
            ready.good_toml = ready.toml.read_text()
            yield ready
        finally:
            stop_site(site)
            dns.stop()
        assert fake.delivered == []  # doctor never sends


@pytest.fixture
def ready(running: Ready) -> Ready:
    """A newsletter set up right: serve running, Postmark's key good, DNS good, a backup."""
    running.toml.write_text(running.good_toml)
    running.zone.records = {k: list(v) for k, v in GOOD_ZONE.items()}
    running.fake.requests.clear()
    conn = sqlite3.connect(running.site.root / "newsletter.db")
    with conn:
        conn.execute("DELETE FROM meta WHERE key LIKE 'last_backup%'")
    conn.close()
    record_backup(running.site.root, dt.datetime.now(dt.UTC) - dt.timedelta(hours=3))
    return running


def flagged(answer: dict[str, Any]) -> dict[str, str]:
    return {line["check"]: line["status"] for line in answer["lines"] if line["status"] != "ok"}


def test_a_newsletter_set_up_right_is_all_ok(ready: Ready) -> None:
    db = ready.site.root / "newsletter.db"
    assert recorded_fingerprint(db) is not None  # serve bound the key
    readers_before = ready.site.db().execute("SELECT * FROM subscribers").fetchall()
    before = {p.name: p.read_bytes() for p in db.parent.glob("newsletter.db*")}
    code, answer = ready.doctor()
    assert [line["check"] for line in answer["lines"]] == CHECKS
    assert flagged(answer) == {}, answer
    assert code == 0 and answer["ok"] is True
    assert [(r.method, r.path) for r in ready.fake.requests] == [("GET", "/server")]
    # Doctor only looks: the database, the key and the list are as they were.
    assert {p.name: p.read_bytes() for p in db.parent.glob("newsletter.db*")} == before
    assert not (ready.site.root / ".newsletter-secret").exists()
    assert ready.site.db().execute("SELECT * FROM subscribers").fetchall() == readers_before
    text = ready.run()
    assert text.exit_code == 0
    assert "ok       dkim       DKIM key found at pm20261207._domainkey.example.com" in text.stdout
    assert "0 errors, 0 warnings: ready to send" in text.stderr


def test_broken_settings_are_one_error_line(ready: Ready) -> None:
    ready.toml.write_text(ready.toml.read_text() + "\n[providers]\nname = 'smtp'\n")
    code, answer = ready.doctor()
    assert code == 1
    assert [(line["check"], line["status"]) for line in answer["lines"]] == [
        ("settings", "error")]
    assert "unknown table [providers]" in answer["lines"][0]["message"]
    text = ready.run()
    assert "Traceback" not in text.stderr and text.exit_code == 1
    assert text.stdout.startswith("error    settings ")


def test_a_key_that_is_not_the_databases(ready: Ready) -> None:
    code, answer = ready.doctor(NEWSLETTER_SECRET="another-key-" + "z" * 40)
    assert flagged(answer) == {"secret": "error"}
    assert code == 1
    assert "is not the one that signed the links" in answer["lines"][1]["message"]


def test_a_refused_provider_key(ready: Ready) -> None:
    code, answer = ready.doctor(POSTMARK_SERVER_TOKEN="revoked-token-0000")
    assert flagged(answer) == {"provider": "error"}
    assert code == 1
    message = answer["lines"][2]["message"]
    assert "$POSTMARK_SERVER_TOKEN" in message and "revoked-token-0000" not in message


@pytest.mark.parametrize(("broken", "check"), [
    (("GET", "/healthz"), "healthz"),
    (("GET", "/"), "archive"),
    (("POST", "/unsubscribe"), "one-click"),
])
def test_an_address_the_emails_need_that_does_not_answer(
    ready: Ready, broken: tuple[str, str], check: str
) -> None:
    proxy = ready.behind_proxy({})
    try:
        code, answer = ready.doctor()
        assert flagged(answer) == {}, answer  # the proxy alone is fine
        proxy.broken[broken] = 405 if broken[0] == "POST" else 404
        code, answer = ready.doctor()
    finally:
        proxy.close()
    assert flagged(answer) == {check: "error"}, answer
    assert code == 1


def test_a_one_click_post_that_redirects(ready: Ready) -> None:
    proxy = ready.behind_proxy({("POST", "/unsubscribe"): 301})
    try:
        code, answer = ready.doctor()
    finally:
        proxy.close()
    assert flagged(answer) == {"one-click": "error"}
    assert "mail clients do not follow it" in answer["lines"][5]["message"]


def test_nothing_answering_at_base_url(ready: Ready) -> None:
    ready.set_base_url(f"http://127.0.0.1:{free_port()}")
    code, answer = ready.doctor()
    assert flagged(answer) == {"healthz": "error", "archive": "error", "one-click": "error"}
    assert "cannot connect" in answer["lines"][3]["message"]


@pytest.mark.parametrize(("name", "records", "check", "says"), [
    (DOMAIN, ["google-site-verification=abc123"], "spf", "no SPF record for example.com"),
    (DOMAIN, ["v=spf1 include:spf.mtasv.net ~all", "v=spf1 mx -all"], "spf", "2 SPF records"),
    (DOMAIN, ["v=spf1 include:spf.mtasv.net +all"], "spf", "passes anyone's mail"),
    (f"{SELECTOR}._domainkey.{DOMAIN}", [], "dkim", "no DKIM key at pm20261207._domainkey"),
    (f"{SELECTOR}._domainkey.{DOMAIN}", ["v=DKIM1; k=rsa; p="], "dkim", "revoked"),
    (f"_dmarc.{DOMAIN}", [], "dmarc", "no DMARC record for example.com"),
    (f"_dmarc.{DOMAIN}", ["v=DMARC1; rua=mailto:d@example.com"], "dmarc", "no valid policy"),
])
def test_a_dns_record_missing_or_wrong_is_an_error(
    ready: Ready, name: str, records: list[str], check: str, says: str
) -> None:
    ready.zone.records[name] = records
    code, answer = ready.doctor()
    assert flagged(answer) == {check: "error"}, answer
    assert code == 1
    assert says in next(line["message"] for line in answer["lines"] if line["check"] == check)


def test_spf_without_the_providers_host_is_a_warning(ready: Ready) -> None:
    ready.zone.records[DOMAIN] = ["v=spf1 mx ~all"]
    code, answer = ready.doctor()
    assert flagged(answer) == {"spf": "warning"}
    assert code == 0
    assert ready.doctor("--strict")[0] == 1


def test_a_dkim_selector_nobody_knows_is_a_warning(ready: Ready) -> None:
    ready.toml.write_text(ready.toml.read_text().replace(f'dkim_selector = "{SELECTOR}"\n', ""))
    code, answer = ready.doctor()
    assert flagged(answer) == {"dkim": "warning"}
    assert code == 0


def test_dmarc_of_the_organizational_domain_covers_a_subdomain(ready: Ready) -> None:
    ready.toml.write_text(ready.toml.read_text().replace("ada@example.com",
                                                         "ada@news.example.com"))
    ready.zone.records["news.example.com"] = ["v=spf1 include:spf.mtasv.net ~all"]
    ready.zone.records[f"{SELECTOR}._domainkey.news.example.com"] = [DKIM_KEY]
    code, answer = ready.doctor()
    assert flagged(answer) == {}, answer
    assert "DMARC at _dmarc.example.com: p=none" in answer["lines"][8]["message"]


@pytest.mark.parametrize(("age", "says"), [(None, "no backup yet"), (dt.timedelta(days=3),
                                                                   "is 3 days old")])
def test_an_old_or_missing_backup_is_a_warning(
    ready: Ready, age: dt.timedelta | None, says: str
) -> None:
    conn = sqlite3.connect(ready.site.root / "newsletter.db")
    with conn:
        conn.execute("DELETE FROM meta WHERE key LIKE 'last_backup%'")
    conn.close()
    if age is not None:
        record_backup(ready.site.root, dt.datetime.now(dt.UTC) - age)
    code, answer = ready.doctor()
    assert flagged(answer) == {"backup": "warning"}
    assert says in next(x["message"] for x in answer["lines"] if x["check"] == "backup")
    assert code == 0
    assert ready.doctor("--strict")[0] == 1


def test_dns_that_does_not_answer_is_said(ready: Ready) -> None:
    # A UDP port nobody answers on: the question times out, which is not "no record".
    code, answer = ready.doctor("--dns", "127.0.0.1:9", "--timeout", "0.5")
    assert {k for k, v in flagged(answer).items()} == {"spf", "dkim", "dmarc"}
    assert "could not ask DNS" in answer["lines"][6]["message"]


def test_no_newsletter_or_a_bad_option_cannot_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    result = subprocess.run([str(BIN), "doctor"], cwd=tmp_path, env=env, text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: no newsletter.toml in ")
    result = subprocess.run([str(BIN), "doctor", "--dns", "127.0.0.1:notaport"], cwd=tmp_path,
                            env=env, text=True, capture_output=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == "Error: --dns 127.0.0.1:notaport is not HOST or HOST:PORT " \
                            "(like 127.0.0.1:5353)\n"


def test_secret_is_never_made(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    (root / "newsletter.toml").write_text('[newsletter]\nname = "X"\nfrom = "a@example.com"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    result = subprocess.run([str(BIN), "doctor", "--json", "--dns", "127.0.0.1:9",
                             "--timeout", "0.2"], cwd=root, env=env, text=True,
                            capture_output=True, timeout=60)
    lines = {line["check"]: line for line in json.loads(result.stdout)["lines"]}
    assert lines["secret"]["status"] == "ok" and "no key yet" in lines["secret"]["message"]
    assert sorted(p.name for p in root.iterdir()) == ["newsletter.toml"]
    assert SECRET not in result.stdout


def test_a_database_from_before_the_meta_table_has_no_backup(tmp_path: Path) -> None:
    from newsletter.doctor.backup import check_backup
    from newsletter.doctor.report import Report
    from newsletter.settings import Settings

    conn = sqlite3.connect(tmp_path / "newsletter.db")
    with conn:
        conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
        conn.execute("INSERT INTO _migrations VALUES ('001_initial', '2026-01-01')")
        conn.execute("CREATE TABLE campaigns (id INTEGER PRIMARY KEY)")
    conn.close()
    report = Report()
    check_backup(Settings(root=tmp_path, database=tmp_path / "newsletter.db"), report)
    assert [(line.check, line.status) for line in report.lines] == [("backup", "warning")]
    assert "no backup yet" in report.lines[0].message


def test_mailgun_publishes_spf_and_dkim_on_its_sending_subdomain(ready: Ready) -> None:
    from newsletter.doctor.mail_dns import check_dns
    from newsletter.doctor.report import Report
    from newsletter.settings import ProviderSettings, Settings

    ready.zone.records["mg.example.com"] = ["v=spf1 include:mailgun.org ~all"]
    ready.zone.records["k1._domainkey.mg.example.com"] = [DKIM_KEY]
    provider = ProviderSettings(name="mailgun", options={"domain": "mg.example.com",
                                                         "dkim_selector": "k1"})
    settings = Settings(root=ready.site.root, sender="Ada <ada@example.com>", provider=provider)
    report = Report()
    check_dns(settings, report, ready.dns)
    assert [(line.check, line.status) for line in report.lines] == [
        ("spf", "ok"), ("dkim", "ok"), ("dmarc", "ok")], report.lines
    assert "k1._domainkey.mg.example.com" in report.lines[1].message
    assert "_dmarc.example.com" in report.lines[2].message


def test_with_the_archive_on_a_static_host_each_address_is_checked_for_its_part(
        ready: Ready) -> None:
    # [server] url: the reader links go to serve; base_url (here nothing answers) only
    # has to answer the archive.
    server = ready.site.url
    dead = f"http://127.0.0.1:{free_port()}"
    ready.set_base_url(dead)
    ready.toml.write_text(ready.toml.read_text() + f'\n[server]\nurl = "{server}"\n')
    code, answer = ready.doctor()
    assert flagged(answer) == {"archive": "error"}, answer
    assert code == 1
    # No server at all: the archive alone is checked, and doctor says what readers lose.
    ready.toml.write_text(ready.toml.read_text().replace(f'url = "{server}"', 'url = "none"')
                          .replace("[newsletter]\n",
                                   '[newsletter]\nunsubscribe_mailto = "leave@example.com"\n')
                          .replace(f'base_url = "{dead}"', f'base_url = "{server}"'))
    code, answer = ready.doctor()
    assert flagged(answer) == {"hosting": "warning"}, answer
    assert "5,000 messages a day" in next(
        line["message"] for line in answer["lines"] if line["check"] == "hosting")


def test_an_edited_layout_that_fell_behind_is_a_warning_naming_the_diff_command(
        ready: Ready) -> None:
    from newsletter.compose.layout import BUILTIN_LAYOUTS

    mine = ready.site.root / "layouts" / "default.html"
    mine.parent.mkdir(exist_ok=True)
    mine.write_text((BUILTIN_LAYOUTS / "default.html").read_text().replace(
        "</body>", "<p>my own footer</p></body>"))
    try:
        code, answer = ready.doctor()
        strict = ready.doctor("--strict")[0]
    finally:
        mine.unlink()
    assert flagged(answer) == {"layouts": "warning"}, answer
    [line] = [x for x in answer["lines"] if x["check"] == "layouts"]
    assert "layouts/default.html is edited" in line["message"]
    assert "newsletter layouts diff default" in line["message"]
    assert code == 0  # a warning: ready to send, with --strict it is not
    assert strict == 1
