"""Issue 22: a provider's own open and click tracking feeds the same counts as serve's.

Each test sends a real issue with the real CLI through the provider's local fake, then posts
the provider's documented open and click webhooks, signed as the provider signs them, to the
real `newsletter serve`, and reads `newsletter stats --json`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from newsletter.feedback.webhooks import WebhookRequest
from tests.providers_http.conftest import FAKES, set_credentials
from tests.providers_http.fakes import FakeAPI, FakeMailgun, FakeSES
from tests.web.conftest import Site, start_site, stop_site

from . import webhook_signers as sign

PROVIDERS = ["sendgrid", "postmark", "mailgun", "resend", "ses"]
READERS = ("ada@example.org", "bob@example.org", "cy@example.org", "dee@example.org")
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like "
           "Gecko) Version/17.4 Safari/605.1.15")
GMAIL_PROXY = ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com "
               "GoogleImageProxy)")
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel link protection)"
IP = "198.51.100.23"
ESSAY, NOTES = "https://example.org/essay", "https://example.org/notes"
DRAFT = f"""---
subject: Links
---
Read [the essay]({ESSAY}) and [the notes]({NOTES}).
"""


def webhooks_toml(sns_netloc: str) -> str:
    lines = [f"{k} = {json.dumps(v)}" for k, v in sign.TABLE.items()]
    return "[webhooks]\n" + "\n".join(lines) + f'\ninsecure_test_only_sns_host = "{sns_netloc}"\n'


def provider_toml(name: str, fake: FakeAPI) -> str:
    lines = f'name = "{name}"\nendpoint = "{fake.url}"\ntimeout = 5\n'
    if name == "mailgun":
        lines += f'domain = "{FakeMailgun.domain}"\n'
    if name == "ses":
        lines += f'region = "{FakeSES.region}"\n'
    return lines


class Provider:
    """Writes one provider's documented open and click webhooks, signed."""

    def __init__(self, name: str, sns: sign.SnsHost) -> None:
        self.name = name
        self.sns = sns

    def event(self, kind: str, email: str, message_id: str, at: float, agent: str | None,
              url: str | None = None, ip: str = IP, machine: bool = False) -> WebhookRequest:
        # The provider's id of the event: the same event, however often delivered or signed.
        ident = f"ev-{kind}-{email.split('@')[0]}-{int(at)}-{url or ''}"
        iso = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        click = kind == "click"
        if self.name == "sendgrid":
            event: dict[str, Any] = {
                "event": kind, "email": email, "timestamp": int(at), "sg_event_id": ident,
                "sg_message_id": f"{message_id}.filterdrecv-5645d9c87f-2n7k9-1-64F0-1.0",
                "useragent": agent, "ip": ip}
            if click:
                event["url"] = url
                event["url_offset"] = {"index": 0, "type": "html"}
            else:
                event["sg_machine_open"] = machine
            return sign.sendgrid([event])
        if self.name == "postmark":
            common = {"MessageStream": "broadcast", "Client": {"Name": "Safari"},
                      "OS": {"Name": "macOS"}, "Platform": "Desktop", "UserAgent": agent,
                      "Geo": {}, "MessageID": message_id, "Metadata": {}, "ReceivedAt": iso,
                      "Tag": "", "Recipient": email}
            if click:
                return sign.postmark({"RecordType": "Click", "ClickLocation": "HTML",
                                      "OriginalLink": url, **common})
            return sign.postmark({"RecordType": "Open", "FirstOpen": True, **common})
        if self.name == "mailgun":
            data: dict[str, Any] = {
                "event": "clicked" if click else "opened", "id": ident, "timestamp": at,
                "recipient": email, "ip": ip, "log-level": "info",
                "client-info": {"client-type": "browser", "client-os": "OS X",
                                "device-type": "desktop", "client-name": "Safari",
                                "user-agent": agent},
                "message": {"headers": {"message-id": message_id.strip("<>")}}}
            if click:
                data["url"] = url
            return sign.mailgun(data)
        if self.name == "resend":
            body: dict[str, Any] = {"created_at": iso, "email_id": message_id,
                                    "from": "Ada Writer <ada@example.com>", "to": [email],
                                    "subject": "Links"}
            if click:
                body["click"] = {"ipAddress": ip, "link": url, "timestamp": iso,
                                 "userAgent": agent}
            return sign.resend({"type": "email.clicked" if click else "email.opened",
                                "created_at": iso, "data": body})
        mail = {"timestamp": iso, "source": "ada@example.com", "messageId": message_id,
                "destination": [email], "headersTruncated": False}
        detail: dict[str, Any] = {"ipAddress": ip, "timestamp": iso, "userAgent": agent}
        if click:
            detail.update(link=url, linkTags={})
        ses = {"eventType": "Click" if click else "Open", "mail": mail,
               ("click" if click else "open"): detail}
        return sign.ses_request(self.sns.notification(ses))


