"""One reader per platform export: Substack's ZIP, Ghost's JSON, Buttondown's ZIP → Posts.

Each reader checks the whole export before anything is written: a malformed export is one
PostImportError saying what is wrong, and no draft is made from it.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from newsletter.compose.source import slugify
from newsletter.errors import ContentError
from newsletter.writer.posts.convert import html_to_markdown

# An export member larger than this is not a post (a 1 GiB "posts.csv" is a mistake).
MAX_MEMBER = 64 * 1024 * 1024
# Ghost's JSON export is parsed whole: past this size it is refused by its size on disk,
# before it is read (a 100 MB one took 4 GB to parse and convert).
MAX_EXPORT_FILE = 64 * 1024 * 1024
# One post's body (HTML, Lexical or Mobiledoc, or Markdown): the HTML-to-Markdown
# conversion holds some twenty times it in memory, and a draft past 2 MB cannot be sent.
MAX_POST = 8 * 1024 * 1024


class PostImportError(ContentError):
    """The export cannot be read; nothing was imported."""


@dataclass
class Export:
    """What an export holds: its platform, its posts, and what was left out, with why."""

    platform: str
    posts: list[Post]
    dropped: list[str] = field(default_factory=list)  # "where: why", one per left-out item


def _post_too_big(where: str, what: str, size: int) -> PostImportError:
    return PostImportError(
        f"{where}: {what} is {size / 1024 / 1024:.1f} MB, over the {MAX_POST // 1024 // 1024} "
        "MB a post may be: is this the right export? (a draft past 2 MB cannot be sent)")


@dataclass
class Post:
    """One post as the platform knew it, ready to become a draft."""

    source: str  # substack | ghost | buttondown
    post_id: str  # the platform's id: re-imports recognise the post by it
    title: str
    slug: str
    markdown: str
    date: str | None = None  # YYYY-MM-DD
    subtitle: str = ""
    sent: str | None = None  # when it was emailed (ISO 8601), None if it never was
    audience: str | None = None  # the platform's audience (everyone, only_paid, …)
    published: bool = True  # public on the platform's web archive
    extra: dict[str, Any] = field(default_factory=dict)  # podcast_url, feature_image, …


def _iso(value: Any) -> str | None:
    """A platform timestamp as ISO 8601 UTC (seconds), or None when empty."""
    if value in (None, "", 0):
        return None
    if isinstance(value, int | float):  # Ghost's older exports use milliseconds
        return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = str(value).strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PostImportError(
            f"{text!r} is not a date: the export may be damaged; export it again"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(iso: str | None) -> str | None:
    return iso[:10] if iso else None


def _slugify(text: str) -> str:
    # Accents folded like `newsletter draft` does ("ünïcødé" → "unicode", not "n-c-d").
    slug = slugify(str(text))
    return "post" if slug == "issue" else slug


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, *, post: bool = False) -> str:
    if post and info.file_size > MAX_POST:
        raise _post_too_big(where, info.filename, info.file_size)
    if info.file_size > MAX_MEMBER:
        raise PostImportError(f"{where}: {info.filename} is {info.file_size} bytes, too big "
                              "for a post: is this the right export?")
    try:
        return zf.read(info).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PostImportError(f"{where}: {info.filename} is not UTF-8 text") from None
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise PostImportError(f"{where}: {info.filename} cannot be read ({exc}): the ZIP "
                              "is damaged; download the export again") from None


def _csv(text: str, where: str, need: tuple[str, ...]) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [n for n in need if n not in header]
    if missing:
        columns = "column" if len(missing) == 1 else "columns"
        raise PostImportError(f"{where} has no {', '.join(missing)} {columns}: it is not the "
                              "platform's posts list; export it again")
    reader.fieldnames = header
    try:
        return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    except csv.Error as exc:
        raise PostImportError(f"{where}: {exc}: the file is damaged; export it again") from None


# --- Substack ---------------------------------------------------------------------------

def _substack(zf: zipfile.ZipFile, where: str, dropped: list[str]) -> Iterator[Post]:
    members = {Path(i.filename).as_posix(): i for i in zf.infolist() if not i.is_dir()}
    listing = next(i for n, i in members.items() if Path(n).name == "posts.csv")
    rows = _csv(_read(zf, listing, where), f"{where}: posts.csv", ("post_id", "title"))
    html_by_id = {Path(n).name.removesuffix(".html"): i
                  for n, i in members.items() if n.endswith(".html")}
    listed = {row["post_id"] for row in rows}
    for post_id, orphan in sorted(html_by_id.items()):
        if post_id not in listed:
            dropped.append(f"{orphan.filename}: not in posts.csv, so it has no title or date: "
                           "export again, or make a draft of it by hand")
    for line, row in enumerate(rows, start=2):
        post_id = row["post_id"]
        info = html_by_id.get(post_id)
        if info is None:
            # Substack lists posts that never got a body (empty drafts): nothing to import.
            dropped.append(f"posts.csv line {line}: {row.get('title') or post_id!r} has no "
                           f"{post_id}.html in the export (an empty draft on Substack?)")
            continue
        # post_id is "<number>.<slug>"
        slug = post_id.split(".", 1)[1] if "." in post_id else _slugify(row.get("title", ""))
        try:
            sent = _iso(row.get("email_sent_at"))
            date = _iso(row.get("post_date"))
        except PostImportError as exc:
            raise PostImportError(f"{where}: posts.csv line {line}: {exc}") from None
        extra: dict[str, Any] = {}
        markdown = html_to_markdown(_read(zf, info, where, post=True))
        if row.get("type") == "podcast" and row.get("podcast_url"):
            extra["podcast_url"] = row["podcast_url"]
            markdown = f"[Listen to the episode]({row['podcast_url']})\n\n{markdown}"
        if row.get("type"):
            extra["substack_type"] = row["type"]
        yield Post(
            source="substack", post_id=post_id, title=row.get("title") or slug,
            subtitle=row.get("subtitle", ""), slug=_slugify(slug), markdown=markdown,
            date=_day(date or sent), sent=sent, audience=row.get("audience") or None,
            published=row.get("is_published", "true").lower() in ("true", "1", "t", "yes"),
            extra=extra,
        )


# --- Ghost ------------------------------------------------------------------------------

_LEXICAL_FORMAT = ((1, "strong"), (2, "em"), (4, "s"), (8, "u"), (16, "code"))


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(text: str) -> str:
    return _esc(text).replace('"', "&quot;")


def _lexical_html(node: dict[str, Any]) -> str:
    """Ghost's Lexical editor tree → HTML (the node types Ghost writes for posts)."""
    kind = node.get("type")
    inner = "".join(_lexical_html(c) for c in node.get("children", []) or [])
    if kind == "text":
        text = _esc(node.get("text", ""))
        for bit, tag in _LEXICAL_FORMAT:
            if int(node.get("format", 0) or 0) & bit:
                text = f"<{tag}>{text}</{tag}>"
        return text
    if kind == "linebreak":
        return "<br>"
    if kind == "link":
        return f'<a href="{_attr(node.get("url", ""))}">{inner}</a>'
    if kind in ("paragraph", "extended-text"):
        return f"<p>{inner}</p>"
    if kind in ("heading", "extended-heading"):
        tag = node.get("tag", "h2")
        return f"<{tag}>{inner}</{tag}>" if re.fullmatch(r"h[1-6]", tag) else f"<h2>{inner}</h2>"
    if kind == "list":
        tag = "ol" if node.get("listType") == "number" else "ul"
        return f"<{tag}>{inner}</{tag}>"
    if kind == "listitem":
        return f"<li>{inner}</li>"
    if kind in ("quote", "aside"):
        return f"<blockquote>{inner}</blockquote>"
    if kind == "horizontalrule":
        return "<hr>"
    if kind == "image":
        img = f'<img src="{_attr(node.get("src", ""))}" alt="{_attr(node.get("altText", ""))}">'
        caption = node.get("caption") or ""
        return f"<figure>{img}<figcaption>{caption}</figcaption></figure>" if caption else img
    if kind in ("codeblock", "code"):
        return f"<pre><code>{_esc(node.get('code', '')) or inner}</code></pre>"
    if kind == "markdown":
        return f"<div data-markdown>{_esc(node.get('markdown', ''))}</div>"
    if kind == "html":
        return node.get("html", "")
    if kind == "embed":
        url = node.get("url", "")
        return f'<p><a href="{_attr(url)}">{_esc(url)}</a></p>' if url else ""
    return inner  # root and unknown containers: their children


