"""`newsletter publish`: the static archive — one web page per issue, an index, feeds, a sitemap.

    drafts that went to the list (or say `publish: true`)
      ──build_issue()──▶ Issue.content (the same body the email has)
      ──layouts/web.html──▶ site/<slug>/index.html, images beside it (content-hashed names)
      ──layouts/index.html, Atom, RSS 2.0, JSON Feed 1.1, sitemap──▶ site/

Which issues: those sent to the list (a `list` campaign with at least one
delivery sent, or `sent: <date>` in the front matter, as imported posts carry),
plus drafts with `publish: true`; `publish: false` keeps a sent issue off the
web. A draft that was never sent is never published by accident.

The web version has no personalization (subscriber values render with their
default, or empty), no unsubscribe token and no tracking.

Re-running writes only files whose bytes changed (mtimes of the rest are kept)
and removes files of issues taken off. It only ever removes what it wrote: the
manifest `site/.newsletter-publish.json` lists them, with each entry's
permanent id (a tag: URI made at first publish and kept from then on, so feed
readers never see a re-published issue as new) and its first-published and
last-changed times.
"""

from __future__ import annotations

import hashlib
import html as html_lib
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from markupsafe import Markup

from newsletter import store
from newsletter.audience.subscribers import MAX_NAME
from newsletter.compose import layout as layouts
from newsletter.compose.issue import Issue, build_issue
from newsletter.compose.parts import unsubscribe_mailto
from newsletter.compose.source import Draft, draft_files, parse_draft, read_text
from newsletter.errors import ConfigError, ContentError, NewsletterError
from newsletter.settings import PublishSettings, Settings

MANIFEST = ".newsletter-publish.json"
FEED_FILES = ("feed.xml", "rss.xml", "feed.json")
RESERVED = {"index.html", "sitemap.xml", MANIFEST, *FEED_FILES}

_SLUG_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]*$")
_IMG_SRC = re.compile(r"""(<img\b[^>]*?\ssrc=)("([^"]*)"|'([^']*)')""", re.IGNORECASE)
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# --- settings -----------------------------------------------------------------------------


def _subscribe_action(settings: Settings) -> str | None:
    # The subscribe form appears once the server is set up (`newsletter serve` takes it, at
    # [server] url when the archive is on a static host; no form without a server).
    if settings.base_url and settings.server_url and settings.web.configured:
        return f"{settings.server_url}/subscribe"
    return None


# --- which issues -------------------------------------------------------------------------


@dataclass
class Chosen:
    """A draft that goes on the web, and when it first went out (ISO 8601 UTC).

    `page` is False for an issue sent but marked `publish: false`: it gets no
    page, but the images its email links to stay online for the inboxes that
    have it.
    """

    path: Path
    draft: Draft
    published: str
    page: bool = True


def sent_to_list(settings: Settings) -> dict[str, str]:
    """slug → when its first delivery to the whole list was sent; {} without a database.

    Read-only: publishing never creates or migrates the database.
    """
    rows = store.read_only_rows(
        settings.database,
        "SELECT c.slug, MIN(COALESCE(d.sent_at, d.updated_at)) FROM campaigns c "
        "JOIN deliveries d ON d.campaign_id = c.id "
        # An issue sent only to a tag or segment (a paid-only post) is on the web only when
        # its draft says `publish: true` (choose_issues reads that): not from its send.
        "WHERE c.kind = 'list' AND c.audience = 'subscribers' AND d.state = 'sent' "
        "GROUP BY c.slug",
    )
    return {slug: _utc(when) for slug, when in rows if when}


