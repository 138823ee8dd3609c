"""Opening the smtp provider's connection: TLS, the greeting, EHLO, STARTTLS, login.

A mixin of the smtp provider (it needs `host`, `port`, `security`, `timeout`,
`tls_verify`, `username`, `_password`, `pipelining_setting`). Every failure
is a ProviderError naming the server and what to check; a server that
accepts the connection and never greets fails within `timeout`, named as
not an SMTP server.
"""

from __future__ import annotations

import smtplib
import socket
import ssl

from newsletter.delivery.providers.smtp_session import reply_summary, reply_text
from newsletter.errors import ProviderError


class SMTPConnection:
    """The connection half of the smtp provider."""

    host: str
    port: int
    security: str
    timeout: float
    tls_verify: bool
    username: str | None
    _password: str | None
    pipelining_setting: object
    pipelining: bool
    conn: smtplib.SMTP | None
    _features: set[str]

    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> None:
        conn: smtplib.SMTP | None = None
        try:
            if self.security == "tls":
                conn = smtplib.SMTP_SSL(timeout=self.timeout, context=self._tls_context())
                self._greeted(conn)
            else:
                conn = smtplib.SMTP(timeout=self.timeout)
                self._greeted(conn)
            conn.ehlo()
            if self.security == "starttls":
                if not conn.has_extn("starttls"):
                    raise ProviderError(
                        f"the SMTP server {self._where()} does not offer STARTTLS: use "
                        'security = "tls" (port 465), or "none" only for a server on this machine'
                    )
                conn.starttls(context=self._tls_context())
                conn.ehlo()
            if self.username:
                conn.login(self.username, self._password or "")
        except ProviderError:
            _quietly_close(conn)
            raise
        except smtplib.SMTPAuthenticationError as exc:
            _quietly_close(conn)
            raise ProviderError(
                f"the SMTP server {self._where()} refused the login for {self.username} "
                f"({reply_summary(exc.smtp_code, exc.smtp_error)}): check [provider] username and "
                "the password in the variable named by password_env"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            _quietly_close(conn)
            reason = reply_text(str(exc)) or type(exc).__name__
            raise ProviderError(
                f"cannot connect to the SMTP server {self._where()} ({reason}): check that it "
                "is running and [provider] host, port and security; unsent messages stay queued"
            ) from None
        self.conn = conn
        self._features = {name.lower() for name in (conn.esmtp_features or {})}
        if self.pipelining_setting == "auto":
            self.pipelining = "pipelining" in self._features
        else:
            self.pipelining = bool(self.pipelining_setting)

    def _greeted(self, conn: smtplib.SMTP) -> None:
        """Connect and read the greeting; a server that stays silent is named for what it is."""
        conn._host = self.host  # type: ignore[attr-defined]  # smtplib keeps it for STARTTLS
        try:
            code, reply = conn.connect(self.host, self.port)
        except smtplib.SMTPServerDisconnected as exc:
            # smtplib reports a silent peer as a disconnect; the cause says which it was.
            if not isinstance(exc.__context__, socket.timeout | TimeoutError):
                raise
            raise ProviderError(
                f"{self._where()} accepted the connection but sent nothing in "
                f"{self.timeout:g} s: it is not an SMTP server (or not a working one); check "
                "[provider] host, port and security; unsent messages stay queued"
            ) from None
        if code != 220:
            raise ProviderError(
                f"{self._where()} did not greet like an SMTP server "
                f"({reply_summary(code, reply)}): "
                "check [provider] host, port and security; unsent messages stay queued"
            )

    def _drop(self) -> None:
        _quietly_close(self.conn)
        self.conn = None


def _quietly_close(conn: smtplib.SMTP | None) -> None:
    if conn is None:
        return
    try:
        conn.close()
    except OSError:
        pass
