"""Every URL in a sent issue answers, in each of the three ways to host (docs/deploy.md).

Each test sends the first issue through the real CLI to a real aiosmtpd, starts the real
servers on 127.0.0.1 (`newsletter serve`; the static host as `python -m http.server` on
the site folder; for the default way Caddy in front of `serve`, run with the Caddyfile
docs/deploy.md prints), and fetches every URL the messages hold (see letter.crawl).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.delivery.smtpserver import SMTPServer
from tests.e2e import letter
from tests.web.conftest import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
CLIENT_IP = "127.0.0.5"  # the reader's own loopback address: Caddy connects from 127.0.0.1


def documented_caddyfile() -> str:
    """The Caddyfile docs/deploy.md prints for `/etc/caddy/Caddyfile`."""
    text = DEPLOY.read_text()
    found = re.search(r"`/etc/caddy/Caddyfile`:\s*\n+```[a-z]*\n(.*?)\n```", text, re.S)
    assert found, "docs/deploy.md prints no Caddyfile for /etc/caddy/Caddyfile"
    return found.group(1) + "\n"


def send_first(root: Path, server: SMTPServer) -> tuple[list, str]:
    """The messages the list send of `first` mailed, and what the send said on stderr."""
    result = letter.cli(root, "send", "first", "--to", "subscribers", "--yes")
    assert result.returncode == 0, result.stderr
    assert sorted(server.recipients()) == sorted(letter.READERS)
    return [r.parsed() for r in server.received], " ".join(result.stderr.split())


def one_click_ips(root: Path) -> list[str]:
    conn = sqlite3.connect(root / "newsletter.db")
    try:
        return [ip for (ip,) in conn.execute(
            "SELECT ip FROM events WHERE kind = 'unsubscribed' ORDER BY id")]
    finally:
        conn.close()


@pytest.mark.skipif(shutil.which("caddy") is None,
                    reason="caddy is not installed (Debian's `caddy` package; .ci/run installs it)")
def test_way_1_serve_at_base_url_behind_the_documented_caddy(tmp_path: Path) -> None:
    caddy_port, serve_port = free_port(), free_port()
    base_url = f"http://127.0.0.1:{caddy_port}"
    with SMTPServer() as smtp:
        root = letter.make_letter(tmp_path / "letter", base_url, smtp.port,
                                  server='trusted_proxies = ["127.0.0.1", "::1"]')
        messages, _ = send_first(root, smtp)
    # The one edit the issue allows: the site address, as a local http:// address.
    caddyfile = documented_caddyfile()
    site_address = caddyfile.split("{", 1)[0].strip()
    assert site_address == "news.example.com", caddyfile
    (tmp_path / "Caddyfile").write_text(caddyfile.replace(site_address, base_url, 1))
    home = tmp_path / "caddy-home"
    caddy_env = {"HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
                 "XDG_CONFIG_HOME": str(home / "config"), "PATH": "/usr/bin:/bin"}
    adapted = subprocess.run(
        ["caddy", "adapt", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True, text=True, env=caddy_env, timeout=30, check=True).stdout
    # Not the Caddyfile's business, but this machine's: other tests run at the same time,
    # so no admin endpoint (its fixed port 2019), and `serve` on a port found free rather
    # than the documented 8080.
    assert '"dial":"127.0.0.1:8080"' in adapted
    config = json.loads(adapted.replace('"dial":"127.0.0.1:8080"',
                                        f'"dial":"127.0.0.1:{serve_port}"'))
    config["admin"] = {"disabled": True}
    (tmp_path / "caddy.json").write_text(json.dumps(config))
    with letter.serve(root, serve_port), letter.process(
            ["caddy", "run", "--config", str(tmp_path / "caddy.json")], tmp_path,
            f"{base_url}/healthz", tmp_path / "caddy.log", caddy_env):
        transport = httpx.HTTPTransport(local_address=CLIENT_IP)
        with httpx.Client(transport=transport, timeout=10) as client:
            answers = letter.crawl(messages, client)
            assert client.get(f"{base_url}/").status_code == 200  # the archive home
    urls = list(answers)
    assert f"{base_url}/first/" in urls  # "View online"
    assert f"{base_url}/images/red.png" in urls  # the image, where the email has it
    assert any("/unsubscribe?token=" in u for u in urls)
    assert any("/manage?token=" in u for u in urls)
    assert sum(u.startswith("POST ") for u in urls) == len(letter.READERS)
    # Both readers left by one-click, and `serve` recorded the reader's address (Caddy's
    # X-Forwarded-For, believed from the trusted proxy), not Caddy's own 127.0.0.1.
    assert one_click_ips(root) == [CLIENT_IP] * len(letter.READERS)


def test_way_2_archive_on_a_static_host_and_serve_at_its_own_url(tmp_path: Path) -> None:
    static_port, serve_port = free_port(), free_port()
    base_url = f"http://127.0.0.1:{static_port}"
    server_url = f"http://127.0.0.1:{serve_port}"
    with SMTPServer() as smtp:
        root = letter.make_letter(tmp_path / "letter", base_url, smtp.port,
                                  server=f'url = "{server_url}"')
        draft = root / "drafts" / "first.md"
        draft.write_text(draft.read_text().replace("title:", "publish: true\ntitle:"))
        with letter.static_host(root / "site", static_port):
            assert letter.cli(root, "publish").returncode == 0  # "uploaded": the host serves it
            messages, _ = send_first(root, smtp)
            with letter.serve(root, serve_port), httpx.Client(timeout=10) as client:
                answers = letter.crawl(messages, client)
                home = client.get(f"{base_url}/")
                assert f'action="{server_url}/subscribe"' in home.text  # the sign-up form
                assert client.get(f"{server_url}/subscribe").status_code == 200
                # serve answers its own routes, and sends the archive's visitors to it
                assert client.get(f"{server_url}/").headers["location"] == f"{base_url}/"
                assert client.get(f"{server_url}/first/").status_code == 404
    reader_links = [u for u in answers if "token=" in u]
    assert reader_links and all(u.removeprefix("POST ").startswith(server_url)
                                for u in reader_links)
    assert f"{base_url}/first/" in answers
    assert f"{base_url}/images/red.png" in answers
    assert len(one_click_ips(root)) == len(letter.READERS)


def test_way_3_no_server_unsubscribe_by_mailto(tmp_path: Path) -> None:
    static_port = free_port()
    base_url = f"http://127.0.0.1:{static_port}"
    with SMTPServer() as smtp:
        root = letter.make_letter(tmp_path / "letter", base_url, smtp.port, server='url = "none"',
                                  newsletter='unsubscribe_mailto = "leave@example.com"')
        draft = root / "drafts" / "first.md"
        draft.write_text(draft.read_text().replace("title:", "publish: true\ntitle:"))
        check = letter.cli(root, "check", "first")
        assert "one-click" in check.stdout + check.stderr
        assert "5,000 messages a day" in check.stdout + check.stderr
        with letter.static_host(root / "site", static_port):
            assert letter.cli(root, "publish").returncode == 0
            messages, said = send_first(root, smtp)
            with httpx.Client(timeout=10) as client:
                answers = letter.crawl(messages, client, mailto="leave@example.com")
    # The send says what readers lose, as check does.
    assert "Warning:" in said and "no one-click" in said and "5,000 messages a day" in said
    for message in messages:
        assert message["List-Unsubscribe-Post"] is None  # no one-click without a server
        assert str(message["List-Unsubscribe"]).startswith("<mailto:leave@example.com")
        assert "/manage" not in message.get_body(("html",)).get_content()
    assert not any("token=" in u for u in answers if u.startswith("http"))
    assert f"{base_url}/first/" in answers
