"""What a killed sender left: the worker journals and `recover_interrupted`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlite_utils

from newsletter.audience.events import now_iso
from newsletter.delivery.providers.base import Outcome
from newsletter.delivery.recipients import DeliveryRow

if TYPE_CHECKING:
    from newsletter.delivery.runner import _Outcome


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
    the result right after (see `_Journal`). A row with a result gets it; a row
    handed over without one is in flight: `uncertain`, or `queued` when
    `requeue_them` (an idempotent provider); a row never handed over is queued
    again. Without any journal every such row counts as in flight. Call only
    while holding the campaign's lock; the journals are removed afterwards.
    """
    handed: set[int] = set()
    results: dict[int, tuple[str, str, str]] = {}
    for path in journals:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            parts = line.split("\t")
            if parts[0] == "H" and len(parts) >= 2 and parts[1].isdigit():
                handed.add(int(parts[1]))
            elif parts[0] == "R" and len(parts) >= 5 and parts[1].isdigit():
                results[int(parts[1])] = (parts[2], parts[3], parts[4])
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
    for path in journals:
        path.unlink(missing_ok=True)
    return recovery


def journal_paths(database: Path, campaign_id: int) -> list[Path]:
    """The worker journals a sender of this campaign left next to the database."""
    return sorted(database.parent.glob(f".{database.name}.campaign-{campaign_id}.w*.journal"))


class _Journal:
    """One worker's journal: "handed over" before the provider gets a message, its result after.

    Plain appends without fsync: they survive the process being killed (the
    kernel keeps them), which is what resume needs. Emptied each time its
    results are safely in the database, so it stays small.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)

    def handed(self, rows: Sequence[DeliveryRow]) -> None:
        os.write(self.fd, "".join(f"H\t{row.id}\n" for row in rows).encode())

    def results(self, outcome: _Outcome) -> None:
        lines = [
            f"R\t{row.id}\t{r.outcome!s}\t{_flat(r.provider_id)}\t{_flat(r.error)}\n"
            for row, r in outcome.results
        ]
        if lines:
            os.write(self.fd, "".join(lines).encode("utf-8", errors="replace"))

    def clear(self) -> None:
        os.ftruncate(self.fd, 0)

    def remove(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


def _flat(text: str | None) -> str:
    return (text or "").replace("\t", " ").replace("\r", " ").replace("\n", " ")[:1000]
