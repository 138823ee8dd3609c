"""The emails `serve` sends a reader itself: the sign-up confirmation and a fresh manage link.

They leave through delivery/outgoing.py's durable queue: a request only writes a row, and
the workers `lifespan` starts with the server send it, so no request waits on the provider.
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


def manage_url(settings: Settings, public_base: str, reader: Subscriber) -> str:
    """The reader's lasting /manage link (the same one every issue's footer carries)."""
    maker = tokens.TokenMaker(settings.secret_key(), settings.base_url)
    return tokens.manage_url(public_base, maker.make(reader.key, tokens.Kind.MANAGE))


def send_confirmation(settings: Settings, reader: Subscriber, url: str) -> None:
    """Queue the confirmation email (layouts/confirm.html + .txt) carrying `url`, once.

    Returns at once: the server's workers (or `newsletter run`) send it, and retry it
    while the provider is down; the `outgoing` row records what happened.
    """
    _queue(settings, outgoing.CONFIRM, reader, url)


def send_manage_link(settings: Settings, reader: Subscriber, url: str) -> None:
    """Queue the email with `reader`'s manage link (layouts/manage_link.html + .txt)."""
    _queue(settings, outgoing.MANAGE, reader, url)


def _queue(settings: Settings, kind: str, reader: Subscriber, url: str) -> None:
    db = store.connect(settings.database)
    try:
        outgoing.enqueue(db, kind, reader, url)
    finally:
        db.conn.close()


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """While the server runs, its outgoing workers send queued emails (a row left over
    from before a restart too)."""
    workers = outgoing.Workers(app.state.web.settings).start()
    try:
        yield
    finally:
        workers.stop()
