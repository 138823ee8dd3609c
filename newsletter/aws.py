"""Amazon SES's credentials, region and request signing (AWS Signature Version 4).

Shared by the SES sending adapter (`delivery/providers/ses.py`) and the SES
suppression-list pull (`feedback/pull/`), so it stands below both. Signatures
are made by botocore's own signer (`SigV4Auth`), the one AWS's SDK uses; the
cost was measured against the hand-written signer it replaced (bench/ses_signing.py).
botocore is imported when the first signer is made, so commands that never
talk to AWS do not pay for loading it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx

from newsletter.errors import ConfigError

if TYPE_CHECKING:
    from newsletter.settings import ProviderSettings

SERVICE = "ses"


@dataclass(frozen=True)
class AWSCredentials:
    """An access key pair and, for temporary credentials, the session token."""

    access_key: str
    secret_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never the secret
        return f"<AWSCredentials {self.access_key[:4]}…>"


def read_credentials(options: ProviderSettings) -> AWSCredentials:
    """The credentials from the environment variables `[provider]` names (AWS's by default).

    ConfigError names the variable that is unset, never a value.
    """
    access_key = options.secret("access_key_env", "AWS_ACCESS_KEY_ID") or ""
    secret_key = options.secret("secret_key_env", "AWS_SECRET_ACCESS_KEY") or ""
    token_env = options.get("session_token_env", "AWS_SESSION_TOKEN")
    return AWSCredentials(access_key, secret_key, os.environ.get(token_env) or None)


def read_region(options: ProviderSettings) -> str:
    """`[provider] region`, else AWS_REGION; ConfigError saying what to set when neither is."""
    value = options.get("region") or os.environ.get("AWS_REGION")
    if not value:
        raise ConfigError(
            'Amazon SES needs a region: set [provider] region = "eu-west-1" (or your SES '
            "region) in newsletter.toml"
        )
    return str(value)


def ses_endpoint(options: ProviderSettings, region: str) -> str:
    """`[provider] endpoint`, else the region's public SES address."""
    explicit = options.get("endpoint")
    if explicit:
        return str(explicit).rstrip("/")
    return f"https://email.{region}.amazonaws.com"


class SigV4Signer:
    """Signs requests for one service and region with one set of credentials."""

    def __init__(self, credentials: AWSCredentials, region: str, service: str = SERVICE):
        from botocore.auth import SigV4Auth
        from botocore.credentials import Credentials

        self._token = credentials.session_token
        self._auth = SigV4Auth(
            Credentials(credentials.access_key, credentials.secret_key, self._token),
            service, region,
        )

    def __repr__(self) -> str:  # the credentials stay out of reprs and tracebacks
        return "<SigV4Signer>"

    def headers(self, method: str, url: str, headers: Mapping[str, str],
                body: bytes) -> dict[str, str]:
        """The headers that sign this request, to add to `headers` (which are all signed).

        `url`'s query must be percent-encoded as AWS's canonical form has it
        (`signed_url` makes one from any URL). Returns `X-Amz-Date`,
        `Authorization` and, with temporary credentials, `X-Amz-Security-Token`.
        """
        from botocore.awsrequest import AWSRequest

        signed_headers = {k.lower(): v for k, v in headers.items()}
        # Named here, botocore does not work the host out of the URL twice a request
        # (a third of its time); the netloc is what httpx sends as Host.
        signed_headers.setdefault("host", urlsplit(url).netloc)
        request = AWSRequest(method=method, url=url, data=body, headers=signed_headers)
        self._auth.add_auth(request)
        signed = {"X-Amz-Date": request.headers["X-Amz-Date"],
                  "Authorization": request.headers["Authorization"]}
        if self._token:
            signed["X-Amz-Security-Token"] = self._token
        return signed

    def sign(self, request: httpx.Request) -> None:
        """The `Transport` hook: sign an httpx request just before it is sent.

        The query goes out in the encoding it is signed in (httpx leaves `/`
        bare where AWS's canonical form has `%2F`). Only `host` is signed besides
        AWS's own headers: httpx adds and may change the others on the way out.
        """
        url = signed_url(request.url)
        request.url = httpx.URL(url)
        host = request.url.netloc.decode()
        request.headers.update(self.headers(request.method, url, {"host": host},
                                            request.content))


def signed_url(url: httpx.URL) -> str:
    """`url` with its query encoded as AWS's canonical request has it.

    httpx and AWS escape different characters (a NextToken's `/`, a space):
    AWS's form is every byte but `A-Z a-z 0-9 - _ . ~` percent-encoded.
    """
    plain = f"{url.scheme}://{url.netloc.decode()}{url.path}"
    if url.query:
        pairs = parse_qsl(url.query.decode(), keep_blank_values=True)
        plain += "?" + urlencode(pairs, quote_via=quote, safe="-_.~")
    return plain