def _mobiledoc_html(doc: dict[str, Any]) -> str:
    """Ghost's older Mobiledoc format → HTML (markup sections and the common cards)."""
    markups = doc.get("markups", [])
    cards = doc.get("cards", [])

    def markers(items: list[Any]) -> str:
        out, open_tags = [], []
        for item in items:
            _, opens, closes, text = item[:4]
            for index in opens:
                tag, *attrs = markups[index]
                attr_list = attrs[0] if attrs else []
                pairs = " ".join(f'{attr_list[i]}="{_attr(str(attr_list[i + 1]))}"'
                                 for i in range(0, len(attr_list) - 1, 2))
                out.append(f"<{tag}{' ' + pairs if pairs else ''}>")
                open_tags.append(tag)
            out.append(_esc(str(text)))
            for _ in range(closes):
                out.append(f"</{open_tags.pop()}>")
        return "".join(out)

    html = []
    for section in doc.get("sections", []):
        if section[0] == 1:
            tag = section[1].lower()
            html.append(f"<{tag}>{markers(section[2])}</{tag}>")
        elif section[0] == 3:
            tag = section[1].lower()
            items = "".join(f"<li>{markers(m)}</li>" for m in section[2])
            html.append(f"<{tag}>{items}</{tag}>")
        elif section[0] == 10:
            name, payload = cards[section[1]][:2]
            if name == "markdown":
                html.append(f"<div data-markdown>{_esc(payload.get('markdown', ''))}</div>")
            elif name == "html":
                html.append(payload.get("html", ""))
            elif name == "image":
                html.append(_lexical_html({"type": "image", "src": payload.get("src", ""),
                                           "altText": payload.get("alt", ""),
                                           "caption": payload.get("caption", "")}))
            elif name == "hr":
                html.append("<hr>")
            elif name in ("code",):
                html.append(f"<pre><code>{_esc(payload.get('code', ''))}</code></pre>")
            elif name in ("embed", "bookmark") and payload.get("url"):
                html.append(f'<p><a href="{_attr(payload["url"])}">{_esc(payload["url"])}</a></p>')
    return "".join(html)