def _utc(value: Any) -> str:
    """A date, datetime or ISO text as `YYYY-MM-DDTHH:MM:SSZ`."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00Z"
    raise ValueError(value)


def choose_issues(settings: Settings, include: Collection[Path] = ()
                  ) -> tuple[list[Chosen], list[str]]:
    """The drafts to publish, newest first, and warnings (drafts skipped as unreadable).

    Sent drafts marked `publish: false` are among them with `page=False`; so are the
    drafts in `include` (the one a list send is about to mail) as if already sent.
    """
    included = {p.resolve() for p in include}
    sent = sent_to_list(settings)
    chosen: list[Chosen] = []
    warnings: list[str] = []
    by_slug: dict[str, Path] = {}
    for path in draft_files(settings):
        try:
            draft = parse_draft(path, read_text(path))
        except NewsletterError as exc:
            if path.stem in sent or re.sub(r"^\d{4}-\d{2}-\d{2}-", "", path.stem) in sent:
                raise
            warnings.append(f"skipped {path.name}, which cannot be read: {exc}")
            continue
        flag = draft.extra.get("publish")
        if flag is not None and not isinstance(flag, bool):
            raise ContentError(f"{path}: publish: {flag!r} must be true or false")
        when = sent.get(draft.slug)
        front_sent = draft.extra.get("sent")
        if when is None and front_sent not in (None, False, ""):
            try:
                when = _utc(draft.date if front_sent is True else front_sent)
            except ValueError:
                raise ContentError(
                    f"{path}: sent: {front_sent!r} is not a date: write it as YYYY-MM-DD"
                ) from None
        if when is None and flag is not True and path.resolve() not in included:
            continue
        if not _SLUG_OK.fullmatch(draft.slug) or draft.slug in RESERVED:
            raise ContentError(
                f"{path}: slug {draft.slug!r} cannot be a web address: use letters, digits, "
                "- and _ (set slug: in the front matter)"
            )
        if draft.slug in by_slug:
            raise ContentError(
                f"{path} and {by_slug[draft.slug]} both have the slug {draft.slug!r}: give one "
                "of them another slug: in its front matter"
            )
        by_slug[draft.slug] = path
        chosen.append(Chosen(path, draft, when or _utc(draft.date), page=flag is not False))
    chosen.sort(key=lambda c: (c.draft.date, c.published, c.draft.slug), reverse=True)
    return chosen, warnings


# --- one web page -------------------------------------------------------------------------


@dataclass
class WebPage:
    """One issue's web version: the page, its content for feeds, and the images beside it."""

    issue: Issue
    html: str
    content: str  # the body with absolute URLs (feeds carry it)
    images: dict[str, bytes]  # file name beside the page → bytes
    image: str | None  # the first image's absolute URL (Open Graph, JSON Feed)


def _hashed_name(name: str, data: bytes) -> str:
    stem, dot, suffix = Path(name).name.rpartition(".")
    if not dot:
        stem, suffix = suffix, "bin"
    stem = re.sub(r"[^A-Za-z0-9_-]", "-", stem).strip("-")[:40] or "image"
    return f"{stem}.{hashlib.sha256(data).hexdigest()[:10]}.{suffix.lower()}"


def _anonymous(issue: Issue) -> str:
    # Every subscriber value takes its default (or nothing): the page is the same for anyone.
    content = issue.content
    for marker, slot in issue.slots.items():
        content = content.replace(marker, html_lib.escape(slot.value("", "", {}, "")))
    return content


def render_web_page(
    settings: Settings,
    issue: Issue,
    draft: Draft,
    *,
    options: PublishSettings | None = None,
    env: Any = None,
    page_base: str | None = None,
) -> WebPage:
    """The web version of `issue` (layouts/web.html), images renamed by content hash.

    `page_base` is the absolute URL of the folder the page and its images live
    in (the issue's web_url when publishing); images are linked relative to it.
    """
    options = options or settings.publish
    env = env or layouts.make_environment(settings.layouts_dir)
    content = _anonymous(issue)
    # src as the email has it (under base_url, or cid: when embedded) → (file name, bytes)
    sources: dict[str, tuple[str, bytes]] = {}
    for rel, file in issue.assets:
        if settings.base_url:
            sources[f"{settings.base_url}/{quote(rel)}"] = (file.name, file.read_bytes())
    for attached in issue.attachments:
        sources[f"cid:{attached.cid}"] = (attached.filename, attached.data)
    images: dict[str, bytes] = {}
    names: dict[str, str] = {}
    for url, (filename, data) in sources.items():
        names[url] = _hashed_name(filename, data)
        images[names[url]] = data

    def rewrite(base: str) -> str:
        def fix(m: re.Match[str]) -> str:
            raw = m.group(3) if m.group(3) is not None else m.group(4)
            name = names.get(html_lib.unescape(raw))
            if name is None:
                return m.group(0)
            return f'{m.group(1)}"{html_lib.escape(base + name, quote=True)}"'

        return _IMG_SRC.sub(fix, content)

    absolute = rewrite(page_base or "")
    if page_base:  # in a feed reader `#fn:1` must point at the page, not the feed
        absolute = absolute.replace('href="#', f'href="{html_lib.escape(page_base)}#')
    first = next(iter(_IMG_SRC.finditer(absolute)), None)
    image = None
    if first is not None:
        src = html_lib.unescape(first.group(3) if first.group(3) is not None else first.group(4))
        image = src if src.startswith(("https://", "http://")) else None
    index_url = f"{settings.base_url}/" if settings.base_url else None
    context = {
        "newsletter": _newsletter(settings),
        "issue": layouts.namespace("issue", **{
            **draft.extra, "title": issue.title, "subject": issue.subject, "date": issue.date,
            "preheader": issue.preheader, "slug": issue.slug, "web_url": issue.web_url,
            "content": Markup(rewrite("")),
        }),
        "page": layouts.namespace(
            "page", url=issue.web_url, index_url=index_url, lang=options.lang,
            feed_url=f"{settings.base_url}/feed.xml" if settings.base_url else None,
            description=issue.preheader, image=image,
        ),
        "subscribe": _subscribe(settings),
    }
    template = layouts.load_layout(env, "web.html")
    html = layouts.render_template(template, context, where=template.filename or "web.html")
    return WebPage(issue, html, absolute, images, image)


