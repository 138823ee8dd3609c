"""The init, draft, drafts and build commands, run through the real CLI."""

from __future__ import annotations

import email
import email.policy
from datetime import date
from pathlib import Path

import pytest

from newsletter.settings import load_settings
from newsletter.store import connect

REPO = Path(__file__).resolve().parent.parent


def one_line_error(run, fragment: str) -> None:
    assert run.exit_code != 0
    assert run.stderr.startswith("Error: ") and run.stderr.count("\n") == 1, run.stderr
    assert fragment in run.stderr
    assert "Traceback" not in run.stderr and run.exception is None


@pytest.mark.parametrize("command", ["init", "draft", "drafts", "build"])
def test_every_command_has_help_with_an_example(cli, command):
    run = cli(command, "--help")
    assert run.exit_code == 0 and "Example: newsletter " in run.stdout


def test_init_lays_out_a_newsletter_and_never_overwrites(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = cli("init", "my-log")
    assert run.exit_code == 0, run.stderr
    root = tmp_path / "my-log"
    for name in ("newsletter.toml", "drafts", "layouts/default.html", "layouts/default.txt",
                 ".gitignore", ".newsletter-secret"):
        assert (root / name).exists(), name
        assert f"created my-log/{name}" in run.stdout
    ignored = (root / ".gitignore").read_text().splitlines()
    for entry in ("newsletter.db", "outbox/", ".newsletter-secret"):
        assert entry in ignored
    assert (root / ".newsletter-secret").stat().st_mode & 0o077 == 0
    settings = load_settings(root)  # the commented settings file loads as it is
    assert settings.name == "My Log" and settings.provider.name == "outbox"
    assert (root / "layouts/default.html").read_text() == (
        REPO / "newsletter/templates/layouts/default.html"
    ).read_text()

    (root / "newsletter.toml").write_text('[newsletter]\nname = "Mine"\n')
    (root / "layouts/default.html").write_text("my layout")
    (root / ".gitignore").write_text("node_modules/\noutbox/\n")
    secret = (root / ".newsletter-secret").read_text()
    again = cli("init", "my-log")
    assert again.exit_code == 0
    assert "created" not in again.stdout.replace("kept", "")
    assert (root / "newsletter.toml").read_text() == '[newsletter]\nname = "Mine"\n'
    assert (root / "layouts/default.html").read_text() == "my layout"
    assert (root / ".newsletter-secret").read_text() == secret
    gitignore = (root / ".gitignore").read_text()
    assert gitignore.startswith("node_modules/\noutbox/\n") and gitignore.count("outbox/") == 1
    assert "newsletter.db" in gitignore


def test_draft_writes_a_dated_file_with_front_matter(cli, newsletter_dir):
    run = cli("draft", "Leaving Facebook/Meta")
    today = date.today().isoformat()
    assert run.exit_code == 0, run.stderr
    assert run.stdout == f"drafts/{today}-leaving-facebook-meta.md\n"
    text = (newsletter_dir / run.stdout.strip()).read_text()
    assert text.startswith(
        f"---\ntitle: Leaving Facebook/Meta\nsubject: Leaving Facebook/Meta\ndate: {today}\n"
        "# preheader: the line inboxes show after the subject (remove the #)\n---\n"
    )
    assert "preheader: ''" not in text  # an empty preheader is what check warns about
    check = cli("check", run.stdout.strip())
    assert "write it on the `# preheader:` line and remove the #" in check.stdout + check.stderr
    again = cli("draft", "Leaving Facebook/Meta")
    one_line_error(again, "already exists")
    assert (newsletter_dir / run.stdout.strip()).read_text() == text


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Café, Crème & Brûlée!", "cafe-creme-and-brulee"),
        ("“Quotes” — dashes… and emoji 🙂", "quotes-dashes-and-emoji"),
        ("Liu's Log: Issue #3", "lius-log-issue-3"),
        ("Straße über Øresund", "strasse-uber-oresund"),
        ("日本語 🙂", "issue"),
        ("../../etc/passwd", "etc-passwd"),
    ],
)
def test_draft_slug_is_safe_for_any_title(cli, newsletter_dir, title, slug):
    run = cli("draft", title, "--date", "2026-11-21")
    assert run.stdout == f"drafts/2026-11-21-{slug}.md\n", run.stderr
    front = (newsletter_dir / run.stdout.strip()).read_text().split("---")[1]
    from newsletter.compose.source import parse_draft

    assert parse_draft(newsletter_dir / run.stdout.strip()).title == title, front