def _ghost_markdown(post: dict[str, Any], where: str) -> str:
    for key in ("html", "lexical", "mobiledoc"):
        body = post.get(key)
        if isinstance(body, str) and len(body) > MAX_POST:
            raise _post_too_big(where, f"post {post.get('slug')!r}: its {key}", len(body))
    if post.get("html"):
        html = post["html"]
    elif post.get("lexical"):
        try:
            html = _lexical_html(json.loads(post["lexical"])["root"])
        except (ValueError, KeyError, TypeError):
            raise PostImportError(f"{where}: post {post.get('slug')!r} has a damaged lexical "
                                  "body: export it again") from None
    elif post.get("mobiledoc"):
        try:
            html = _mobiledoc_html(json.loads(post["mobiledoc"]))
        except (ValueError, KeyError, TypeError, IndexError):
            raise PostImportError(f"{where}: post {post.get('slug')!r} has a damaged mobiledoc "
                                  "body: export it again") from None
    else:
        html = ""
    # Markdown cards are Markdown already: keep them out of the HTML conversion.
    parts = re.split(r"<div data-markdown>(.*?)</div>", html, flags=re.S)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(part.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
        elif part.strip():
            out.append(html_to_markdown(part).strip())
    return "\n\n".join(p.strip() for p in out if p.strip()) + "\n"


def _ghost(data: Any, where: str, dropped: list[str]) -> Iterator[Post]:
    try:
        db = data["db"][0]["data"]
        posts = db["posts"]
    except (KeyError, IndexError, TypeError):
        raise PostImportError(f"{where} is JSON but not a Ghost export (no db[0].data.posts): "
                              "export it from Ghost's Settings → Labs → Export") from None
    emailed = {}
    for email in db.get("emails", []) or []:
        if email.get("status") in ("submitted", "sent") and email.get("post_id"):
            emailed[email["post_id"]] = _iso(email.get("submitted_at") or email.get("created_at"))
    for post in posts:
        if post.get("type", "post") != "post":
            dropped.append(f"{post.get('type')} {post.get('slug')!r}: not a post (pages stay "
                           "on Ghost)")
            continue
        pid = str(post.get("id") or post.get("uuid") or "")
        if not pid or not post.get("slug"):
            raise PostImportError(f"{where}: a post has no id or slug: the export is damaged")
        published_at = _iso(post.get("published_at"))
        extra = {k: post[k] for k in ("feature_image",) if post.get(k)}
        yield Post(
            source="ghost", post_id=pid, title=post.get("title") or post["slug"],
            subtitle=post.get("custom_excerpt") or "", slug=_slugify(post["slug"]),
            markdown=_ghost_markdown(post, where), date=_day(published_at or
                                                             _iso(post.get("created_at"))),
            sent=emailed.get(pid), audience=post.get("visibility") or None,
            published=post.get("status") == "published", extra=extra,
        )


# --- Buttondown -------------------------------------------------------------------------

def _front_matter(text: str) -> tuple[dict[str, Any], str]:
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end != -1:
            try:
                meta = yaml.safe_load(text[3:end]) or {}
            except yaml.YAMLError:
                meta = {}
            if isinstance(meta, dict):
                return meta, text[end + 4:].lstrip("\n")
    return {}, text


def _buttondown(zf: zipfile.ZipFile, where: str, dropped: list[str]) -> Iterator[Post]:
    members = {Path(i.filename).as_posix(): i for i in zf.infolist() if not i.is_dir()}
    listing = next(i for n, i in members.items() if Path(n).name == "emails.csv")
    rows = _csv(_read(zf, listing, where), f"{where}: emails.csv", ("subject",))
    bodies = {Path(n).stem: i for n, i in members.items()
              if n.endswith(".md") and "emails/" in f"/{n}"}
    for line, row in enumerate(rows, start=2):
        ident = row.get("id") or row.get("slug") or ""
        info = bodies.get(row.get("slug", "")) or bodies.get(ident)
        if info is None and len(row.get("body", "")) > MAX_POST:
            raise _post_too_big(where, f"emails.csv line {line}'s body", len(row["body"]))
        meta, body = (_front_matter(_read(zf, info, where, post=True)) if info
                      else ({}, row.get("body", "")))
        if not body.strip() and info is None:
            dropped.append(f"emails.csv line {line}: {row.get('subject')!r} has no body in the "
                           "export")
            continue
        status = str(meta.get("status") or row.get("status") or "").lower()
        try:
            when = _iso(meta.get("publish_date") or row.get("publish_date")
                        or row.get("creation_date"))
        except PostImportError as exc:
            raise PostImportError(f"{where}: emails.csv line {line}: {exc}") from None
        sent = when if status in ("sent", "published", "imported") else None
        slug = str(meta.get("slug") or row.get("slug") or _slugify(row["subject"]))
        yield Post(
            source="buttondown", post_id=str(meta.get("id") or ident or slug),
            title=str(meta.get("subject") or row["subject"]), slug=_slugify(slug),
            subtitle=str(meta.get("description") or row.get("description") or ""),
            markdown=body.strip() + "\n", date=_day(when), sent=sent,
            audience=str(meta.get("email_type") or row.get("email_type") or "") or None,
            published=status in ("sent", "published", "imported"),
        )


def read_export(path: Path) -> Export:
    """Read a whole export: its posts and what it left out. Raises PostImportError before
    any write."""
    where = str(path)
    if not path.is_file():
        raise PostImportError(f"{where} does not exist: pass the export file (a Substack or "
                              "Buttondown ZIP, or Ghost's JSON)")
    dropped: list[str] = []
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                # Files only: a folder named posts.csv/ is not the list.
                names = {Path(i.filename).name for i in zf.infolist() if not i.is_dir()}
                if "posts.csv" in names:
                    return Export("substack", _all(_substack(zf, where, dropped), "Substack",
                                                   where), dropped)
                if "emails.csv" in names:
                    return Export("buttondown", _all(_buttondown(zf, where, dropped),
                                                     "Buttondown", where), dropped)
        except (zipfile.BadZipFile, OSError) as exc:
            raise PostImportError(f"{where} is a damaged ZIP ({exc}): download the export "
                                  "again") from None
        raise PostImportError(f"{where} holds neither posts.csv (Substack) nor emails.csv "
                              "(Buttondown): is it the posts export?")
    size = path.stat().st_size
    if size > MAX_EXPORT_FILE:
        # Refused by its size on disk: parsing it whole is what would exhaust memory.
        raise PostImportError(
            f"{where} is {size / 1024 / 1024:.0f} MB, over the "
            f"{MAX_EXPORT_FILE // 1024 // 1024} MB a JSON export may be: is it Ghost's posts "
            "export? (Settings → Labs → Export)")
    with path.open("rb") as f:
        if f.read(2) == b"PK":
            raise PostImportError(f"{where} is a damaged ZIP: download the export again")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise PostImportError(f"{where} is neither a ZIP nor UTF-8 JSON: pass a Substack or "
                              "Buttondown ZIP, or Ghost's JSON export") from None
    except ValueError as exc:
        raise PostImportError(f"{where} is not valid JSON ({exc}): pass Ghost's JSON export, "
                              "or a Substack or Buttondown ZIP") from None
    return Export("ghost", _all(_ghost(data, where, dropped), "Ghost", where), dropped)


def _all(posts: Iterator[Post], platform: str, where: str) -> list[Post]:
    """Every post, or one PostImportError when a field has a type the platform never writes."""
    try:
        return list(posts)
    except (AttributeError, TypeError, KeyError, IndexError) as exc:
        raise PostImportError(f"{where} is not shaped like a {platform} export "
                              f"({type(exc).__name__}: {str(exc)[:80]}): export it again") from None
