"""What an Issue and every Message made from it share: images, the mailto, the template.

Below both `issue.py` (which embeds images and shows the mailto address in
the layout) and `message.py` (which fills the template per reader), so the
arrow between those two runs one way: message → issue → parts.

`MessageTemplate` is the issue's subject, HTML and text as every reader gets
them, with numbered holes where each reader's values go; a Message carries
it next to that reader's values (`Message.reader_values`), as django-anymail
carries `merge_data`, so an API that shares one body between readers builds
its substitutions from them instead of taking a rendered message apart.
"""

from __future__ import annotations

import html as html_lib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from newsletter.settings import Settings


@dataclass(frozen=True)
class InlineImage:
    cid: str
    filename: str
    content_type: str  # e.g. "image/png"
    data: bytes


def unsubscribe_mailto(settings: Settings) -> str | None:
    """settings.unsubscribe_mailto as a `mailto:` URL (a bare address gets a subject)."""
    value = settings.unsubscribe_mailto
    if not value:
        return None
    if value.lower().startswith("mailto:"):
        return value
    return f"mailto:{value}?subject=unsubscribe"


def escape_html(value: str) -> str:
    """A reader's value as the HTML part holds it: escaped the way the layout escapes."""
    return html_lib.escape(value, quote=True)


class Pieces:
    """Static pieces with numbered holes between them: pieces[0] hole pieces[1] … pieces[-1].

    The pieces are text (str) or already-encoded bytes; `fill` joins them with
    one value per hole, `values[n]` going wherever hole number n is.
    """

    def __init__(self, pieces: Sequence[Any], holes: Sequence[int]):
        self.pieces: tuple[Any, ...] = tuple(pieces)
        self.holes: tuple[int, ...] = tuple(holes)
        self.parts: list[Any] = [pieces[0]]
        self.positions: list[tuple[int, int]] = []  # (index in parts, value number)
        for hole, piece in zip(holes, pieces[1:], strict=True):
            self.positions.append((len(self.parts), hole))
            self.parts.append(None)
            self.parts.append(piece)
        self.joiner: Any = "" if isinstance(pieces[0], str) else b""

    def fill(self, values: Sequence[Any]) -> Any:
        if not self.positions:
            return self.parts[0]
        parts = self.parts.copy()
        for at, hole in self.positions:
            parts[at] = values[hole]
        return self.joiner.join(parts)


@dataclass(frozen=True, eq=False)  # compared by identity: one per issue, a cheap group key
class MessageTemplate:
    """An issue's fields shared by all its readers, with holes for each reader's values.

    `variables[n]` names the value that goes in hole number n (e.g. "name_0",
    "city_2", "unsubscribe_url_1"; one per distinct reader slot of the
    layout, default and case filters included). In `html` a value goes in
    HTML-escaped (`escape_html`), in `text` as it is. The subject has no holes.
    """

    subject: str
    html: Pieces
    text: Pieces
    variables: tuple[str, ...]

    def render(self, values: Mapping[str, str]) -> tuple[str, str]:
        """(html, text) for a reader with these values: what personalize() put in their message."""
        plain = [values.get(name, "") for name in self.variables]
        return self.html.fill([escape_html(v) for v in plain]), self.text.fill(plain)
