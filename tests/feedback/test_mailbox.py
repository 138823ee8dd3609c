"""`newsletter sync` reading a real Dovecot mailbox: bounce reports and mailto unsubscribes."""

from __future__ import annotations

import imaplib
from pathlib import Path

from newsletter import store
from newsletter.audience import events, subscribers
from newsletter.compose.tokens import unsubscribe_token
from newsletter.settings import load_settings

TOML = """\
[newsletter]
name = "Test Letter"
from = "Test Writer <writer@example.com>"
base_url = "https://example.com/news"
unsubscribe_mailto = "unsubscribe@example.com"

[mailbox]
host = "{host}"
port = {port}
security = "none"
username = "{user}"
password_env = "TEST_IMAP_PASSWORD"
processed_folder = "Newsletter/Processed"

[bounces]
soft_limit = 2
"""

# Postfix's RFC 3464 report, as it sends it for an unknown user.
POSTFIX_DSN = """\
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: writer@example.com
Subject: Undelivered Mail Returned to Sender
Message-Id: <20261201100000.AAA@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<hard@example.com>: host mx.example.com[192.0.2.1] said: 550 5.1.1
    <hard@example.com>: Recipient address rejected: User unknown

--B1
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: AAA
Arrival-Date: Tue,  1 Dec 2026 09:59:58 +0000 (UTC)

Final-Recipient: rfc822; hard@example.com
Original-Recipient: rfc822;hard@example.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; 550 5.1.1 <hard@example.com>: Recipient address rejected:
    User unknown

--B1
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: Test Writer <writer@example.com>
To: hard@example.com
Subject: Leaving Meta

--B1--
"""

# A delay notice: temporary, counted as a soft bounce.
DELAYED_DSN = """\
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: writer@example.com
Subject: Delayed Mail (still being retried)
Message-Id: <20261201110000.BBB@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B2"

--B2
Content-Type: text/plain; charset=us-ascii

Your message could not be delivered for 4 hours. It will be retried until it is 5 days old.

--B2
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; soft@example.com
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.example.org[192.0.2.9]:25: Connection timed out

--B2--
"""

# Exim's plain-text failure report (not RFC 3464).
EXIM_BOUNCE = """\
From: Mail Delivery System <Mailer-Daemon@mail.example.org>
To: writer@example.com
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1abc-0001@mail.example.org>
X-Failed-Recipients: gone@example.com
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  gone@example.com
    mailbox is full / no such user: retry timeout exceeded

------ This is a copy of the message, including all the headers. ------

From: writer@example.com
Subject: Leaving Meta
"""

NOT_A_BOUNCE = """\
From: Friend <friend@example.org>
To: writer@example.com
Subject: Loved the last issue
Message-Id: <friendly-1@example.org>

Just wanted to say thanks!
"""


def mailto_request(sender: str, subject: str, msg_id: str) -> str:
    return (f"From: {sender}\nTo: unsubscribe@example.com\nSubject: {subject}\n"
            f"Message-Id: <{msg_id}@example.org>\n\nPlease take me off.\n")


def deliver(server, *messages: str) -> None:
    box = imaplib.IMAP4(server.host, server.port)
    box.login(server.username, server.password)
    for text in messages:
        box.append("INBOX", None, None, text.replace("\n", "\r\n").encode())
    box.logout()


