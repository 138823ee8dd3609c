"""build_issue(): the one entry point that preview, build, check and send share.

INTERFACE (fixed; other packages build against it). Implementation owned by
the compose work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from newsletter.compose.message import InlineImage
from newsletter.settings import Settings


@dataclass
class Issue:
    """A draft rendered once: inlined HTML and text with per-recipient slots left open."""

    source: Path  # the draft file
    slug: str
    title: str
    subject: str
    preheader: str
    date: date
    html: str  # full, CSS-inlined HTML; per-recipient values not yet filled in
    text: str  # the plain-text part; per-recipient values not yet filled in
    attachments: tuple[InlineImage, ...] = ()  # local images embedded by CID
    web_url: str | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. no base_url, HTML over 102 KB


def build_issue(settings: Settings, draft: Path) -> Issue:
    """Parse, render Markdown, apply the layout and inline CSS, once.

    Raises ContentError (naming file and line) for broken front matter, an
    unknown template variable, a missing image, …
    """
    raise NotImplementedError
