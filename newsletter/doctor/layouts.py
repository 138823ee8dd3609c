"""Layouts that fell behind: edited copies whose built-in changed since `init` copied them
(they miss what the built-in gained, such as the manage link or the new pages)."""

from __future__ import annotations

from newsletter.compose.layout import layouts_behind
from newsletter.doctor.report import Report
from newsletter.settings import Settings


def check_layouts(settings: Settings, report: Report) -> None:
    behind = layouts_behind(settings.root)
    if not behind:
        report.add("layouts", "ok", "every layout follows the built-in or was edited on purpose "
                   "and is current")
        return
    for item in behind:
        report.add("layouts", "warning", f"{item}; merge what you want into your copy, or "
                   f"delete it to follow the built-in again")
