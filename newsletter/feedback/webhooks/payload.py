"""Reading what a verified webhook says: its JSON, ids, times and readers."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any


class BadPayload(Exception):
    """Signed correctly but not the JSON the provider documents (answered 400)."""


def load_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadPayload(f"the body is not JSON: {exc}") from None


def text_or_none(value: Any) -> str | None:
    """An id field of a provider's event as text; None when missing, empty or not text."""
    if isinstance(value, str) and value.strip():
        return value.strip()[:500]
    return None


def iso_from_unix(value: Any) -> str | None:
    """A unix time as ISO 8601 UTC (None when missing or not a number)."""
    try:
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def iso(value: Any) -> str | None:
    """A provider's ISO 8601 time normalized to UTC `…Z` (None when it is not one)."""
    if not isinstance(value, str) or not value:
        return None
    # Postmark writes seven fractional digits (and may give an offset): keep microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip().replace("Z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def recipients_ids(prefix: str, event_id: str, emails: list[str]) -> list[tuple[str, str]]:
    """(email, external_id) pairs: one event naming several readers gives each its own id."""
    if len(emails) == 1:
        return [(emails[0], f"{prefix}:{event_id}")]
    return [(email, f"{prefix}:{event_id}:{email.lower()}") for email in emails]


def moment(value: Any) -> datetime | None:
    """When a provider says an open or click happened: a unix time or ISO 8601 (None if neither)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (ValueError, OverflowError, OSError):
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except ValueError:
        pass
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip().replace("Z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def agent_of(value: Any) -> str | None:
    """A reported user agent, kept only to classify (never stored); None when not reported."""
    return value[:500] if isinstance(value, str) else None
