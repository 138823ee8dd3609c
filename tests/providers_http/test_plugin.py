"""A third-party provider, installed like a user would, is listed and sends a real issue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parent.parent / "data" / "plugin"
BIN = Path(sys.executable).parent

TOML = """\
[newsletter]
name = "Plug-in Letter"
from = "Liu <liu@example.com>"
base_url = "https://example.com/news"
address = "1 Test Street, Testville"

[provider]
name = "jsonl"
path = "sent.jsonl"
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plug-in, pip-installed (offline) into a folder of its own."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "src"
    shutil.copytree(PLUGIN, source)  # the build writes next to the sources: keep the tree clean
    site = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(site), str(source)],
        check=True, capture_output=True, timeout=120,
    )
    return site


def run(args: list[str], cwd: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["PYTHONPATH"] = str(site)
    env["NEWSLETTER_SECRET"] = "plugin-secret-" + "z" * 40
    return subprocess.run([str(BIN / "newsletter"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_installed_plugin_is_listed(plugin_site: Path, tmp_path: Path) -> None:
    result = run(["providers"], tmp_path, plugin_site)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if " jsonl " in x)
    assert "newsletter-jsonl" in line or "newsletter_jsonl" in line
    assert "JSON Lines" in line
    for builtin in ("postmark", "sendgrid", "mailgun", "resend", "ses"):
        assert any(f" {builtin} " in x for x in result.stdout.splitlines())


def test_a_send_goes_through_the_plugin(plugin_site: Path, tmp_path: Path) -> None:
    root = tmp_path / "letter"
    (root / "drafts").mkdir(parents=True)
    (root / "newsletter.toml").write_text(TOML)
    (root / "drafts" / "hello.md").write_text(
        "---\ntitle: Hello from a plug-in\ndate: 2026-01-05\n---\n\nThe first issue.\n"
    )
    result = run(["send", "hello", "--to", "ada@example.org,bob@example.org", "--yes"], root,
                 plugin_site)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(x) for x in (root / "sent.jsonl").read_text().splitlines()]
    assert sorted(x["to"] for x in lines) == ["ada@example.org", "bob@example.org"]
    assert all(x["subject"] == "Hello from a plug-in" for x in lines)
    assert all("List-Unsubscribe" in x["headers"] for x in lines)


def test_the_plugins_declared_options_are_checked_at_load(plugin_site: Path,
                                                          tmp_path: Path) -> None:
    root = tmp_path / "letter"
    (root / "drafts").mkdir(parents=True)
    wrong = TOML.replace('path = "sent.jsonl"', 'path = 3\npth = "x"')  # a type, a typo
    (root / "newsletter.toml").write_text(wrong)
    (root / "drafts" / "hello.md").write_text("---\ntitle: Hello\n---\n\nHi.\n")
    result = run(["send", "hello", "--to", "ada@example.org", "--yes"], root, plugin_site)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "unknown setting provider.pth for the jsonl provider (known: " in lines[0]
    assert "did you mean path?" in lines[0]
    assert "[provider] path = 3 must be text" in lines[0]
    assert not (root / "sent.jsonl").exists()


def test_the_documented_example_is_the_tested_one() -> None:
    import re

    doc = (PLUGIN.parent.parent.parent / "docs" / "providers.md").read_text()
    blocks = dict(re.findall(r"`(pyproject\.toml|newsletter_jsonl\.py)`:\n\n```\w+\n(.*?)```",
                             doc, re.S))
    assert set(blocks) == {"pyproject.toml", "newsletter_jsonl.py"}
    for name, text in blocks.items():
        assert (PLUGIN / name).read_text() == text, f"docs/providers.md and {name} differ"
