"""Markdown → HTML fragment, rendering drafts as their authors expect.

Python-Markdown with footnotes, tables, fenced code highlighted by Pygments in
inline styles (email clients drop <style> classes), smart quotes and dashes,
heading ids and attribute lists. Some quirks of Python-Markdown differ from
CommonMark, GitHub, Hugo and Obsidian, where our writers come from; the
`ListNormalizer` preprocessor fixes those of lists before Markdown sees the text:

- a list that starts on the line right after a paragraph (no blank line) is a
  list there, but a paragraph here: we insert the blank line;
- nested lists indented by 2 spaces (or by a marker's width) need 4 spaces
  here: we re-indent list content to multiples of 4, inside footnotes too;
- Python-Markdown reads blocks between blank lines, so an item after an
  item's later paragraph, nested list or code that began after a blank line
  (`1. a`, blank, `   - b`, `2. c`) is swallowed by that block, and a `1.`
  item right after a `-` one joins it: we insert the blank line there too.

And a backslash at the end of a line is a line break (`BackslashLineBreaks`), as
there: the other spelling, two trailing spaces, is trimmed by many editors (an
imported post's <br> is written with the backslash for that reason).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import markdown
from markdown.extensions import Extension
from markdown.inlinepatterns import SubstituteTagInlineProcessor
from markdown.preprocessors import Preprocessor

_LIST_ITEM = re.compile(r"^( *)([-*+]|(\d{1,9})[.)])( +|$)(.*)$")
_HR = re.compile(r"^ {0,3}([-*_])( *\1){2,} *$")
_FENCE = re.compile(r"^( *)(`{3,}|~{3,})")
_FOOTNOTE_DEF = re.compile(r"^ {0,3}\[\^[^\]]+\]:")
# Lines after which a list must not be pulled out (they are not paragraph text).
_NOT_PARA = ("#", "|", "<", ">", "[^")


@dataclass
class _Level:
    orig_col: int  # content column of the item in the author's text
    marker_new: int  # where we put its marker (relative to the base)
    ordered: bool = False


def _expand_indent(line: str) -> str:
    stripped = line.lstrip(" \t")
    lead = line[: len(line) - len(stripped)]
    return lead.expandtabs(4) + stripped if "\t" in lead else line


_QUOTE = re.compile(r"^> ?")  # column 0 only: an indented quote belongs to a list item


def normalize_lists(lines: list[str]) -> list[str]:
    """Re-indent nested lists to 4 spaces a level and let lists interrupt paragraphs.

    Blockquotes get the same treatment inside: a run of `>` lines is unwrapped,
    normalized and wrapped again.
    """
    out: list[str] = []
    i = 0
    in_fence: str | None = None
    plain: list[str] = []
    while i < len(lines):
        line = lines[i]
        fm = _FENCE.match(line)
        if in_fence is None and fm and not fm.group(1):
            in_fence = fm.group(2)
        elif in_fence is not None and line.strip().startswith(in_fence):
            in_fence = None
        if in_fence is None and _QUOTE.match(line):
            out.extend(_normalize_plain(plain))
            plain = []
            run = []
            while i < len(lines) and _QUOTE.match(lines[i]):
                run.append(_QUOTE.sub("", lines[i], count=1))
                i += 1
            out.extend(("> " + q) if q else ">" for q in normalize_lists(run))
            continue
        plain.append(line)
        i += 1
    out.extend(_normalize_plain(plain))
    return out


def _normalize_plain(lines: list[str]) -> list[str]:
    out: list[str] = []
    stack: list[_Level] = []
    base = 0  # 4 inside a footnote body (its continuation indent)
    prev = "blank"  # blank | para | list | code | other
    # An open fence: (its chars, shift applied to its lines, inside a list?).
    fence: tuple[str, int, bool] | None = None
    # Python-Markdown cuts the text into blocks at blank lines and hands a block that
    # starts indented (a list item's later paragraph or nested list) to the item above
    # whole, with any shallower item of the block swallowed as text: that item needs a
    # blank line before it. The column the current block starts at:
    block_col = 0

    def emit(line: str) -> None:
        nonlocal block_col
        if line.strip() and (not out or not out[-1].strip()):
            block_col = len(line) - len(line.lstrip(" "))
        out.append(line)

    for raw in lines:
        line = _expand_indent(raw)
        if fence is not None:
            chars, shift, in_list = fence
            stripped = line.lstrip(" ")
            if stripped.startswith(chars) and not stripped[len(chars) :].strip(chars[0] + " "):
                fence = None
                if in_list:
                    emit("")  # the indented code block ends here
                    prev = "blank"
                    continue
            emit(_shift(line, shift))
            continue
        if not line.strip():
            emit(line)
            if prev != "code":
                prev = "blank"
            continue
        indent = len(line) - len(line.lstrip(" "))

        if _FOOTNOTE_DEF.match(line):
            stack, base, prev = [], 4, "para"
            emit(line)
            continue
        if base and indent < base and prev == "blank":
            base = 0  # an unindented line after a blank line ends the footnote
            stack = []
        rel = indent - base if indent >= base else indent

        m = _LIST_ITEM.match(line[base:] if indent >= base else line)
        if m and not _HR.match(line):
            marker, number, spaces, rest = m.group(2), m.group(3), m.group(4), m.group(5)
            in_list = bool(stack)
            sibling: _Level | None = None  # the item before, at this item's level
            while stack and stack[-1].orig_col > rel:
                sibling = stack.pop()
            # A list starting inside a paragraph; after an item's own paragraph (hard-wrapped
            # or lazy), an item is the next one, even "2." ("2. Write it down").
            interrupts = prev == "para" and not in_list
            if not stack:
                if prev in ("blank", "code") and rel >= 4:
                    prev = "code"  # an indented code block, not a list
                    emit(line)
                    continue
                if interrupts and (not rest or (number is not None and int(number) != 1)):
                    # CommonMark: only a non-empty item, numbered 1 if ordered, starts a
                    # list inside a paragraph ("2024. What a year" stays text).
                    emit(line)
                    continue
            width = len(spaces) if 0 < len(spaces) <= 4 else 1
            depth = len(stack)
            new = 4 * depth
            ordered = number is not None
            if interrupts:
                emit("")  # the blank line Python-Markdown needs before a list
            elif out and out[-1].strip() and (
                base + new < block_col  # back out of a block that started deeper
                # "1." after "-" (or "-" after "1.") starts a new list, here only after
                # a blank line.
                or (sibling is not None and sibling.marker_new == new
                    and sibling.ordered != ordered)
            ):
                emit("")
            emit(" " * (base + new) + marker + " " * width + rest)
            stack.append(_Level(orig_col=rel + len(marker) + width, marker_new=new,
                                ordered=ordered))
            prev = "list"
            continue

        if stack:
            if prev == "blank" and rel < stack[0].orig_col:
                stack = []  # the list ended
            elif prev in ("list", "para") and rel < stack[-1].orig_col:
                # Lazy continuation of the item's paragraph.
                line = " " * (base + 4 * len(stack)) + line.lstrip(" ")
                emit(line)
                prev = "para"
                continue
        if stack:
            k = max(i for i, lvl in enumerate(stack) if lvl.orig_col <= rel)
            del stack[k + 1 :]
            new_indent = base + 4 * (k + 1) + (rel - stack[k].orig_col)
            fm = _FENCE.match(line)
            if fm:
                # Python-Markdown only sees fences at column 0: inside a list item, turn
                # the fence into an indented code block (codehilite reads `:::lang`).
                lang = line[fm.end() :].strip().split(" ")[0].strip("{}.")
                if prev != "blank":
                    emit("")
                if lang:
                    emit(" " * (new_indent + 4) + ":::" + lang)
                fence = (fm.group(2), new_indent + 4 - indent, True)
                continue
            emit(_shift(line, new_indent - indent))
            prev = "para"
            continue

        if prev in ("blank", "code") and rel >= 4 and not base:
            prev = "code"
            emit(line)
            continue
        fm = _FENCE.match(line)
        if fm:
            fence = (fm.group(2), 0, False)
            prev = "other"
        else:
            prev = "other" if line.lstrip().startswith(_NOT_PARA) or _HR.match(line) else "para"
        emit(line)
    return out


def _shift(line: str, shift: int) -> str:
    if shift > 0 and line.strip():
        return " " * shift + line
    if shift < 0:
        lead = len(line) - len(line.lstrip(" "))
        return line[min(lead, -shift) :]
    return line


class ListNormalizer(Preprocessor):
    """Runs `normalize_lists` before fenced code and HTML blocks are stashed."""

    def run(self, lines: list[str]) -> list[str]:
        return normalize_lists(lines)


class WriterFriendlyLists(Extension):
    """Lists as CommonMark/GitHub render them: 2-space nesting, no blank line needed."""

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 (Markdown's API)
        # After whitespace normalization (30), before fenced code (25) and raw HTML (20).
        md.preprocessors.register(ListNormalizer(md), "writer_friendly_lists", 27)


class BackslashLineBreaks(Extension):
    """`line one\\` + newline + `line two` is a <br>, as in CommonMark and GitHub."""

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 (Markdown's API)
        # After code spans (190) and escapes (180): `\\` there is a backslash, not a break.
        md.inlinePatterns.register(
            SubstituteTagInlineProcessor(r"\\\n", "br"), "backslash_linebreak", 175
        )


EXTENSIONS: list[str | Extension] = [
    "footnotes",
    "tables",
    "fenced_code",
    "codehilite",
    "smarty",
    "toc",
    "attr_list",
    "sane_lists",
]
EXTENSION_CONFIGS: dict[str, dict[str, Any]] = {
    # noclasses: colours as inline styles, since mail clients strip classes' CSS.
    "codehilite": {"noclasses": True, "guess_lang": False, "pygments_style": "friendly"},
    "smarty": {"smart_angled_quotes": False},
    "footnotes": {"BACKLINK_TEXT": "&#8617;&#xFE0E;"},
}


def make_renderer() -> markdown.Markdown:
    """A configured Markdown instance (reset it between documents)."""
    return markdown.Markdown(
        extensions=[*EXTENSIONS, WriterFriendlyLists(), BackslashLineBreaks()],
        extension_configs=EXTENSION_CONFIGS,
        output_format="html",
    )


_RENDERERS = threading.local()


def render_markdown(text: str) -> str:
    """Render a draft body to an HTML fragment.

    One Markdown instance per thread, reset between documents: building one (its
    extensions and their regexes) cost as much as converting a 400-word issue.
    """
    md: markdown.Markdown | None = getattr(_RENDERERS, "md", None)
    if md is None:
        md = _RENDERERS.md = make_renderer()
    try:
        return md.convert(text)
    finally:
        md.reset()  # footnotes, heading ids and the HTML stash start empty for the next
