"""Which CSS in an email common clients ignore, from the bundled caniemail table.

The table (`newsletter/data/caniemail.json`) is derived by
`scripts/derive_caniemail.py`; this module only reads it and scans CSS text
with a few small regular expressions: good enough for a linter, no parser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class CSSUse:
    """One unsupported feature the CSS uses."""

    feature_id: str
    label: str  # what the writer typed, e.g. "box-shadow" or "@font-face"
    lacking: tuple[str, ...]  # client display names that ignore it
    partial: tuple[str, ...]


@cache
def support_table() -> dict[str, Any]:
    """The derived table: {"clients": {id: name}, "features": [...]}."""
    text = resources.files("newsletter").joinpath("data/caniemail.json").read_text("utf-8")
    return json.loads(text)


_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_AT_RULE = re.compile(r"@([\w-]+)([^{;]*)")
_MEDIA_FEATURE = re.compile(r"\(\s*([\w-]+)")
_BLOCK = re.compile(r"\{([^{}]*)\}")
_SELECTOR = re.compile(r"([^{};]+)\{")
_DECLARATION = re.compile(r"(?:^|;)\s*([\w-]+)\s*:\s*([^;]+)")


def _declarations(body: str) -> Iterable[tuple[str, str]]:
    for match in _DECLARATION.finditer(body):
        yield match.group(1).lower(), match.group(2).strip().lower()


def _word(name: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])", re.I)


@cache
def _pattern(kind: str, name: str) -> re.Pattern[str]:
    if kind == "function":
        return re.compile(r"(?<![\w-])" + re.escape(name) + r"\(", re.I)
    if kind == "unit":
        return re.compile(r"(?<![\w#.-])\d*\.?\d+" + re.escape(name) + r"(?![\w-])", re.I)
    if kind == "selector" and name.startswith("::"):
        # ::after may still be written with one colon
        return re.compile(r"::?" + re.escape(name[2:]) + r"(?![\w-])", re.I)
    if kind == "selector":
        return re.compile(r"(?<!:)" + re.escape(name) + r"(?![\w-])", re.I)
    return _word(name)


def scan_css(style_blocks: Iterable[str], inline_styles: Iterable[str]) -> list[CSSUse]:
    """Unsupported features used by `<style>` blocks and `style=""` attributes, once each.

    Features whose being ignored is the intended fallback (dark-mode media
    queries, :hover, …, marked `enhancement` in the table) are left out.
    """
    blocks = [_COMMENT.sub("", text) for text in style_blocks]
    at_rules: set[str] = set()
    media_features: set[str] = set()
    selectors: list[str] = []
    declarations: list[tuple[str, str]] = []
    for css in blocks:
        for match in _AT_RULE.finditer(css):
            at_rules.add(match.group(1).lower())
            if match.group(1).lower() == "media":
                media_features.update(m.lower() for m in _MEDIA_FEATURE.findall(match.group(2)))
        selectors.extend(s for s in _SELECTOR.findall(css) if not s.strip().startswith("@"))
        for body in _BLOCK.findall(css):
            declarations.extend(_declarations(body))
    for style in inline_styles:
        declarations.extend(_declarations(_COMMENT.sub("", style)))
    values = [value for _, value in declarations]
    selector_text = "\n".join(selectors)

    table = support_table()
    clients: dict[str, str] = table["clients"]
    found: list[CSSUse] = []
    for feature in table["features"]:
        if feature.get("enhancement"):
            continue
        match = feature["match"]
        kind = match["kind"]
        names: list[str] = match.get("names", [])
        label: str | None = None
        if kind == "property":
            wanted = match.get("values")
            for prop, value in declarations:
                first = (value.split() or [""])[0]
                if prop in names and (not wanted or first in wanted):
                    label = f"{prop}: {first}" if wanted else prop
                    break
        elif kind == "at-rule":
            label = next((f"@{n}" for n in names if n in at_rules), None)
        elif kind == "media-feature":
            label = next((f"@media ({n})" for n in names if n in media_features), None)
        elif kind == "selector":
            label = next((n for n in names if _pattern(kind, n).search(selector_text)), None)
        elif kind in {"function", "unit", "keyword"}:
            for name in names:
                pattern = _pattern(kind, name)
                if any(pattern.search(v) for v in values):
                    label = {"function": f"{name}()", "unit": f"{name} unit"}.get(kind, name)
                    break
        elif kind == "important":
            label = "!important" if any("!important" in v for v in values) else None
        if label is None:
            continue
        found.append(
            CSSUse(
                feature_id=feature["id"],
                label=label,
                lacking=tuple(clients[c] for c in feature["lacking"]),
                partial=tuple(clients[c] for c in feature.get("partial", ())),
            )
        )
    return found


def describe(use: CSSUse) -> str:
    """One line for a finding: what is used and who ignores it."""
    text = f"CSS {use.label} is ignored by {_join(use.lacking)}"
    if use.partial:
        text += f" (only partly supported by {_join(use.partial)})"
    return text


def _join(names: tuple[str, ...]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]
