"""The server and a running `newsletter send` share newsletter.db."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.legacy_tokens import unsubscribe_token
from tests.web.conftest import BIN, SECRET, Site, wait_for

READERS = 2000
LEAVING = 300  # the last readers in send order unsubscribe while the send runs


def test_unsubscribes_during_a_send_never_fail_and_are_skipped_if_not_reached(
        site: Site) -> None:
    rows = "\n".join(f"reader{i:05d}@example.com,Reader {i}" for i in range(READERS))
    (site.root / "list.csv").write_text("email,name\n" + rows + "\n")
    assert site.cli("subscribers", "import", "list.csv").returncode == 0, "import failed"
    (site.root / "drafts" / "issue-one.md").write_text(
        "---\nsubject: Issue one\n---\nHello {{ subscriber.name }}.\n\n"
        "[Unsubscribe]({{ unsubscribe_url }})\n")
    send = subprocess.Popen(
        [str(BIN), "send", "issue-one", "--to", "subscribers", "--yes", "--rate", "400"],
        cwd=site.root, env=site.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def started() -> bool:
            db = site.db()
            try:
                return db.execute(
                    "SELECT count(*) FROM deliveries WHERE state = 'sent'").fetchone()[0] > 50
            finally:
                db.conn.close()

        wait_for(started, 60, "the send to start")
        leaving = [f"reader{i:05d}@example.com" for i in range(READERS - LEAVING, READERS)]
        with httpx.Client(base_url=site.url, timeout=60) as c:

            def leave(address: str) -> int:
                token = unsubscribe_token(SECRET.encode(), address)
                return c.post(f"/unsubscribe?token={token}",
                              data={"List-Unsubscribe": "One-Click"}).status_code

            with ThreadPoolExecutor(10) as pool:
                codes = list(pool.map(leave, leaving))
        out, err = send.communicate(timeout=120)
    finally:
        if send.poll() is None:
            send.kill()
    assert codes == [200] * LEAVING
    assert send.returncode == 0, err
    assert "locked" not in site.log.read_text() + err
    db = site.db()
    states = dict(db.execute(
        "SELECT d.state, count(*) FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id"
        " WHERE s.status = 'unsubscribed' GROUP BY d.state").fetchall())
    assert sum(states.values()) == LEAVING and set(states) <= {"sent", "skipped"}
    assert states.get("skipped", 0) > 0  # the send had not reached them yet
    late = db.execute(
        "SELECT count(*) FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
        "WHERE s.status = 'unsubscribed' AND d.state = 'sent' AND d.sent_at > s.unsubscribed_at"
    ).fetchone()[0]
    assert late == 0  # nobody got the issue after they unsubscribed
    # A mail client's one-click POST (RFC 8058) is recorded as such (issue 18).
    recorded = db.execute("SELECT count(*) FROM events WHERE kind = 'unsubscribed' AND "
                          "source = 'one-click'").fetchone()[0]
    assert recorded == LEAVING
    files = list((site.root / "outbox").glob("*issue-one*/*.eml"))
    assert len(files) == READERS - states.get("skipped", 0)
