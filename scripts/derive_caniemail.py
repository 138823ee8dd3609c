#!/usr/bin/env python3
"""Derive the compact CSS client-support table `newsletter check` uses.

Reads the caniemail feature files (Markdown with YAML front matter, MIT
licensed, © Rémi Parmentier) and writes `newsletter/data/caniemail.json`: for
each CSS feature that at least one of five common clients lacks, how to spot
it in a stylesheet and which clients ignore it. Run it again when the data is
updated:

    python scripts/derive_caniemail.py /work/shared/data/caniemail

Only `newsletter/data/caniemail*` is written; the check never reads the
original data at run time.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

OUT_DIR = Path(__file__).resolve().parent.parent / "newsletter" / "data"

# client id → (display name, caniemail family, platforms looked at). A client
# "lacks" a feature when its newest tested version on any of these platforms
# says "n"; "a" (partial) is kept for the message.
CLIENTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "gmail": ("Gmail", "gmail", ("desktop-webmail", "ios", "android")),
    "outlook-windows": ("Outlook for Windows", "outlook", ("windows",)),
    "apple-mail": ("Apple Mail", "apple-mail", ("macos", "ios")),
    "yahoo": ("Yahoo Mail", "yahoo", ("desktop-webmail",)),
    "outlook-com": ("Outlook.com", "outlook", ("outlook-com",)),
}

# Features whose file name does not say how to spot them. Anything not listed
# and not matched by a prefix rule below is a plain property named like the file.
OVERRIDES: dict[str, dict[str, Any] | None] = {
    "css-display-flex": {"kind": "property", "names": ["display"],
                         "values": ["flex", "inline-flex"]},
    "css-display-grid": {"kind": "property", "names": ["display"],
                         "values": ["grid", "inline-grid"]},
    "css-display-none": {"kind": "property", "names": ["display"], "values": ["none"]},
    "css-block-inline-size": {"kind": "property", "names": ["block-size", "inline-size"]},
    "css-border-inline-block": {"kind": "property", "names": ["border-inline", "border-block"]},
    "css-border-inline-block-longhand": {
        "kind": "property",
        "names": ["border-inline-start", "border-inline-end", "border-block-start",
                  "border-block-end"]},
    "css-border-inline-block-individual": {
        "kind": "property",
        "names": ["border-inline-color", "border-block-color", "border-inline-style",
                  "border-block-style", "border-inline-width", "border-block-width"]},
    "css-border-radius-logical": {
        "kind": "property",
        "names": ["border-start-start-radius", "border-start-end-radius",
                  "border-end-start-radius", "border-end-end-radius"]},
    "css-column-layout-properties": {
        "kind": "property",
        "names": ["columns", "column-fill", "column-rule", "column-rule-color",
                  "column-rule-style", "column-rule-width", "column-span", "column-width"]},
    "css-gap": {"kind": "property", "names": ["gap", "column-gap", "row-gap"]},
    "css-grid-template": {
        "kind": "property",
        "names": ["grid-template", "grid-template-columns", "grid-template-rows",
                  "grid-template-areas"]},
    "css-left-right-top-bottom": {"kind": "property",
                                  "names": ["left", "right", "top", "bottom"]},
    "css-margin-block-start-end": {"kind": "property",
                                   "names": ["margin-block-start", "margin-block-end"]},
    "css-margin-inline-block": {"kind": "property", "names": ["margin-inline", "margin-block"]},
    "css-margin-inline-start-end": {"kind": "property",
                                    "names": ["margin-inline-start", "margin-inline-end"]},
    "css-padding-block-start-end": {"kind": "property",
                                    "names": ["padding-block-start", "padding-block-end"]},
    "css-padding-inline-block": {"kind": "property",
                                 "names": ["padding-inline", "padding-block"]},
    "css-padding-inline-start-end": {"kind": "property",
                                     "names": ["padding-inline-start", "padding-inline-end"]},
    "css-flex-direction": {"kind": "property", "names": ["flex-direction"]},
    "css-flex-wrap": {"kind": "property", "names": ["flex-wrap"]},
    "css-scroll-snap": {"kind": "property",
                        "names": ["scroll-snap-type", "scroll-snap-align", "scroll-snap-stop"]},
    "css-intrinsic-size": {"kind": "keyword",
                           "names": ["fit-content", "min-content", "max-content"]},
    "css-sytem-ui": {"kind": "keyword",
                     "names": ["system-ui", "ui-serif", "ui-sans-serif", "ui-rounded",
                               "ui-monospace"]},
    "css-modern-color": {"kind": "function", "names": ["lch", "oklch", "lab", "oklab"]},
    "css-variables": {"kind": "function", "names": ["var"]},
    "css-unit-calc": {"kind": "function", "names": ["calc"]},
    "css-rgb": {"kind": "function", "names": ["rgb"]},
    "css-rgba": {"kind": "function", "names": ["rgba"]},
    "css-linear-gradient": {"kind": "function",
                            "names": ["linear-gradient", "repeating-linear-gradient"]},
    "css-radial-gradient": {"kind": "function",
                            "names": ["radial-gradient", "repeating-radial-gradient"]},
    "css-conic-gradient": {"kind": "function", "names": ["conic-gradient"]},
    "css-important": {"kind": "important"},
    "css-at-media-device-pixel-ratio": {
        "kind": "media-feature",
        "names": ["-webkit-device-pixel-ratio", "-webkit-min-device-pixel-ratio",
                  "-webkit-max-device-pixel-ratio", "min-resolution", "resolution"]},
    "css-at-media-hover": {"kind": "media-feature", "names": ["hover", "any-hover"]},
    # Not worth a finding: every stylesheet has them, or they cannot be spotted
    # reliably with a small scanner.
    "css-comments": None,
    "css-inert-attribute": None,  # an HTML attribute, filed under css
    "css-nesting": None,
    "css-unit-percent": None,
    "css-unit-initial": None,
}

# Ignoring these is the intended fallback (an enhancement for clients that
# can), so they never produce a finding; kept in the table, marked.
ENHANCEMENTS = {
    "css-at-media", "css-at-media-prefers-color-scheme", "css-at-media-prefers-reduced-motion",
    "css-at-media-hover", "css-pseudo-class-hover", "css-pseudo-class-focus",
    "css-pseudo-class-focus-visible", "css-pseudo-class-focus-within",
    "css-pseudo-class-active", "css-pseudo-class-visited", "css-function-light-dark",
    "css-color-scheme",
}


def read_front_matter(path: Path) -> dict[str, Any]:
    """The YAML front matter of one feature file (tabs made spaces, as YAML wants)."""
    text = path.read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not match:
        raise ValueError(f"{path}: no front matter")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C one when built in: 10× faster
    return yaml.load(match.group(1).replace("\t", "    "), Loader=loader) or {}


def _latest(versions: dict[str, str]) -> str:
    """The support value of the newest tested version (files list them oldest first)."""
    if not versions:
        return "u"
    return str(list(versions.values())[-1]).split()[0]


def support(stats: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(clients lacking the feature, clients with partial support)."""
    lacking: list[str] = []
    partial: list[str] = []
    for client, (_name, family, platforms) in CLIENTS.items():
        values = [_latest((stats.get(family) or {}).get(p) or {}) for p in platforms]
        if "n" in values:
            lacking.append(client)
        elif "a" in values:
            partial.append(client)
    return lacking, partial


