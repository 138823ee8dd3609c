"""`subscribers remove`: forgetting a reader for real, and exports a spreadsheet cannot run."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import subprocess
from pathlib import Path

import pytest

from newsletter import store
from newsletter.audience import importers
from newsletter.audience import subscribers as subs
from newsletter.delivery.outgoing import send_queued
from newsletter.settings import load_settings
from newsletter.web.confirmation import send_confirmation


def _campaign_with_deliveries(db_path: Path) -> None:
    db = store.connect(db_path)
    db.execute(
        "INSERT INTO campaigns (slug, draft_path, subject, audience, kind, provider, created_at)"
        " VALUES ('one', 'drafts/one.md', 'One', 'subscribers', 'list', 'outbox', 'now')"
    )
    for sub in subs.iter_subscribers(db):
        db.execute(
            "INSERT INTO deliveries (campaign_id, subscriber_id, email, state, updated_at) "
            "VALUES (1, ?, ?, 'sent', 'now')", [sub.id, sub.email]
        )
    # A second issue whose send stopped half-way: still queued for Ada.
    db.execute(
        "INSERT INTO campaigns (slug, draft_path, subject, audience, kind, provider, created_at)"
        " VALUES ('two', 'drafts/two.md', 'Two', 'subscribers', 'list', 'outbox', 'now')"
    )
    db.execute("INSERT INTO deliveries (campaign_id, subscriber_id, email, updated_at) "
               "SELECT 2, id, email, 'now' FROM subscribers WHERE email LIKE 'ada%'")
    db.conn.commit()
    db.conn.close()


def test_remove_forgets_the_address_everywhere_but_keeps_the_counts(
    cli, newsletter_dir: Path
) -> None:
    cli("subscribers", "add", "Ada@example.com", "--name", "Ada")
    cli("subscribers", "add", "liu@example.com")
    cli("subscribers", "unsubscribe", "ada@example.com")
    db_path = newsletter_dir / "newsletter.db"
    _campaign_with_deliveries(db_path)
    outbox = newsletter_dir / "outbox"
    outbox.mkdir()
    (outbox / "0001-ada.eml").write_text("To: Ada <ada@EXAMPLE.com>\n\nHello\n")
    (outbox / "0002-liu.eml").write_text("To: liu@example.com\n\nHello\n")

    r = cli("subscribers", "remove", "ada@example.com")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == [
        "Forgotten: Ada@example.com (2 history events erased, 2 deliveries kept with the "
        "address hashed)",
        f"Still holds the address: {outbox / '0001-ada.eml'}",
        "Delete those with --delete-outbox (or by hand) to forget them entirely.",
    ]
    db = store.connect(db_path)
    dump = "\n".join(db.conn.iterdump()).lower()
    assert "ada@example.com" not in dump and "liu@example.com" in dump
    assert db.execute("SELECT campaign_id, state, count(*) FROM deliveries GROUP BY 1, 2"
                      ).fetchall() == [(1, "sent", 2), (2, "skipped", 1)]  # nothing sent later
    assert db.execute("SELECT count(*) FROM events WHERE email LIKE 'ada%'").fetchone()[0] == 0
    db.conn.close()
    assert (outbox / "0001-ada.eml").exists()

    # The address comes back (a new sign-up), then is forgotten with its files and for good.
    cli("subscribers", "add", "ada@example.com")
    r = cli("subscribers", "remove", "ada@example.com", "--delete-outbox", "--suppress")
    assert r.stdout.splitlines()[1:] == [
        "Suppressed: a later import or add of this address is refused.",
        f"Deleted: {outbox / '0001-ada.eml'}",
    ]
    assert sorted(p.name for p in outbox.iterdir()) == ["0002-liu.eml"]
    r = cli("subscribers", "add", "ADA@example.com")
    assert r.exit_code != 0 and r.stderr.startswith("Error: ADA@example.com asked to be forgotten")
    sheet = newsletter_dir / "again.csv"
    sheet.write_text("email\nada@example.com\n")
    r = cli("subscribers", "import", str(sheet))
    assert r.stdout.splitlines()[0].endswith("0 added, 0 updated, 0 unchanged, 1 skipped "
                                             "(forgotten: 1)")


def _recipients(outbox: Path) -> dict[Path, str]:
    """Every saved message and the address in its To header (read the way a mail client does)."""
    found = {}
    for path in sorted(outbox.rglob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found[path] = message["To"].addresses[0].addr_spec.lower()
    return found


def test_remove_finds_the_readers_messages_in_campaign_folders_and_confirmations(
    cli, newsletter_dir: Path, write_draft
) -> None:
    # Before: only outbox/*.eml was searched, but sends write outbox/<campaign>/*.eml and
    # confirmations outbox/confirm/*.eml: --delete-outbox deleted nothing and listed nothing.
    write_draft("hello.md", "---\nsubject: Hello\n---\nHello {{ subscriber.name }}.\n")
    write_draft("again.md", "---\nsubject: Again\n---\nAgain, {{ subscriber.name }}.\n")
    long_name = "Lí Xiǎomíng, Keeper of the Rather Long Display Names Society"  # a folded To
    for address, name in (("Dana@example.com", "Dana"), ("ana@example.com", "Ana"),
                          ("li@bücher.de", long_name)):
        assert cli("subscribers", "add", address, "--name", name).exit_code == 0
    for draft in ("hello", "again"):
        run = cli("send", draft, "--to", "subscribers", "--yes")
        assert run.exit_code == 0, run.stderr
    settings = load_settings(newsletter_dir)
    db = subs.open_db(settings)
    for address in ("dana@example.com", "ana@example.com"):
        send_confirmation(settings, subs.get(db, address), "https://example.com/confirm?t=1")
    db.conn.close()
    assert send_queued(settings).sent == 2  # queued by the request, sent by the queue
    outbox = newsletter_dir / "outbox"
    sent = _recipients(outbox)
    folders = sorted(p.name for p in outbox.iterdir())
    assert folders == ["1-hello", "2-again", "confirm"] and len(sent) == 3 + 3 + 2
    danas = [p for p, to in sent.items() if to == "dana@example.com"]
    assert [p.parent.name for p in danas] == folders

    # Any letter case; ana@example.com is inside dana@example.com but is not her address.
    run = cli("subscribers", "remove", "DANA@example.com")
    assert run.exit_code == 0, run.stderr
    assert run.stdout.splitlines()[1:] == [
        *(f"Still holds the address: {p}" for p in danas),
        "Delete those with --delete-outbox (or by hand) to forget them entirely.",
    ]
    assert _recipients(outbox) == sent  # listed, not deleted
    db = subs.open_db(settings)
    queued = [r[0] for r in db.execute("SELECT email FROM outgoing ORDER BY id").fetchall()]
    db.conn.close()
    assert queued == ["ana@example.com"]  # dana's confirmation record went with her

    assert cli("subscribers", "add", "dana@example.com").exit_code == 0
    run = cli("subscribers", "remove", "dana@example.com", "--delete-outbox")
    assert run.stdout.splitlines()[1:] == [f"Deleted: {p}" for p in danas]
    left = _recipients(outbox)
    assert left == {p: to for p, to in sent.items() if to != "dana@example.com"}
    assert not [p for p in outbox.rglob("*") if b"dana@example.com" in
                (p.read_bytes().lower() if p.is_file() else b"")]
    assert sorted(p.name for p in outbox.iterdir()) == folders  # the folders stay

    # The outbox writes an IDN domain in Punycode (li@xn--bcher-kva.de): still found.
    run = cli("subscribers", "remove", "li@bücher.de", "--delete-outbox")
    lis = [p for p, to in sent.items() if to == "li@xn--bcher-kva.de"]
    assert len(lis) == 2 and run.stdout.splitlines()[1:] == [f"Deleted: {p}" for p in lis]
    assert set(_recipients(outbox).values()) == {"ana@example.com"}


def test_remove_searches_a_custom_outbox_folder_and_says_what_it_could_not_delete(
    cli, newsletter_dir: Path, write_draft
) -> None:
    # [provider] directory = "sent-mail": the saved messages live there, not in outbox/.
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(toml.read_text().replace('name = "outbox"',
                                             'name = "outbox"\ndirectory = "sent-mail"'))
    write_draft("hello.md", "---\nsubject: Hello\n---\nHello.\n")
    for address in ("kim@example.com", "lee@example.com"):
        assert cli("subscribers", "add", address).exit_code == 0
    assert cli("send", "hello", "--to", "subscribers", "--yes").exit_code == 0
    saved = newsletter_dir / "sent-mail"
    kims = [p for p, to in _recipients(saved).items() if to == "kim@example.com"]
    assert len(kims) == 1
    run = cli("subscribers", "remove", "kim@example.com")
    assert run.exit_code == 0, run.stderr
    assert f"Still holds the address: {kims[0]}" in run.stdout

    # A file that cannot be deleted (an immutable folder: even root cannot unlink in it).
    assert cli("subscribers", "add", "kim@example.com").exit_code == 0
    folder = kims[0].parent
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here to make an undeletable file")
    try:
        run = cli("subscribers", "remove", "kim@example.com", "--delete-outbox")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert run.exit_code != 0 and run.exception is None
    assert run.stderr.splitlines() == [
        f"Could not delete (Operation not permitted): {kims[0]}",
        "Error: 1 saved message(s) holding the address could not be deleted (listed above): "
        "delete them by hand; the reader is forgotten otherwise"]
    assert "Forgotten: kim@example.com" in run.stdout
    assert "total         1" in cli("subscribers", "count").stdout  # lee only


TRICKY = ["=HYPERLINK(\"http://evil\")", "+1 555", "-2", "@SUM(A1)", "\tTab", "'quoted",
          "'=already", "''+two"]


def test_export_escapes_formulas_and_import_undoes_exactly_that(db, tmp_path: Path) -> None:
    for i, name in enumerate(TRICKY):
        subs.add_subscriber(db, f"r{i}@example.com", name=name, source=name)
    subs.add_subscriber(db, "=cmd@example.com", name="Plain")
    out = io.StringIO()
    subs.export_csv(db, out)
    cells = list(csv.reader(io.StringIO(out.getvalue())))[1:]
    for row in cells:  # what a spreadsheet sees: no cell starts a formula
        for cell in (row[0], row[1], row[5]):
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    assert cells[-1][0] == "'=cmd@example.com"
    assert [row[1] for row in cells[:4]] == ["'=HYPERLINK(\"http://evil\")", "'+1 555", "'-2",
                                              "'@SUM(A1)"]
    assert cells[5][1] == "'quoted"  # a quote not before a formula is left alone

    path = tmp_path / "export.csv"
    path.write_text(out.getvalue())
    other = store.connect(tmp_path / "other.db")
    importers.import_file(other, path)
    def key(s: subs.Subscriber) -> tuple:
        return (s.email, s.name, s.source)

    tab_cleaned = [key(s) for s in subs.iter_subscribers(db)]
    assert [key(s) for s in subs.iter_subscribers(other)] == tab_cleaned
    assert [s.name for s in subs.iter_subscribers(other)][:8] == [
        subs.clean_name(n) for n in TRICKY]
    other.conn.close()
