"""The README's two commands for a newcomer stay true: this test runs them."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import subprocess
import sys
import sysconfig
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


# The install part of the quick start. .ci/run runs the README's whole command, exactly, on
# its clean clone (and runs the tests in the venv it makes); here it is replaced by an
# equivalent that downloads nothing, so the rest of the command is tried on every run.
INSTALL = "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'"


def test_ci_runs_the_readme_quickstart_exactly() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert 'quickstart=$(python3 .ci/readme_command.py quickstart)' in ci
    assert 'bash -euo pipefail -c "$quickstart"' in ci
    printed = subprocess.run(
        [sys.executable, str(REPO / ".ci" / "readme_command.py"), "quickstart"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert printed == command_after("quickstart")


@pytest.mark.slow
def test_quickstart_works_on_a_fresh_clone(tmp_path: Path) -> None:
    """Copy what git tracks (a clean clone), run the quick start, check the outbox."""
    command = command_after("quickstart")
    assert command.startswith(INSTALL + " && "), (
        "the README's quick start no longer starts with the install this test knows: "
        "update INSTALL and its stand-in in tests/test_readme.py")
    rest = command[len(INSTALL) + len(" && "):]
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
    # The stand-in for INSTALL: the same python3 makes .venv, which sees this test run's
    # packages through a .pth file; the clone itself is pip-installed into it, editable,
    # as `pip install -e` does (its own entry point, its own code).
    subprocess.run(["python3", "-m", "venv", "--without-pip", ".venv"], cwd=clone, env=env,
                   check=True, timeout=120)
    purelib = subprocess.run(
        [".venv/bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=clone, capture_output=True, text=True, check=True,
    ).stdout.strip()
    (Path(purelib) / "test-run-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", ".venv/bin/python", "install", "-q",
         "--no-deps", "--no-build-isolation", "--no-index", "-e", "."],
        cwd=clone, env=env, capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    result = subprocess.run(
        ["bash", "-c", "set -e\n" + rest],
        cwd=clone, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
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
    # It was the clone's code that ran, not this checkout's.
    where = subprocess.run(
        [".venv/bin/python", "-c", "import newsletter; print(newsletter.__file__)"],
        cwd=clone, capture_output=True, text=True, check=True,
    ).stdout
    assert Path(where.strip()).resolve().is_relative_to(clone.resolve())


def test_every_test_the_readme_names_exists() -> None:
    # The README backs its promises with named tests: a rename must not leave it pointing
    # at nothing.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", readme)
    assert len(named) >= 5
    for path, name in named:
        source = (REPO / path).read_text(encoding="utf-8")
        assert re.search(rf"^def {name}\(", source, re.M), f"{path}::{name}"