def test_draft_options_and_bad_values(cli, newsletter_dir):
    run = cli("draft", "Hello", "--slug", "hi", "--date", "2026-01-02")
    assert run.stdout == "drafts/2026-01-02-hi.md\n"
    one_line_error(cli("draft", "Hello", "--date", "tomorrow"), "--date 'tomorrow' is not a date")
    one_line_error(cli("draft", "Hello", "--slug", "Bad Slug!"), "--slug")


def test_drafts_lists_date_subject_and_sent_state(cli, newsletter_dir, write_draft):
    write_draft("2026-01-01-first.md", "---\nsubject: First one 🙂\n---\nBody\n")
    write_draft("2026-02-01-second.md", "# Second\n\nBody\n")
    write_draft("2026-03-01-broken.md", "---\ntitle: [\n---\n")
    run = cli("drafts")
    assert run.exit_code == 0
    assert not (newsletter_dir / "newsletter.db").exists()  # listing creates no database
    lines = run.stdout.splitlines()
    assert lines[0].startswith("2026-01-01  2026-01-01-first ")
    assert "not sent" in lines[0] and lines[0].endswith("First one 🙂")
    assert lines[1].endswith("Second")
    assert "cannot read" in lines[2]

    db = connect(newsletter_dir / "newsletter.db")
    db["campaigns"].insert({
        "slug": "2026-01-01-first", "draft_path": "drafts/2026-01-01-first.md",
        "subject": "First one", "audience": "subscribers", "kind": "list",
        "provider": "smtp", "created_at": "2026-01-03T10:00:00Z",
        "finished_at": "2026-01-03T10:05:00Z", "status": "done",
    })
    db["campaigns"].insert({
        "slug": "2026-02-01-second", "draft_path": "x", "subject": "Second",
        "audience": "a@example.com", "kind": "test", "provider": "outbox",
        "created_at": "2026-02-02T10:00:00Z", "status": "done",
    })
    db.conn.close()
    run = cli("drafts")
    lines = run.stdout.splitlines()
    assert "sent 2026-01-03" in lines[0]
    assert "not sent" in lines[1]  # a test send is not a send to the list


def test_drafts_with_none_yet(cli, newsletter_dir):
    run = cli("drafts")
    assert run.exit_code == 0 and run.stdout == "" and "No drafts yet" in run.stderr


def test_build_writes_html_text_and_eml(cli, newsletter_dir, write_draft, tmp_path):
    write_draft("2026-04-05-hello.md", "---\ntitle: Hello\n---\nHi {{ subscriber.name }}.\n")
    out = tmp_path / "out"
    run = cli("build", "hello", "--out", str(out))
    assert run.exit_code == 0, run.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["2026-04-05-hello.eml", "2026-04-05-hello.html", "2026-04-05-hello.txt"]
    for line, name in zip(run.stdout.splitlines(), ["html", "txt", "eml"], strict=True):
        assert line.endswith(" KB") or line.endswith(" B")
        assert f"2026-04-05-hello.{name}" in line
    msg = email.message_from_bytes((out / "2026-04-05-hello.eml").read_bytes(),
                                   policy=email.policy.default)
    assert all(not part.defects for part in msg.walk())
    assert msg["To"] == "Sample Reader <reader@example.com>"
    assert "Hi Sample Reader." in (out / "2026-04-05-hello.txt").read_text()
    assert run.stderr == ""  # no warnings: base_url is set


def test_build_default_out_dir_by_path_and_copies_images(cli, newsletter_dir, write_draft):
    (newsletter_dir / "drafts" / "img").mkdir()
    (newsletter_dir / "drafts" / "img" / "p.png").write_bytes(b"\x89PNG fake")
    path = write_draft("x.md", "![p](img/p.png)\n")
    run = cli("build", str(path))
    assert run.exit_code == 0, run.stderr
    assert (newsletter_dir / "build" / "x.html").exists()
    assert (newsletter_dir / "build" / "img" / "p.png").read_bytes() == b"\x89PNG fake"


