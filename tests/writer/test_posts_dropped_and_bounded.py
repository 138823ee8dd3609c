"""import-posts says what it dropped, and refuses an export too large to parse (issue 18)."""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from newsletter.writer.posts.platforms import MAX_POST
from tests.writer.test_import_posts import POSTS_CSV, _csv

MEMORY_LIMIT = 512 * 1024 * 1024


def limited_memory() -> None:
    """preexec_fn: a 512 MB address space, as a small VPS has."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def test_a_substack_zip_lists_every_post_it_drops(
        cli: Callable[..., Any], newsletter_dir: Path, tmp_path: Path) -> None:
    export = tmp_path / "substack.zip"
    with zipfile.ZipFile(export, "w") as zf:
        zf.writestr("posts.csv", _csv(POSTS_CSV))
        zf.writestr("posts/151234567.leaving-meta.html", "<p>Hello.</p>")
        zf.writestr("posts/151234568.the-paid-one.html", "<p>Paid.</p>")
        zf.writestr("posts/151234569.episode-1.html", "<p>Show notes.</p>")
        zf.writestr("posts/151239999.orphan.html", "<p>Not listed.</p>")

    run = cli("import-posts", str(export))

    assert run.exit_code == 0, run.stderr
    dropped = [line for line in run.stderr.splitlines() if line.startswith("dropped")]
    assert len(dropped) == 2, run.stderr
    assert "posts.csv line 5: 'Unfinished' has no 151234570.unfinished.html" in dropped[0] \
        or "posts.csv line 5: 'Unfinished' has no 151234570.unfinished.html" in dropped[1]
    assert any("posts/151239999.orphan.html: not in posts.csv" in line for line in dropped)
    assert "3 new" in run.stderr and "2 dropped (listed above)" in run.stderr


def test_a_ghost_page_is_listed_as_dropped(
        cli: Callable[..., Any], newsletter_dir: Path, tmp_path: Path) -> None:
    export = tmp_path / "ghost.json"
    export.write_text(json.dumps({"db": [{"data": {"posts": [
        {"id": "1", "slug": "hello", "title": "Hello", "html": "<p>Hi.</p>",
         "status": "published", "type": "post", "published_at": "2026-11-01T07:00:00.000Z"},
        {"id": "2", "slug": "about", "title": "About", "html": "<p>Me.</p>",
         "status": "published", "type": "page"},
    ]}}]}))
    run = cli("import-posts", str(export))
    assert run.exit_code == 0, run.stderr
    assert "dropped     page 'about': not a post" in run.stderr


def _ghost_export(path: Path, body_bytes: int) -> None:
    """A single-post Ghost export whose one post is `body_bytes` of HTML, written in chunks."""
    with path.open("w") as f:
        f.write('{"db": [{"data": {"posts": [{"id": "1", "slug": "big", "title": "Big", '
                '"type": "post", "status": "published", "html": "<p>')
        chunk = "word " * 200_000
        written = 0
        while written < body_bytes:
            f.write(chunk)
            written += len(chunk)
        f.write('</p>"}]}}]}')


def test_a_100_mb_ghost_export_is_one_line_under_512_mb(
        newsletter_dir: Path, tmp_path: Path) -> None:
    export = tmp_path / "ghost.json"
    _ghost_export(export, 100 * 1024 * 1024)
    done = subprocess.run([sys.executable, "-m", "newsletter", "import-posts", str(export)],
                          cwd=newsletter_dir, capture_output=True, text=True, timeout=120,
                          preexec_fn=limited_memory)
    assert done.returncode != 0
    assert "MemoryError" not in done.stderr and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith(f"Error: {export} is 100 MB, over the 64 MB a JSON export")
    assert list((newsletter_dir / "drafts").iterdir()) == []


def test_one_huge_post_in_a_small_export_is_refused_by_its_size(
        cli: Callable[..., Any], newsletter_dir: Path, tmp_path: Path) -> None:
    export = tmp_path / "ghost.json"
    _ghost_export(export, MAX_POST + 1)
    run = cli("import-posts", str(export))
    assert run.exit_code != 0
    assert run.stderr.startswith("Error: ") and run.stderr.strip().count("\n") == 0
    assert re.search(r"ghost\.json: post 'big': its html is [\d.]+ MB, over the 8 MB a post "
                     "may be", run.stderr), run.stderr
    assert list((newsletter_dir / "drafts").iterdir()) == []
