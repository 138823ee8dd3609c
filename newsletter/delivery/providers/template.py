"""Shared body + per-recipient values (SendGrid substitutions, Mailgun %recipient.x%).

`factor_batch()` serves the APIs whose batch form shares one body between
recipients: it turns personalized messages back into a shared template plus
per-recipient values, and proves the round trip exact.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from newsletter.delivery.providers.fields import split_address

if TYPE_CHECKING:
    from newsletter.compose.message import Message


@dataclass
class TemplateGroup:
    """Messages of one batch that share one body once their personal values are taken out."""

    template: tuple[str, ...]  # the shared fields, with tags where personal values were
    messages: list[Message] = field(default_factory=list)
    values: list[dict[str, str]] = field(default_factory=list)  # per message: variable → value
    # Per field, the (variable, tag) pairs it holds: substituting skips the others.
    present: list[list[tuple[str, str]]] | None = field(default=None, repr=False, compare=False)


def personal_values(message: Message) -> dict[str, str]:
    """What differs between recipients of one issue: their unsubscribe link, address and name."""
    values: dict[str, str] = {}
    if message.unsubscribe_url:
        values["unsubscribe_url"] = message.unsubscribe_url
    values["email"] = message.recipient
    name, _addr = split_address(message.to_header)
    # Short names ("Al") would turn up inside ordinary words: leave them in the body.
    if len(name) >= 3:
        values["name"] = name
    return values


def factor_batch(
    messages: Sequence[Message],
    fields: Callable[[Message], tuple[str, ...]],
    tag: Callable[[str], str],
    html_fields: frozenset[int] = frozenset(),
) -> list[TemplateGroup]:
    """Group `messages` by shared template; each keeps the values that make its own body.

    Each message's `fields` (e.g. html and text) get its personal values
    replaced by `tag(variable)`; in the fields numbered in `html_fields` the
    values are looked for as HTML shows them (escaped), under variables named
    `<name>_html`. Messages whose templates are equal form one group. A
    message is kept whole (its own group, no variables) when a tag already
    occurs in its text or substituting back would not give its exact text:
    correctness first, batching second.
    """
    groups: dict[tuple[str, ...], TemplateGroup] = {}
    recent: list[TemplateGroup] = []  # groups with variables, most recently joined first
    for message in messages:
        original = fields(message)
        raw = personal_values(message)
        escaped = {f"{k}_html": html.escape(v, quote=True) for k, v in raw.items()}
        every = {**raw, **escaped}
        tags = {var: tag(var) for var in every}
        if any(t in value for t in tags.values() for value in every.values()):
            clean = False
        else:
            # Fast path: most messages of an issue fit a template already found. What the
            # provider will make of it is computed and compared: exact, or not taken.
            if _join_existing(recent, message, original, every, tag):
                continue
            clean = not any(t in text for t in tags.values() for text in original)
        template = original
        used: dict[str, str] = {}
        if clean:
            texts = []
            for index, text in enumerate(original):
                values = escaped if index in html_fields else raw
                # Longest values first, so a name inside the link is not split by a shorter one.
                for var in sorted(values, key=lambda v: len(values[v]), reverse=True):
                    value = values[var]
                    if value and value in text:
                        text = text.replace(value, tags[var])
                        used[var] = value
                texts.append(text)
            rebuilt = texts
            for var, value in used.items():
                rebuilt = [text.replace(tags[var], value) for text in rebuilt]
            if tuple(rebuilt) == original:
                template = tuple(texts)
            else:
                used = {}
        group_key = template if clean else ("\0unique", message.key, *template)
        group = groups.get(group_key)
        if group is None:
            group = groups[group_key] = TemplateGroup(template)
        group.messages.append(message)
        group.values.append(used)
        if used and not any(g is group for g in recent):
            recent.insert(0, group)
            del recent[4:]
    return list(groups.values())


def _join_existing(recent: list[TemplateGroup], message: Message, original: tuple[str, ...],
                   every: dict[str, str], tag: Callable[[str], str]) -> bool:
    """Add `message` to the first recent group whose template gives back its exact text."""
    for index, group in enumerate(recent):
        wanted = group.values[0].keys()
        if not wanted <= every.keys():
            continue
        if group.present is None:
            group.present = [[(v, tag(v)) for v in wanted if tag(v) in text]
                             for text in group.template]
        for text, mine, pairs in zip(group.template, original, group.present, strict=True):
            for var, var_tag in pairs:
                text = text.replace(var_tag, every[var])
            if text != mine:
                break
        else:
            values = {var: every[var] for var in wanted}
            group.messages.append(message)
            group.values.append(values)
            recent.insert(0, recent.pop(index))
            return True
    return False


def substitute(
    template: tuple[str, ...], values: dict[str, str], tag: Callable[[str], str]
) -> tuple[str, ...]:
    """What a recipient receives: the template with their values put back."""
    texts = list(template)
    for var, value in values.items():
        texts = [text.replace(tag(var), value) for text in texts]
    return tuple(texts)
