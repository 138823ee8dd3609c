"""A send's check reads the reader requests `serve` journaled while the database was busy."""

from __future__ import annotations

import os
from pathlib import Path

from newsletter import changes, store


def _asked(subscriber_id: int) -> dict:  # type: ignore[type-arg]
    return changes.request_op(
        subscriber_id=subscriber_id, email=f"r{subscriber_id}@example.org", before="active",
        after="unsubscribed", kind="unsubscribed", source="one-click", detail="",
        ip=None, user_agent=None, campaign_id=None, request_id=f"request:{subscriber_id}",
        at="2026-12-08T00:00:00Z")


def test_every_request_is_seen_even_a_file_made_in_the_same_clock_tick(tmp_path: Path) -> None:
    database = tmp_path / "newsletter.db"
    db = store.connect(database)
    requests = changes.Requests(database)
    assert requests.new() == {}
    changes.append_requests(db.conn, [_asked(7), _asked(8)])
    assert requests.new() == {7: "unsubscribed", 8: "unsubscribed"}
    # A new generation's file whose folder mtime looks unchanged (the filesystem's clock is
    # coarse): the folder is listed again while its mtime is recent, so it is still seen.
    folder = changes.journal_dir(database)
    listed = os.stat(folder).st_mtime_ns
    changes.write_line(changes.requests_path(database, 1),
                       changes._request_line(_asked(9)))  # noqa: SLF001
    os.utime(folder, ns=(listed, listed))
    assert requests.new() == {7: "unsubscribed", 8: "unsubscribed", 9: "unsubscribed"}
    db.conn.close()
