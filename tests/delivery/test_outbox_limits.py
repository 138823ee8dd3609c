"""The outbox on a full disk, and a draft too large to send (issue 18)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from newsletter.compose.source import MAX_DRAFT_BYTES

PARAGRAPH = "A paragraph long enough to weigh something in every reader's email. " * 20


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MB tmpfs: the outbox's folder fills up part-way through a send."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_is_one_error_line_and_no_half_written_file(
        cli: Callable[..., Any], newsletter_dir: Path, write_draft: Callable[..., Path],
        full_disk: Path) -> None:
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(toml.read_text() + f'directory = "{full_disk}"\n')
    write_draft("2026-12-01-hello.md", "# Hello\n\n" + "\n\n".join([PARAGRAPH] * 60))
    for n in range(12):
        assert cli("subscribers", "add", f"reader{n}@example.com").exit_code == 0

    run = cli("send", "hello", "--to", "subscribers", "--yes")

    assert run.exit_code != 0
    assert run.exception is None
    assert "Traceback" not in run.stdout + run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, run.stderr
    assert "free some disk space" in errors[0]
    written = [p for p in full_disk.rglob("*") if p.is_file()]
    assert written, "the disk should have taken some messages before it filled"
    assert all(p.suffix == ".eml" for p in written), written  # no .tmp left behind
    assert all(p.read_bytes().rstrip().endswith(b"--") for p in written)  # each one whole


def test_a_draft_over_the_limit_is_refused_before_it_is_read(
        cli: Callable[..., Any], newsletter_dir: Path, write_draft: Callable[..., Path]) -> None:
    path = write_draft("2026-12-01-huge.md", "# Huge\n\n")
    with path.open("ab") as f:
        f.write(b"x" * (MAX_DRAFT_BYTES + 1))
    assert cli("subscribers", "add", "reader@example.com").exit_code == 0

    run = cli("send", "huge", "--to", "subscribers", "--yes")

    assert run.exit_code != 0
    assert run.stderr.strip().count("\n") == 0, run.stderr
    assert run.stderr.startswith("Error: ")
    assert "MB a draft may be" in run.stderr
    assert not (newsletter_dir / "outbox").exists()  # nothing was written