def test_build_without_base_url_warns_and_embeds(cli, newsletter_dir, write_draft):
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(toml.read_text().replace('base_url = "https://example.com/news"\n', ""))
    (newsletter_dir / "drafts" / "p.png").write_bytes(b"\x89PNG fake")
    write_draft("x.md", "![p](p.png)\n")
    run = cli("build", "x")
    assert run.exit_code == 0
    assert "Warning: base_url is not set" in run.stderr
    raw = (newsletter_dir / "build" / "x.eml").read_bytes()
    assert b"multipart/related" in raw and b"Content-ID: <" in raw


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("---\ntitle: [broken\n---\nBody\n", "bad.md:2: broken front matter"),
        ("Hello {{ issue.nope }}\n", "bad.md:1: issue.nope is undefined"),
        ("Hello\n\n![x](nope.png)\n", "bad.md:3: image nope.png not found"),
        ('---\nsubject: "a\\nb"\n---\nB\n', "bad.md:2: the subject holds a line break"),
    ],
)
def test_bad_inputs_give_one_line_errors(cli, newsletter_dir, write_draft, text, fragment):
    write_draft("bad.md", text)
    run = cli("build", "bad")
    one_line_error(run, fragment)
    assert run.exit_code == 3
    assert not (newsletter_dir / "build" / "bad.eml").exists()


def test_unknown_draft(cli, newsletter_dir):
    one_line_error(cli("build", "nope"), "no draft 'nope'")


def test_traceback_flag_shows_the_stack(cli, newsletter_dir):
    run = cli("--traceback", "build", "nope")
    assert run.exit_code != 0 and run.exception is not None


def test_the_repository_is_an_example_newsletter(cli, tmp_path, monkeypatch):
    # A key from the environment, so no secret file is made in the repository; after the
    # README's quick start there is one, and then only its own key is accepted.
    made = REPO / ".newsletter-secret"
    monkeypatch.setenv("NEWSLETTER_SECRET", made.read_text().strip() if made.exists() else "y" * 48)
    run = cli("--dir", str(REPO), "build", "leaving-facebook-meta", "--out", str(tmp_path))
    assert run.exit_code == 0, run.stderr
    assert (tmp_path / "images" / "dawn.png").exists()
    assert (REPO / "layouts" / "default.html").read_text() == (
        REPO / "newsletter/templates/layouts/default.html"
    ).read_text()
    assert (REPO / "layouts" / "default.txt").read_text() == (
        REPO / "newsletter/templates/layouts/default.txt"
    ).read_text()


def test_a_newsletter_secret_other_than_the_secret_file_is_refused(cli, tmp_path, monkeypatch):
    # Started locally (the secret file signed the links mailed and keys the suppression
    # list), then NEWSLETTER_SECRET set to something new, as deploy.md asks: the links
    # already out would stop working and forgotten readers could be imported again.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    assert cli("init", "log").exit_code == 0
    monkeypatch.chdir(tmp_path / "log")
    assert cli("subscribers", "add", "gone@example.com").exit_code == 0
    assert cli("subscribers", "remove", "gone@example.com", "--suppress").exit_code == 0
    (tmp_path / "again.csv").write_text("email\ngone@example.com\n")

    other = {"NEWSLETTER_SECRET": "a-new-secret-for-the-server-" + "n" * 20}
    run = cli("subscribers", "import", str(tmp_path / "again.csv"), env=other)
    assert run.exit_code != 0
    assert run.stderr.strip().splitlines() == [
        "Error: NEWSLETTER_SECRET is not the key in .newsletter-secret, which signed the links "
        "already mailed and the suppression list: set it to that file's content "
        '(NEWSLETTER_SECRET="$(cat .newsletter-secret)"), or delete .newsletter-secret if no '
        "issue has gone out yet"]
    assert other["NEWSLETTER_SECRET"] not in run.stdout + run.stderr

    same = {"NEWSLETTER_SECRET": (tmp_path / "log" / ".newsletter-secret").read_text().strip()}
    run = cli("subscribers", "import", str(tmp_path / "again.csv"), env=same)
    assert run.exit_code == 0, run.stderr
    assert "forgotten" in run.stdout + run.stderr  # still refused: the suppression holds
    assert "total         0" in cli("subscribers", "count").stdout


def test_init_with_newsletter_secret_set_writes_no_secret_file(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_SECRET", "the-server-secret-" + "s" * 30)
    run = cli("init", "log")
    assert run.exit_code == 0, run.stderr
    assert not (tmp_path / "log" / ".newsletter-secret").exists()
    monkeypatch.chdir(tmp_path / "log")
    assert cli("subscribers", "add", "a@example.com").exit_code == 0
