"""The provider webhooks as the real `newsletter serve` answers them (not a test app)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.web.conftest import start_site, stop_site

HOOKS = """
[webhooks]
postmark_user_env = "TEST_PM_HOOK_USER"
postmark_password_env = "TEST_PM_HOOK_PASSWORD"
"""
USER, PASSWORD = "postmark-hook", "pm-hook-" + "q" * 30


def bounce(email: str, ident: int) -> bytes:
    return json.dumps({"RecordType": "Bounce", "ID": ident, "Type": "HardBounce", "TypeCode": 1,
                       "Email": email, "BouncedAt": "2026-12-01T10:00:00Z",
                       "Description": "unknown user"}).encode()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def test_serve_applies_a_signed_postmark_bounce_and_refuses_a_forged_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("TEST_PM_HOOK_USER", USER)
    monkeypatch.setenv("TEST_PM_HOOK_PASSWORD", PASSWORD)
    site = start_site(tmp_path, HOOKS)
    try:
        assert site.cli("subscribers", "add", "gone@example.com").returncode == 0
        with site.client() as client:
            forged = client.post("/webhooks/postmark", content=bounce("gone@example.com", 1),
                                 headers=basic(USER, "guessed-" + "x" * 30))
            unsigned = client.post("/webhooks/postmark", content=bounce("gone@example.com", 2),
                                   headers={"Content-Type": "application/json"})
            assert (forged.status_code, unsigned.status_code) == (401, 401)
            assert site.reader("gone@example.com").status == "active"
            signed = client.post("/webhooks/postmark", content=bounce("gone@example.com", 3),
                                 headers=basic(USER, PASSWORD))
            assert signed.status_code == 200, signed.text
            assert site.reader("gone@example.com").status == "bounced"
            again = client.post("/webhooks/postmark", content=bounce("gone@example.com", 3),
                                headers=basic(USER, PASSWORD))
            assert again.status_code == 200  # a retried delivery is acknowledged, applied once
        shown = site.cli("subscribers", "show", "gone@example.com")
        assert "webhook:postmark" in shown.stdout
        assert PASSWORD not in site.log.read_text()
    finally:
        stop_site(site)
