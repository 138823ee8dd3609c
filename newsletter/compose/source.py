"""Read a draft: front matter, title, date, body.

Drafts come from Substack, Hugo, Jekyll, Obsidian or GitHub, so front matter is
optional: YAML between `---` lines (Jekyll, Hugo, Obsidian) or TOML between
`+++` lines (Hugo). Without a title, the first `# heading` is the title (and is
taken out of the body so the layout does not show it twice), else the first line
(taken out too when it stands alone: followed by a blank line, or in a pasted draft).

Pasted drafts: Substack and web editors copy one paragraph per line with no blank
lines, which Markdown would join into one huge paragraph. A body with no blank
line between its lines, at least 3 lines, no code fence and some line over 100
characters (hard-wrapped Markdown keeps lines short) is read one paragraph per
line; `paragraphs: lines` or `paragraphs: markdown` in the front matter decides
instead. List items and table rows next to each other stay together.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from newsletter.errors import ContentError, NewsletterError

if TYPE_CHECKING:
    from newsletter.settings import Settings

KNOWN_KEYS = {"title", "subject", "date", "preheader", "layout", "slug", "paragraphs"}
PARAGRAPH_MODES = ("lines", "markdown")
_PASTED_MIN_LINES = 3
_PASTED_LONG_LINE = 100  # a line this long is not hard-wrapped Markdown
_LIST_OR_TABLE = re.compile(r"^\s*([-*+]\s|\d{1,9}[.)]\s|\|)")
_DATE_PREFIX = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:-|$)")
_H1 = re.compile(r"^#\s+(.+?)\s*#*\s*$")
_SETEXT_H1 = re.compile(r"^=+\s*$")


@dataclass
class Draft:
    """A parsed draft. `body_line` is the file line (1-based) the body starts on."""

    path: Path
    meta: dict[str, Any]
    body: str
    body_line: int
    title: str
    subject: str
    preheader: str
    date: date
    slug: str
    layout: str | None = None
    paragraphs: str = "markdown"  # "lines": one paragraph per line (a pasted draft)
    extra: dict[str, Any] = field(default_factory=dict)  # front matter keys we do not know
    # `topics: [links]`: a list send goes to readers who chose one of them and readers who
    # get everything; none: to everyone on the list.
    topics: tuple[str, ...] = ()
    # The file's text as read (front matter included): `check` finds its lines in it.
    text: str = field(default="", repr=False)

    def where(self, body_lineno: int | None = None) -> str:
        """`path:line` for a line of the body (1-based), for error messages."""
        if body_lineno is None:
            return str(self.path)
        return f"{self.path}:{self.body_line + body_lineno - 1}"


# A draft is words, not data: 2 MB is some 300,000 words, while Gmail clips an email past
# 102 KB. Past it, one email built from the draft (HTML, text, inlined CSS) would weigh
# twice the draft for every reader; refused before the file is read whole.
MAX_DRAFT_BYTES = 2 * 1024 * 1024


def read_text(path: Path) -> str:
    """A draft's text, as UTF-8 with normalized line ends; ContentError when unreadable
    or larger than MAX_DRAFT_BYTES."""
    try:
        size = path.stat().st_size
        if size > MAX_DRAFT_BYTES:
            raise ContentError(_too_big(path, size))
        with path.open("rb") as f:
            raw = f.read(MAX_DRAFT_BYTES + 1)  # a file that grew since: still bounded
        if len(raw) > MAX_DRAFT_BYTES:
            raise ContentError(_too_big(path, len(raw)))
    except FileNotFoundError:
        raise ContentError(f"{path} does not exist: check the path or slug") from None
    except OSError as exc:
        raise ContentError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ContentError(f"{path}:{line}: not UTF-8 text: save the file as UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _too_big(path: Path, size: int) -> str:
    return (f"{path} is {size / 1024 / 1024:.1f} MB, over the {MAX_DRAFT_BYTES // 1024 // 1024} "
            "MB a draft may be: a draft holds words, not data; link large files or images "
            "instead of pasting them in")


_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", None)  # libyaml: 7x faster, same values


def _load_yaml(block: str) -> Any:
    """`yaml.safe_load`, by libyaml when it is there; anything it refuses is read again by
    the pure-Python loader, whose error (with its line) is the one the writer sees."""
    if _FAST_LOADER is not None:
        try:
            return yaml.load(block, Loader=_FAST_LOADER)  # noqa: S506 (a safe loader)
        except (yaml.YAMLError, ValueError):
            pass
    return yaml.safe_load(block)


def split_front_matter(path: Path, text: str, known: dict[str, Any] | None = None,
                       ) -> tuple[dict[str, Any], str, int]:
    """(meta, body, body_line). Broken front matter is a ContentError naming file and line.

    `known`: the meta this very text's front matter gave before (its YAML is not read again).
    """
    lines = text.split("\n")
    if not lines or lines[0].strip() not in ("---", "+++"):
        return {}, text, 1
    fence = lines[0].strip()
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in (fence, "...")), None)
    if end is None:
        raise ContentError(
            f"{path}:1: front matter opened with {fence} is never closed: add a {fence} line "
            "after it"
        )
    block = "\n".join(lines[1:end])
    if known is not None:
        meta = known
    elif fence == "---":
        try:
            meta = _load_yaml(block) if block.strip() else {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            line = (mark.line + 2) if mark is not None else 1  # +1 for the --- line, 1-based
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise ContentError(
                f"{path}:{line}: broken front matter ({problem}): fix the YAML between the "
                "--- lines (quote values holding ': ')"
            ) from None
        except ValueError as exc:
            # YAML reads 2026-13-45 as a date and PyYAML's datetime.date() raises on it.
            line = next((i for i, s in enumerate(lines[1:end], 2)
                         if re.search(r"\b\d{4}-\d{1,2}-\d{1,2}\b", s)), 1)
            raise ContentError(
                f"{path}:{line}: a date in the front matter is not a real date ({exc}): write "
                "it as YYYY-MM-DD"
            ) from None
    else:
        try:
            meta = tomllib.loads(block)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"line (\d+)", str(exc))
            line = int(m.group(1)) + 1 if m else 1
            raise ContentError(
                f"{path}:{line}: broken front matter ({exc}): fix the TOML between the +++ lines"
            ) from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise ContentError(
            f"{path}:2: front matter must be key: value pairs (title: …, subject: …)"
        )
    return meta, "\n".join(lines[end + 1 :]), end + 2


def _line_of_key(path: Path, text: str, key: str) -> int:
    for i, line in enumerate(text.split("\n"), 1):
        if re.match(rf"\s*{re.escape(key)}\s*[:=]", line):
            return i
    return 1


def _as_text(path: Path, text: str, meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise ContentError(
            f"{path}:{_line_of_key(path, text, key)}: front matter {key} must be text, "
            f"not a {type(value).__name__}"
        )
    return str(value)


# Line breaks of any kind (\v, \f, \x1c-\x1e, \x85, U+2028/9 split lines too, for
# Python's email package and other mail software) and control characters.
_BREAK_OR_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def _one_line(path: Path, text: str, key: str, value: str) -> str:
    # A subject becomes a header: a line break there could inject headers.
    if _BREAK_OR_CONTROL.search(value):
        raise ContentError(
            f"{path}:{_line_of_key(path, text, key)}: the {key} holds a line break or control "
            "character: write it on one line"
        )
    return value.strip()


def _topics(path: Path, text: str, meta: dict[str, Any]) -> tuple[str, ...]:
    """`topics: [links, essays]`, `topics: links` or `topics: "links, essays"` → names."""
    value = meta.get("topics")
    if value is None:
        return ()
    items = value if isinstance(value, list) else str(value).split(",")
    names: list[str] = []
    for item in items:
        if isinstance(item, (dict, list)) or not str(item).strip():
            raise ContentError(
                f"{path}:{_line_of_key(path, text, 'topics')}: topics must be a list of topic "
                "names, like topics: [links]"
            )
        name = _BREAK_OR_CONTROL.sub(" ", str(item)).strip()
        if name not in names:
            names.append(name)
    return tuple(names)


def check_topics(draft: Draft, known: Sequence[str]) -> tuple[str, ...]:
    """The draft's topics spelled as in [subscribe] topics; ContentError names one that is
    not there (a typo would otherwise send the issue to the readers who get everything only).
    """
    spelled = {t.casefold(): t for t in known}
    out: list[str] = []
    for topic in draft.topics:
        if topic.casefold() not in spelled:
            have = ", ".join(known) if known else "none are set"
            raise ContentError(
                f"{draft.path}:{_line_of_key(draft.path, draft.text, 'topics')}: the topic "
                f"{topic!r} is not one of [subscribe] topics in newsletter.toml ({have}): fix "
                "the draft's front matter or add it there"
            )
        if spelled[topic.casefold()] not in out:
            out.append(spelled[topic.casefold()])
    return tuple(out)


def parse_date(value: Any) -> date | None:
    """A front matter date: a YAML/TOML date or datetime, or text like 2026-11-21[T…]."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        s = value.strip()
        try:
            return datetime.fromisoformat(s.replace("Z", "+00:00")).date()
        except ValueError:
            pass
        for fmt in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M", "%Y/%m/%d", "%d %B %Y", "%B %d, %Y"):
            try:
                return datetime.strptime(s, fmt).date()
            except ValueError:
                continue
    return None


