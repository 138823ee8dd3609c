"""The secret belongs to its database: a newsletter moved without its key refuses to mail or
check links (one clear error) instead of minting a new key that kills every link mailed.

Real folders, the real CLI (in-process for quick commands, a real `newsletter serve`
process for the reader's unsubscribe link), a real SQLite file copied as a writer would.
"""

from __future__ import annotations

import email
import email.policy
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.web.conftest import BIN, free_port, wait_for

DRAFT = "---\nsubject: Hello\npreheader: hi\n---\nHello {{ subscriber.name }}.\n"


def _toml(port: int) -> str:
    return f"""\
[newsletter]
name = "Field Notes"
from = "Ada Writer <ada@example.com>"
base_url = "http://127.0.0.1:{port}"
address = "1 Test Street, Testville"

[provider]
name = "outbox"
"""


def _links(root: Path) -> dict[str, str]:
    """Each reader's List-Unsubscribe link, from the issues in the outbox."""
    found = {}
    for path in (root / "outbox").rglob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found[message["To"].addresses[0].addr_spec] = message["List-Unsubscribe"].strip("<>")
    return found


@pytest.fixture
def moved(tmp_path: Path, cli: Callable, monkeypatch: pytest.MonkeyPatch) -> dict:
    """An issue mailed from `old/` (its key made there, in .newsletter-secret), then the
    folder cloned to `new/` as git would (no secret file) and the database copied."""
    port = free_port()
    old, new = tmp_path / "old", tmp_path / "new"
    for root in (old, new):
        (root / "drafts").mkdir(parents=True)
        (root / "newsletter.toml").write_text(_toml(port))
        (root / "drafts" / "hello.md").write_text(DRAFT)
    monkeypatch.chdir(old)
    for address in ("ana@example.com", "bo@example.org"):
        assert cli("subscribers", "add", address).exit_code == 0
    run = cli("send", "hello", "--to", "subscribers", "--yes")
    assert run.exit_code == 0, run.stderr
    assert (old / ".newsletter-secret").exists()
    # A consistent copy (what sqlite3's .backup does): the rows may still be in the -wal.
    source, target = sqlite3.connect(old / "newsletter.db"), sqlite3.connect(new / "newsletter.db")
    source.backup(target)
    source.close()
    target.close()
    monkeypatch.chdir(new)
    return {"old": old, "new": new, "port": port, "links": _links(old),
            "secret": (old / ".newsletter-secret").read_text().strip()}


def _one_error(run: object) -> str:
    assert run.exit_code != 0  # type: ignore[attr-defined]
    err = run.stderr.strip()  # type: ignore[attr-defined]
    assert err.startswith("Error: ") and len(err.splitlines()) == 1, err
    return err


def test_the_database_records_a_fingerprint_never_the_key(moved: dict) -> None:
    from newsletter.settings import key_fingerprint

    conn = sqlite3.connect(moved["new"] / "newsletter.db")
    rows = conn.execute("SELECT key, value FROM meta").fetchall()
    conn.close()
    assert rows == [("key_fingerprint", key_fingerprint(moved["secret"].encode()))]
    assert moved["secret"] not in repr(rows) and len(rows[0][1]) == 16


def test_send_without_the_key_refuses_and_mints_none(moved: dict, cli: Callable) -> None:
    new = moved["new"]
    err = _one_error(cli("send", "hello", "--to", "subscribers", "--yes", "--resend"))
    assert ".newsletter-secret in the folder the database came from" in err
    assert "NEWSLETTER_SECRET" in err
    assert not (new / ".newsletter-secret").exists()
    assert not (new / "outbox").exists()  # nothing mailed with a new key
    for command in (("run",), ("sync",),
                    ("subscribers", "unsubscribe", moved["links"]["ana@example.com"])):
        _one_error(cli(*command))
        assert not (new / ".newsletter-secret").exists(), command


def test_serve_without_the_key_refuses_and_mints_none(moved: dict) -> None:
    new = moved["new"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    done = subprocess.run([str(BIN), "serve", "--port", str(moved["port"])], cwd=new, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().startswith("Error: ") and len(done.stderr.strip().splitlines()) == 1
    assert ".newsletter-secret in the folder the database came from" in done.stderr
    assert not (new / ".newsletter-secret").exists()


def test_check_and_build_still_work_without_the_key(moved: dict, cli: Callable) -> None:
    new = moved["new"]
    run = cli("check", "hello")
    assert run.exit_code == 0, run.stdout + run.stderr
    run = cli("build", "hello", "--out", str(new / "public"))
    assert run.exit_code == 0, run.stderr
    assert not (new / ".newsletter-secret").exists()


def test_a_different_key_is_refused(moved: dict, cli: Callable,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", "another-key-" + "z" * 40)
    err = _one_error(cli("send", "hello", "--to", "subscribers", "--yes", "--resend"))
    assert "NEWSLETTER_SECRET is not the key that signed the links of newsletter.db" in err
    monkeypatch.delenv("NEWSLETTER_SECRET")
    (moved["new"] / ".newsletter-secret").write_text("a-copied-wrong-file-" + "w" * 40)
    err = _one_error(cli("subscribers", "unsubscribe", moved["links"]["ana@example.com"]))
    assert ".newsletter-secret is not the key that signed the links" in err


def test_with_the_original_key_a_link_mailed_before_the_move_still_unsubscribes(
    moved: dict, cli: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    new, port = moved["new"], moved["port"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_SECRET"] = moved["secret"]
    log = new / "serve.log"
    process = subprocess.Popen([str(BIN), "serve", "--port", str(port)], cwd=new, env=env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        def healthy() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 20, "/healthz")
        link = moved["links"]["ana@example.com"]
        answer = httpx.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=30)
        assert answer.status_code == 200, answer.text
    finally:
        process.terminate()
        process.wait(15)
    monkeypatch.setenv("NEWSLETTER_SECRET", moved["secret"])
    listed = cli("subscribers", "list", "--status", "active").stdout
    assert "bo@example.org" in listed and "ana@example.com" not in listed
    run = cli("send", "hello", "--to", "subscribers", "--yes", "--resend")
    assert run.exit_code == 0, run.stderr
    assert not (new / ".newsletter-secret").exists()  # the key stays in the variable


def test_preview_still_builds_without_the_key(moved: dict) -> None:
    from newsletter.settings import load_settings
    from newsletter.writer.preview import Preview

    new = moved["new"]
    preview = Preview(load_settings(new), new / "drafts" / "hello.md")
    assert preview.build.error is None, preview.build.error
    assert not (new / ".newsletter-secret").exists()
