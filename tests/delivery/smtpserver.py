"""A real SMTP server (aiosmtpd) on 127.0.0.1 that records what it receives and misbehaves on cue.

    with SMTPServer() as server:
        server.fail("bob@example.com", "451 4.3.0 try later", times=1)   # transient, once
        server.fail("eve@example.com", "550 5.1.1 no such user")          # permanent
        server.drop_every = 3        # close the connection at every 3rd MAIL FROM
        server.delay = 0.05          # seconds per message, for kill tests
        server.hold_after = 2        # accept 2 messages, then hold the rest until ...
        server.release.set()         # ... the test lets them through
        server.drop_after_data.add("carl@example.com")  # accept, then vanish before replying
        ...
        server.received              # [Received(sender, recipient, data)]
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    sender: str
    recipient: str
    data: bytes
    started: float = 0.0  # time.time() at its MAIL FROM: when the message began

    def parsed(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


class _Handler:
    def __init__(self, server: SMTPServer):
        self.server = server

    async def handle_MAIL(self, smtp: SMTP, session, envelope, address, options):  # noqa: ANN001
        s = self.server
        with s.lock:
            s.mail_count += 1
            drop = bool(s.drop_every) and s.mail_count % s.drop_every == 0
        if drop:
            smtp.transport.close()  # vanish mid-session, as a flaky server does
            return "421 4.4.2 closing"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        envelope.started = time.time()
        return "250 OK"

    async def handle_RCPT(self, smtp, session, envelope, address, options):  # noqa: ANN001
        s = self.server
        with s.lock:
            rule = s.failures.get(address.lower())
            if rule is not None:
                reply, times = rule
                if times is None or times > 0:
                    if times is not None:
                        s.failures[address.lower()] = (reply, times - 1)
                    s.refused.append((address, reply))
                    return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp, session, envelope):  # noqa: ANN001
        s = self.server
        if s.delay:
            await asyncio.sleep(s.delay)
        deadline = time.monotonic() + 60
        while (s.hold_after is not None and len(s.received) >= s.hold_after
               and not s.release.is_set() and time.monotonic() < deadline):
            await asyncio.sleep(0.005)
        with s.lock:
            n = len(s.received)
            for rcpt in envelope.rcpt_tos:
                s.received.append(Received(envelope.mail_from, rcpt, envelope.original_content,
                                           getattr(envelope, "started", 0.0)))
            vanish = any(r.lower() in s.drop_after_data for r in envelope.rcpt_tos)
        if vanish:  # accepted, but the client never hears so
            smtp.transport.close()
        return f"250 2.0.0 Ok: queued as Q{n + 1}"


class SMTPServer:
    """aiosmtpd on 127.0.0.1 in a background thread; see the module docstring."""

    def __init__(
        self, password: str | None = None, tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
    ) -> None:
        self.lock = threading.Lock()
        self.drop_after_data: set[str] = set()
        self.logins: list[str] = []
        self.received: list[Received] = []
        self.refused: list[tuple[str, str]] = []
        self.failures: dict[str, tuple[str, int | None]] = {}
        self.mail_count = 0
        self.drop_every = 0
        self.delay = 0.0
        self.hold_after: int | None = None
        self.release = threading.Event()
        self.port = free_port()
        extra: dict = {}
        if password is not None:

            def check(server, session, envelope, mechanism, data):  # noqa: ANN001, ANN202
                ok = isinstance(data, LoginPassword) and data.password.decode() == password
                if ok:
                    self.logins.append(data.login.decode())
                return AuthResult(success=ok, handled=False)

            extra.update(authenticator=check, auth_require_tls=False)
        if tls_context is not None and implicit_tls:
            extra.update(ssl_context=tls_context)
        elif tls_context is not None:
            extra.update(tls_context=tls_context, require_starttls=True)
        self.controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, decode_data=False,
            data_size_limit=None, **extra,
        )

    def fail(self, address: str, reply: str, times: int | None = None) -> None:
        """Answer RCPT TO for `address` with `reply` (`times` times; None: always)."""
        with self.lock:
            self.failures[address.lower()] = (reply, times)

    def recipients(self) -> list[str]:
        with self.lock:
            return [r.recipient for r in self.received]

    def start(self) -> SMTPServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SMTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
