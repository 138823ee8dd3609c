"""The `outbox` provider: each message becomes an .eml file under outbox/<campaign>/.

It is the default when nothing is configured, so `newsletter send` works on a
fresh machine. Files are written atomically (temporary file + rename) and named
by the message key, so sending the same message twice overwrites the same
file: the outbox is idempotent and a resumed send never leaves duplicates.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from newsletter.delivery.providers.base import (
    CredentialsAnswer,
    DeliveryResult,
    Outcome,
    Provider,
)
from newsletter.errors import ProviderError
from newsletter.settings import Option

if TYPE_CHECKING:
    from newsletter.compose.message import Message
    from newsletter.settings import ProviderSettings, Settings

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")


def safe_name(text: str, limit: int = 80) -> str:
    """A file-name-safe version of `text` (no slashes, no leading dots)."""
    return (_UNSAFE.sub("_", text).lstrip(".") or "_")[:limit]


def outbox_folder(settings: Settings, provider_settings: ProviderSettings) -> Path:
    """The folder the outbox writes each campaign's folder in: `[provider] directory`
    (relative to the newsletter), else outbox/."""
    base = Path(provider_settings.get("directory") or settings.outbox_dir)
    return base if base.is_absolute() else settings.root / base


class OutboxProvider(Provider):
    """Write each message as an .eml file under outbox/<campaign>/ (no network)."""

    name = "outbox"
    options: ClassVar[Mapping[str, Option]] = {
        "directory": Option(str, "outbox", "the folder the .eml files go to, under the "
                            "newsletter's unless absolute"),
    }
    description = "Writes each message as an .eml file under outbox/<campaign>/ (nothing is sent)"
    max_batch = 100
    idempotent = True  # the file name comes from the message key: a re-send overwrites it
    remote = False

    def open(self) -> None:
        # The campaign engine sets `campaign` to a folder-safe label ("3-hello-world").
        base = outbox_folder(self.settings, self.provider_settings)
        self.directory = base / safe_name(str(self.provider_settings.get("campaign", "unsorted")))
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProviderError(
                f"cannot create the outbox folder {self.directory}: {exc.strerror}; "
                "check its permissions or set [provider] directory"
            ) from None

    def check_credentials(self) -> CredentialsAnswer:
        """Nothing to log in to: always works (and creates no folder)."""
        folder = outbox_folder(self.settings, self.provider_settings)
        return CredentialsAnswer(f"outbox needs no credentials (messages become .eml files "
                                 f"under {folder}; nothing is sent)")

    def path_for(self, message: Message) -> Path:
        """Where `message` is (or will be) written."""
        return self.directory / f"{safe_name(message.key, 20)}-{safe_name(message.recipient)}.eml"

    def send(self, messages: Sequence[Message]) -> list[DeliveryResult]:
        results = []
        for message in messages:
            path = self.path_for(message)
            tmp = path.with_name(path.name + ".tmp")
            try:
                with open(tmp, "wb") as f:
                    f.write(message.as_bytes())
                os.replace(tmp, path)  # atomic: a reader never sees half a message
            except OSError as exc:
                # A full disk leaves no half-written file behind, under any name.
                tmp.unlink(missing_ok=True)
                raise ProviderError(
                    f"cannot write {path}: {exc.strerror}; free some disk space or fix "
                    "the outbox folder's permissions"
                ) from None
            results.append(DeliveryResult(message.key, Outcome.SENT, provider_id=path.name))
        return results
