"""Bad input through the real CLI: one line `Error: …` on stderr, a non-zero exit, no
traceback, nothing half-written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def one_error_line(result) -> str:
    """The single `Error: …` line a failed command printed (fails the test otherwise)."""
    assert result.exception is None, repr(result.exception)
    assert result.exit_code != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# --- a front matter date that is not a real day -------------------------------------------


@pytest.mark.parametrize("command", [["build"], ["send", "--to", "me@example.com"]])
def test_front_matter_date_that_is_no_day_is_one_error_line(
    cli: Callable, write_draft: Callable, command: list[str]
) -> None:
    # YAML reads 2026-13-45 as a date; PyYAML then fails to make one (was a traceback).
    write_draft("2026-01-10-bad-date.md", "---\ntitle: Hi\ndate: 2026-13-45\n---\nBody\n")
    line = one_error_line(cli(command[0], "bad-date", *command[1:]))
    assert "2026-01-10-bad-date.md:3:" in line
    assert "YYYY-MM-DD" in line


def test_front_matter_bad_date_does_not_hide_the_other_drafts(
    cli: Callable, write_draft: Callable
) -> None:
    write_draft("2026-01-10-bad-date.md", "---\ntitle: Hi\ndate: 2026-02-30\n---\nBody\n")
    write_draft("2026-01-11-fine.md", "---\ntitle: Fine one\n---\nBody\n")
    result = cli("drafts")
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Fine one" in result.stdout
    assert "bad-date" in result.stdout and "cannot read" in result.stdout


def test_check_of_a_bad_date_reports_it_as_a_finding(cli: Callable, write_draft: Callable) -> None:
    write_draft("2026-01-10-bad-date.md", "---\ntitle: Hi\ndate: 2026-13-45\n---\nBody\n")
    result = cli("check", "bad-date")
    assert result.exception is None, repr(result.exception)
    assert result.exit_code in (1, 2)
    assert "Traceback" not in result.stderr
    assert "not a real date" in result.stdout + result.stderr


# --- a database file that is not one, or is damaged ---------------------------------------


@pytest.mark.parametrize("command", [
    ["subscribers", "count"],
    ["subscribers", "add", "liu@example.com"],
    ["subscribers", "list"],
    ["campaigns"],
    ["send", "hello", "--to", "me@example.com"],
])
def test_a_file_that_is_not_a_database_is_one_error_line_and_is_left_alone(
    cli: Callable, write_draft: Callable, newsletter_dir: Path, command: list[str]
) -> None:
    write_draft("2026-01-10-hello.md", "# Hello\n\nBody\n")
    database = newsletter_dir / "newsletter.db"
    junk = b"these are somebody's notes, not a database\n" * 20
    database.write_bytes(junk)
    line = one_error_line(cli(*command))
    assert "newsletter.db" in line and "not a database" in line
    assert "restore it from a backup" in line
    assert database.read_bytes() == junk
    assert not (newsletter_dir / "outbox").exists()


def test_a_damaged_table_found_mid_command_is_one_error_line(
    cli: Callable, newsletter_dir: Path
) -> None:
    import sqlite3

    rows = "".join(f"reader{n}@example.com,Reader {n}\n" for n in range(1000))
    (newsletter_dir / "list.csv").write_text("email,name\n" + rows)
    assert cli("subscribers", "import", "list.csv").exit_code == 0
    database = newsletter_dir / "newsletter.db"
    conn = sqlite3.connect(database)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    sql = "SELECT rootpage FROM sqlite_master WHERE name = 'subscribers'"
    root = conn.execute(sql).fetchone()[0]
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(database, "r+b") as f:  # the table's first page, not the schema: opening works
        f.seek((root - 1) * page)
        f.write(b"\xff" * page)
    line = one_error_line(cli("subscribers", "list"))
    assert "malformed" in line and "restore it from a backup" in line


# --- Ctrl-C at the send confirmation ------------------------------------------------------


def _wait_until_reading_terminal(pid: int, deadline: float) -> None:
    """Return once process `pid` is blocked in read() on its stdin (Linux /proc)."""
    import platform
    import time

    number = {"x86_64": "0", "aarch64": "63"}.get(platform.machine())  # read(2)'s number
    path = Path(f"/proc/{pid}/syscall")
    while time.monotonic() < deadline:
        try:
            fields = path.read_text().split()
        except OSError:
            return  # no /proc here, or the process is gone: nothing to wait for
        if number is None or fields[:2] == [number, "0x0"]:
            return
        time.sleep(0.001)  # polling a condition, not racing it
    raise AssertionError("the CLI never waited for an answer on its terminal")


def _run_in_terminal(args: list[str], cwd: Path, answer: bytes, after: bytes) -> tuple[int, str]:
    """Run `python -m newsletter ARGS` on a pseudo-terminal; type `answer` once `after` shows."""
    import os
    import pty
    import sys

    pid, fd = pty.fork()
    if pid == 0:  # the child: the real CLI with the pty as its terminal
        os.chdir(cwd)
        os.execv(sys.executable, [sys.executable, "-m", "newsletter", *args])
    import select
    import signal
    import time

    seen = b""
    typed = False
    deadline = time.monotonic() + 60  # a hung CLI fails the test instead of hanging it
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(fd)
            raise AssertionError(f"no output from the CLI for 60 s; the screen: {seen!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        if not typed and after in seen:
            # ^C is a signal, not input: sent in the instant between the prompt and the
            # read, it is taken before the read starts, which then waits forever (CPython
            # looks at a signal only when the read is interrupted). A person is never that
            # quick; the test waits until the CLI is blocked reading its terminal.
            _wait_until_reading_terminal(pid, deadline)
            os.write(fd, answer)
            typed = True
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen.decode("utf-8", "replace")


def test_ctrl_c_at_the_send_question_exits_130_and_sends_nothing(
    cli: Callable, write_draft: Callable, newsletter_dir: Path
) -> None:
    write_draft("2026-01-10-hello.md", "---\ntitle: Hello\npreheader: Hi\n---\nBody\n")
    assert cli("subscribers", "add", "reader@example.com").exit_code == 0
    code, screen = _run_in_terminal(
        ["send", "hello", "--to", "subscribers"], newsletter_dir,
        answer=b"\x03", after=b"recipients? [y/N]",  # \x03: the terminal sends SIGINT
    )
    assert code == 130, screen
    assert "Cancelled: nothing was sent." in screen
    assert "Aborted!" not in screen and "Traceback" not in screen
    assert not (newsletter_dir / "outbox").exists()
    assert "No campaigns yet" in cli("campaigns").stdout


# --- every --help example works in the example newsletter at the repository root ----------

# The order a newcomer would try them in (remove last: the others need liu@example.com).
EXAMPLE_TOUR = [
    "", "init", "draft", "drafts", "build", "preview", "check",
    "subscribers", "subscribers import", "subscribers add", "subscribers list",
    "subscribers count", "subscribers export", "send", "campaigns", "campaigns show",
    "campaigns settle", "stats", "import-posts", "publish",
    "layouts", "layouts list", "layouts diff",
    "sync", "run", "providers", "serve",
    "subscribers show", "subscribers unsubscribe", "subscribers remove", "doctor",
    "backup", "restore",
]


def _help_examples() -> dict[str, str]:
    import re
    import sys

    import typer.main

    from newsletter.cli import app
    from tests.conftest import REPO

    sys.path.insert(0, str(REPO / "scripts"))
    import gen_cli_docs

    examples = {}
    for path, _ in gen_cli_docs.walk(typer.main.get_command(app), ["newsletter"]):
        found = re.search(r"^\s*Example: (.+)$", gen_cli_docs.help_text(path), re.M)
        examples[" ".join(path[1:])] = found.group(1) if found else ""
    return examples


@pytest.mark.slow
def test_every_help_example_works_in_the_example_newsletter(tmp_path: Path) -> None:
    import os
    import shutil
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    examples = _help_examples()
    assert sorted(examples) == sorted(EXAMPLE_TOUR), "add the new command's example to the tour"
    clone = tmp_path / "clone"  # what git tracks: the example newsletter as a clone has it
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, clone / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in EXAMPLE_TOUR:
        example = examples[command]
        assert example.startswith("newsletter "), f"`newsletter {command} --help`: {example!r}"
        if command == "preview":  # serves until Ctrl-C: wait for its URL, then stop it
            server = subprocess.Popen(
                ["bash", "-c", f"exec {example}"], cwd=clone, env=env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            )
            assert server.stdout is not None
            import selectors

            # Its URL line, with a deadline: a server that never says it must fail, not hang.
            with selectors.DefaultSelector() as waiting:
                waiting.register(server.stdout, selectors.EVENT_READ)
                said = waiting.select(timeout=60)
            if not said:
                server.kill()
            first = server.stdout.readline() if said else ""
            server.send_signal(signal.SIGINT)
            out, err = server.communicate(timeout=60)
            assert first.startswith("http://127.0.0.1:"), first + out + err
            assert server.returncode == 0, err
            continue
        result = subprocess.run(
            ["bash", "-c", example], cwd=clone, env=env, capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=120,
        )
        if command == "doctor":
            # The example newsletter has no server at its base_url and no DNS records of its
            # own: doctor says so line by line (exit 1), it does not fail to run (2).
            assert result.returncode == 1, f"{example}\n{result.stdout}{result.stderr}"
            assert result.stdout.startswith("ok       settings "), result.stdout
            assert "not ready" in result.stderr, result.stderr
            continue
        assert result.returncode == 0, f"{example}\n{result.stdout}{result.stderr}"


# --- export with a status that does not exist ---------------------------------------------


def test_export_to_stdout_with_an_unknown_status_writes_nothing(
    cli: Callable, newsletter_dir: Path
) -> None:
    # `newsletter subscribers export --status activ > list.csv` must not leave a CSV with
    # only a header, that looks like an empty list.
    assert cli("subscribers", "add", "liu@example.com").exit_code == 0
    result = cli("subscribers", "export", "--status", "activ")
    line = one_error_line(result)
    assert "unknown status 'activ'" in line
    assert result.stdout == ""


# --- a CSV with a quote that is never closed ----------------------------------------------


def test_import_with_a_quote_never_closed_stops_and_names_the_line(
    cli: Callable, newsletter_dir: Path
) -> None:
    # Before: csv read everything after the stray quote as one cell, the import "succeeded"
    # with one skipped row, and every reader after line 3 was silently left out.
    (newsletter_dir / "list.csv").write_text(
        'email,name\nann@example.com,"Ann\nSmith"\nbob@example.com,"Bob ""B\n'
        "cat@example.com,Cat\ndan@example.com,Dan\n"
    )
    line = one_error_line(cli("subscribers", "import", "list.csv"))
    assert "list.csv line 4: a quote opens here and is never closed" in line
    assert cli("subscribers", "count", "--json").stdout.count('"total": 0') == 1


def test_import_keeps_reading_quoted_cells_over_several_lines(
    cli: Callable, newsletter_dir: Path
) -> None:
    (newsletter_dir / "list.csv").write_text(
        'email,name\nann@example.com,"Ann\nSmith"\nbob@example.com,"Bob ""B"" Jones"\n'
        'cat@example.com,"Cat\nLast"\n'
    )
    result = cli("subscribers", "import", "list.csv")
    assert result.exit_code == 0, result.stderr
    assert "3 added" in result.stdout
    listed = cli("subscribers", "list").stdout
    assert "Ann Smith" in listed and 'Bob "B" Jones' in listed and "Cat Last" in listed


# --- init where it cannot write -----------------------------------------------------------


def test_init_below_a_file_is_one_error_line(cli: Callable, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    line = one_error_line(cli("init", str(tmp_path / "notes.txt" / "letter")))
    assert "cannot lay out a newsletter in" in line and "Not a directory" in line
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_init_where_a_file_is_in_the_way_keeps_it_and_says_which(
    cli: Callable, tmp_path: Path
) -> None:
    (tmp_path / "letter").mkdir()
    (tmp_path / "letter" / "drafts").write_text("my drafts list")
    line = one_error_line(cli("init", str(tmp_path / "letter")))
    assert str(tmp_path / "letter" / "drafts") in line
    assert (tmp_path / "letter" / "drafts").read_text() == "my drafts list"


# --- build where a file cannot be written -------------------------------------------------


def test_build_where_a_folder_has_the_html_name_is_one_error_line_and_leaves_no_temp_file(
    cli: Callable, write_draft: Callable, tmp_path: Path
) -> None:
    write_draft("2026-01-10-hello.md", "# Hello\n\nBody\n")
    out = tmp_path / "site"
    (out / "2026-01-10-hello.html").mkdir(parents=True)
    line = one_error_line(cli("build", "hello", "--out", str(out)))
    assert f"cannot write {out / '2026-01-10-hello.html'}: Is a directory" in line
    assert sorted(p.name for p in out.iterdir()) == ["2026-01-10-hello.html"]


# --- a mistyped command line --------------------------------------------------------------


@pytest.mark.parametrize("args, expected", [
    (["campaigns", "abc"], "Error: Invalid value for '[ID]': "),
    (["send", "hello", "--to", "me@example.com", "--rate", "fast"], "Invalid value for '--rate'"),
    (["subscribers", "list", "--limit", "ten"], "(see `newsletter subscribers list --help`)"),
    (["check"], "Error: Missing argument 'draft' (see `newsletter check --help`)"),
    (["drafts", "--dir", "elsewhere"], "Error: No such option: --dir (see `newsletter drafts"),
    (["--bogus", "drafts"], "Error: No such option: --bogus (see `newsletter --help`)"),
    (["sedn"], "Did you mean 'send'?"),
])
def test_a_mistyped_command_line_is_one_error_line(
    cli: Callable, newsletter_dir: Path, args: list[str], expected: str
) -> None:
    # Before: click's usage line, a "Try … -h" hint, a blank line, then the error (4 lines).
    result = cli(*args)
    assert result.exit_code == 2
    assert expected in one_error_line(result)


def test_no_command_still_shows_the_help(cli: Callable) -> None:
    assert "Usage: newsletter subscribers" in cli("subscribers").stderr + cli("subscribers").stdout


# --- newsletter.toml with a table we do not know ------------------------------------------


def test_a_misspelt_provider_table_is_refused_not_ignored(
    cli: Callable, write_draft: Callable, newsletter_dir: Path
) -> None:
    # Before: [providers] was ignored and the "send" quietly went to the outbox.
    write_draft("2026-01-10-hello.md", "# Hello\n\nBody\n")
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(toml.read_text().replace("[provider]", "[providers]"))
    line = one_error_line(cli("send", "hello", "--to", "me@example.com"))
    assert "unknown table [providers]: the tables are [newsletter], [provider]" in line
    assert not (newsletter_dir / "outbox").exists()


# --- --rate and --concurrency out of range ------------------------------------------------


@pytest.mark.parametrize("option, value, expected", [
    ("--rate", "nan", "--rate must be a number of messages per second"),
    ("--rate", "inf", "--rate must be a number of messages per second"),
    ("--concurrency", "100000", "--concurrency must be at most 100"),
])
def test_send_refuses_a_rate_or_concurrency_it_cannot_use_before_anything_starts(
    cli: Callable, write_draft: Callable, newsletter_dir: Path, option: str, value: str,
    expected: str,
) -> None:
    # Before: nan and inf were tracebacks inside the engine; 100000 connections ran out of
    # file descriptors mid-send and left the campaign interrupted.
    write_draft("2026-01-10-hello.md", "---\ntitle: Hello\npreheader: Hi\n---\nBody\n")
    line = one_error_line(cli("send", "hello", "--to", "me@example.com", option, value))
    assert expected in line
    assert "No campaigns yet" in cli("campaigns").stdout


@pytest.mark.parametrize("setting", ["rate = nan", "rate = inf", "concurrency = 5000",
                                     "concurrency = true"])
def test_newsletter_toml_rate_and_concurrency_out_of_range_are_refused(
    cli: Callable, write_draft: Callable, newsletter_dir: Path, setting: str
) -> None:
    write_draft("2026-01-10-hello.md", "# Hello\n\nBody\n")
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(toml.read_text().replace('name = "outbox"', f'name = "outbox"\n{setting}'))
    line = one_error_line(cli("build", "hello"))
    assert f"provider.{setting.split()[0]} must be" in line


# --- preview on an address this machine does not have ------------------------------------


def test_preview_on_a_host_that_is_not_this_machine_points_at_host_not_port(
    cli: Callable, write_draft: Callable
) -> None:
    write_draft("2026-01-10-hello.md", "# Hello\n\nBody\n")
    # 192.0.2.1 is TEST-NET-1: never an address of this machine, and binding sends nothing.
    line = one_error_line(cli("preview", "hello", "--no-open", "--host", "192.0.2.1"))
    assert "cannot listen on 192.0.2.1" in line
    assert "pass an address of this machine to --host" in line and "--port" not in line


# --- --rejects: never the input, never touched by a failed import -------------------------


def test_rejects_pointing_at_the_file_being_imported_is_refused_and_the_file_kept(
    cli: Callable, newsletter_dir: Path
) -> None:
    # Before: the rejects file was opened for writing first, emptying the export, and the
    # import then said "list.csv is empty": the user's only copy of their list was gone.
    export = newsletter_dir / "list.csv"
    export.write_text("email,name\nnot-an-address,X\nann@example.com,Ann\n")
    before = export.read_bytes()
    line = one_error_line(cli("subscribers", "import", "list.csv", "--rejects", "./list.csv"))
    assert "--rejects list.csv is the file being imported" in line
    assert export.read_bytes() == before


def test_a_failed_import_leaves_the_rejects_file_as_it_was(
    cli: Callable, newsletter_dir: Path
) -> None:
    (newsletter_dir / "list.csv").write_text(
        'email,name\nnot-an-address,X\nbob@example.com,"Bob\ncat@example.com,Cat\n'
    )
    rejects = newsletter_dir / "rejects.csv"
    rejects.write_text("last week's rejects\n")
    one_error_line(cli("subscribers", "import", "list.csv", "--rejects", "rejects.csv"))
    assert rejects.read_text() == "last week's rejects\n"
    assert sorted(p.name for p in newsletter_dir.iterdir() if "rejects" in p.name) == [
        "rejects.csv"
    ]


def test_a_successful_import_writes_the_rejects_file(cli: Callable, newsletter_dir: Path) -> None:
    (newsletter_dir / "list.csv").write_text("email,name\nnot-an-address,X\nann@example.com,A\n")
    result = cli("subscribers", "import", "list.csv", "--rejects", "rejects.csv")
    assert result.exit_code == 0, result.stderr
    assert "line 2" in (newsletter_dir / "rejects.csv").read_text()
    assert not (newsletter_dir / "rejects.csv.partial").exists()


def test_export_onto_the_database_itself_is_refused_and_the_list_kept(
    cli: Callable, newsletter_dir: Path
) -> None:
    # Before: the CSV was renamed over newsletter.db and every subscriber was gone.
    assert cli("subscribers", "add", "liu@example.com").exit_code == 0
    line = one_error_line(cli("subscribers", "export", "-o", "newsletter.db"))
    assert "-o newsletter.db is the database itself" in line
    assert "liu@example.com" in cli("subscribers", "list").stdout


# --- draft where drafts/ cannot be made ---------------------------------------------------


def test_draft_when_drafts_is_a_file_is_one_error_line(
    cli: Callable, newsletter_dir: Path
) -> None:
    (newsletter_dir / "drafts").rmdir()
    (newsletter_dir / "drafts").write_text("my list of ideas")
    line = one_error_line(cli("draft", "New one"))
    assert f"cannot create {newsletter_dir / 'drafts'}" in line
    assert (newsletter_dir / "drafts").read_text() == "my list of ideas"


# --- a layout that is not UTF-8 -----------------------------------------------------------


def test_a_layout_saved_in_another_encoding_is_one_error_line(
    cli: Callable, write_draft: Callable, newsletter_dir: Path
) -> None:
    write_draft("2026-01-10-hello.md", "# Hello\n\nBody\n")
    (newsletter_dir / "layouts").mkdir()
    (newsletter_dir / "layouts" / "default.html").write_bytes(
        "<html><body>Caf\u00e9 {{ issue.html }}</body></html>".encode("latin-1")
    )
    line = one_error_line(cli("build", "hello"))
    assert "layouts/default.html is not UTF-8 text: save it as UTF-8" in line


# --- a "CSV" separated by semicolons (Excel in many locales) ------------------------------


@pytest.mark.parametrize("format", ["auto", "plain"])
def test_a_semicolon_separated_file_says_to_save_it_with_commas(
    cli: Callable, newsletter_dir: Path, format: str
) -> None:
    # Before: "cannot tell which platform … pass --format", and with --format plain every
    # row was skipped as an invalid address ('ann@example.com;Ann').
    (newsletter_dir / "list.csv").write_text("email;name\nann@example.com;Ann\n")
    line = one_error_line(cli("subscribers", "import", "list.csv", "--format", format))
    assert "list.csv separates its columns with semicolons, not commas" in line


def test_rejects_onto_the_database_is_refused_and_the_list_kept(
    cli: Callable, newsletter_dir: Path
) -> None:
    # Before: the rejects were renamed over newsletter.db after a successful import.
    assert cli("subscribers", "add", "liu@example.com").exit_code == 0
    (newsletter_dir / "list.csv").write_text("email\nnot-an-address\nann@example.com\n")
    line = one_error_line(
        cli("subscribers", "import", "list.csv", "--rejects", "newsletter.db")
    )
    assert "--rejects newsletter.db is the database itself" in line
    assert "liu@example.com" in cli("subscribers", "list").stdout


def test_a_database_in_a_folder_that_does_not_exist_says_how_to_fix_it(
    cli: Callable, newsletter_dir: Path
) -> None:
    toml = newsletter_dir / "newsletter.toml"
    toml.write_text(toml.read_text().replace(
        "[newsletter]\n", '[newsletter]\ndatabase = "gone/newsletter.db"\n'
    ))
    line = one_error_line(cli("subscribers", "count"))
    assert "cannot open the database" in line and "check that its folder exists" in line


# --- a damaged or password-protected ZIP --------------------------------------------------


def _mailchimp_zip(path: Path, compression: int) -> bytes:
    import zipfile

    rows = "Email Address,First Name\n" + "".join(
        f"reader{n}@example.com,Reader {n}\n" for n in range(2000)
    )
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("subscribed_members_export.csv", rows)
    return path.read_bytes()


def test_a_zip_damaged_inside_its_compressed_data_is_one_error_line(
    cli: Callable, newsletter_dir: Path
) -> None:
    import zipfile

    export = newsletter_dir / "members_export.zip"
    data = bytearray(_mailchimp_zip(export, zipfile.ZIP_DEFLATED))
    data[200] ^= 0xFF  # inside the deflated data: zlib fails mid-read
    export.write_bytes(bytes(data))
    line = one_error_line(cli("subscribers", "import", "members_export.zip"))
    assert "members_export.zip:subscribed_members_export.csv is damaged" in line
    assert "download the export again" in line


def test_a_zip_whose_checksum_fails_at_the_end_is_one_error_line(
    cli: Callable, newsletter_dir: Path
) -> None:
    import zipfile

    export = newsletter_dir / "members_export.zip"
    data = bytearray(_mailchimp_zip(export, zipfile.ZIP_STORED))
    at = data.index(b"reader1500@")
    data[at] = ord("R")  # still text: only the CRC check at the end notices
    export.write_bytes(bytes(data))
    line = one_error_line(cli("subscribers", "import", "members_export.zip"))
    assert "is damaged" in line and "CRC" in line
    assert '"total": 0' in cli("subscribers", "count", "--json").stdout


def test_a_password_protected_zip_is_one_error_line(cli: Callable, newsletter_dir: Path) -> None:
    import zipfile

    export = newsletter_dir / "members_export.zip"
    data = bytearray(_mailchimp_zip(export, zipfile.ZIP_STORED))
    data[6] |= 1  # the "encrypted" flag, in the local and the central header
    data[data.index(b"PK\x01\x02") + 8] |= 1
    export.write_bytes(bytes(data))
    line = one_error_line(cli("subscribers", "import", "members_export.zip"))
    assert "it is password-protected: unzip it yourself and import the .csv" in line


def test_init_keeps_a_gitignore_in_another_encoding_byte_for_byte(
    cli: Callable, tmp_path: Path
) -> None:
    folder = tmp_path / "blog"
    folder.mkdir()
    mine = "caf\u00e9/\n".encode("latin-1")
    (folder / ".gitignore").write_bytes(mine)
    result = cli("init", str(folder))
    assert result.exit_code == 0, result.stderr
    kept = (folder / ".gitignore").read_bytes()
    assert kept.startswith(mine) and b"newsletter.db" in kept
