"""A complete third-party provider: each message becomes one line of JSON in a file.

Settings (newsletter.toml):

    [provider]
    name = "jsonl"
    path = "sent.jsonl"      # relative to the newsletter folder
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from newsletter.delivery.providers.base import DeliveryResult, Outcome, Provider
from newsletter.errors import ProviderError


class JsonlProvider(Provider):
    """Append each message to a JSON Lines file (an example plug-in)."""

    name = "jsonl"
    description = "Appends each message to a JSON Lines file (example plug-in)"
    max_batch = 100
    remote = False  # nothing leaves the machine

    def open(self) -> None:
        path = Path(self.provider_settings.get("path", "sent.jsonl"))
        self.path = path if path.is_absolute() else self.settings.root / path
        try:
            self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise ProviderError(f"cannot open {self.path}: {exc.strerror}") from None

    def send(self, messages: Sequence) -> list[DeliveryResult]:
        results = []
        for message in messages:
            line = {"key": message.key, "to": message.to_header, "subject": message.subject,
                    "headers": dict(message.headers), "text": message.text}
            self.file.write(json.dumps(line) + "\n")
            results.append(DeliveryResult(message.key, Outcome.SENT, provider_id=message.key))
        self.file.flush()
        return results

    def close(self) -> None:
        if getattr(self, "file", None) is not None:
            self.file.close()
            self.file = None