def _newsletter(settings: Settings) -> Any:
    return layouts.namespace(
        "newsletter", name=settings.name, base_url=settings.base_url, address=settings.address,
        sender=settings.sender, reply_to=settings.reply_to,
        unsubscribe_mailto=unsubscribe_mailto(settings),
        description=settings.publish.description,
        home=f"{settings.base_url}/" if settings.base_url else None,
    )


def _subscribe(settings: Settings) -> Any:
    """What the archive pages' sign-up form needs (its action, the name's limit), or None."""
    action = _subscribe_action(settings)
    if not action:
        return None
    return layouts.namespace("subscribe", action=action, name_max=MAX_NAME)


RECENT = 10  # issues the archive home shows with their excerpt; the rest are listed below


def excerpt(issue: Issue, limit: int = 220) -> str:
    """The issue's preheader, else the start of its text, cut at a word (plain text)."""
    if issue.preheader:
        return issue.preheader
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", _anonymous(issue),
                  flags=re.IGNORECASE | re.DOTALL)
    # A block's end is a gap between words; an inline tag (a link, bold) is not.
    text = re.sub(r"</(?:p|h[1-6]|li|blockquote|div|pre|td|th)\s*>|<br\s*/?>", " ", text,
                  flags=re.IGNORECASE)
    text = re.sub(r"<[^>]+>", "", text)
    text = " ".join(html_lib.unescape(text).split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",.;:") + "…"


# --- the site -----------------------------------------------------------------------------


@dataclass
class PublishResult:
    """What a publish run did. Paths are relative to `out`."""

    out: Path
    issues: list[str] = field(default_factory=list)  # slugs on the web, newest first
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _read_manifest(out: Path) -> dict[str, Any]:
    """What the last publish wrote there; empty when nothing was ever published there.

    A damaged manifest is an error, not "nothing published": read as empty, publish would
    forget which old pages to take down and give every feed entry a new date.
    """
    path = out / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return {"files": [], "entries": {}}
    except (OSError, ValueError) as exc:
        data = exc
    if not isinstance(data, dict) or not isinstance(data.get("files", []), list) \
            or not isinstance(data.get("entries", {}), dict):
        why = data.strerror if isinstance(data, OSError) else "it is not the JSON publish writes"
        raise ContentError(
            f"cannot read {path} ({why}): restore it from a backup, or delete it and publish "
            "again (the feed's entries then get new dates, and pages no longer published stay "
            "until you remove them)")
    data.setdefault("files", [])
    data.setdefault("entries", {})
    return data


def _tag_id(base_url: str, day: date, slug: str) -> str:
    # RFC 4151 tag URI: the host and the day it was minted, then the archive path and slug.
    parts = urlsplit(base_url)
    path = parts.path.strip("/")
    return f"tag:{parts.hostname},{day.isoformat()}:{path + '/' if path else ''}{slug}"


