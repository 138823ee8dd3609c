"""A platform's post HTML → the Markdown of a draft, as a reader of the post would expect it.

markdownify does the conversion; what is here is what each platform puts around the
content: Substack's footnotes, captioned images, embeds and subscribe/share widgets,
Ghost's cards. Widgets that only make sense on the platform (subscribe and share
buttons, comment prompts) are removed; embeds become links to what they showed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bs4 import BeautifulSoup, Tag
from markdownify import MarkdownConverter

# Substack's platform widgets: nothing a reader of our copy could use.
_WIDGETS = (
    "div.subscription-widget-wrap",
    "div.subscription-widget-wrap-editor",
    "div.subscribe-widget",
    "p.button-wrapper",
    "div.button-wrapper",
    "div.captioned-button-wrap",
    "div.share-dialog",
    "div.paywall-jump",
    "div.install-substack-app-embed",
    "div.poll-embed",
    "script",
    "style",
    "form",
)


# Link schemes that run code in a browser: the link is dropped, its text kept.
_UNSAFE_SCHEME = re.compile(r"^\s*(javascript|vbscript|data)\s*:", re.I)
# Text that reads as an HTML tag once in Markdown ("&lt;script&gt;" in a post about HTML).
_TAG_LIKE = re.compile(r"<(?=[A-Za-z/!?])")


class _Converter(MarkdownConverter):
    """markdownify with footnote references kept as Markdown footnotes."""

    def escape(self, text: str, parent_tags: Any = None) -> str:
        # markdownify turns "&lt;b&gt;" back into "<b>", which Markdown then renders as a
        # tag (a <script> the post only showed, as text, would run on the archive).
        # markdownify makes these methods at run time: mypy cannot see them on the class.
        return _TAG_LIKE.sub("&lt;", super().escape(text, parent_tags))  # type: ignore[misc]

    def convert_a(self, el: Tag, text: str, parent_tags: Any = None) -> str:
        if el.get("data-footnote") is not None:
            return f"[^{el['data-footnote']}]"
        if _UNSAFE_SCHEME.match(str(el.get("href") or "")):
            return text
        return super().convert_a(el, text, parent_tags)  # type: ignore[misc]

    def convert_br(self, el: Tag, text: str, parent_tags: Any = None) -> str:
        if "_inline" in (parent_tags or ()):
            return " "  # a heading or table cell is one line
        if "pre" in (parent_tags or ()):
            return "\n"
        if _ends_block(el):
            return ""  # a trailing <br> shows nothing; a trailing backslash would show
        # A backslash, not markdownify's two trailing spaces: the draft's editor (and our
        # own clean-up below) trims those, and the poem or address becomes one line.
        return "\\\n"

    def convert_figure(self, el: Tag, text: str, parent_tags: Any = None) -> str:
        return f"\n\n{text.strip()}\n\n"

    def convert_figcaption(self, el: Tag, text: str, parent_tags: Any = None) -> str:
        caption = text.strip()
        return f"\n\n*{caption}*\n\n" if caption else ""


# Elements inside a paragraph's line: a <br> at the end of one may still end the paragraph.
_INLINE = {"a", "b", "strong", "i", "em", "u", "s", "del", "ins", "mark", "small", "span",
           "sup", "sub", "code", "font"}


def _ends_block(br: Tag) -> bool:
    """True when nothing but whitespace and other <br>s follows `br` in its block."""
    node: Tag = br
    while True:
        for sibling in node.next_siblings:
            if isinstance(sibling, Tag):
                if sibling.name != "br":
                    return False
            elif str(sibling).strip():
                return False
        parent = node.parent
        if parent is None or parent.name not in _INLINE:
            return True
        node = parent


def _attrs(el: Tag) -> dict[str, Any]:
    try:
        value = json.loads(str(el.get("data-attrs") or "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _link(soup: BeautifulSoup, href: str, text: str) -> Tag:
    p = soup.new_tag("p")
    a = soup.new_tag("a", href=href)
    a.string = text
    p.append(a)
    return p


def _embeds(soup: BeautifulSoup) -> None:
    """Video, tweet and other embeds become a link to what they showed."""
    for el in soup.select("div.youtube-wrap, div.youtube-inner"):
        video = _attrs(el).get("videoId")
        if video and el.parent is not None:
            el.replace_with(_link(soup, f"https://www.youtube.com/watch?v={video}",
                                  "Watch the video on YouTube"))
    for el in soup.select("div.tweet, div.twitter-embed"):
        url = _attrs(el).get("url")
        if url:
            el.replace_with(_link(soup, url, "See the post on X/Twitter"))
    for el in soup.select("div.vimeo-wrap, div.spotify-wrap, div.embedded-post-wrap"):
        attrs = _attrs(el)
        url = attrs.get("url") or attrs.get("src")
        if url:
            el.replace_with(_link(soup, url, attrs.get("title") or url))
    for el in soup.find_all("iframe"):
        src = str(el.get("src") or "")
        if src:
            el.replace_with(_link(soup, src, "See the embedded content"))
        else:
            el.decompose()


def _footnotes(soup: BeautifulSoup) -> list[str]:
    """Substack footnotes → `[^n]` references and `[^n]: text` definitions (in order)."""
    for a in soup.select("a.footnote-anchor"):
        number = a.get_text(strip=True) or str(a.get("id") or "").rsplit("-", 1)[-1]
        a["data-footnote"] = number
    notes: list[str] = []
    for div in soup.select("div.footnote"):
        number_el = div.select_one("a.footnote-number")
        content = div.select_one("div.footnote-content") or div
        number = number_el.get_text(strip=True) if number_el else str(len(notes) + 1)
        if number_el is not None:
            number_el.decompose()
        text = _Converter(heading_style="ATX", bullets="-").convert_soup(content).strip()
        text = re.sub(r"\n\s*\n", "\n\n    ", text)  # later paragraphs stay in the note
        notes.append(f"[^{number}]: {text}")
        div.decompose()
    return notes


def _images(soup: BeautifulSoup) -> None:
    """Substack wraps an image in a link to its full size: keep the image only."""
    for a in soup.select("a.image-link"):
        img = a.find("img")
        if img is not None:
            a.replace_with(img)
    for img in soup.find_all("img"):
        # srcset, sizes and data-attrs are for the platform's responsive loader.
        for attr in ("srcset", "sizes", "data-attrs", "class", "width", "height", "loading"):
            if attr in img.attrs:
                del img[attr]


def html_to_markdown(html: str) -> str:
    """The Markdown of a post's HTML body, with platform widgets removed."""
    try:
        return _html_to_markdown(html)
    except RecursionError:
        # HTML nested thousands deep (broken editors, hostile exports) is past what the
        # converter can walk: keep the post's words, one paragraph per block of text.
        soup = BeautifulSoup(html, "html.parser")
        for el in soup.find_all(["script", "style"]):
            el.decompose()
        lines = (line.strip() for line in soup.get_text("\n").splitlines())
        text = "\n\n".join(line for line in lines if line)
        return _TAG_LIKE.sub("&lt;", text) + "\n"


def _html_to_markdown(html: str) -> str:
    soup = BeautifulSoup(html, "html.parser")
    for selector in _WIDGETS:
        for el in soup.select(selector):
            el.decompose()
    _embeds(soup)
    _images(soup)
    notes = _footnotes(soup)
    text = _Converter(heading_style="ATX", bullets="-", strip=["span"]).convert_soup(soup)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    if notes:
        text += "\n\n" + "\n\n".join(notes)
    return text + "\n"


def image_urls(markdown: str) -> list[str]:
    """The remote images a converted post shows, in order, each once."""
    seen: dict[str, None] = {}
    for match in re.finditer(r"!\[[^\]]*\]\((https?://[^)\s]+)", markdown):
        seen.setdefault(match.group(1), None)
    return list(seen)
