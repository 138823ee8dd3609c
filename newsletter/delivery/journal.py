"""The worker journals: what each sender thread handed to its provider, and the answers.

One file per worker next to the database, `.{database}.campaign-{id}.w{n}.journal`:
a line `H<TAB>id` before a message goes to the provider, `R<TAB>id<TAB>outcome<TAB>
provider id<TAB>error` when its answer is back. The runner writes them; after a crash
`recovery.recover_interrupted` reads them to tell answered, in-flight and never-sent rows
apart. The format lives only here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.delivery.providers.base import DeliveryResult


def journal_path(database: Path, campaign_id: int, worker: int) -> Path:
    """Where worker number `worker` of a send of this campaign keeps its journal."""
    return database.with_name(f".{database.name}.campaign-{campaign_id}.w{worker}.journal")


def journal_paths(database: Path, campaign_id: int) -> list[Path]:
    """The worker journals a sender of this campaign left next to the database."""
    return sorted(database.parent.glob(f".{database.name}.campaign-{campaign_id}.w*.journal"))


class Journal:
    """One worker's journal: "handed over" before the provider gets a message, its result after.

    Plain appends without fsync: they survive the process being killed (the
    kernel keeps them), which is what resume needs. Emptied each time its
    results are safely in the database, so it stays small.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)

    def handed(self, ids: Iterable[int]) -> None:
        os.write(self.fd, "".join(f"H\t{did}\n" for did in ids).encode())

    def results(self, results: Iterable[tuple[int, DeliveryResult]]) -> None:
        lines = [
            f"R\t{did}\t{r.outcome!s}\t{_flat(r.provider_id)}\t{_flat(r.error)}\n"
            for did, r in results
        ]
        if lines:
            os.write(self.fd, "".join(lines).encode("utf-8", errors="replace"))

    def clear(self) -> None:
        os.ftruncate(self.fd, 0)

    def close(self, *, remove: bool) -> None:
        """Close it; `remove` when everything it held is in the database."""
        os.close(self.fd)
        if remove:
            self.path.unlink(missing_ok=True)


@dataclass
class Journaled:
    """What a set of journals says: rows handed over, and the answers that came back."""

    handed: set[int] = field(default_factory=set)
    results: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # outcome, id, error


def read_journals(paths: Sequence[Path]) -> Journaled:
    """Read the journals at `paths` (missing ones are skipped; torn lines are ignored)."""
    found = Journaled()
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            parts = line.split("\t")
            if parts[0] == "H" and len(parts) >= 2 and parts[1].isdigit():
                found.handed.add(int(parts[1]))
            elif parts[0] == "R" and len(parts) >= 5 and parts[1].isdigit():
                found.results[int(parts[1])] = (parts[2], parts[3], parts[4])
    return found


def _flat(text: str | None) -> str:
    return (text or "").replace("\t", " ").replace("\r", " ").replace("\n", " ")[:1000]
