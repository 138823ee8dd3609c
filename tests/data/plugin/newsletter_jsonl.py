import json
from pathlib import Path

from newsletter.delivery.providers.base import DeliveryResult, Option, Outcome, Provider
from newsletter.errors import ProviderError


class JsonlProvider(Provider):
    """Append each message to a JSON Lines file (an example plug-in)."""

    name = "jsonl"
    description = "Appends each message to a JSON Lines file (example plug-in)"
    max_batch = 100   # the most messages one send() call gets
    remote = False    # nothing leaves the machine
    # The [provider] keys it reads: settings check them when they load, as for built-ins.
    options = {
        "path": Option(str, "sent.jsonl", "the file, under the newsletter folder unless absolute"),
    }

    def open(self):
        path = Path(self.provider_settings.get("path", "sent.jsonl"))
        self.path = path if path.is_absolute() else self.settings.root / path
        try:
            self.file = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise ProviderError(f"cannot open {self.path}: {exc.strerror}") from None

    def send(self, messages):
        results = []
        for message in messages:
            line = {"key": message.key, "to": message.to_header, "subject": message.subject,
                    "headers": dict(message.headers), "text": message.text}
            self.file.write(json.dumps(line) + "\n")
            results.append(DeliveryResult(message.key, Outcome.SENT, provider_id=message.key))
        self.file.flush()
        return results

    def close(self):
        if getattr(self, "file", None) is not None:
            self.file.close()
            self.file = None
