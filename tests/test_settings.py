"""newsletter.toml → Settings: found like git, every problem reported in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.errors import ConfigError
from newsletter.settings import find_root, load_settings


def write(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "newsletter.toml").write_text(text)
    return root


def test_found_in_a_parent_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write(tmp_path / "letter", '[newsletter]\nname = "Liu\'s Log"\n')
    (root / "drafts" / "deep").mkdir(parents=True)
    monkeypatch.chdir(root / "drafts" / "deep")
    settings = load_settings()
    assert settings.root == root.resolve()
    assert settings.name == "Liu's Log"
    assert settings.database == root.resolve() / "newsletter.db"
    assert settings.provider.name == "outbox"


def test_newsletter_dir_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write(tmp_path / "elsewhere", "")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_DIR", str(root))
    assert find_root() == root.resolve()


def test_missing_config_says_how_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="run `newsletter init`"):
        load_settings()


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        '[newsletter]\nfrom = "not an address"\nbase_url = "example.com"\ncolour = "red"\n'
        '[provider]\nname = "smtp"\npassword = "hunter2"\nconcurrency = 0\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings(root)
    message = str(info.value)
    assert "newsletter.from" in message
    assert "newsletter.base_url" in message
    assert "unknown setting newsletter.colour" in message
    assert "provider.password must not hold a secret" in message
    assert "provider.concurrency" in message
    assert "hunter2" not in message  # a pasted secret is never echoed back
    assert "\n" not in message


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    root = write(tmp_path, "[newsletter\nname = 1\n")
    with pytest.raises(ConfigError, match="newsletter.toml"):
        load_settings(root)


def test_provider_secret_comes_from_the_named_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write(tmp_path, '[provider]\nname = "smtp"\npassword_env = "MY_SMTP_PASS"\n')
    settings = load_settings(root)
    with pytest.raises(ConfigError, match="MY_SMTP_PASS is not set"):
        settings.provider.secret("password_env")
    monkeypatch.setenv("MY_SMTP_PASS", "s3cret")
    assert settings.provider.secret("password_env") == "s3cret"


def test_secret_file_is_made_once_and_private(tmp_path: Path) -> None:
    root = write(tmp_path, "")
    settings = load_settings(root)
    key = settings.secret_key()
    path = root / ".newsletter-secret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(key) >= 32
    assert settings.secret_key() == key  # stable: old unsubscribe links keep working


def test_secret_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write(tmp_path, "")
    monkeypatch.setenv("NEWSLETTER_SECRET", "from-the-environment-" + "y" * 20)
    assert load_settings(root).secret_key().startswith(b"from-the-environment-")
    assert not (root / ".newsletter-secret").exists()


def test_a_secret_file_made_on_first_use_is_git_ignored(tmp_path: Path) -> None:
    """A folder set up by hand with its own .gitignore: the secret is added to it."""
    root = write(tmp_path, "")
    (root / ".gitignore").write_text("*.pyc")  # no trailing newline
    load_settings(root).secret_key()
    assert (root / ".gitignore").read_text().splitlines() == ["*.pyc", ".newsletter-secret"]
    load_settings(root).secret_key()  # listed once, however often it is used
    assert (root / ".gitignore").read_text().count(".newsletter-secret") == 1
