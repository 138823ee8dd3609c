"""`newsletter sync` against local servers that page, filter and throttle as each API does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter import store
from newsletter.audience import events, subscribers
from tests.feedback.pullfakes import MailgunLists, PostmarkLists, SendGridLists, SESLists

TOML = """\
[newsletter]
name = "Test Letter"
from = "Test Writer <writer@example.com>"
base_url = "https://example.com/news"

[provider]
name = "{name}"
endpoint = "{url}"
timeout = 5
{extra}
[bounces]
soft_limit = 2
"""

READERS = ["hard@example.com", "soft@example.com", "spam@example.com", "left@example.com",
           "fine@example.com"]


def setup(root: Path, name: str, fake, monkeypatch, extra: str = "") -> None:
    (root / "newsletter.toml").write_text(TOML.format(name=name, url=fake.url, extra=extra))
    db = store.connect(root / "newsletter.db")
    for address in READERS:
        subscribers.add_subscriber(db, address)
    with db.conn:  # they joined long before the bounces below (soft ones count after joining)
        db.execute("UPDATE events SET created_at = '2026-01-01T00:00:00Z'")
    db.conn.close()


def statuses(root: Path) -> dict[str, str]:
    db = store.connect(root / "newsletter.db")
    try:
        return {r[0]: r[1] for r in db.execute("SELECT email, status FROM subscribers")}
    finally:
        db.conn.close()


def sources(root: Path, address: str) -> list[tuple[str, str]]:
    db = store.connect(root / "newsletter.db")
    try:
        sub = subscribers.get(db, address)
        return [(e.kind, e.source) for e in events.history(db, sub.id)]
    finally:
        db.conn.close()


@pytest.fixture
def postmark(newsletter_dir: Path, monkeypatch) -> Iterator[PostmarkLists]:
    with PostmarkLists() as fake:
        monkeypatch.setenv("POSTMARK_SERVER_TOKEN", fake.key)
        setup(newsletter_dir, "postmark", fake, monkeypatch)
        yield fake


def pm_bounce(n: int, kind: str, email: str, at: str) -> dict:
    return {"ID": n, "Type": kind, "Email": email, "BouncedAt": at, "MessageStream": "broadcast",
            "Description": f"{kind} for {email}", "Inactive": kind == "HardBounce"}


def test_postmark_bounces_page_and_apply_the_policy(newsletter_dir, postmark, cli):
    # 1,100 bounces (3 pages of 500) for addresses not on the list, and ours among them.
    postmark.bounces = [pm_bounce(i, "HardBounce", f"x{i}@elsewhere.example",
                                  "2026-11-01T10:00:00Z") for i in range(1100)]
    postmark.bounces += [
        pm_bounce(5001, "HardBounce", "hard@example.com", "2026-11-20T10:00:00Z"),
        pm_bounce(5002, "SoftBounce", "soft@example.com", "2026-11-20T10:00:00Z"),
        pm_bounce(5003, "SpamComplaint", "spam@example.com", "2026-11-21T10:00:00Z"),
        pm_bounce(5004, "Transient", "fine@example.com", "2026-11-21T10:00:00Z"),
    ]
    postmark.suppressions = [{"EmailAddress": "left@example.com", "SuppressionReason":
                              "ManualSuppression", "Origin": "Recipient",
                              "CreatedAt": "2026-11-22T09:00:00Z"}]
    postmark.fail_next(429, {"ErrorCode": 429, "Message": "slow down"}, {"Retry-After": "1"})

    dry = cli("sync", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "would stop hard@example.com (hard bounce, sync:postmark)" in dry.stdout
    assert statuses(newsletter_dir)["hard@example.com"] == "active"  # dry: nothing changed

    run = cli("sync")
    assert run.exit_code == 0, run.stderr
    assert statuses(newsletter_dir) == {
        "hard@example.com": "bounced", "soft@example.com": "active",
        "spam@example.com": "complained", "left@example.com": "unsubscribed",
        "fine@example.com": "active",
    }
    assert ("hard_bounce", "sync:postmark") in sources(newsletter_dir, "hard@example.com")
    assert "3 reader(s) stopped, 2 soft bounce(s) counted" in run.stderr
    assert "1100 not on the list" in run.stderr
    assert "Retry-After" not in run.stderr

    # The next run asks only from the cursor on: old pages are not read again.
    before = len(postmark.requests)
    postmark.bounces.append(pm_bounce(6001, "SoftBounce", "soft@example.com",
                                      "2026-11-25T10:00:00Z"))
    again = cli("sync")
    assert again.exit_code == 0, again.stderr
    asked = [r.args for r in postmark.requests[before:] if r.path == "/bounces"]
    # 10:00 UTC less the 10 minutes' overlap, in Postmark's time zone (US Eastern).
    assert asked and all(a.get("fromdate", "").startswith("2026-11-21T04:50") for a in asked)
    # soft_limit = 2: a second soft bounce on another day stops the reader.
    assert statuses(newsletter_dir)["soft@example.com"] == "bounced"
    assert "already seen" in again.stderr


def test_postmark_bounces_naming_one_message_count_as_one_send(newsletter_dir, postmark, cli):
    # Postmark's bounce names the MessageID the send recorded: two soft bounces about that
    # one message (a retry reported the next day) are one send, so soft_limit 2 is not hit.
    db = store.connect(newsletter_dir / "newsletter.db")
    with db.conn:
        db.execute("INSERT INTO campaigns (id, slug, draft_path, subject, audience, kind, "
                   "provider, created_at) VALUES (7, 'issue', 'drafts/issue.md', 'Issue', "
                   "'subscribers', 'list', 'postmark', '2026-11-19T09:00:00Z')")
        db.execute("INSERT INTO deliveries (campaign_id, subscriber_id, email, state, "
                   "provider_message_id, updated_at) SELECT 7, id, email, 'sent', 'pm-msg-1', "
                   "'2026-11-19T09:00:00Z' FROM subscribers WHERE email = 'soft@example.com'")
    db.conn.close()
    postmark.bounces = [{**pm_bounce(n, "SoftBounce", "soft@example.com", at),
                         "MessageID": "pm-msg-1"}
                        for n, at in ((1, "2026-11-20T23:00:00Z"), (2, "2026-11-21T08:00:00Z"))]
    run = cli("sync")
    assert run.exit_code == 0, run.stderr
    assert statuses(newsletter_dir)["soft@example.com"] == "active"
    assert "2 soft bounce(s) counted" in run.stderr


def test_a_refused_key_is_one_error_naming_the_variable(newsletter_dir, postmark, cli,
                                                        monkeypatch):
    monkeypatch.setenv("POSTMARK_SERVER_TOKEN", "wrong-token-123456")
    run = cli("sync")
    assert run.exit_code != 0
    assert run.stderr.strip().splitlines() == [
        "Error: postmark /bounces: the API refused the key (401): check POSTMARK_SERVER_TOKEN "
        "(it must be allowed to read suppressions)"]
    assert "wrong-token" not in run.stderr


def test_sendgrid_lists(newsletter_dir, cli, monkeypatch):
    with SendGridLists() as fake:
        monkeypatch.setenv("SENDGRID_API_KEY", fake.key)
        setup(newsletter_dir, "sendgrid", fake, monkeypatch)
        now = int(time.time())
        fake.lists["bounces"] = [{"created": now - 50, "email": f"n{i}@other.example",
                                  "reason": "550", "status": "5.1.1"} for i in range(700)]
        fake.lists["bounces"].append({"created": now - 10, "email": "hard@example.com",
                                      "reason": "550 5.1.1 no such user", "status": "5.1.1"})
        fake.lists["blocks"] = [{"created": now - 9, "email": "soft@example.com",
                                 "reason": "blocked"}]
        fake.lists["spam_reports"] = [{"created": now - 8, "email": "spam@example.com",
                                       "ip": "10.0.0.1"}]
        fake.lists["unsubscribes"] = [{"created": now - 7, "email": "left@example.com"}]
        fake.fail_next(503, {"errors": [{"message": "down"}]})
        run = cli("sync")
        assert run.exit_code == 0, run.stderr
        got = statuses(newsletter_dir)
        assert (got["hard@example.com"], got["spam@example.com"], got["left@example.com"]) == \
            ("bounced", "complained", "unsubscribed")
        assert got["soft@example.com"] == "active"
        pages = [r.args.get("offset") for r in fake.requests
                 if r.path == "/v3/suppression/bounces"]
        assert pages[-2:] == ["0", "500"]  # paged, the 503 retried


def test_mailgun_lists_follow_paging_next(newsletter_dir, cli, monkeypatch):
    with MailgunLists() as fake:
        monkeypatch.setenv("MAILGUN_API_KEY", fake.key)
        setup(newsletter_dir, "mailgun", fake, monkeypatch,
              extra=f'domain = "{MailgunLists.domain}"\n')
        stamp = "Fri, 20 Nov 2026 11:02:55 UTC"
        fake.lists["bounces"] = [{"address": f"m{i}@other.example", "code": "550",
                                  "error": "No such mailbox", "created_at": stamp}
                                 for i in range(1500)]
        fake.lists["bounces"].append({"address": "hard@example.com", "code": "550",
                                      "error": "No such mailbox", "created_at": stamp})
        fake.lists["complaints"] = [{"address": "spam@example.com", "created_at": stamp}]
        fake.lists["unsubscribes"] = [{"address": "left@example.com", "tags": ["*"],
                                       "created_at": stamp}]
        run = cli("sync")
        assert run.exit_code == 0, run.stderr
        got = statuses(newsletter_dir)
        assert (got["hard@example.com"], got["spam@example.com"], got["left@example.com"]) == \
            ("bounced", "complained", "unsubscribed")
        bounce_pages = [r for r in fake.requests if r.path.endswith("/bounces")]
        assert len(bounce_pages) == 3  # 1,000 + 501 + the empty page that ends it


def test_ses_account_suppression_list_signed_with_sigv4(newsletter_dir, cli, monkeypatch):
    with SESLists() as fake:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", fake.key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", fake.secret)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        setup(newsletter_dir, "ses", fake, monkeypatch, extra=f'region = "{fake.region}"\n')
        fake.suppressed = [{"EmailAddress": f"s{i}@other.example", "Reason": "BOUNCE",
                            "LastUpdateTime": "2026-11-20T10:00:00Z"} for i in range(250)]
        fake.suppressed += [
            {"EmailAddress": "hard@example.com", "Reason": "BOUNCE",
             "LastUpdateTime": "2026-11-21T10:00:00Z"},
            {"EmailAddress": "spam@example.com", "Reason": "COMPLAINT",
             "LastUpdateTime": "2026-11-21T11:00:00Z"},
        ]
        run = cli("sync")
        assert run.exit_code == 0, run.stderr
        assert not fake.violations
        got = statuses(newsletter_dir)
        assert (got["hard@example.com"], got["spam@example.com"]) == ("bounced", "complained")
        assert sum(1 for r in fake.requests if r.path.endswith("/addresses")) == 3


def test_ses_pull_signs_temporary_credentials_and_opaque_page_tokens(newsletter_dir, cli,
                                                                   monkeypatch):
    """A session token is signed and sent; NextTokens with / + = are signed as AWS encodes."""
    with SESLists(token="FwoGZXIvYXdzE+session/token=") as fake:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", fake.key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", fake.secret)
        monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzE+session/token=")
        setup(newsletter_dir, "ses", fake, monkeypatch, extra=f'region = "{fake.region}"\n')
        fake.suppressed = [{"EmailAddress": f"s{i}@other.example", "Reason": "BOUNCE",
                            "LastUpdateTime": "2026-11-20T10:00:00Z"} for i in range(150)]
        fake.suppressed.append({"EmailAddress": "hard@example.com", "Reason": "BOUNCE",
                                "LastUpdateTime": "2026-11-21T10:00:00Z"})
        run = cli("sync")
        assert run.exit_code == 0, run.stderr
        assert not fake.violations
        assert statuses(newsletter_dir)["hard@example.com"] == "bounced"
        pages = [r for r in fake.requests if r.path.endswith("/addresses")]
        assert len(pages) == 2 and pages[1].args["NextToken"].startswith(SESLists.TOKEN_PREFIX)
        assert "session/token" not in run.stderr


def test_resend_says_plainly_that_it_cannot_be_pulled(newsletter_dir, cli):
    (newsletter_dir / "newsletter.toml").write_text(
        TOML.format(name="resend", url="http://127.0.0.1:9", extra=""))
    run = cli("sync")
    assert run.exit_code == 0
    assert "Resend has no API that lists bounces or complaints" in run.stderr


def test_a_list_send_syncs_first_so_a_suppressed_reader_is_not_sent_to(
    newsletter_dir, postmark, cli, write_draft
):
    write_draft("2026-12-01-hello.md", "---\ntitle: Hello\npreheader: hi\n---\nHello.\n")
    postmark.bounces = [pm_bounce(1, "HardBounce", "hard@example.com", "2026-11-20T10:00:00Z")]
    # The send goes to the outbox; the sync still reads the configured Postmark.
    run = cli("send", "hello", "--to", "subscribers", "--yes", "--provider", "outbox")
    assert run.exit_code == 0, run.stderr
    assert "Synced first: 1 reader(s) stopped" in run.stderr
    sent = {p.name.split("-", 1)[1].removesuffix(".eml")
            for p in (newsletter_dir / "outbox").rglob("*.eml")}
    assert "hard@example.com" not in sent and "fine@example.com" in sent

    skipped = cli("send", "hello", "--to", "subscribers", "--yes", "--provider", "outbox",
                  "--resend", "--no-sync")
    assert skipped.exit_code == 0 and "Synced first" not in skipped.stderr


@pytest.mark.parametrize("answer", [
    ["not", "an", "object"],  # a list where Postmark documents an object
    {"TotalCount": 1, "Bounces": [{"ID": 1, "Type": "HardBounce", "Email": "hard@example.com"}]},
    {"TotalCount": 1, "Bounces": [{"ID": 1, "Type": "HardBounce", "Email": "hard@example.com",
                                   "BouncedAt": "last tuesday"}]},
    {"TotalCount": "many", "Bounces": []},
    {"TotalCount": 1, "Bounces": ["hard@example.com"]},
])
def test_a_malformed_answer_is_one_error_and_changes_nothing(newsletter_dir, postmark, cli,
                                                             answer):
    postmark.bounces = [pm_bounce(1, "HardBounce", "spam@example.com", "2026-11-20T10:00:00Z")]
    postmark.fail_next(200, answer)
    run = cli("sync")
    assert run.exit_code != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: postmark"), run.stderr
    assert "not what Postmark documents" in lines[0] and "nothing was changed" in lines[0]
    assert "Traceback" not in run.stderr
    assert set(statuses(newsletter_dir).values()) == {"active"}
    db = store.connect(newsletter_dir / "newsletter.db")
    assert db.execute("SELECT count(*) FROM sync_cursors").fetchone()[0] == 0
    db.conn.close()


def test_an_api_that_pages_forever_is_stopped_with_an_error(newsletter_dir, cli, monkeypatch):
    """SES answering the same NextToken again, SendGrid ignoring offset: no endless sync."""
    with SESLists() as fake:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", fake.key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", fake.secret)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        setup(newsletter_dir, "ses", fake, monkeypatch, extra=f'region = "{fake.region}"\n')
        loop = {"SuppressedDestinationSummaries": [
            {"EmailAddress": "hard@example.com", "Reason": "BOUNCE",
             "LastUpdateTime": "2026-11-21T10:00:00Z"}], "NextToken": "c2FtZQ=="}
        fake.fail_next(200, loop, times=50)
        run = cli("sync")
        assert run.exit_code != 0
        assert "page" in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert len(fake.requests) <= 3
        assert statuses(newsletter_dir)["hard@example.com"] == "active"
    with SendGridLists() as fake:
        monkeypatch.setenv("SENDGRID_API_KEY", fake.key)
        setup(newsletter_dir, "sendgrid", fake, monkeypatch)
        same = [{"created": 1_700_000_000, "email": f"n{i}@other.example"} for i in range(500)]
        fake.fail_next(200, same, times=50)
        run = cli("sync")
        assert run.exit_code != 0
        assert "page" in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert len(fake.requests) <= 3


def test_a_postmark_bounce_just_after_the_cursor_is_not_missed(newsletter_dir, postmark, cli):
    """Postmark reads fromdate as US Eastern time: sent as UTC, hours of bounces were skipped."""
    postmark.bounces = [pm_bounce(1, "HardBounce", "spam@example.com", "2026-11-21T10:00:00Z")]
    assert cli("sync").exit_code == 0
    postmark.bounces.append(pm_bounce(2, "HardBounce", "hard@example.com",
                                      "2026-11-21T12:00:00Z"))
    run = cli("sync")
    assert run.exit_code == 0, run.stderr
    assert statuses(newsletter_dir)["hard@example.com"] == "bounced"


def test_a_key_echoed_back_in_an_error_is_redacted(newsletter_dir, postmark, cli):
    postmark.fail_next(422, {"ErrorCode": 10, "Message": f"token {postmark.key} is not "
                             "allowed to read bounces", "Header": f"X-Postmark-Server-Token: "
                             f"{postmark.key}"})
    run = cli("sync")
    assert run.exit_code != 0 and run.exception is None
    assert postmark.key not in run.stderr and "[redacted]" in run.stderr.lower(), run.stderr