@pytest.fixture(scope="module")
def sns_host() -> Iterator[sign.SnsHost]:
    host = sign.SnsHost()
    yield host
    host.close()


@contextmanager
def sending(name: str, root: Path, monkeypatch: pytest.MonkeyPatch, sns: sign.SnsHost,
            extra: str = "") -> Iterator[tuple[Site, Provider, dict[str, str]]]:
    """(serve, the provider's webhook writer, reader → provider message id) after a send."""
    for key, value in sign.ENV.items():
        monkeypatch.setenv(key, value)
    with FAKES[name]() as fake:
        set_credentials(name, fake, monkeypatch)
        site = start_site(root, webhooks_toml(sns.netloc) + extra,
                          provider=provider_toml(name, fake))
        try:
            for address in READERS:
                assert site.cli("subscribers", "add", address).returncode == 0
            (site.root / "drafts" / "links.md").write_text(DRAFT)
            run = site.cli("send", "links", "--to", "subscribers", "--yes")
            assert run.returncode == 0, run.stdout + run.stderr
            db = site.db()
            try:
                ids = dict(db.execute("SELECT email, provider_message_id FROM deliveries"))
            finally:
                db.conn.close()
            assert sorted(ids) == sorted(READERS) and all(ids.values())
            yield site, Provider(name, sns), ids
        finally:
            stop_site(site)


@pytest.fixture
def sent(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         sns_host: sign.SnsHost) -> Iterator[tuple[Site, Provider, dict[str, str]]]:
    with sending(request.param, tmp_path / "site", monkeypatch, sns_host) as found:
        yield found


def post(site: Site, hook: WebhookRequest) -> httpx.Response:
    return httpx.post(f"{site.url}/webhooks/{hook.provider}", content=hook.body,
                      headers=dict(hook.headers), timeout=30)


def stats(site: Site) -> dict[str, Any]:
    run = site.cli("stats", "--json")
    assert run.returncode == 0, run.stderr
    [issue] = json.loads(run.stdout)["issues"]
    return issue


def engagement_rows(site: Site) -> list[tuple[Any, ...]]:
    db = site.db()
    try:
        return db.execute("SELECT kind, campaign_id, url, reader, machine, at, source, event_id "
                          "FROM engagement ORDER BY id").fetchall()
    finally:
        db.conn.close()


