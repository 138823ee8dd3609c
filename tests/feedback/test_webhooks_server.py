"""End to end: a real uvicorn server mounting handle() at POST /webhooks/{provider}, one signed
event per provider posted with httpx, and one forged one refused over the wire.

(A stand-in app: `newsletter serve` mounts the same function at merge.)
"""

from __future__ import annotations

import json
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from newsletter import store
from newsletter.audience.subscribers import add_subscriber
from newsletter.feedback.webhooks import WebhookRequest, handle
from newsletter.settings import Settings, settings_from_dict
from tests.conftest import DEFAULT_TOML

from . import webhook_signers as sign

READER = "reader@example.com"


def make_app(settings: Settings, db_path: Path) -> Starlette:
    def apply(request: WebhookRequest) -> tuple[int, str]:
        db = store.connect(db_path)  # one connection per request thread, as SQLite wants
        try:
            response = handle(request, settings, db)
        finally:
            db.conn.close()
        return response.status, response.text

    async def webhook(request: Request) -> PlainTextResponse:
        hook = WebhookRequest(
            provider=request.path_params["provider"], url=str(request.url),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(), client_ip=request.client.host if request.client else None,
        )
        status, text = await run_in_threadpool(apply, hook)
        return PlainTextResponse(text, status_code=status)

    return Starlette(routes=[Route("/webhooks/{provider}", webhook, methods=["POST"])])


@pytest.fixture(scope="module")
def sns_host() -> Iterator[sign.SnsHost]:
    host = sign.SnsHost()
    yield host
    host.close()


@pytest.fixture
def server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sns_host: sign.SnsHost
) -> Iterator[tuple[str, Path]]:
    for name, value in sign.ENV.items():
        monkeypatch.setenv(name, value)
    data = tomllib.loads(DEFAULT_TOML)
    data["webhooks"] = {**sign.TABLE, "insecure_test_only_sns_host": sns_host.netloc}
    settings = settings_from_dict(tmp_path, data)
    db_path = tmp_path / "newsletter.db"
    db = store.connect(db_path)
    add_subscriber(db, READER)
    db.conn.close()
    config = uvicorn.Config(make_app(settings, db_path), host="127.0.0.1", port=0,
                            log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        assert thread.is_alive(), "uvicorn stopped while starting"
        time.sleep(0.02)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", db_path
    srv.should_exit = True
    thread.join(timeout=10)


def signed_hard_bounce(provider: str, sns_host: sign.SnsHost) -> WebhookRequest:
    now = int(time.time())
    if provider == "postmark":
        return sign.postmark({"RecordType": "Bounce", "ID": 9, "Type": "HardBounce",
                              "Email": READER, "BouncedAt": "2026-12-01T10:00:00Z"})
    if provider == "sendgrid":
        return sign.sendgrid([{"event": "bounce", "type": "bounce", "email": READER,
                               "sg_event_id": "sg9", "timestamp": now}])
    if provider == "mailgun":
        return sign.mailgun({"event": "failed", "severity": "permanent", "id": "mg9",
                             "recipient": READER, "timestamp": now})
    if provider == "resend":
        return sign.resend({"type": "email.bounced", "created_at": "2026-12-01T10:00:00Z",
                            "data": {"to": [READER], "bounce": {"type": "Permanent"}}})
    return sign.ses_request(sns_host.notification(sign.ses_bounce(READER)))


def reader_status(db_path: Path) -> str:
    db = store.connect(db_path)
    try:
        return db.execute("SELECT status FROM subscribers").fetchone()[0]
    finally:
        db.conn.close()


@pytest.mark.parametrize("provider", ["postmark", "sendgrid", "mailgun", "resend", "ses"])
def test_signed_bounce_over_http_stops_the_reader(
    server: tuple[str, Path], sns_host: sign.SnsHost, provider: str
) -> None:
    base, db_path = server
    good = signed_hard_bounce(provider, sns_host)
    # A forged copy first: refused, nothing changes.
    forged_body, forged_headers = good.body, dict(good.headers)
    if provider == "postmark":
        forged_headers["authorization"] = "Basic Zm9vOmJhcg=="  # foo:bar
    elif provider == "mailgun":  # Mailgun signs timestamp + token only, not the body
        sig = json.loads(good.body)["signature"]["signature"]
        forged_body = good.body.replace(sig.encode(), (sig[:-1] + "0" if sig[-1] != "0"
                                                       else sig[:-1] + "1").encode())
    else:  # the address swapped in the signed body
        forged_body = good.body.replace(b"reader@", b"xreader@")
    forged = httpx.post(f"{base}/webhooks/{provider}", content=forged_body,
                        headers=forged_headers, timeout=10)
    assert forged.status_code in (401, 403)
    assert forged.text == "refused\n"
    assert reader_status(db_path) == "active"

    answer = httpx.post(f"{base}/webhooks/{provider}", content=good.body,
                        headers=dict(good.headers), timeout=10)
    assert answer.status_code == 200, answer.text
    assert reader_status(db_path) == "bounced"
    db = store.connect(db_path)
    source = db.execute("SELECT source FROM events WHERE kind = 'hard_bounce'").fetchone()[0]
    db.conn.close()
    assert source == f"webhook:{provider}"


def test_one_mailgun_request_posted_at_once_from_many_clients_counts_once(
    server: tuple[str, Path],
) -> None:
    base, db_path = server
    request = sign.mailgun({"event": "failed", "severity": "temporary", "id": "mgx",
                            "recipient": READER, "timestamp": time.time()})
    answers: list[int] = []
    lock = threading.Lock()

    def post() -> None:
        status = httpx.post(f"{base}/webhooks/mailgun", content=request.body, timeout=30
                            ).status_code
        with lock:
            answers.append(status)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(answers) == [200] + [403] * 5  # the token is accepted once, then a replay
    db = store.connect(db_path)
    soft = db.execute("SELECT count(*) FROM events WHERE kind = 'soft_bounce'").fetchone()[0]
    db.conn.close()
    assert soft == 1
