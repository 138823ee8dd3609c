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

Only what changed is rendered: a page when its draft's bytes, an image it uses, the
layouts, the settings pages read or the code changed; the index and sitemap when the
list of issues (or what it shows of one) changed; the feeds when one of their entries
did. The hashes of those inputs are kept in `.newsletter-cache/` in the newsletter
folder, outside the site (`_Cache`); without it, everything renders again, with the same
bytes. tests/writer/test_publish_incremental.py compares an incremental site with one
published from scratch after each kind of change.
"""

from __future__ import annotations

import contextlib
import hashlib
import html as html_lib
import json
import multiprocessing
import os
import re
import threading
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from markupsafe import Markup

from newsletter import store
from newsletter.audience.subscribers import MAX_NAME
from newsletter.compose import layout as layouts
from newsletter.compose.issue import Issue, build_issue
from newsletter.compose.parts import unsubscribe_mailto
from newsletter.compose.source import (
    Draft,
    date_from_path,
    draft_files,
    parse_draft,
    read_text,
)
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


def choose_issues(settings: Settings, include: Collection[Path] = (), *,
                  parse: Callable[[Path, str], Draft] = parse_draft,
                  ) -> tuple[list[Chosen], list[str]]:
    """The drafts to publish, newest first, and warnings (drafts skipped as unreadable).

    Sent drafts marked `publish: false` are among them with `page=False`; so are the
    drafts in `include` (the one a list send is about to mail) as if already sent.
    `parse` reads a draft's text (publish passes one that remembers front matter).
    """
    included = {p.resolve() for p in include}
    sent = sent_to_list(settings)
    chosen: list[Chosen] = []
    warnings: list[str] = []
    by_slug: dict[str, Path] = {}
    for path in draft_files(settings):
        try:
            draft = parse(path, read_text(path))
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
            include: Collection[Path] = (), workers: int | None = None) -> PublishResult:
    """Write the static site to `out` ([publish] out, default site/); see the module docstring.

    `include`: drafts published as if sent already (see `publish_issue`). `workers`:
    processes that render pages when many are new (default: one per core; 1 renders all
    here), with the same bytes either way.

    Everything is rendered before anything changes in the site (new bytes wait in
    temporary files beside their targets), so a broken draft or layout leaves the site as
    it was. Only what changed is rendered: see `_Cache`.
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
    cache = _Cache.load(settings, out)
    chosen, warnings = choose_issues(settings, include, parse=cache.parse)
    staged = _Staged(out)
    env = layouts.make_environment(settings.layouts_dir)
    pool = None
    try:
        pool = _start_pool(settings, options, cache, chosen, workers)
        files: set[str] = set()
        entries: dict[str, Any] = {}
        items: list[_Item] = []
        for choice in chosen:
            # Only the feeds' entries keep their content: memory stays flat with the archive.
            in_feeds = len(items) < options.feed_entries
            item, outputs = _issue(settings, options, env, cache, staged, choice, in_feeds,
                                   pool)
            files.update(outputs)
            slug = choice.draft.slug
            if item is None:  # sent but `publish: false`: no page, its email's images stay
                if slug in old_entries:  # its id and dates, should it come back later
                    entries[slug] = old_entries[slug]
                continue
            old = old_entries.get(slug) or {}
            entry: dict[str, Any] = {
                "id": old.get("id") or _tag_id(base, item.date, slug),
                "published": old.get("published") or choice.published,
                "updated": old.get("updated") if old.get("hash") == item.hash else None,
                "hash": item.hash,
            }
            entry["updated"] = entry["updated"] or (stamp if old else entry["published"])
            entries[slug] = entry
            item.id, item.published, item.updated = entry["id"], entry["published"], \
                entry["updated"]
            items.append(item)

        # The index and sitemap list every issue; the feeds carry the newest ones in full.
        listing = [i.listed() for i in items]
        feed_items = items[: options.feed_entries]
        feed_key: list[Any] = [[*i.listed(), i.key] for i in feed_items] or [stamp]
        aggregates: list[tuple[str, Any, Any]] = [
            ("index.html", listing, lambda: _index_page(settings, options, env, items)),
            ("sitemap.xml", listing, lambda: _sitemap(settings, items)),
            ("feed.xml", feed_key, lambda: _atom(settings, options, feed_items, stamp)),
            ("rss.xml", feed_key, lambda: _rss(settings, options, feed_items, stamp)),
            ("feed.json", feed_key, lambda: _json_feed(settings, options, feed_items)),
        ]
        for rel, inputs, render in aggregates:
            files.add(rel)
            key = _digest_of([cache.site, inputs])
            if cache.fresh_output(rel, key):
                staged.keep(rel)
                continue
            if rel.startswith(("feed", "rss")):  # the feeds need each entry's content
                for item in feed_items:
                    if item.content is None:
                        item.content = _rebuild_content(settings, options, env, item)
            staged.put(rel, render())
            cache.outputs[rel] = key

        result = PublishResult(out, [i.slug for i in items], warnings=warnings)
        removed = sorted(set(manifest["files"]) - files)
        record = {"version": 1, "base_url": base, "files": sorted(files), "entries": entries}
        manifest_bytes = (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8")
        written, unchanged = staged.commit()
        for rel in removed:
            if _remove(out, rel):
                result.removed.append(rel)
        _write_if_changed(out / MANIFEST, manifest_bytes)
        cache.save(staged.sizes, manifest_bytes)
    except OSError as exc:  # a folder where a file goes, a full or read-only disk
        raise ContentError(
            f"cannot write {exc.filename or out}: {exc.strerror or exc}: pass another --out"
        ) from None
    finally:
        if pool is not None:
            pool.close()
        staged.discard()
    result.written, result.unchanged = written, unchanged
    return result


# --- publishing only what changed ------------------------------------------------------------


def _text_key(path: Path, text: str) -> str:
    return hashlib.sha256(f"{path}\0{text}".encode()).hexdigest()


def _digest_of(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: Path | str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None  # gone: whatever used it renders again (and says what is missing)


_PACKAGE = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def _code_digest() -> str:
    """The code and built-in layouts pages are made with: a new version renders all again."""
    h = hashlib.sha256()
    for path in sorted([*(_PACKAGE / "compose").glob("*.py"), Path(__file__).resolve(),
                        *layouts.BUILTIN_LAYOUTS.rglob("*"), layouts.PAST_LAYOUTS]):
        if path.is_file():
            h.update(f"{path.relative_to(_PACKAGE)}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _site_digest(settings: Settings) -> str:
    """What every page reads besides its own draft: the code, the settings pages use, and
    the writer's layouts (any of them: a layout may include another) with init's record."""
    layouts_dir = settings.layouts_dir
    found: list[tuple[str, str | None]] = []
    if layouts_dir.is_dir():
        found = [(p.relative_to(layouts_dir).as_posix(), _file_digest(p))
                 for p in sorted(layouts_dir.rglob("*")) if p.is_file()]
    read = {
        "name": settings.name, "sender": settings.sender, "reply_to": settings.reply_to,
        "base_url": settings.base_url, "address": settings.address, "layout": settings.layout,
        "unsubscribe_mailto": unsubscribe_mailto(settings), "server_url": settings.server_url,
        "root": str(settings.root.resolve()), "drafts": str(settings.drafts_dir),
        "layouts_dir": str(layouts_dir), "web": repr(settings.web),
        "publish": repr(settings.publish), "max_name": MAX_NAME,
    }
    return _digest_of({"code": _code_digest(), "settings": read, "layouts": found,
                       "record": _file_digest(settings.root / layouts.RECORD)})


@dataclass
class _Item:
    """What the index, sitemap and feeds need of one issue on the web (not its page)."""

    slug: str
    title: str
    date: date
    preheader: str
    web_url: str
    excerpt: str
    image: str | None
    hash: str  # of its page
    key: str  # of its inputs: the feeds' content is made of them
    path: str  # the draft
    content: str | None = None  # the body with absolute URLs, only while a feed needs it
    id: str = ""
    published: str = ""
    updated: str = ""

    def listed(self) -> list[Any]:
        return [self.slug, self.title, self.date.isoformat(), self.preheader, self.web_url,
                self.excerpt, self.image, self.id, self.published, self.updated]

    def meta(self) -> dict[str, Any]:
        return {"title": self.title, "date": self.date.isoformat(), "preheader": self.preheader,
                "web_url": self.web_url, "excerpt": self.excerpt, "image": self.image,
                "hash": self.hash}


class _Cache:
    """What the last publish into `out` rendered, from which inputs.

    Kept beside the newsletter (.newsletter-cache/publish-<folder>.json), not in the site:
    the manifest is the site's history (ids, dates, files); this is only a shortcut, and
    losing it costs one full render. Per issue: the sha256 of its draft and of each image
    it uses, and the files it made (with their sizes and mtime_ns, to see one deleted,
    replaced or edited by hand, even to the same size). Per
    index, sitemap and feed: a digest of what it lists. Both include `site`, the digest of
    what every page reads (`_site_digest`). The cache holds only when the manifest is the
    one it was saved with.
    """

    def __init__(self, path: Path, out: Path, site: str, data: dict[str, Any]):
        self.path, self.out, self.site = path, out, site
        self.old_issues: dict[str, Any] = data.get("issues", {})
        self.old_outputs: dict[str, Any] = data.get("outputs", {})
        self.old_drafts: dict[str, Any] = data.get("drafts", {})
        self.issues: dict[str, Any] = {}
        self.outputs: dict[str, str] = {}
        self.drafts: dict[str, Any] = {}
        self.texts: dict[Path, str] = {}  # draft → the hash of its path and text
        # draft → its front matter, for `_issue` to render it without reading the YAML again
        # (taken there, so memory holds only those not rendered yet).
        self.metas: dict[Path, dict[str, Any]] = {}

    def parse(self, path: Path, text: str) -> Draft:
        """`parse_draft`, but a draft whose text the last publish parsed is not parsed again
        (YAML front matter was most of an unchanged publish's time). What choose_issues and
        `_issue` read of it is all it holds: a changed draft is parsed in full again."""
        key = _text_key(path, text)
        self.texts[path] = key
        known = self.old_drafts.get(key)
        if known is not None:
            self.drafts[key] = known
            extra = {k: _from_json(v) for k, v in known["extra"].items()}
            return Draft(path=path, meta={}, body="", body_line=1, title=known["title"],
                         subject=known["title"], preheader="", slug=known["slug"],
                         date=date.fromisoformat(known["date"]), extra=extra)
        # The text and body are dropped: a page is made from the file, parsed again then,
        # and 10,000 drafts held whole would be most of publish's memory.
        draft = replace(parse_draft(path, text), body="", text="")
        self.metas[path] = draft.meta
        extra = {k: draft.extra[k] for k in ("publish", "sent") if k in draft.extra}
        # Without a date in the front matter or the file name, a draft is dated today.
        dated = "date" in draft.meta or date_from_path(path) is not None
        if dated and all(_to_json(v) is not None for v in extra.values()):
            self.drafts[key] = {"slug": draft.slug, "title": draft.title,
                                "date": draft.date.isoformat(),
                                "extra": {k: _to_json(v) for k, v in extra.items()}}
        return draft

    @classmethod
    def load(cls, settings: Settings, out: Path) -> _Cache:
        name = hashlib.sha256(str(out).encode()).hexdigest()[:16]
        path = settings.root / ".newsletter-cache" / f"publish-{name}.json"
        site = _site_digest(settings)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}  # no cache (or a damaged one): everything renders, nothing is lost
        usable = (isinstance(data, dict) and data.get("version") == 2
                  and data.get("out") == str(out) and data.get("site") == site
                  and data.get("manifest") == _file_digest(out / MANIFEST))
        return cls(path, out, site, data if usable else {})

    def stamps_hold(self, stamps: dict[str, list[int]]) -> bool:
        """Each file is as the last publish left it: same size and mtime_ns."""
        return all(self.stamp(rel) == stamp for rel, stamp in stamps.items())

    def stamp(self, rel: str) -> list[int]:
        try:
            st = (self.out / rel).stat()
        except OSError:
            return [-1, -1]  # gone: holds nothing
        return [st.st_size, st.st_mtime_ns]

    def fresh_output(self, rel: str, key: str) -> bool:
        old = self.old_outputs.get(rel)
        if old is None or old[0] != key or not self.stamps_hold({rel: old[1]}):
            return False
        self.outputs[rel] = key
        return True

    def fresh_issue(self, slug: str, draft: Path, draft_hash: str) -> dict[str, Any] | None:
        """The cached record of `slug` when nothing it reads changed, else None."""
        old = self.old_issues.get(slug)
        if old is None or old["draft"] != str(draft) or old["hash"] != draft_hash:
            return None
        if any(_file_digest(src) != digest for _, src, digest in old["assets"]):
            return None
        if not self.stamps_hold(old["outputs"]):
            return None
        return old

    def save(self, files: Iterable[str], manifest: bytes) -> None:
        """Keep what was rendered, with each file's size and mtime_ns as written now."""
        stamps = {rel: self.stamp(rel) for rel in files}
        for record in self.issues.values():
            record["outputs"] = {rel: stamps[rel] for rel in record["outputs"]}
        data = {"version": 2, "out": str(self.out), "site": self.site,
                "manifest": hashlib.sha256(manifest).hexdigest(), "issues": self.issues,
                "drafts": self.drafts,
                "outputs": {rel: [key, stamps[rel]] for rel, key in self.outputs.items()}}
        try:
            self.path.parent.mkdir(exist_ok=True)
            # Derived, and rebuilt by any publish: never committed with the newsletter.
            _write_if_changed(self.path.parent / ".gitignore", b"*\n")
            _write_if_changed(self.path, json.dumps(data, sort_keys=True).encode("utf-8"))
        except OSError:
            # The site is written. Without a cache the next publish renders everything; an
            # old one left behind is used only while the manifest is the one it was saved
            # with (the same pages), so it cannot leave a stale page.
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)


def _to_json(value: Any) -> Any:
    """`publish:` and `sent:` as the cache keeps them; None when it cannot."""
    if isinstance(value, bool | str):
        return [type(value).__name__, value]
    if isinstance(value, datetime | date):
        return [type(value).__name__, value.isoformat()]
    return None


def _from_json(value: list[Any]) -> Any:
    kind, text = value
    if kind == "datetime":
        return datetime.fromisoformat(text)
    return date.fromisoformat(text) if kind == "date" else text


class _Staged:
    """New bytes for the site, in temporary files beside their targets until commit()."""

    def __init__(self, out: Path):
        self.out = out
        self.pending: dict[str, Path] = {}  # rel → its temporary file
        self.same: set[str] = set()
        self.sizes: dict[str, int] = {}

    def keep(self, rel: str) -> None:
        """`rel` is known to hold what it should (the cache said so)."""
        if rel in self.sizes:
            return  # an image two issues use, already staged
        self.same.add(rel)
        self.sizes[rel] = (self.out / rel).stat().st_size

    def put(self, rel: str, data: bytes) -> None:
        if rel in self.sizes:
            return  # an image two issues use: the same path holds the same bytes
        self.sizes[rel] = len(data)
        target = self.out / rel
        try:
            if target.stat().st_size == len(data) and target.read_bytes() == data:
                self.same.add(rel)  # its mtime is kept
                return
        except (FileNotFoundError, NotADirectoryError):
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        self.pending[rel] = tmp

    def commit(self) -> tuple[list[str], int]:
        for rel in sorted(self.pending):
            self.pending[rel].replace(self.out / rel)  # readers of the site never see half
        written = sorted(self.pending)
        self.pending = {}
        return written, len(self.same)

    def discard(self) -> None:
        for tmp in self.pending.values():
            tmp.unlink(missing_ok=True)


def _issue(settings: Settings, options: PublishSettings, env: Any, cache: _Cache,
           staged: _Staged, choice: Chosen, in_feeds: bool, pool: _Pool | None = None,
           ) -> tuple[_Item | None, list[str]]:
    """One issue's files (page, images, the email's images): from the cache when nothing
    it reads changed, else rendered (by the pool when it has it) and staged. Its item
    (None without a page) and files."""
    # The draft's text as choose_issues read it (front matter included) decides its page.
    draft_hash = cache.texts[choice.path]
    slug = choice.draft.slug
    old = cache.fresh_issue(slug, choice.path, draft_hash)
    if old is not None and old["page"] == choice.page:
        for rel in old["outputs"]:
            staged.keep(rel)
        cache.issues[slug] = old
        item = None
        if choice.page:
            meta = old["meta"]
            item = _Item(slug, meta["title"], date.fromisoformat(meta["date"]),
                         meta["preheader"], meta["web_url"], meta["excerpt"], meta["image"],
                         meta["hash"], old["key"], str(choice.path))
        return item, list(old["outputs"])

    rendered = pool.take(choice.path) if pool is not None else None
    if rendered is None:
        rendered = _render(settings, options, env, _job(cache, choice, in_feeds))
    outputs: list[str] = []
    assets = []
    # The email links its images at their own paths under base_url: serve those too.
    for rel, source, data in rendered.assets:
        staged.put(rel, data)
        outputs.append(rel)
        assets.append([rel, source, hashlib.sha256(data).hexdigest()])
    key = _digest_of([draft_hash, assets])
    record: dict[str, Any] = {"draft": str(choice.path), "hash": draft_hash, "assets": assets,
                              "page": choice.page, "key": key}
    item = None
    if rendered.page is not None:
        body = rendered.page
        staged.put(f"{slug}/index.html", body)
        outputs.append(f"{slug}/index.html")
        for name, data in rendered.images.items():
            staged.put(f"{slug}/{name}", data)
            outputs.append(f"{slug}/{name}")
        item = _Item(slug, rendered.title, rendered.date, rendered.preheader, rendered.web_url,
                     rendered.excerpt, rendered.image, hashlib.sha256(body).hexdigest(), key,
                     str(choice.path), content=rendered.content)
        record["meta"] = item.meta()
    record["outputs"] = outputs
    cache.issues[slug] = record
    return item, outputs


@dataclass
class _Rendered:
    """One issue rendered for the web: what `_issue` stages and lists (made by `_render`,
    here or in a worker process)."""

    assets: list[tuple[str, str, bytes]]  # the email's images: path under base_url, file, bytes
    page: bytes | None  # None for an issue without a page (`publish: false`)
    images: dict[str, bytes]  # beside the page
    title: str = ""
    date: date = date.min
    preheader: str = ""
    web_url: str = ""
    excerpt: str = ""
    image: str | None = None
    content: str | None = None  # only for an issue the feeds carry


# What _render needs of a draft: its path, its front matter and text key as choose_issues
# read them (or None), whether it has a page, whether the feeds carry it.
_Job = tuple[Path, dict[str, Any] | None, str, bool, bool]


def _job(cache: _Cache, choice: Chosen, in_feeds: bool) -> _Job:
    return (choice.path, cache.metas.pop(choice.path, None), cache.texts[choice.path],
            choice.page, in_feeds)


def _render(settings: Settings, options: PublishSettings, env: Any, job: _Job) -> _Rendered:
    path, meta, text_key, has_page, in_feeds = job
    issue = _build_for_web(settings, path, meta, text_key)
    assets = [(rel, str(source), source.read_bytes()) for rel, source in issue.assets]
    if not has_page:
        return _Rendered(assets, None, {})
    draft = issue.draft
    assert draft is not None  # build_issue always parses one
    page = render_web_page(settings, issue, draft, options=options, env=env,
                           page_base=issue.web_url)
    return _Rendered(assets, page.html.encode("utf-8"), page.images, issue.title, issue.date,
                     issue.preheader, issue.web_url or "", excerpt(issue), page.image,
                     page.content if in_feeds else None)


def _build_for_web(settings: Settings, path: Path, meta: dict[str, Any] | None = None,
                   text_key: str | None = None) -> Issue:
    """The issue's web content (no email layout, inlining or plain text: pages do not use
    them), from the front matter choose_issues parsed when the file still holds that text."""
    if meta is None or text_key is None:
        return build_issue(settings, path, web=True)
    text = read_text(path)
    if _text_key(path, text) != text_key:
        return build_issue(settings, path, web=True)  # edited since: parsed in full again
    return build_issue(settings, path, web=True, parsed=parse_draft(path, text, meta=meta),
                       text=text)


PARALLEL_FROM = 40  # pages to render before a pool of processes pays for starting


def _workers() -> int:
    return min(len(os.sched_getaffinity(0)), 8)


_WORKER: tuple[Settings, PublishSettings] | None = None


def _worker_start(settings: Settings, options: PublishSettings) -> None:
    global _WORKER
    _WORKER = (settings, options)


def _worker_render(job: _Job) -> _Rendered:
    assert _WORKER is not None  # set by the pool's initializer
    settings, options = _WORKER
    return _render(settings, options, layouts.make_environment(settings.layouts_dir), job)


class _Pool:
    """Renders the pages a first (or complete) publish needs on every core.

    Results are taken in publish's own order, so the site is written exactly as by one
    process. A window of jobs is in flight, not all of them: memory stays flat with the
    archive. Forked workers inherit the compiled layouts; a process with other threads
    running (a send) spawns them instead, as forking there can deadlock.
    """

    WINDOW = 32

    def __init__(self, settings: Settings, options: PublishSettings, jobs: list[_Job],
                 workers: int):
        context = multiprocessing.get_context(
            "fork" if threading.active_count() == 1 else "spawn")
        self.executor = ProcessPoolExecutor(workers, mp_context=context,
                                            initializer=_worker_start,
                                            initargs=(settings, options))
        self.jobs = iter(jobs)
        self.queue: deque[tuple[Path, Future[_Rendered]]] = deque()
        for _ in range(self.WINDOW):
            self._submit()

    def _submit(self) -> None:
        job = next(self.jobs, None)
        if job is not None:
            self.queue.append((job[0], self.executor.submit(_worker_render, job)))

    def take(self, path: Path) -> _Rendered | None:
        """The next result when it is `path`'s; None (render it here) otherwise."""
        if not self.queue or self.queue[0][0] != path:
            return None
        _, future = self.queue.popleft()
        self._submit()
        return future.result()  # a worker's ContentError is raised here, as it would be

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _start_pool(settings: Settings, options: PublishSettings, cache: _Cache,
                chosen: list[Chosen], workers: int | None) -> _Pool | None:
    """A pool for the drafts the cache knows nothing of (their pages must be rendered),
    when there are enough of them and more than one core; else None."""
    workers = _workers() if workers is None else workers
    pages = 0
    jobs: list[_Job] = []
    for choice in chosen:
        old = cache.old_issues.get(choice.draft.slug)
        if old is None or old["hash"] != cache.texts[choice.path]:
            jobs.append(_job(cache, choice, pages < options.feed_entries))
        pages += choice.page
    # A daemonic process (one a pool started) may not start processes of its own.
    if workers < 2 or len(jobs) < PARALLEL_FROM or multiprocessing.current_process().daemon:
        for path, meta, *_ in jobs:  # rendered here, from the front matter already read
            if meta is not None:
                cache.metas[path] = meta
        return None
    return _Pool(settings, options, jobs, workers)


def _rebuild_content(settings: Settings, options: PublishSettings, env: Any,
                     item: _Item) -> str:
    """A cached issue's body for a feed that has to be written again."""
    issue = _build_for_web(settings, Path(item.path))
    draft = issue.draft
    assert draft is not None  # build_issue always parses one
    return render_web_page(settings, issue, draft, options=options, env=env,
                           page_base=issue.web_url).content


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
    issue = build_issue(settings, path, web=True)
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
                items: list[_Item]) -> bytes:
    base = settings.base_url
    issues = [
        layouts.namespace("item", title=i.title, date=i.date, preheader=i.preheader,
                          slug=i.slug, url=i.web_url, excerpt=i.excerpt)
        for i in items
    ]
    context = {
        "newsletter": _newsletter(settings),
        "issues": issues,
        "page": layouts.namespace(
            "page", url=f"{base}/", lang=options.lang, description=options.description,
            image=next((i.image for i in items if i.image), None),
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


def _feed_updated(items: Iterable[_Item], stamp: str) -> str:
    return max((i.updated for i in items), default=stamp)


def _atom(settings: Settings, options: PublishSettings, items: list[_Item],
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
        entry = _sub(feed, "entry")
        _sub(entry, "title", item.title)
        _sub(entry, "link", rel="alternate", type="text/html", href=item.web_url)
        _sub(entry, "id", item.id)
        _sub(entry, "published", item.published)
        _sub(entry, "updated", item.updated)
        if item.preheader:
            _sub(entry, "summary", item.preheader)
        _sub(entry, "content", item.content or "", type="html")
    return _xml(feed)


def _rfc822(iso: str) -> str:
    return format_datetime(datetime.fromisoformat(iso.replace("Z", "+00:00")), usegmt=True)


def _rss(settings: Settings, options: PublishSettings, items: list[_Item],
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
        el = _sub(channel, "item")
        _sub(el, "title", item.title)
        _sub(el, "link", item.web_url)
        _sub(el, "guid", item.id, isPermaLink="false")
        _sub(el, "pubDate", _rfc822(item.published))
        _sub(el, "description", item.preheader or item.title)
        _sub(el, "{http://purl.org/rss/1.0/modules/content/}encoded", item.content or "")
    return _xml(rss)


def _json_feed(settings: Settings, options: PublishSettings,
               items: list[_Item]) -> bytes:
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
        entry = {"id": item.id, "url": item.web_url, "title": item.title,
                 "content_html": item.content or "", "date_published": item.published,
                 "date_modified": item.updated}
        if item.preheader:
            entry["summary"] = item.preheader
        if item.image:
            entry["image"] = item.image
        feed["items"].append(entry)
    return (json.dumps(feed, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _sitemap(settings: Settings, items: list[_Item]) -> bytes:
    ns = "http://www.sitemaps.org/schemas/sitemap/0.9"
    urlset = ET.Element("urlset", {"xmlns": ns})
    newest = max((i.updated for i in items), default=None)
    home = _sub(urlset, "url")
    _sub(home, "loc", f"{settings.base_url}/")
    if newest:
        _sub(home, "lastmod", newest[:10])
    for item in items:
        url = _sub(urlset, "url")
        _sub(url, "loc", item.web_url)
        _sub(url, "lastmod", item.updated[:10])
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
