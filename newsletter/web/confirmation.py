"""The confirmation email a sign-up on the form is sent: its link, and its queueing.

The email leaves through delivery/outgoing.py's durable queue: a request only writes a
row, and the workers `lifespan` starts with the server send it, so no request waits on
the provider.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from newsletter import paths, store
from newsletter.audience.subscribers import Subscriber
from newsletter.compose import tokens
from newsletter.delivery import outgoing
from newsletter.settings import Settings


def confirm_url(settings: Settings, public_base: str, reader: Subscriber) -> str:
    """The link that confirms `reader`'s sign-up, valid for a week."""
    token = tokens.make_token(settings, tokens.CONFIRM, reader.id, reader.key)
    return f"{public_base.rstrip('/')}{paths.CONFIRM}?token={token}"


def send_confirmation(settings: Settings, reader: Subscriber, url: str) -> None:
    """Queue the confirmation email (layouts/confirm.html + .txt) carrying `url`, once.

    Returns at once: the server's workers (or `newsletter run`) send it, and retry it
    while the provider is down; the `outgoing` row records what happened.
    """
    db = store.connect(settings.database)
    try:
        outgoing.enqueue(db, outgoing.CONFIRM, reader, url)
    finally:
        db.conn.close()


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """While the server runs, its outgoing workers send queued confirmation emails (a row
    left over from before a restart too)."""
    workers = outgoing.Workers(app.state.web.settings).start()
    try:
        yield
    finally:
        workers.stop()
