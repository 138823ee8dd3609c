"""What `newsletter doctor` says: one line per checked item, ok / warning / error."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

Status = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class Line:
    """One checked item. `check` is a short stable id tools can match on; `message` says
    what was found and, for a warning or an error, how to fix it."""

    check: str
    status: Status
    message: str


@dataclass
class Report:
    """Every line doctor wrote, in the order the checks ran."""

    lines: list[Line] = field(default_factory=list)

    def add(self, check: str, status: Status, message: str) -> None:
        self.lines.append(Line(check, status, message))

    @property
    def errors(self) -> list[Line]:
        return [line for line in self.lines if line.status == "error"]

    @property
    def warnings(self) -> list[Line]:
        return [line for line in self.lines if line.status == "warning"]

    def failed(self, strict: bool = False) -> bool:
        """True when the newsletter is not ready: any error, or any warning when strict."""
        return bool(self.errors) or (strict and bool(self.warnings))

    def to_json(self) -> str:
        return json.dumps({"ok": not self.errors, "errors": len(self.errors),
                           "warnings": len(self.warnings),
                           "lines": [asdict(line) for line in self.lines]}, indent=2)


def format_line(line: Line) -> str:
    """`error    dkim       no DKIM key at …: add …` (one line, for a terminal)."""
    return f"{line.status:<8} {line.check:<10} {line.message}".replace("\n", " ")