def folder(server, name: str) -> list[bytes]:
    box = imaplib.IMAP4(server.host, server.port)
    box.login(server.username, server.password)
    status, _ = box.select(f'"{name}"', readonly=True)
    if status != "OK":
        box.logout()
        return []
    _, data = box.uid("SEARCH", None, "ALL")
    subjects = []
    for uid in data[0].split():
        _, parts = box.uid("FETCH", uid, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects.append(parts[0][1].strip())
    box.logout()
    return subjects


def test_bounces_and_mailto_unsubscribes_are_applied_and_moved(newsletter_dir: Path, dovecot,
                                                               cli, monkeypatch):
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    (newsletter_dir / "newsletter.toml").write_text(
        TOML.format(host=dovecot.host, port=dovecot.port, user=dovecot.username))
    settings = load_settings(newsletter_dir)
    db = store.connect(settings.database)
    for address in ("hard@example.com", "soft@example.com", "gone@example.com",
                    "token@example.com", "plain@example.com", "stays@example.com"):
        subscribers.add_subscriber(db, address)
    token = unsubscribe_token(settings.secret_key(), "token@example.com", settings.base_url)
    deliver(dovecot, POSTFIX_DSN, DELAYED_DSN, EXIM_BOUNCE, NOT_A_BOUNCE,
            # Sent from another address, but the token in the subject names the reader.
            mailto_request("Someone <forwarded@example.net>", f"unsubscribe {token}", "u1"),
            mailto_request("plain@example.com", "unsubscribe", "u2"),
            mailto_request("stranger@example.net", "unsubscribe", "u3"))

    dry = cli("sync", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "would stop hard@example.com (hard bounce, mailbox)" in dry.stdout
    assert len(folder(dovecot, "INBOX")) == 7  # a dry run moves nothing

    run = cli("sync")
    assert run.exit_code == 0, run.stderr
    got = {r[0]: r[1] for r in db.execute("SELECT email, status FROM subscribers")}
    assert got == {"hard@example.com": "bounced", "soft@example.com": "active",
                   "gone@example.com": "bounced", "token@example.com": "unsubscribed",
                   "plain@example.com": "unsubscribed", "stays@example.com": "active"}
    soft = subscribers.get(db, "soft@example.com")
    assert [e.kind for e in events.history(db, soft.id)][-1] == "soft_bounce"
    # Handled mail moved, never deleted; what it could not use stays, and is reported.
    assert sorted(folder(dovecot, "INBOX")) == [b"Subject: Loved the last issue",
                                                b"Subject: unsubscribe"]
    assert len(folder(dovecot, "Newsletter.Processed")) == 5
    assert "left in the mailbox" in run.stderr and "naming nobody on the list" in run.stderr

    again = cli("sync")  # nothing new: nothing changes, nothing is moved twice
    assert again.exit_code == 0 and "0 reader(s) stopped" in again.stderr
    assert len(folder(dovecot, "Newsletter.Processed")) == 5


def test_a_wrong_password_is_one_error_without_the_password(newsletter_dir, dovecot, cli,
                                                            monkeypatch):
    monkeypatch.setenv("TEST_IMAP_PASSWORD", "not-the-password")
    (newsletter_dir / "newsletter.toml").write_text(
        TOML.format(host=dovecot.host, port=dovecot.port, user=dovecot.username))
    run = cli("sync")
    assert run.exit_code != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: the mailbox 127.0.0.1:")
    assert "refused the login" in lines[0] and "TEST_IMAP_PASSWORD" in lines[0]
    assert "not-the-password" not in run.stderr


def test_mailbox_settings_problems_are_listed_at_once(newsletter_dir, cli):
    (newsletter_dir / "newsletter.toml").write_text(
        '[newsletter]\nname = "T"\n\n[mailbox]\nsecurity = "ssl"\nport = 0\n'
        'password_env = "hunter2 is my password"\n')
    run = cli("sync")
    assert run.exit_code == 2
    line = run.stderr.strip()
    for part in ("mailbox.security must be", "mailbox.host is missing",
                 "mailbox.username is missing", "mailbox.password_env must name",
                 "mailbox.port must be"):
        assert part in line
    assert "hunter2" not in line


def test_replying_to_an_issues_mailto_unsubscribe_link_unsubscribes_that_reader(
    newsletter_dir: Path, dovecot, cli, monkeypatch, write_draft
):
    import email
    import email.policy
    import re
    from urllib.parse import unquote

    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    (newsletter_dir / "newsletter.toml").write_text(
        TOML.format(host=dovecot.host, port=dovecot.port, user=dovecot.username))
    write_draft("2026-12-01-hello.md", "---\ntitle: Hello\npreheader: hi\n---\nHello.\n")
    assert cli("subscribers", "add", "reader@example.com").exit_code == 0
    assert cli("send", "hello", "--to", "subscribers", "--yes", "--no-sync").exit_code == 0
    sent = next((newsletter_dir / "outbox").rglob("*.eml"))
    header = email.message_from_bytes(sent.read_bytes(), policy=email.policy.default)[
        "List-Unsubscribe"]
    mailto = re.search(r"<mailto:([^?>]+)\?subject=([^>]+)>", str(header))
    assert mailto is not None, header
    # The reader's mail program sends it from another address (an alias, a forward).
    deliver(dovecot, f"From: alias@elsewhere.example\nTo: {mailto.group(1)}\n"
                     f"Subject: {unquote(mailto.group(2))}\nMessage-Id: <reply-1@x>\n\n\n")
    run = cli("sync")
    assert run.exit_code == 0, run.stderr
    db = store.connect(newsletter_dir / "newsletter.db")
    assert subscribers.get(db, "reader@example.com").status == "unsubscribed"
def test_weird_mail_8bit_headers_no_message_id_and_strangers(newsletter_dir: Path, dovecot,
                                                             cli, monkeypatch):
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    (newsletter_dir / "newsletter.toml").write_text(
        TOML.format(host=dovecot.host, port=dovecot.port, user=dovecot.username))
    settings = load_settings(newsletter_dir)
    db = store.connect(settings.database)
    subscribers.add_subscriber(db, "hard@example.com")
    subscribers.add_subscriber(db, "soft@example.com")
    # Raw 8-bit (Latin-1) in the Subject, as some MTAs send; and no Message-ID at all.
    latin = POSTFIX_DSN.replace("Undelivered Mail Returned to Sender",
                                "Non remis : adresse inconnue \xe0 l'\xe9tranger")
    latin = latin.replace("Message-Id: <20261201100000.AAA@mx.example.net>\n", "")
    stranger = POSTFIX_DSN.replace("hard@example.com", "nobody@example.com").replace(
        "AAA@", "CCC@")
    delayed = DELAYED_DSN.replace("Message-Id: <20261201110000.BBB@mx.example.net>\n", "")
    box = imaplib.IMAP4(dovecot.host, dovecot.port)
    box.login(dovecot.username, dovecot.password)
    for text in (latin, stranger, delayed, delayed):
        box.append("INBOX", None, None, text.replace("\n", "\r\n").encode("latin-1"))
    box.logout()

    run = cli("sync")
    assert run.exit_code == 0 and run.exception is None, (run.stderr, run.exception)
    got = {r[0]: r[1] for r in db.execute("SELECT email, status FROM subscribers")}
    assert got == {"hard@example.com": "bounced", "soft@example.com": "active"}
    assert "1 not on the list" in run.stderr
    soft = subscribers.get(db, "soft@example.com")
    # Two delay notices without a Message-ID are two soft bounces, not one "duplicate".
    assert [e.kind for e in events.history(db, soft.id)].count("soft_bounce") == 2
    hard = subscribers.get(db, "hard@example.com")
    assert "\ufffd" in events.history(db, hard.id)[-1].detail or \
        "étranger" in events.history(db, hard.id)[-1].detail
    assert folder(dovecot, "INBOX") == []
    again = cli("sync")  # moved: nothing counted twice
    assert again.exit_code == 0 and "0 soft bounce(s) counted" in again.stderr


LONG = "Processed" + "x" * 300  # past the file system's 255 bytes: Dovecot cannot make it


def test_a_processed_folder_that_cannot_be_made_still_shows_what_changed(
        newsletter_dir: Path, dovecot, cli, monkeypatch):
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    (newsletter_dir / "newsletter.toml").write_text(
        TOML.format(host=dovecot.host, port=dovecot.port, user=dovecot.username)
        .replace('"Newsletter/Processed"', f'"{LONG}"'))
    db = store.connect(newsletter_dir / "newsletter.db")
    subscribers.add_subscriber(db, "hard@example.com")
    deliver(dovecot, POSTFIX_DSN)
    run = cli("sync")
    assert run.exception is None, run.exception
    assert run.exit_code != 0
    assert "stopped hard@example.com (hard bounce, mailbox)" in run.stdout
    assert LONG[:40] in run.stderr and "left in the mailbox" in run.stderr
    assert subscribers.get(db, "hard@example.com").status == "bounced"
    assert len(folder(dovecot, "INBOX")) == 1  # nothing deleted
    again = cli("sync")  # read again: not applied twice
    assert "0 reader(s) stopped" in again.stderr and "1 already seen" in again.stderr


def test_a_scheduled_send_reads_the_mailbox_first(newsletter_dir: Path, dovecot, cli,
                                                  monkeypatch, write_draft):
    """`newsletter run` syncs before it sends, as `send` does: who asked to leave is not mailed."""
    from newsletter.run import run_once

    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    toml = TOML.format(host=dovecot.host, port=dovecot.port, user=dovecot.username)
    (newsletter_dir / "newsletter.toml").write_text(
        toml + '\n[provider]\nname = "outbox"\n')
    write_draft("2031-06-01-hello.md", "---\ntitle: Hello\npreheader: hi\n---\nHello.\n")
    db = store.connect(newsletter_dir / "newsletter.db")
    for address in ("stays@example.com", "plain@example.com"):
        subscribers.add_subscriber(db, address)
    assert cli("send", "hello", "--to", "subscribers", "--at",
               "2031-06-01 07:00 UTC").exit_code == 0
    with db.conn:
        db.execute("UPDATE schedules SET send_at = '2026-01-01T00:00:00Z'")
    deliver(dovecot, mailto_request("plain@example.com", "unsubscribe", "u9"))
    report = run_once(load_settings(newsletter_dir))
    assert [line.outcome for line in report.sends] == ["sent"], report.sends
    sent_to = [p.read_text() for p in (newsletter_dir / "outbox").rglob("*.eml")]
    assert len(sent_to) == 1 and "To: stays@example.com" in sent_to[0]
    assert subscribers.get(db, "plain@example.com").status == "unsubscribed"


def test_a_huge_message_is_left_unread_and_the_rest_applied(newsletter_dir: Path, dovecot,
                                                             cli, monkeypatch):
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    (newsletter_dir / "newsletter.toml").write_text(
        TOML.format(host=dovecot.host, port=dovecot.port, user=dovecot.username))
    db = store.connect(newsletter_dir / "newsletter.db")
    subscribers.add_subscriber(db, "hard@example.com")
    huge = NOT_A_BOUNCE + ("x" * 76 + "\n") * 80_000  # a 6 MB reply with an attachment
    deliver(dovecot, huge, POSTFIX_DSN)
    run = cli("sync")
    assert run.exit_code == 0, run.stderr
    assert subscribers.get(db, "hard@example.com").status == "bounced"
    assert "too big to be a bounce report (6 MB)" in run.stderr
    assert folder(dovecot, "INBOX") == [b"Subject: Loved the last issue"]  # left, not lost
