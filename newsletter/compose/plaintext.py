"""The plain-text part, made from the same HTML fragment as the HTML part.

It should read well on its own: headings underlined, lists with their markers
and nesting, links as "text (URL)", code indented, quotes with "> ", footnote
references as [1] and the footnotes listed at the end as "[1] …".
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from html.parser import HTMLParser

WIDTH = 72
_BLOCK = {
    "p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre",
    "table", "thead", "tbody", "tfoot", "tr", "hr", "figure", "figcaption", "section",
    "article", "header", "footer", "dl", "dt", "dd", "details", "summary",
}
_VOID = {"br", "hr", "img", "meta", "link", "input", "source", "wbr", "col", "area", "base"}
_SKIP = {"script", "style", "head", "title", "template"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Element | str] = field(default_factory=list)

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("root")
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(el)
        if tag not in _VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse_html(html: str) -> Element:
    """A minimal tree of the fragment (tolerant of unclosed tags)."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def _is_block(node: Element | str) -> bool:
    return isinstance(node, Element) and node.tag in _BLOCK


def _inline(node: Element | str, pre: bool = False) -> str:
    if isinstance(node, str):
        return node if pre else re.sub(r"[ \t\r\n]+", " ", node)
    tag = node.tag
    if tag in _SKIP:
        return ""
    if tag == "br":
        return "\n"
    if tag == "img":
        alt = node.attrs.get("alt", "").strip()
        return f"[{alt}]" if alt else ""
    cls = node.classes()
    if tag == "a" and "footnote-backref" in cls:
        return ""
    if tag == "a" and "footnote-ref" in cls:
        return "[" + "".join(_inline(c, pre) for c in node.children).strip() + "]"
    inner = "".join(_inline(c, pre) for c in node.children)
    if tag == "sup" and inner.startswith("[") and inner.endswith("]"):
        return inner
    if tag == "a":
        href = node.attrs.get("href", "").strip()
        text = inner.strip()
        if not href or href.startswith("#"):
            return inner
        shown = href[7:] if href.startswith("mailto:") else href
        if not text or text in (href, shown):
            return shown
        # A no-break space keeps the URL on the line of the word it explains.
        return f"{inner}\u00a0({shown})"
    return inner


def _wrap(text: str, width: int) -> str:
    lines = []
    for part in text.split("\n"):
        part = part.strip()
        if not part:
            continue
        lines.append(
            textwrap.fill(part, width=max(width, 20), break_long_words=False,
                          break_on_hyphens=False)
        )
    return "\n".join(lines)


def _indent(text: str, first: str, rest: str) -> str:
    lines = text.split("\n")
    return "\n".join((first if i == 0 else (rest if line else "")) + line
                     for i, line in enumerate(lines))


def _blocks(node: Element, width: int) -> list[str]:
    """Render a container's children as a list of text blocks (joined by blank lines)."""
    out: list[str] = []
    run: list[Element | str] = []

    def flush() -> None:
        if run:
            text = _wrap("".join(_inline(n) for n in run), width)
            if text:
                out.append(text)
            run.clear()

    for child in node.children:
        if _is_block(child):
            flush()
            assert isinstance(child, Element)
            out.extend(_block(child, width))
        elif isinstance(child, Element) and child.tag in _SKIP:
            continue
        else:
            run.append(child)
    flush()
    return out


def _table(node: Element, width: int) -> list[str]:
    rows: list[tuple[list[str], bool]] = []

    def walk(el: Element) -> None:
        for c in el.children:
            if isinstance(c, Element):
                if c.tag == "tr":
                    cells = [
                        x for x in c.children if isinstance(x, Element) and x.tag in ("td", "th")
                    ]
                    texts = [" ".join(_inline(x).split()) for x in cells]
                    rows.append((texts, any(x.tag == "th" for x in cells)))
                else:
                    walk(c)

    walk(node)
    if not rows:
        return []
    columns = max(len(texts) for texts, _ in rows)
    widths = [
        max(3, *(len(texts[i]) for texts, _ in rows if i < len(texts))) for i in range(columns)
    ]
    lines = []
    for texts, header in rows:
        cells = [t.ljust(widths[i]) for i, t in enumerate(texts)]
        lines.append(" | ".join(cells).rstrip())
        if header:
            lines.append("-|-".join("-" * w for w in widths[: len(texts)]))
    return ["\n".join(lines)]


def _block(el: Element, width: int) -> list[str]:
    tag = el.tag
    cls = el.classes()
    if tag in ("h1", "h2"):
        text = " ".join(_inline(el).split())
        return [text + "\n" + ("=" if tag == "h1" else "-") * min(len(text), width)] if text else []
    if tag in ("h3", "h4", "h5", "h6"):
        text = " ".join(_inline(el).split())
        return [("#" * int(tag[1]) + " " + text)] if text else []
    if tag == "hr":
        return ["-" * 20]
    if tag == "pre":
        code = "".join(_inline(c, pre=True) for c in el.children).rstrip("\n")
        return [_indent(code, "    ", "    ")] if code.strip() else []
    if tag == "blockquote":
        inner = "\n\n".join(_blocks(el, width - 2))
        return ["\n".join(("> " + line) if line else ">" for line in inner.split("\n"))]
    if tag == "table":
        return _table(el, width)
    if tag == "div" and "footnote" in cls:
        return _footnotes(el, width)
    if tag in ("ul", "ol"):
        return [_list(el, width)]
    if tag == "li":  # a stray <li> outside a list
        return [_indent("\n".join(_blocks(el, width - 2)), "- ", "  ")]
    return _blocks(el, width)


def _list(el: Element, width: int) -> str:
    ordered = el.tag == "ol"
    start = int(el.attrs.get("start", "1") or 1) if ordered else 1
    items = [c for c in el.children if isinstance(c, Element) and c.tag == "li"]
    loose = any(
        isinstance(c, Element) and c.tag == "p" for li in items for c in li.children
    )
    rendered = []
    for n, li in enumerate(items, start):
        marker = f"{n}. " if ordered else "- "
        body_blocks = _blocks(li, width - len(marker))
        body = ("\n\n" if loose else "\n").join(body_blocks)
        rendered.append(_indent(body, marker, " " * len(marker)))
    return ("\n\n" if loose else "\n").join(rendered)


def _footnotes(el: Element, width: int) -> list[str]:
    out = ["-" * 20]
    for ol in (c for c in el.children if isinstance(c, Element) and c.tag == "ol"):
        items = [c for c in ol.children if isinstance(c, Element) and c.tag == "li"]
        for n, li in enumerate(items, 1):
            marker = f"[{n}] "  # references show the footnote's number, not its label
            body = "\n\n".join(_blocks(li, width - len(marker)))
            out.append(_indent(body, marker, " " * len(marker)))
    return ["\n\n".join(out)]


def html_to_text(html: str, width: int = WIDTH) -> str:
    """Turn an HTML fragment into readable plain text."""
    text = "\n\n".join(b for b in _blocks(parse_html(html), width) if b.strip())
    # Non-breaking spaces read as spaces in plain text.
    text = text.replace("\u00a0", " ")
    return re.sub(r"[ \t]+\n", "\n", text).strip("\n") + "\n"