@pytest.mark.parametrize("sent", PROVIDERS, indirect=True)
def test_provider_opens_and_clicks_feed_the_counts_with_machines_apart(
    sent: tuple[Site, Provider, dict[str, str]],
) -> None:
    site, hooks, ids = sent
    name = hooks.name
    t0 = time.time() - 600
    ada, bob, cy, dee = READERS
    first = hooks.event("open", ada, ids[ada], t0, BROWSER)
    answers = [post(site, first), post(site, first)]  # the same delivery twice
    assert answers[0].status_code == 200, answers[0].text
    # A retry is refused as a replay where the request carries a nonce (Mailgun, Resend).
    assert answers[1].status_code == (403 if name in ("mailgun", "resend") else 200)
    if name == "ses":  # SNS redelivers the same signed message: the same MessageId
        assert post(site, first).status_code == 200
    else:  # the same event, signed again: still the one event
        again = hooks.event("open", ada, ids[ada], t0, BROWSER)
        assert post(site, again).status_code == 200
    for hook in (
        hooks.event("click", ada, ids[ada], t0 + 60, BROWSER, ESSAY),
        # A "reader" who opens both links within a second: a scanner, counted apart.
        hooks.event("click", bob, ids[bob], t0 + 100, BROWSER, ESSAY),
        hooks.event("click", bob, ids[bob], t0 + 101, BROWSER, NOTES),
        hooks.event("click", cy, ids[cy], t0 + 200, SCANNER, NOTES),
        hooks.event("open", dee, ids[dee], t0 + 300, GMAIL_PROXY),
        # A message this newsletter never sent: acknowledged, ignored.
        hooks.event("open", ada, "not-a-message-of-ours", t0 + 400, BROWSER),
    ):
        answer = post(site, hook)
        assert answer.status_code == 200, answer.text
    machine = {"burst": 2, "agent": 1}
    if name == "sendgrid":  # SendGrid says which opens a machine made (Apple MPP and the like)
        assert post(site, hooks.event("open", cy, ids[cy], t0 + 500, BROWSER,
                                      machine=True)).status_code == 200
        machine["provider"] = 1
    elif name != "resend":  # Resend reports no user agent for opens
        assert post(site, hooks.event("open", cy, ids[cy], t0 + 500, "Mozilla/5.0",
                                      ip="17.58.63.10")).status_code == 200
        machine["apple-mpp"] = 1

    issue = stats(site)
    seen = issue["engagement"]
    assert (seen["openers"], seen["opens"], seen["clickers"], seen["clicks"]) == (2, 2, 1, 1)
    assert seen["machine"] == machine
    assert seen["machine_clicks"] == 3 and seen["machine_opens"] == len(machine) - 2
    assert seen["links"] == [{"url": ESSAY, "clicks": 1, "clickers": 1}]
    assert issue["rates"]["opened"] == 0.5 and issue["rates"]["clicked"] == 0.25
    # Stored: the campaign, link, time and why; never an address, IP or user agent.
    rows = engagement_rows(site)
    assert {r[6] for r in rows} == {f"webhook:{name}"}
    text = repr(rows)
    assert "@" not in text and IP not in text and "Safari" not in text and "17.58" not in text
    assert all(str(r[3]).startswith("p:") for r in rows)
    assert "no delivery" in site.log.read_text()


def readers(site: Site) -> list[str]:
    return [r[3] for r in engagement_rows(site)]


def test_per_reader_names_the_reader_and_keep_days_and_remove_erase_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sns_host: sign.SnsHost,
) -> None:
    extra = "[analytics]\nper_reader = true\n"
    with sending("postmark", tmp_path / "site", monkeypatch, sns_host, extra) as (site, hooks,
                                                                                  ids):
        ada, bob = READERS[:2]
        now = time.time()
        for hook in (hooks.event("open", ada, ids[ada], now - 60, BROWSER),
                     hooks.event("click", ada, ids[ada], now - 30, BROWSER, ESSAY),
                     hooks.event("open", bob, ids[bob], now - 100 * 86400, BROWSER)):
            assert post(site, hook).status_code == 200
        assert readers(site) == [f"key:{ada}", f"key:{ada}", f"key:{bob}"]
        run = site.cli("run")
        assert run.returncode == 0, run.stdout + run.stderr
        assert readers(site) == [f"key:{ada}", f"key:{ada}"]  # past keep_days (90)
        assert site.cli("subscribers", "remove", ada).returncode == 0
        assert readers(site) == []


@pytest.mark.parametrize("name", ["sendgrid", "ses"])
def test_subscribers_remove_erases_a_readers_pseudonymous_provider_records(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sns_host: sign.SnsHost,
) -> None:
    with sending(name, tmp_path / "site", monkeypatch, sns_host) as (site, hooks, ids):
        ada, bob = READERS[:2]
        now = time.time()
        for hook in (hooks.event("open", ada, ids[ada], now - 60, BROWSER),
                     hooks.event("click", ada, ids[ada], now - 30, BROWSER, ESSAY),
                     hooks.event("open", bob, ids[bob], now - 20, BROWSER)):
            assert post(site, hook).status_code == 200
        before = readers(site)
        assert len(set(before)) == 2 and before[0] == before[1] != before[2]
        assert site.cli("subscribers", "remove", ada).returncode == 0
        assert readers(site) == [before[2]]  # bob's stays; nothing in it says who ada was
