"""The README's two commands for a newcomer stay true: this test runs them."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def command_after(marker: str) -> str:
    """The shell command in the first code block after `<!-- marker -->`."""
    match = re.search(rf"<!-- {marker} -->\s*```(?:sh|bash|console)?\n(.+?)```", README, re.S)
    assert match, f"README.md has no code block after <!-- {marker} -->"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command() -> None:
    test_command = command_after("test-command")
    ci_lines = [
        line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert ci_lines[-1] == test_command


@pytest.mark.slow
def test_quickstart_works_on_a_fresh_clone(tmp_path: Path) -> None:
    """Copy what git tracks (a clean clone), run the quick start, check the outbox."""
    clone = tmp_path / "clone"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NEWSLETTER_", "VIRTUAL_ENV", "PYTHON"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run(
        ["bash", "-c", "set -e\n" + command_after("quickstart")],
        cwd=clone, env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sent = sorted((clone / "outbox").rglob("*.eml"))
    assert sent, "the quick start sent nothing to the outbox"
    recipients = set()
    for path in sent:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert not message.defects
        assert message["List-Unsubscribe"]
        recipients.add(message["To"].addresses[0].addr_spec)
    assert len(recipients) == len(sent)  # nobody got it twice
