"""`newsletter sync`: pull what the provider and the mailbox know, and apply it as events.

Everything goes through the same bounce policy and event record as `newsletter serve`'s
webhooks, so a bounce pulled here and the same bounce reported by webhook count once.
A dry run reads everything and applies it inside a transaction that is rolled back: it
shows exactly what would change, and changes nothing (no cursor moves, no mail moves).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from newsletter import store
from newsletter.audience.policy import Applied, BouncePolicy, Feedback, apply
from newsletter.feedback import mailbox
from newsletter.feedback.pull.base import MalformedAnswer, save_cursor
from newsletter.feedback.pull.providers import NOT_PULLABLE, PULLERS
from newsletter.settings import Settings


@dataclass
class SyncReport:
    sources: list[str] = field(default_factory=list)  # what was read
    notes: list[str] = field(default_factory=list)  # what could not be read, and why
    changes: list[tuple[Feedback, Applied]] = field(default_factory=list)  # status changes
    counts: Counter[str] = field(default_factory=Counter)  # outcome → how many
    left_in_mailbox: list[str] = field(default_factory=list)  # "uid: why"
    dry_run: bool = False
    move_failed: bool = False  # handled mail could not be moved to the processed folder

    @property
    def stopped(self) -> int:
        return self.counts["stopped"]


def configured(settings: Settings) -> bool:
    """True when there is something to sync from (a pullable provider or a mailbox)."""
    return settings.provider.name in PULLERS or settings.mailbox is not None


def sync(
    settings: Settings, *, dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
) -> SyncReport:
    """Pull from the configured provider and the mailbox; apply (or, dry, only show)."""
    report = SyncReport(dry_run=dry_run)
    policy = BouncePolicy(soft_limit=settings.bounces.soft_limit)
    box = settings.mailbox
    db = store.connect(settings.database)
    try:
        name = settings.provider.name
        if name in PULLERS:
            _pull_provider(settings, db, policy, report, progress)
        elif name in NOT_PULLABLE:
            report.notes.append(f"{name}: {NOT_PULLABLE[name]}")
        else:
            report.notes.append(f"{name}: this provider has no sync support")
        if box is not None:
            if progress:
                progress(f"reading the mailbox {box.host}")

            def handle(found: list[mailbox.Found]) -> bool:
                with _maybe_dry(db, dry_run):
                    for item in found:
                        for feedback in item.feedback:
                            _apply(db, feedback, policy, report)
                        if item.problem:
                            report.left_in_mailbox.append(f"message {item.uid.decode()}: "
                                                          f"{item.problem}")
                return not dry_run

            found = mailbox.read(settings, db, box, handle)
            for item in found:
                if item.feedback and item.problem:  # handled, but the move failed
                    report.left_in_mailbox.append(f"message {item.uid.decode()}: "
                                                  f"{item.problem}")
                    report.move_failed = True
            report.sources.append(f"mailbox {box.username}@{box.host}/{box.folder}")
    finally:
        db.conn.close()
    return report


class _maybe_dry:  # noqa: N801 -- used like a function
    """One transaction around the applying: committed, or rolled back in a dry run."""

    def __init__(self, db, dry_run: bool):
        self.db, self.dry_run = db, dry_run

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *rest: object) -> None:
        if exc_type is not None or self.dry_run:
            self.db.execute("ROLLBACK")
        else:
            self.db.execute("COMMIT")


def _apply(db, feedback: Feedback, policy: BouncePolicy, report: SyncReport) -> None:
    outcome = apply(db, feedback, policy)
    report.counts[outcome.outcome] += 1
    if outcome.outcome == "stopped":
        report.changes.append((feedback, outcome))


def _pull_provider(settings, db, policy, report, progress) -> None:
    ps = settings.provider
    puller = PULLERS[ps.name](settings)
    if progress:
        progress(f"reading {ps.name}'s bounces, complaints and unsubscribes")
    puller.open()
    try:
        newest: dict[str, str] = {}
        try:
            items = list(puller.pull(db))  # read everything before applying anything
        except (KeyError, IndexError, TypeError, ValueError, AttributeError,
                OverflowError) as exc:
            # A 200 whose JSON is not shaped as documented (a missing field, a date we
            # cannot read, a list for an object): one line, and nothing applied.
            raise MalformedAnswer(
                f"{ps.name}: an answer is not what {puller.title} documents "
                f"({type(exc).__name__}: {puller.redact(str(exc))[:120]}): nothing was "
                "changed; run `newsletter sync` again later, and report it if it persists"
            ) from None
    finally:
        puller.close()
    with _maybe_dry(db, report.dry_run):
        for cursor, feedback, when in items:
            if feedback is not None:
                _apply(db, feedback, policy, report)
            if when > newest.get(cursor, ""):
                newest[cursor] = when
        for cursor, when in newest.items():
            save_cursor(db, cursor, when)
    report.sources.append(f"{ps.name} ({len(items)} record(s))")
