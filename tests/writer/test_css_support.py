"""The client-support table and the CSS scanner behind check's css-support warnings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter.writer.css_support import describe, scan_css, support_table
from tests.conftest import REPO

CANIEMAIL = Path("/work/shared/data/caniemail")


def labels(blocks: list[str], inline: list[str] = ()) -> set[str]:  # type: ignore[assignment]
    return {use.label for use in scan_css(blocks, inline)}


def test_the_table_ships_with_its_licence_and_source() -> None:
    data = REPO / "newsletter" / "data"
    assert "MIT License" in (data / "caniemail-LICENSE").read_text()
    assert "caniemail" in (data / "caniemail-SOURCE.md").read_text()
    table = support_table()
    assert set(table["clients"]) == {"gmail", "outlook-windows", "apple-mail", "yahoo",
                                     "outlook-com"}
    assert len(table["features"]) > 100


@pytest.mark.skipif(not CANIEMAIL.is_dir(), reason="the caniemail data is not on this machine")
def test_the_committed_table_is_what_the_script_derives(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "scripts" / "derive_caniemail.py"),
                    str(CANIEMAIL), "--out", str(tmp_path)], check=True, capture_output=True)
    assert json.loads((tmp_path / "caniemail.json").read_text()) == support_table()


def test_properties_at_rules_functions_units_and_selectors_are_found() -> None:
    found = labels(
        ["@font-face { font-family: X; } @import url(a.css);"
         "li:nth-child(2) { color: red } p::before { content: '' }"
         "@media (orientation: landscape) { p { color: red } }"],
        ["box-shadow: 0 0 2px red; width: calc(100% - 2rem); display: flex"],
    )
    assert {"@font-face", "@import", ":nth-child", "::before", "@media (orientation)",
            "box-shadow", "calc()", "rem unit", "display: flex"} <= found


def test_supported_css_and_harmless_enhancements_are_not_reported() -> None:
    assert labels(
        ["a:hover { color: red } @media (prefers-color-scheme: dark) { body { color: #fff } }"
         "@media (max-width: 600px) { .x { width: 100% !important } }"],
        ["color: #333; font-size: 16px; padding: 0 10px; margin: 0; display: block"],
    ) == set()


def test_comments_and_look_alikes_do_not_count() -> None:
    assert labels(["/* box-shadow: 0 0 1px red */ p { color: red }"], []) == set()
    assert labels([], ["display: block; border-radius-ish: 1"]) == set()
    assert labels([], ["width: 12px"]) == set()  # px, not a vw/vh/rem unit


def test_the_message_names_the_clients() -> None:
    (use,) = scan_css([], ["box-shadow: 0 0 2px red"])
    assert describe(use) == ("CSS box-shadow is ignored by Gmail, Outlook for Windows and "
                             "Yahoo Mail")