def matcher(feature_id: str) -> dict[str, Any] | None:
    """How to spot a feature in CSS, or None when the check does not look for it."""
    if feature_id in OVERRIDES:
        return OVERRIDES[feature_id]
    name = feature_id.removeprefix("css-")
    if name.startswith("selector-"):
        return None  # basic selectors: inlining resolves them, not worth a finding
    if name.startswith("at-media-"):
        return {"kind": "media-feature", "names": [name.removeprefix("at-media-")]}
    if name.startswith("at-"):
        return {"kind": "at-rule", "names": [name.removeprefix("at-")]}
    if name.startswith("pseudo-class-"):
        return {"kind": "selector", "names": [":" + name.removeprefix("pseudo-class-")]}
    if name.startswith("pseudo-element-"):
        return {"kind": "selector", "names": ["::" + name.removeprefix("pseudo-element-")]}
    if name.startswith("function-"):
        return {"kind": "function", "names": [name.removeprefix("function-")]}
    if name.startswith("unit-"):
        return {"kind": "unit", "names": [name.removeprefix("unit-")]}
    return {"kind": "property", "names": [name]}


def derive(source: Path) -> dict[str, Any]:
    """The compact table, as a JSON-ready dict."""
    features: list[dict[str, Any]] = []
    for path in sorted((source / "_features").glob("css-*.md")):
        feature_id = path.stem
        match = matcher(feature_id)
        if match is None:
            continue
        meta = read_front_matter(path)
        lacking, partial = support(meta.get("stats") or {})
        if not lacking:
            continue
        entry: dict[str, Any] = {
            "id": feature_id,
            "title": str(meta.get("title", feature_id)).strip(),
            "match": match,
            "lacking": lacking,
        }
        if partial:
            entry["partial"] = partial
        if feature_id in ENHANCEMENTS:
            entry["enhancement"] = True
        features.append(entry)
    return {
        "source": "caniemail (github.com/hteumeuleu/caniemail), MIT; see caniemail-SOURCE.md",
        "clients": {key: value[0] for key, value in CLIENTS.items()},
        "features": features,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the caniemail data folder (has _features/)")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    if not (args.source / "_features").is_dir():
        print(f"error: {args.source}/_features not found", file=sys.stderr)
        return 2
    table = derive(args.source)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "caniemail.json").write_text(
        json.dumps(table, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    shutil.copyfile(args.source / "LICENSE", args.out / "caniemail-LICENSE")
    note = (args.source / "SOURCE").read_text(encoding="utf-8").strip() if (
        args.source / "SOURCE").exists() else ""
    (args.out / "caniemail-SOURCE.md").write_text(
        "# Where caniemail.json comes from\n\n"
        "Derived by `scripts/derive_caniemail.py` from the caniemail feature files "
        "(https://github.com/hteumeuleu/caniemail, MIT licence in `caniemail-LICENSE`, "
        "© Rémi Parmentier).\n\n"
        f"Upstream note: {note}\n\n"
        "Kept: CSS features that at least one of Gmail, Outlook for Windows, Apple Mail, "
        "Yahoo Mail or Outlook.com lacks in its newest tested version ('n'), with how to "
        "spot each one in a stylesheet. Features marked `enhancement` are ones whose being "
        "ignored is the intended fallback (dark-mode media queries, :hover); the check does "
        "not warn about them.\n",
        encoding="utf-8",
    )
    print(f"{len(table['features'])} features → {args.out / 'caniemail.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
