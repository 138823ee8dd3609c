"""A send makes its web page and images live before the first message leaves (or refuses).

The real CLI, a real aiosmtpd whose handler looks at the site folder the moment the first
message arrives, and a plain `python -m http.server` as the static host.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from newsletter.delivery.schedule import schedule_send
from newsletter.settings import load_settings
from tests.delivery.smtpserver import SMTPServer, _Handler
from tests.e2e import letter
from tests.web.conftest import free_port

BASE_URL = "https://news.example.com"


class _LooksAtTheSite(_Handler):
    """Records which files the site folder holds when the first message's DATA arrives."""

    def __init__(self, server: SMTPServer, site: Path):
        super().__init__(server)
        self.site = site
        self.seen: list[str] | None = None

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        if self.seen is None:
            self.seen = sorted(str(p.relative_to(self.site)) for p in self.site.rglob("*")
                               if p.is_file()) if self.site.is_dir() else []
        return await super().handle_DATA(smtp, session, envelope)


def watching(root: Path) -> tuple[SMTPServer, _LooksAtTheSite]:
    server = SMTPServer()
    handler = _LooksAtTheSite(server, root / "site")
    server.controller.handler = handler
    return server, handler


def page_image(files: list[str]) -> list[str]:
    return [f for f in files if f.startswith("first/red.") and f.endswith(".png")]


def test_a_first_issue_is_online_before_its_first_message_arrives(tmp_path: Path) -> None:
    root = tmp_path / "letter"
    server, handler = watching(root)
    with server:
        letter.make_letter(root, BASE_URL, server.port)
        assert not (root / "site").exists()  # never published: a writer's first issue
        result = letter.cli(root, "send", "first", "--to", "subscribers", "--yes")
        assert result.returncode == 0, result.stderr
    assert len(server.received) == len(letter.READERS)
    seen = handler.seen
    assert seen is not None
    assert "first/index.html" in seen  # "View online"
    assert "images/red.png" in seen  # the image at the path the email links
    assert page_image(seen)  # and the web page's own copy of it
    assert "index.html" in seen and "feed.xml" in seen  # listed: home and feeds have it
    assert "/first/" in (root / "site" / "index.html").read_text()
    assert "noindex" not in (root / "site" / "first" / "index.html").read_text()


def test_a_test_send_publishes_its_page_unlisted(tmp_path: Path) -> None:
    root = tmp_path / "letter"
    site = root / "site"
    server, handler = watching(root)
    with server:
        letter.make_letter(root, BASE_URL, server.port)
        result = letter.cli(root, "send", "first", "--to", "me@example.org")
        assert result.returncode == 0, result.stderr
        assert handler.seen is not None
        assert "first/index.html" in handler.seen and "images/red.png" in handler.seen
        page = (site / "first" / "index.html").read_text()
        assert '<meta name="robots" content="noindex">' in page
        # In no index, feed or sitemap: those are not written at all for a test send.
        assert not any((site / name).exists()
                       for name in ("index.html", "feed.xml", "sitemap.xml"))
        html = server.received[0].parsed().get_body(("html",)).get_content()
        assert f"{BASE_URL}/first/" in html  # its "View online" is the page just written
        # A later publish keeps the unlisted page (mailed test messages link to it) and
        # lists nothing that was not sent.
        assert letter.cli(root, "publish").returncode == 0
        assert (site / "first" / "index.html").is_file()
        assert "/first/" not in (site / "index.html").read_text()
        assert "/first/" not in (site / "sitemap.xml").read_text()
        # Then the list send lists it: its page is no longer noindex, the home page has it.
        sent = letter.cli(root, "send", "first", "--to", "subscribers", "--yes")
        assert sent.returncode == 0, sent.stderr
    assert "noindex" not in (site / "first" / "index.html").read_text()
    assert "/first/" in (site / "index.html").read_text()


def test_a_site_that_cannot_be_published_stops_the_send_before_any_message(
        tmp_path: Path) -> None:
    with SMTPServer() as server:
        root = letter.make_letter(tmp_path / "letter", BASE_URL, server.port)
        (root / "drafts" / "other.md").write_text(
            "---\ntitle: Other\npublish: true\n---\n![gone](images/gone.png)\n")
        result = letter.cli(root, "send", "first", "--to", "subscribers", "--yes")
        assert result.returncode != 0
        assert server.received == []
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: nothing was sent: publishing the issue's page before the "
                           "send failed: ")
    assert "gone.png" in line and "--no-web-check" in line
    assert json.loads(letter.cli(root, "campaigns", "--json").stdout) == []


