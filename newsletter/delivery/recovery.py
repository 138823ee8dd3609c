"""What a killed sender left: `recover_interrupted` settles its rows from the worker journals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from newsletter import changes
from newsletter.audience.events import now_iso
from newsletter.delivery.journal import read_journals
from newsletter.delivery.providers.base import Outcome


@dataclass
class Recovery:
    """What a dead sender left behind, sorted out from its journals."""

    recorded: int = 0  # results found in the journals and written to the log
    never_sent: int = 0  # claimed but never handed to the provider: simply queued again
    in_flight: int = 0  # handed over with no answer: uncertain (re-queued if idempotent)


def recover_interrupted(
    db: sqlite_utils.Database,
    campaign_id: int,
    *,
    requeue_them: bool,
    journals: Sequence[Path] = (),
) -> Recovery:
    """Rows left in `sending` by a dead process: settle them from its journals.

    Each worker journals "handed over" before a message goes to the provider and
    the result right after (see `journal.Journal`). A row with a result gets it; a row
    handed over without one is in flight: `uncertain`, or `queued` when
    `requeue_them` (an idempotent provider); a row never handed over is queued
    again. Without any journal every such row counts as in flight. Call only
    while holding the campaign's lock; the journals are removed afterwards.
    """
    journaled = read_journals(journals)
    handed, results = journaled.handed, journaled.results
    recovery = Recovery()
    stamp = now_iso()
    in_flight_state = "queued" if requeue_them else "uncertain"
    in_flight_error = "the sending process stopped while this message was in flight"
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        stuck = [r[0] for r in db.execute(
            "SELECT id FROM deliveries WHERE campaign_id = ? AND state = 'sending'", [campaign_id]
        ).fetchall()]
        for did in stuck:
            if did in results:
                outcome, provider_id, error = results[did]
                recovery.recorded += 1
                if outcome == Outcome.SENT:
                    db.execute(
                        "UPDATE deliveries SET state = 'sent', provider_message_id = ?, "
                        "sent_at = ?, updated_at = ?, error = NULL, attempts = attempts + 1 "
                        "WHERE id = ?", [provider_id or None, stamp, stamp, did])
                    continue
                state = {"failed": "failed", "uncertain": "uncertain"}.get(outcome, "queued")
                db.execute(
                    "UPDATE deliveries SET state = ?, error = ?, updated_at = ?, "
                    "attempts = attempts + 1 WHERE id = ?", [state, error or None, stamp, did])
            elif did in handed or not journals:
                recovery.in_flight += 1
                db.execute(
                    "UPDATE deliveries SET state = ?, updated_at = ?, error = coalesce(error, ?) "
                    "WHERE id = ?", [in_flight_state, stamp, in_flight_error, did])
            else:
                recovery.never_sent += 1
                db.execute(
                    "UPDATE deliveries SET state = 'queued', updated_at = ? WHERE id = ?",
                    [stamp, did])
        if stuck:  # what was settled goes to the change journal, like any outcome
            changes.append(db.conn, [changes.deliveries_op(db.conn, stuck)])
    for path in journals:
        path.unlink(missing_ok=True)
    return recovery