def _title_from_body(body: str) -> tuple[str | None, str]:
    """The first `# heading` (removed from the body when it leads it), else None."""
    lines = body.split("\n")
    in_fence = False
    first_content = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            in_fence = not in_fence
        if in_fence:
            if first_content is None:
                first_content = i
            continue
        if first_content is None and stripped:
            first_content = i
        m = _H1.match(line)
        if m:
            title = m.group(1).strip()
            if i == first_content:
                # Blank the line instead of deleting it so line numbers stay right.
                lines[i] = ""
                return title, "\n".join(lines)
            return title, body
        if (
            i + 1 < len(lines)
            and stripped
            and _SETEXT_H1.match(lines[i + 1])
            and not stripped.startswith(("-", "*", ">", "|"))
        ):
            title = stripped
            if i == first_content:
                lines[i] = lines[i + 1] = ""
                return title, "\n".join(lines)
            return title, body
    return None, body


def _content_lines(body: str) -> list[str]:
    lines = body.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def looks_pasted(body: str) -> bool:
    """True when a body reads as one paragraph per line (see the module docstring)."""
    lines = _content_lines(body)
    if len(lines) < _PASTED_MIN_LINES or any(not line.strip() for line in lines):
        return False
    if any(line.lstrip().startswith(("```", "~~~")) for line in lines):
        return False
    return any(len(line) > _PASTED_LONG_LINE for line in lines)