def test_a_dry_run_publishes_nothing(tmp_path: Path) -> None:
    root = letter.make_letter(tmp_path / "letter", BASE_URL, free_port())
    result = letter.cli(root, "send", "first", "--to", "subscribers", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert not (root / "site").exists()


def test_a_scheduled_send_is_online_before_its_first_message(tmp_path: Path) -> None:
    root = tmp_path / "letter"
    server, handler = watching(root)
    with server:
        letter.make_letter(root, BASE_URL, server.port)
        settings = load_settings(root)
        when = datetime.now(UTC) + timedelta(seconds=1)
        schedule_send(settings, "first", "subscribers", when)
        time.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds()) + 0.2)
        run = letter.cli(root, "run")
        assert len(server.received) == len(letter.READERS), run.stdout + run.stderr
    assert handler.seen is not None
    assert "first/index.html" in handler.seen and "images/red.png" in handler.seen


def test_a_send_refuses_while_an_image_is_missing_on_the_static_host(tmp_path: Path) -> None:
    port, server_port = free_port(), free_port()
    base_url = f"http://127.0.0.1:{port}"
    root = tmp_path / "letter"
    server, handler = watching(root)
    with server:
        letter.make_letter(root, base_url, server.port,
                           server=f'url = "http://127.0.0.1:{server_port}"')
        draft = root / "drafts" / "first.md"
        draft.write_text(draft.read_text().replace("title:", "publish: true\ntitle:"))
        with letter.static_host(root / "site", port):
            assert letter.cli(root, "publish").returncode == 0
            (root / "site" / "images" / "red.png").unlink()  # the upload missed it
            refused = letter.cli(root, "send", "first", "--to", "subscribers", "--yes")
            assert refused.returncode != 0
            assert server.received == []
            lines = refused.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), refused.stderr
            assert f"{base_url}/images/red.png (404)" in lines[0]
            assert f"{base_url}/first/" not in lines[0]  # the page itself answers
            assert "--no-web-check" in lines[0] and "newsletter publish" in lines[0]
            # Nothing was recorded: the same command sends once the image is uploaded.
            assert json.loads(letter.cli(root, "campaigns", "--json").stdout) == []
            assert letter.cli(root, "publish").returncode == 0
            sent = letter.cli(root, "send", "first", "--to", "subscribers", "--yes")
            assert sent.returncode == 0, sent.stderr
    assert len(server.received) == len(letter.READERS)


def test_an_issue_sent_to_part_of_the_list_stays_out_of_the_archive_unless_it_says_publish(
        tmp_path: Path) -> None:
    root = tmp_path / "letter"
    site = root / "site"
    with SMTPServer() as server:
        letter.make_letter(root, BASE_URL, server.port)
        assert letter.cli(root, "subscribers", "add", "ann@example.org", "--tag",
                          "paid").returncode == 0
        (root / "drafts" / "second.md").write_text(
            "---\ntitle: For everyone after all\npublish: true\n---\nHello.\n")
        paid = letter.cli(root, "send", "first", "--to", "tag:paid", "--yes")
        assert paid.returncode == 0, paid.stderr
        # Its readers' "View online" works: the page is there, unlisted.
        assert '<meta name="robots" content="noindex">' in (
            site / "first" / "index.html").read_text()
        assert letter.cli(root, "publish").returncode == 0
        listed = (site / "index.html").read_text() + (site / "feed.xml").read_text() + (
            site / "sitemap.xml").read_text()
        assert "/first/" not in listed
        assert (site / "first" / "index.html").is_file()  # kept: mailed links point to it
        # A draft that says publish: true is in the archive whoever it was sent to.
        sent = letter.cli(root, "send", "second", "--to", "tag:paid", "--yes")
        assert sent.returncode == 0, sent.stderr
        assert "/second/" in (site / "index.html").read_text()
        assert "noindex" not in (site / "second" / "index.html").read_text()
        # Sent to the whole list later (the paid readers again, as --resend says), the
        # first joins the archive too.
        assert letter.cli(root, "send", "first", "--to", "subscribers", "--yes",
                          "--resend").returncode == 0
    assert "/first/" in (site / "index.html").read_text()