def publish(settings: Settings, out: Path | None = None, *, now: datetime | None = None,
            include: Collection[Path] = ()) -> PublishResult:
    """Write the static site to `out` ([publish] out, default site/); see the module docstring.

    `include`: drafts published as if sent already (see `publish_issue`).

    Everything is rendered before anything is written, so a broken draft or
    layout leaves the site as it was.
    """
    if not settings.base_url:
        raise ConfigError(
            "publish needs base_url: set [newsletter] base_url in newsletter.toml to the address "
            'the site will live at, e.g. base_url = "https://example.com/news"'
        )
    options = settings.publish
    out = (out.expanduser() if out is not None else settings.root / options.out).absolute()
    if out.exists() and not out.is_dir():
        raise ContentError(f"{out} is a file: pass a folder to --out")
    stamp = _utc(now or datetime.now(UTC))
    base = settings.base_url
    manifest = _read_manifest(out)
    old_entries: dict[str, Any] = manifest["entries"]
    chosen, warnings = choose_issues(settings, include)
    env = layouts.make_environment(settings.layouts_dir)

    files: dict[str, bytes] = {}
    entries: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    for choice in chosen:
        issue = build_issue(settings, choice.path, inline=False)  # the email's html is not used
        # The email links its images at their own paths under base_url: serve those too.
        for rel, source in issue.assets:
            files.setdefault(rel, source.read_bytes())
        if not choice.page:
            if issue.slug in old_entries:  # its id and dates, should it come back later
                entries[issue.slug] = old_entries[issue.slug]
            continue
        page = render_web_page(settings, issue, choice.draft, options=options, env=env,
                               page_base=issue.web_url)
        slug = issue.slug
        body = page.html.encode("utf-8")
        files[f"{slug}/index.html"] = body
        for name, data in page.images.items():
            files[f"{slug}/{name}"] = data
        digest = hashlib.sha256(body).hexdigest()
        old = old_entries.get(slug) or {}
        entry = {
            "id": old.get("id") or _tag_id(base, issue.date, slug),
            "published": old.get("published") or choice.published,
            "updated": old.get("updated") if old.get("hash") == digest else None,
            "hash": digest,
        }
        entry["updated"] = entry["updated"] or (stamp if old else entry["published"])
        entries[slug] = entry
        items.append({"issue": issue, "page": page, **entry})

    files["index.html"] = _index_page(settings, options, env, items)
    files["feed.xml"] = _atom(settings, options, items[: options.feed_entries], stamp)
    files["rss.xml"] = _rss(settings, options, items[: options.feed_entries], stamp)
    files["feed.json"] = _json_feed(settings, options, items[: options.feed_entries])
    files["sitemap.xml"] = _sitemap(settings, items)

    result = PublishResult(out, [i["issue"].slug for i in items], warnings=warnings)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for rel in sorted(files):
            if _write_if_changed(out / rel, files[rel]):
                result.written.append(rel)
            else:
                result.unchanged += 1
        for rel in sorted(set(manifest["files"]) - set(files)):
            if _remove(out, rel):
                result.removed.append(rel)
        record = {"version": 1, "base_url": base, "files": sorted(files), "entries": entries}
        _write_if_changed(out / MANIFEST, (json.dumps(record, indent=1, sort_keys=True) + "\n")
                          .encode("utf-8"))
    except OSError as exc:  # a folder where a file goes, a full or read-only disk
        raise ContentError(
            f"cannot write {exc.filename or out}: {exc.strerror or exc}: pass another --out"
        ) from None
    return result


_HEAD = re.compile(r"<head\b[^>]*>", re.IGNORECASE)
NOINDEX = '<meta name="robots" content="noindex">'


def publish_issue(settings: Settings, path: Path, *, unlisted: bool = False) -> PublishResult:
    """Put the issue of draft `path` on the web before it is mailed: the entry point a send
    uses, so "View online" and every image answer when the first message lands.

    Listed (a list send): the site is published with this draft among its issues (its
    page and images, the home page, feeds and sitemap), as `publish` will keep it once sent.
    Unlisted (a test send): only its page, marked noindex, and its images, written outside
    the manifest: in no index, feed or sitemap, and no later `publish` removes them while
    mailed test messages link to them. A page already published listed is left as it is.
    """
    if not unlisted:
        return publish(settings, include=(path,))
    if not settings.base_url:
        raise ConfigError("publishing an issue needs [newsletter] base_url in newsletter.toml")
    out = (settings.root / settings.publish.out).absolute()
    listed = set(_read_manifest(out)["files"])
    issue = build_issue(settings, path, inline=False)
    files: dict[str, bytes] = {rel: source.read_bytes() for rel, source in issue.assets}
    if issue.web_url and issue.draft is not None and f"{issue.slug}/index.html" not in listed:
        page = render_web_page(settings, issue, issue.draft, page_base=issue.web_url)
        html = _HEAD.sub(lambda m: m.group(0) + NOINDEX, page.html, count=1)
        files[f"{issue.slug}/index.html"] = html.encode("utf-8")
        files.update({f"{issue.slug}/{name}": data for name, data in page.images.items()})
    result = PublishResult(out, [])
    try:
        for rel in sorted(files):
            if _write_if_changed(out / rel, files[rel]):
                result.written.append(rel)
            else:
                result.unchanged += 1
    except OSError as exc:
        raise ContentError(
            f"cannot write {exc.filename or out}: {exc.strerror or exc}: check [publish] out"
        ) from None
    return result


