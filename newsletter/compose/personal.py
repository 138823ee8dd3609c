"""Which reader values an issue uses that its audience does not have.

`Hello {{ subscriber.naem }}!` renders "Hello !" for everyone: Jinja cannot know
that no reader has a `naem` attribute, since reader values are filled in per
reader after rendering. `personalization_problems()` compares the issue's
`subscriber.*` slots with the attributes the audience really holds: `check`
calls it for the active list and `send` for the send's audience.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import sqlite_utils

    from newsletter.compose.issue import Issue


@dataclass(frozen=True)
class PersonalizationProblem:
    """One `subscriber.<attribute>` the audience lacks: all of it (error) or some (warning)."""

    severity: Literal["error", "warning"]
    code: str  # "unknown-attribute" or "missing-attribute"
    attribute: str
    message: str  # starts with `file:line:` when the use is found in the draft
    line: int | None = None
    missing: int = 0  # how many readers of the audience lack it


def _uses(issue: Issue) -> dict[str, bool]:
    """attribute → True when every use of it has a default(...)."""
    uses: dict[str, bool] = {}
    for marker, slot in issue.slots.items():
        # `subscriber.x | default(…)` also made a marker for bare subscriber.x on the way.
        if marker not in issue.html and marker not in issue.text:
            continue
        if slot.field == "name" or slot.field.startswith("attr:"):
            name = slot.field.removeprefix("attr:")
            uses[name] = uses.get(name, True) and bool(slot.default)
    return uses


def _line_of(source: Path, attribute: str) -> int | None:
    try:
        text = source.read_text("utf-8")
    except OSError:
        return None
    pattern = re.compile(
        rf"subscriber(?:\.attributes)?(?:\.{re.escape(attribute)}\b|\[\s*['\"]"
        rf"{re.escape(attribute)}['\"]\s*\])"
    )
    m = pattern.search(text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def personalization_problems(
    issue: Issue,
    db: sqlite_utils.Database,
    where_sql: str = "status = 'active'",
    params: Sequence[Any] | dict[str, Any] = (),
) -> list[PersonalizationProblem]:
    """Problems with the `subscriber.*` values `issue` uses, for the readers `where_sql` selects.

    An attribute no reader of the audience has (with a non-empty value) is an
    error naming file, line and the attributes that do exist; one only some
    lack, used without `default(...)`, is a warning with the count. An empty
    audience has no problems. `where_sql` filters the subscribers table.
    """
    uses = _uses(issue)
    if not uses:
        return []
    audience = f"SELECT name, attributes FROM subscribers WHERE {where_sql}"
    total = db.execute(f"SELECT count(*) FROM ({audience})", params).fetchone()[0]
    if not total:
        return []
    having = dict(db.execute(
        f"SELECT j.key, count(*) FROM ({audience}) s, json_each(s.attributes) j "
        "WHERE j.type != 'null' AND CAST(j.value AS TEXT) != '' GROUP BY j.key",
        params,
    ).fetchall())
    having["name"] = db.execute(
        f"SELECT count(*) FROM ({audience}) WHERE name != ''", params
    ).fetchone()[0]
    known = sorted(k for k in having if k != "name" and having[k])
    problems = []
    for attribute, all_defaulted in sorted(uses.items()):
        count = having.get(attribute, 0)
        line = _line_of(issue.source, attribute)
        at = f"{issue.source}:{line}" if line else f"{issue.source} (or its layout)"
        if count == 0 and attribute != "name":
            exists = ", ".join(known) if known else "none"
            if all_defaulted:
                problems.append(PersonalizationProblem(
                    "warning", "unknown-attribute", attribute,
                    f"{at}: no reader has subscriber.{attribute}, so all {total} get the "
                    f"default (attributes readers have: {exists}): check the spelling",
                    line, total))
            else:
                problems.append(PersonalizationProblem(
                    "error", "unknown-attribute", attribute,
                    f"{at}: subscriber.{attribute} is empty for every reader ({total}): no "
                    f"subscriber has it (attributes readers have: {exists}): fix the "
                    f"spelling, import the attribute, or write "
                    f'{{{{ subscriber.{attribute} | default("…") }}}}',
                    line, total))
        elif count < total and not all_defaulted:
            missing = total - count
            problems.append(PersonalizationProblem(
                "warning", "missing-attribute", attribute,
                f"{at}: {missing} of {total} readers have no subscriber.{attribute} and will "
                f'see nothing there: add | default("…")',
                line, missing))
    return problems