def lines_to_paragraphs(text: str) -> str:
    """Put a blank line between lines so each is its own paragraph (fences kept whole;
    neighbouring list items and table rows kept together)."""
    out: list[str] = []
    fence: str | None = None
    prev = ""
    for line in text.split("\n"):
        stripped = line.lstrip()
        if fence is not None:
            out.append(line)
            if stripped.startswith(fence):
                fence, prev = None, line
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        together = _LIST_OR_TABLE.match(line) and _LIST_OR_TABLE.match(prev)
        if line.strip() and prev.strip() and not together:
            out.append("")
        out.append(line)
        prev = line
    return "\n".join(out)


def _first_line(body: str) -> str:
    for line in body.split("\n"):
        s = line.strip().lstrip("#").strip()
        if s:
            # Strip Markdown decoration a title would not carry.
            s = re.sub(r"[*_`]+", "", s)
            return s[:150]
    return ""


def _drop_title_line(body: str, pasted: bool) -> str:
    """Blank the first line when it became the title and stands alone, so the issue
    does not open with its title twice; a hard-wrapped paragraph's first line stays."""
    lines = body.split("\n")
    i = next((n for n, line in enumerate(lines) if line.strip()), None)
    if i is None:
        return body
    first = lines[i].strip()
    if len(first) > 150 or first.startswith(("#", "```", "~~~", "{", "<", ">", "|", "!", "[")):
        return body  # a cut-off piece is the title; a heading, code or markup is content
    if _LIST_OR_TABLE.match(first):
        return body
    if not any(line.strip() for line in lines[i + 1 :]):
        return body  # a one-line draft: that line is the issue, not only its title
    alone = not lines[i + 1].strip()
    if not (alone or pasted):
        return body
    lines[i] = ""  # blanked, not deleted, so line numbers stay right
    return "\n".join(lines)


def slug_from_path(path: Path) -> str:
    """The slug of a draft file: its name without the extension."""
    return path.stem


# Letters that Unicode does not decompose into ASCII but every reader can spell.
_TRANSLITERATE = str.maketrans({
    "ß": "ss", "æ": "ae", "Æ": "ae", "ø": "o", "Ø": "o", "đ": "d", "Đ": "d", "ł": "l",
    "Ł": "l", "þ": "th", "Þ": "th", "œ": "oe", "Œ": "oe", "ı": "i", "&": " and ",
})


def slugify(title: str, max_length: int = 60) -> str:
    """A file- and URL-safe slug: ASCII letters, digits and single dashes.

    Accents are folded ("Café" → "cafe"), punctuation and emoji dropped; a
    title with nothing left (all CJK or emoji) gives "issue".
    """
    text = unicodedata.normalize("NFKD", title.translate(_TRANSLITERATE))
    text = text.encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"['’`]", "", text)  # "Liu's" → "lius", not "liu-s"
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    if len(slug) > max_length:
        slug = slug[:max_length].rsplit("-", 1)[0] or slug[:max_length]
    return slug or "issue"