def _write_if_changed(target: Path, data: bytes) -> bool:
    """Write `data` to `target` unless it already holds exactly that (its mtime is kept)."""
    try:
        if target.stat().st_size == len(data) and target.read_bytes() == data:
            return False
    except (FileNotFoundError, NotADirectoryError):
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(target)  # readers of the site never see half a file
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _remove(out: Path, rel: str) -> bool:
    target = out / rel
    if Path(rel).is_absolute() or ".." in Path(rel).parts or not target.is_file():
        return False  # only files under out that a manifest listed
    target.unlink()
    parent = target.parent
    while parent != out and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
    return True


def _index_page(settings: Settings, options: PublishSettings, env: Any,
                items: list[dict[str, Any]]) -> bytes:
    base = settings.base_url
    issues = [
        layouts.namespace("item", title=i["issue"].title, date=i["issue"].date,
                          preheader=i["issue"].preheader, slug=i["issue"].slug,
                          url=i["issue"].web_url, excerpt=excerpt(i["issue"]))
        for i in items
    ]
    context = {
        "newsletter": _newsletter(settings),
        "issues": issues,
        "page": layouts.namespace(
            "page", url=f"{base}/", lang=options.lang, description=options.description,
            image=next((i["page"].image for i in items if i["page"].image), None),
            feed_url=f"{base}/feed.xml", rss_url=f"{base}/rss.xml", json_url=f"{base}/feed.json",
            recent=RECENT,
        ),
        "subscribe": _subscribe(settings),
    }
    template = layouts.load_layout(env, "index.html")
    html = layouts.render_template(template, context, where=template.filename or "index.html")
    return html.encode("utf-8")


# --- feeds --------------------------------------------------------------------------------

ATOM = "http://www.w3.org/2005/Atom"
# RSS borrows atom:link and content:encoded; the Atom feed declares its namespace itself
# (xmlns on <feed>, unqualified children), so neither document gets a stray default one.
ET.register_namespace("atom", ATOM)
ET.register_namespace("content", "http://purl.org/rss/1.0/modules/content/")


def _author(settings: Settings) -> str:
    name, _ = parseaddr(settings.sender or "")
    return name or settings.name


def _xml_text(text: str) -> str:
    return _XML_BAD.sub("", text)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = _xml_text(text)
    return el


def _xml(root: ET.Element) -> bytes:
    ET.indent(root)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8",
                                                                      xml_declaration=False) + b"\n"


def _feed_updated(items: Iterable[dict[str, Any]], stamp: str) -> str:
    return max((i["updated"] for i in items), default=stamp)


def _atom(settings: Settings, options: PublishSettings, items: list[dict[str, Any]],
          stamp: str) -> bytes:
    """Atom 1.0 (RFC 4287), full content."""
    base = settings.base_url
    feed = ET.Element("feed", {"xmlns": ATOM,
                               "{http://www.w3.org/XML/1998/namespace}lang": options.lang})
    _sub(feed, "title", settings.name)
    if options.description:
        _sub(feed, "subtitle", options.description)
    _sub(feed, "link", rel="self", type="application/atom+xml", href=f"{base}/feed.xml")
    _sub(feed, "link", rel="alternate", type="text/html", href=f"{base}/")
    _sub(feed, "id", f"{base}/")
    _sub(feed, "updated", _feed_updated(items, stamp))
    author = _sub(feed, "author")
    _sub(author, "name", _author(settings))
    _sub(feed, "generator", "newsletter")
    for item in items:
        issue, page = item["issue"], item["page"]
        entry = _sub(feed, "entry")
        _sub(entry, "title", issue.title)
        _sub(entry, "link", rel="alternate", type="text/html", href=issue.web_url)
        _sub(entry, "id", item["id"])
        _sub(entry, "published", item["published"])
        _sub(entry, "updated", item["updated"])
        if issue.preheader:
            _sub(entry, "summary", issue.preheader)
        _sub(entry, "content", page.content, type="html")
    return _xml(feed)


