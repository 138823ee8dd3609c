"""One body for many readers: the issue's template in a provider's tags, each reader's values.

SendGrid (`substitutions`) and Mailgun (`recipient-variables`) take one
subject, HTML and text for a whole request and put each reader's values in
it themselves. A Message carries its issue's template and its reader's
values (`Message.template`, `Message.reader_values`), so `merge_groups()`
groups a batch by template and hands each reader the very values
personalize() filled in: every reader attribute the layout uses batches,
and nothing is taken back out of a rendered message.

In the HTML part a value goes in HTML-escaped, as the layout escaped it:
each variable used there has an escaped twin named `<variable>_html`.

Correctness before batching: a message is sent whole (its own group, its
own fields, no variables) when it has no template, when its template cannot
be written in the provider's syntax (the issue's own text holds the tag
opener, or a hole is followed by text that could complete one), when the
tag opener occurs where its reader's values are (a value holding the
provider's syntax, or meeting the text around it to form a tag: a value
could then pull in another one), or when its values are over the provider's
limit. Tags are `opener + variable + closer`; the opener occurs once in a
tag, at its start, and has no border (no proper prefix that is also a
suffix), so once those cases are out, the provider finds exactly the tags
written, whether it substitutes in one pass or tag after tag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from newsletter.compose.parts import Pieces, escape_html

if TYPE_CHECKING:
    from newsletter.compose.message import Message
    from newsletter.compose.parts import MessageTemplate


@dataclass(frozen=True)
class TagSyntax:
    """How an API writes a per-reader variable in a shared body: opener, name, closer."""

    opener: str  # e.g. "%recipient.": starts every tag, and occurs nowhere else in one
    closer: str = "%"
    prefix: str = ""  # put before our variables' names ("nl_")

    def tag(self, variable: str) -> str:
        return f"{self.opener}{self.prefix}{variable}{self.closer}"


@dataclass
class MergeGroup:
    """Messages of one batch sharing one body, each with the values that make its own."""

    subject: str
    html: str  # the shared fields, with tags where each reader's values go
    text: str
    messages: list[Message] = field(default_factory=list)
    values: list[dict[str, str]] = field(default_factory=list)  # per message: variable → value
    whole: bool = False  # one message sent as it is: no variables at all

    def same_body(self) -> MergeGroup:
        """An empty group with this one's body (to split a group's messages into requests)."""
        return MergeGroup(self.subject, self.html, self.text, whole=self.whole)


def merge_groups(
    messages: Sequence[Message],
    syntax: TagSyntax,
    *,
    fits: Callable[[dict[str, str]], bool] | None = None,
    keep_whole: Callable[[Message], bool] | None = None,
) -> list[MergeGroup]:
    """Group `messages` by template, in order of first appearance; each keeps its values.

    `fits(values)` says whether one reader's values are within the API's limit;
    `keep_whole(message)` marks messages the adapter needs sent as they are.
    """
    groups: list[MergeGroup] = []
    by_template: dict[int, tuple[_Tagged | None, MergeGroup | None]] = {}
    for message in messages:
        template = message.template
        tagged = group = None
        if template is not None:
            if id(template) not in by_template:
                tagged = _Tagged.of(template, syntax)
                by_template[id(template)] = (tagged, None)
            tagged, group = by_template[id(template)]
        values = None
        if tagged is not None and not (keep_whole and keep_whole(message)):
            values = tagged.values(message)
            if values is not None and fits is not None and not fits(values):
                values = None
        if values is None or tagged is None or template is None:
            groups.append(MergeGroup(message.subject, message.html, message.text, [message],
                                     [{}], whole=True))
            continue
        if group is None:
            group = MergeGroup(template.subject, tagged.html, tagged.text)
            by_template[id(template)] = (tagged, group)
            groups.append(group)
        group.messages.append(message)
        group.values.append(values)
    return groups


class _Tagged:
    """One template written in one syntax, and which variables each field uses."""

    def __init__(self, template: MessageTemplate, syntax: TagSyntax):
        names = self.names = template.variables
        self.opener = syntax.opener
        # (value number, variable) for each value a field uses; "_html" for its escaped twin.
        self.text_vars = [(n, names[n]) for n in dict.fromkeys(template.text.holes)]
        self.html_vars = [(n, f"{names[n]}_html") for n in dict.fromkeys(template.html.holes)]
        self.html = _write(template.html, [syntax.tag(f"{n}_html") for n in names])
        self.text = _write(template.text, [syntax.tag(n) for n in names])
        # Each field with the middle of its static pieces left out: an opener that
        # meets a reader's value lies within len(opener) - 1 characters of it.
        edge = len(syntax.opener) - 1
        self.html_probe = _probe(template.html, edge) if self.html_vars else None
        self.text_probe = _probe(template.text, edge) if self.text_vars else None

    @classmethod
    def of(cls, template: MessageTemplate, syntax: TagSyntax) -> _Tagged | None:
        """The template in `syntax`, or None when the syntax cannot express it."""
        if syntax.opener in template.subject:
            return None
        for pieces in (template.html, template.text):
            if any(syntax.opener in piece for piece in pieces.pieces):
                return None
            if not _closers_safe(pieces, syntax):
                return None
        return cls(template, syntax)

    def values(self, message: Message) -> dict[str, str] | None:
        """The message's variables (escaped twins for HTML), or None to send it whole."""
        given: Mapping[str, str] = message.reader_values
        plain = [given.get(name, "") for name in self.names]
        values: dict[str, str] = {}
        if self.text_probe is not None:
            if self.opener in self.text_probe.fill(plain):
                return None
            values = {variable: plain[n] for n, variable in self.text_vars}
        if self.html_probe is not None:
            escaped = [escape_html(value) for value in plain]
            if self.opener in self.html_probe.fill(escaped):
                return None
            values.update({variable: escaped[n] for n, variable in self.html_vars})
        return values


def _write(pieces: Pieces, tags: list[str]) -> str:
    return str(pieces.fill(tags))


def _probe(pieces: Pieces, edge: int) -> Pieces:
    """The pieces cut to their first and last `edge` characters, "\0" between (no opener
    holds it): the filled probe holds an opener exactly where the filled field does."""
    cut = [p if len(p) <= 2 * edge + 1 else f"{p[:edge]}\0{p[len(p) - edge:]}"
           for p in pieces.pieces]
    return Pieces(cut, pieces.holes)


def _closers_safe(pieces: Pieces, syntax: TagSyntax) -> bool:
    """No tag's closer can start an opener with the text after it.

    With "%" closing and opening tags, `%recipient.a%` followed by `recipient.b%`
    would hold a second tag. The piece after each hole must part from the rest of
    the opener within itself; an empty piece (two holes side by side) or one that
    could be completed by a reader's value is refused: its value decides.
    """
    rests = [syntax.opener[len(syntax.closer) - k:] for k in range(len(syntax.closer))
             if syntax.opener.startswith(syntax.closer[k:])]
    if not rests:
        return True
    last = len(pieces.pieces) - 1
    for index in range(1, last + 1):
        piece = pieces.pieces[index]
        for rest in rests:
            if piece.startswith(rest) or (index < last and rest.startswith(piece)):
                return False
    return True
