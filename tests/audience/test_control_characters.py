"""Names and tags from sign-up forms cannot drive the writer's terminal.

A name is whatever a stranger typed into a sign-up form. ESC and BEL sequences
in it (set the window title, clear the screen, recolour) reached the terminal
through `subscribers list`.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from tests.audience.conftest import DATA

HOSTILE = "Eve\x1b]0;pwned\x07\x1b[2J\x9b31m\x00\x7fX"
CONTROLS = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")  # \t and \n are the list's own


def test_a_name_and_tag_given_to_add_are_stored_without_control_characters(
    newsletter_dir: Path, cli
) -> None:
    result = cli("subscribers", "add", "eve@example.com", "--name", HOSTILE, "--tag", "t\x1b[0m")
    assert result.exit_code == 0, result.stderr
    listed = cli("subscribers", "list").stdout
    assert not CONTROLS.search(listed), repr(listed)
    assert listed == "eve@example.com\tactive\tEve ]0;pwned [2J 31m X\tt [0m\n"


def _with_hostile_names(path: Path) -> tuple[str, int]:
    """The export with every name column of every row set to HOSTILE; (text, names set)."""
    text = path.read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    header = [h.strip().lower() for h in rows[0]]
    columns = [i for i, h in enumerate(header) if h in {"name", "first name", "last name"}]
    for row in rows[1:]:
        for i in columns:
            if i < len(row):
                row[i] = HOSTILE
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue(), len(columns)


EXPORTS = sorted(p.name for p in DATA.glob("*.csv") if _with_hostile_names(p)[1])


def test_the_exports_tried_cover_most_formats() -> None:
    assert len(EXPORTS) >= 6  # Mailchimp, Ghost, listmonk, beehiiv, plain, …


@pytest.mark.parametrize("export", EXPORTS)
def test_names_from_every_import_format_are_stored_without_control_characters(
    newsletter_dir: Path, cli, export: str
) -> None:
    text, _ = _with_hostile_names(DATA / export)
    path = newsletter_dir / export
    path.write_text(text, encoding="utf-8")
    result = cli("subscribers", "import", str(path))
    assert result.exit_code == 0, result.stderr
    listed = cli("subscribers", "list").stdout
    assert "Eve" in listed
    assert not CONTROLS.search(listed), repr(listed)