def _rfc822(iso: str) -> str:
    return format_datetime(datetime.fromisoformat(iso.replace("Z", "+00:00")), usegmt=True)


def _rss(settings: Settings, options: PublishSettings, items: list[dict[str, Any]],
         stamp: str) -> bytes:
    """RSS 2.0, full content in <content:encoded>, the preheader in <description>."""
    base = settings.base_url
    rss = ET.Element("rss", {"version": "2.0"})
    channel = _sub(rss, "channel")
    _sub(channel, "title", settings.name)
    _sub(channel, "link", f"{base}/")
    _sub(channel, "description", options.description or settings.name)
    _sub(channel, "language", options.lang)
    _sub(channel, "lastBuildDate", _rfc822(_feed_updated(items, stamp)))
    _sub(channel, "generator", "newsletter")
    _sub(channel, f"{{{ATOM}}}link", href=f"{base}/rss.xml", rel="self",
         type="application/rss+xml")
    for item in items:
        issue, page = item["issue"], item["page"]
        el = _sub(channel, "item")
        _sub(el, "title", issue.title)
        _sub(el, "link", issue.web_url)
        _sub(el, "guid", item["id"], isPermaLink="false")
        _sub(el, "pubDate", _rfc822(item["published"]))
        _sub(el, "description", issue.preheader or issue.title)
        _sub(el, "{http://purl.org/rss/1.0/modules/content/}encoded", page.content)
    return _xml(rss)


def _json_feed(settings: Settings, options: PublishSettings,
               items: list[dict[str, Any]]) -> bytes:
    """JSON Feed 1.1."""
    base = settings.base_url
    feed: dict[str, Any] = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": settings.name,
        "home_page_url": f"{base}/",
        "feed_url": f"{base}/feed.json",
        "language": options.lang,
        "authors": [{"name": _author(settings)}],
    }
    if options.description:
        feed["description"] = options.description
    feed["items"] = []
    for item in items:
        issue, page = item["issue"], item["page"]
        entry = {"id": item["id"], "url": issue.web_url, "title": issue.title,
                 "content_html": page.content, "date_published": item["published"],
                 "date_modified": item["updated"]}
        if issue.preheader:
            entry["summary"] = issue.preheader
        if page.image:
            entry["image"] = page.image
        feed["items"].append(entry)
    return (json.dumps(feed, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _sitemap(settings: Settings, items: list[dict[str, Any]]) -> bytes:
    ns = "http://www.sitemaps.org/schemas/sitemap/0.9"
    urlset = ET.Element("urlset", {"xmlns": ns})
    newest = max((i["updated"] for i in items), default=None)
    home = _sub(urlset, "url")
    _sub(home, "loc", f"{settings.base_url}/")
    if newest:
        _sub(home, "lastmod", newest[:10])
    for item in items:
        url = _sub(urlset, "url")
        _sub(url, "loc", item["issue"].web_url)
        _sub(url, "lastmod", item["updated"][:10])
    return _xml(urlset)


# --- for check ----------------------------------------------------------------------------


def unpublished(settings: Settings, issue: Issue) -> list[str]:
    """URLs the email links to that the published site does not have yet: its page, images.

    The site is [publish] out (default site/); what is in it is its manifest.
    [] without base_url (nothing is linked then) and when no site was ever
    published there (the writer hosts the files another way, e.g. build --out).
    """
    if not settings.base_url:
        return []
    out = settings.root / settings.publish.out
    if not (out / MANIFEST).is_file():
        return []
    files = set(_read_manifest(out)["files"])
    missing = []
    hidden = bool(issue.draft and issue.draft.extra.get("publish") is False)
    if not hidden and f"{issue.slug}/index.html" not in files:
        missing.append(f"{settings.base_url}/{issue.slug}/")
    missing += [f"{settings.base_url}/{quote(rel)}" for rel, _ in issue.assets if rel not in files]
    return missing


def shown(path: Path) -> str:
    """`path` relative to the current folder when below it, else in full."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel
