"""Layouts a writer never edited follow the built-ins; edited ones are kept and named.

tests/data/layouts-before-manage/ holds layouts as `newsletter init` copied them before
the manage link and the new pages (git show b23b2c3^:newsletter/templates/layouts/…).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from newsletter.compose.issue import build_issue
from newsletter.compose.layout import (
    BUILTIN_LAYOUTS,
    PAST_LAYOUTS,
    RECORD,
    layouts_behind,
    make_environment,
)
from newsletter.settings import load_settings
from newsletter.writer.drafts import init_newsletter

REPO = Path(__file__).resolve().parents[2]
OLD = REPO / "tests" / "data" / "layouts-before-manage"


def old_folder(root: Path) -> Path:
    """`root`/layouts as an init from before the manage link left it (no record)."""
    shutil.copytree(OLD, root / "layouts")
    return root / "layouts"


def used(root: Path, name: str) -> Path:
    template = make_environment(root / "layouts").get_template(name)
    return Path(template.filename or "")


def test_an_old_folder_gets_the_manage_link_and_the_new_pages(newsletter_dir: Path,
                                                               write_draft) -> None:  # noqa: ANN001
    layouts = old_folder(newsletter_dir)
    assert "manage_url" not in (layouts / "default.html").read_text()
    issue = build_issue(load_settings(), write_draft("hello.md", "Hello there.\n"))
    assert "Manage your subscription" in issue.html
    assert "Manage your subscription" in issue.text
    for name in ("page.html", "manage.html", "index.html", "web.html", "subscribe_form.html"):
        assert used(newsletter_dir, name) == BUILTIN_LAYOUTS / name, name
    assert layouts_behind(newsletter_dir) == []


def test_an_edited_layout_is_used_as_it_is_and_named_as_behind(newsletter_dir: Path,
                                                               write_draft) -> None:  # noqa: ANN001
    layouts = old_folder(newsletter_dir)
    edited = (layouts / "default.html").read_text().replace(
        "<body", "<!-- my own footer below --><body", 1)
    (layouts / "default.html").write_text(edited)
    issue = build_issue(load_settings(), write_draft("hello.md", "Hello there.\n"))
    assert "Manage your subscription" not in issue.html  # the writer's file, as it is
    assert used(newsletter_dir, "default.html") == layouts / "default.html"
    assert used(newsletter_dir, "default.txt") == BUILTIN_LAYOUTS / "default.txt"
    [behind] = layouts_behind(newsletter_dir)
    assert (behind.name, behind.path, behind.builtin) == (
        "default.html", layouts / "default.html", BUILTIN_LAYOUTS / "default.html")
    assert behind.command == "newsletter layouts diff default.html"
    assert "newsletter layouts diff default.html" in str(behind)


def test_init_records_what_it_copied_and_the_record_decides(tmp_path: Path) -> None:
    root = init_newsletter(tmp_path / "letter").root
    record = json.loads((root / RECORD).read_text())
    assert record["version"]
    copied = record["copied"]
    assert sorted(copied) == sorted(p.name for p in BUILTIN_LAYOUTS.iterdir())
    for name, digest in copied.items():
        assert hashlib.sha256((root / "layouts" / name).read_bytes()).hexdigest() == digest
        assert used(root, name) == BUILTIN_LAYOUTS / name
    # What init copied, even if no built-in ever looked like it, follows the built-in.
    (root / "layouts" / "manage.html").write_text("as a later version's init copied it")
    copied["manage.html"] = hashlib.sha256(b"as a later version's init copied it").hexdigest()
    (root / RECORD).write_text(json.dumps({**record, "copied": copied}))
    assert used(root, "manage.html") == BUILTIN_LAYOUTS / "manage.html"
    # A file edited after init is the writer's, though it equals an old built-in.
    old = (OLD / "page.html").read_bytes()
    (root / "layouts" / "page.html").write_bytes(old)
    assert used(root, "page.html") == root / "layouts" / "page.html"
    assert [b.name for b in layouts_behind(root)] == []  # edited, but from today's built-in
    # Running init again keeps every file and the record's entries.
    again = init_newsletter(root)
    assert root / RECORD not in again.created
    assert json.loads((root / RECORD).read_text())["copied"] == copied


def test_a_damaged_record_is_one_error_naming_it(tmp_path: Path, cli) -> None:  # noqa: ANN001
    root = init_newsletter(tmp_path / "letter").root
    (root / RECORD).write_text("{not json")
    run = cli("--dir", str(root), "layouts", "list")
    assert run.exit_code != 0
    assert run.stderr.startswith("Error: cannot read ") and RECORD in run.stderr
    assert "delete it" in run.stderr


def test_layouts_cli_lists_and_diffs(newsletter_dir: Path, cli) -> None:  # noqa: ANN001
    layouts = old_folder(newsletter_dir)
    (layouts / "default.html").write_text(
        (layouts / "default.html").read_text().replace("<body", "<!-- mine --><body", 1))
    (layouts / "mine.html").write_text("<p>mine</p>")
    listing = cli("layouts", "list")
    assert listing.exit_code == 0, listing.stderr
    lines = dict(line.split(None, 1) for line in listing.stdout.splitlines())
    assert lines["default.html"].startswith("edited, and the built-in changed since: "
                                            "newsletter layouts diff default.html")
    assert lines["page.html"] == "follows the built-in (never edited)"
    assert lines["mine.html"] == "yours (no built-in of that name)"
    diff = cli("layouts", "diff", "default.html")
    assert diff.exit_code == 0, diff.stderr
    assert diff.stdout.startswith("--- built-in/default.html\n+++ layouts/default.html\n")
    assert "+<!-- mine -->" in diff.stdout and "-" in diff.stdout
    assert "manage_url" in diff.stdout  # what the edited copy is missing
    same = cli("layouts", "diff", "page.html")
    assert "-<!DOCTYPE html>" not in same.stdout
    unknown = cli("layouts", "diff", "nope.html")
    assert unknown.exit_code != 0
    assert unknown.stderr.startswith("Error: there is no built-in layout 'nope.html': name ")


def test_every_committed_built_in_is_known(tmp_path: Path) -> None:
    """past_layouts.json lists every version git has of each built-in (scripts/past_layouts.py)."""
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the history of the built-in layouts is not here")
    shallow = subprocess.run([git, "rev-parse", "--is-shallow-repository"], cwd=REPO,
                             capture_output=True, text=True)
    if shallow.stdout.strip() != "false":
        pytest.skip("a shallow clone: the history of the built-in layouts is not all here")
    known = json.loads(PAST_LAYOUTS.read_text())

    def git_out(*args: str) -> str:
        return subprocess.run([git, *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout

    blobs: dict[str, set[str]] = {}  # blob id → the file names it was committed as
    for commit in git_out("log", "--format=%H", "--", "newsletter/templates/layouts").split():
        for line in git_out("ls-tree", commit, "newsletter/templates/layouts/").splitlines():
            meta, path = line.split("\t", 1)
            blobs.setdefault(meta.split()[2], set()).add(path.rsplit("/", 1)[-1])
    # All blobs in one `git cat-file --batch`: "<id> blob <size>\n<bytes>\n" each.
    out = subprocess.run([git, "cat-file", "--batch"], cwd=REPO, capture_output=True,
                         check=True, input="".join(f"{b}\n" for b in blobs).encode()).stdout
    missing = []
    pos = 0
    for blob in blobs:
        header_end = out.index(b"\n", pos)
        size = int(out[pos:header_end].split()[2])
        data = out[header_end + 1: header_end + 1 + size]
        pos = header_end + 1 + size + 1
        digest = hashlib.sha256(data).hexdigest()
        for name in blobs[blob]:
            current = BUILTIN_LAYOUTS / name
            today = current.is_file() and hashlib.sha256(current.read_bytes()).hexdigest()
            if digest != today and digest not in known.get(name, []):
                missing.append(f"{name} ({blob[:7]})")
    assert not missing, f"run scripts/past_layouts.py: {', '.join(sorted(missing))}"
