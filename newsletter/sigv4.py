"""AWS Signature Version 4, by the book: the headers that sign one request.

Written from AWS's description and checked against botocore's signer in the
tests. Used by the SES provider and by anything else that talks to AWS
(the SES suppression-list pull).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote, urlsplit


def sigv4_headers(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    service: str = "ses",
    session_token: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """The headers that sign a request with AWS Signature Version 4.

    `headers` are the request's own headers (all are signed, with `host`);
    returns `X-Amz-Date`, `Authorization` and, with temporary credentials,
    `X-Amz-Security-Token`, to add to them.
    """
    now = now or dt.datetime.now(dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    parts = urlsplit(url)
    signed: dict[str, str] = {k.lower(): v for k, v in headers.items()}
    signed.setdefault("host", parts.netloc)
    signed["x-amz-date"] = amz_date
    if session_token:
        signed["x-amz-security-token"] = session_token
    for name in ("user-agent", "expect", "x-amzn-trace-id", "authorization"):
        signed.pop(name, None)  # not signed, as AWS's own SDK leaves them out
    names = sorted(signed)
    canonical_headers = "".join(f"{n}:{' '.join(signed[n].split())}\n" for n in names)
    signed_headers = ";".join(names)
    query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in sorted(
            (pair.split("=", 1) + [""])[:2] for pair in parts.query.split("&") if pair
        )
    )
    canonical_request = "\n".join([
        method.upper(),
        quote(parts.path or "/", safe="/-_.~"),
        query,
        canonical_headers,
        signed_headers,
        hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{day}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope,
        hashlib.sha256(canonical_request.encode()).hexdigest(),
    ])
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    result = {
        "X-Amz-Date": amz_date,
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature}"
        ),
    }
    if session_token:
        result["X-Amz-Security-Token"] = session_token
    return result
