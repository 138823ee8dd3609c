"""A provider plug-in for tests: it answers UNCERTAIN for a whole batch, or SENT.

What an HTTP API does when the connection drops after the request went out: the
batch may or may not have been accepted. Each call is appended to `log` (one line
per recipient: `answer<TAB>address`), so a test sees across commands what the
provider was handed. A recipient's first attempt is uncertain; later ones are sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from newsletter.compose.message import Message
from newsletter.delivery.providers.base import DeliveryResult, Outcome, Provider


class ShakyProvider(Provider):
    """Uncertain for every message of a batch on its first attempt, sent after."""

    name = "shaky"
    description = "test provider: the first batch for an address is uncertain"
    max_batch = 50
    remote = False

    def open(self) -> None:
        self.log = Path(str(self.provider_settings.get("log")))

    def send(self, messages: Sequence[Message]) -> list[DeliveryResult]:
        seen = self.log.read_text().split() if self.log.exists() else []
        results, lines = [], []
        for m in messages:
            first = m.recipient not in seen
            outcome = Outcome.UNCERTAIN if first else Outcome.SENT
            lines.append(f"{outcome}\t{m.recipient}\n")
            results.append(DeliveryResult(
                m.key, outcome, provider_id=None if first else f"shaky-{m.key}",
                error="connection reset after the request was sent" if first else None))
        with self.log.open("a") as f:
            f.write("".join(lines))
        return results