def date_from_path(path: Path) -> date | None:
    """The date a `YYYY-MM-DD-…` file name starts with."""
    m = _DATE_PREFIX.match(path.name)
    if not m:
        return None
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def parse_draft(path: Path, text: str | None = None, *,
                meta: dict[str, Any] | None = None) -> Draft:
    """Read and parse a draft file (front matter + Markdown body).

    `meta`: what an earlier parse of this same `text` found in its front matter (a
    Draft's `meta`), so publish reads each draft's YAML once.
    """
    if text is None:
        text = read_text(path)
    meta, body, body_line = split_front_matter(path, text, meta)
    mode = _as_text(path, text, meta, "paragraphs")
    if mode is not None and mode.strip().lower() not in PARAGRAPH_MODES:
        raise ContentError(
            f"{path}:{_line_of_key(path, text, 'paragraphs')}: paragraphs {mode!r} is not "
            "one of: lines (one paragraph per line, as pasted drafts are), markdown"
        )
    pasted = mode.strip().lower() == "lines" if mode is not None else looks_pasted(body)

    title = _as_text(path, text, meta, "title")
    if title is not None:
        title = _one_line(path, text, "title", title)
        heading, stripped_body = _title_from_body(body)
        if heading is not None and heading == title and stripped_body is not body:
            body = stripped_body  # the same title as a leading # heading: show it once
    else:
        heading, body = _title_from_body(body)
        title = heading if heading is not None else _first_line(body)
        if heading is None and title:
            body = _drop_title_line(body, pasted)
        # A heading pasted from a word processor may hold \v or U+2028: one line, spaces.
        title = _BREAK_OR_CONTROL.sub(" ", title).strip()
    title = title or path.stem

    subject = _as_text(path, text, meta, "subject")
    subject = _one_line(path, text, "subject", subject) if subject is not None else title
    if not subject:
        subject = title
    preheader = _as_text(path, text, meta, "preheader") or ""
    preheader = " ".join(preheader.split())

    raw_date = meta.get("date")
    when: date | None
    if raw_date is None:
        when = date_from_path(path) or date.today()
    else:
        when = parse_date(raw_date)
        if when is None:
            raise ContentError(
                f"{path}:{_line_of_key(path, text, 'date')}: date {raw_date!r} is not a date: "
                "write it as YYYY-MM-DD"
            )

    slug = _as_text(path, text, meta, "slug")
    if slug is not None:
        slug = slug.strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", slug):
            raise ContentError(
                f"{path}:{_line_of_key(path, text, 'slug')}: slug {slug!r} must be letters, "
                "digits, '-', '_' or '.' (it becomes a file name and a URL)"
            )
    else:
        slug = slug_from_path(path)

    layout = _as_text(path, text, meta, "layout")
    return Draft(
        path=path,
        meta=meta,
        body=body,
        body_line=body_line,
        title=title,
        subject=subject,
        preheader=preheader,
        date=when,
        slug=slug,
        layout=layout.strip() if layout else None,
        paragraphs="lines" if pasted else "markdown",
        extra={k: v for k, v in meta.items() if k not in KNOWN_KEYS},
        topics=_topics(path, text, meta),
        text=text,
    )


# --- finding a draft by path or slug (send, schedule, welcome, preview and build share it) -

DRAFT_SUFFIXES = (".md", ".markdown")


def draft_files(settings: Settings) -> list[Path]:
    """The draft files, oldest name first (names start with their date)."""
    if not settings.drafts_dir.is_dir():
        return []
    return sorted(
        p for p in settings.drafts_dir.iterdir()
        if p.suffix.lower() in DRAFT_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def resolve_draft(settings: Settings, ref: str | Path) -> Path:
    """A draft from a path or a slug ('2026-11-21-hello', 'hello' or the front matter slug)."""
    ref_text = str(ref).strip()
    if not ref_text:
        raise ContentError("name a draft: a path like drafts/2026-11-21-hello.md or its slug")
    candidate = Path(ref_text).expanduser()
    for path in (candidate, settings.root / candidate):
        if path.is_file():
            return path.resolve()
    files = draft_files(settings)
    name = candidate.name
    for suffix in DRAFT_SUFFIXES:
        name = name.removesuffix(suffix)
    exact = [p for p in files if p.stem == name]
    if exact:
        return exact[0].resolve()
    # The slug without its date prefix, e.g. "hello" for 2026-11-21-hello.md.
    undated = [p for p in files if re.sub(r"^\d{4}-\d{2}-\d{2}-", "", p.stem) == name]
    if len(undated) == 1:
        return undated[0].resolve()
    if len(undated) > 1:
        names = ", ".join(p.stem for p in undated)
        raise ContentError(f"{ref_text!r} matches several drafts ({names}): name one in full")
    by_meta = []
    for p in files:
        try:
            if parse_draft(p).slug == name:
                by_meta.append(p)
        except NewsletterError:
            continue
    if len(by_meta) == 1:
        return by_meta[0].resolve()
    hint = f"; drafts: {', '.join(p.stem for p in files[-5:])}" if files else ""
    raise ContentError(
        f"no draft {ref_text!r} in {settings.drafts_dir}: pass a path or a slug "
        f"(see `newsletter drafts`){hint}"
    )
