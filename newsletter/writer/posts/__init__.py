"""`newsletter import-posts EXPORT`: a platform's archive of past posts → Markdown drafts.

The whole export is read and checked first (platforms.py), then each post becomes
`drafts/<date>-<slug>.md` with front matter: title, preheader (the subtitle), date, slug,
`sent:` when the platform emailed it (so `publish` lists it and a list send refuses it
without --resend), the platform's `audience`, `publish: false` for posts that were not
public on the platform (paid-only posts, unpublished drafts) so they stay off the web, and
`publish: true` for public posts that were never emailed, so the archive keeps them.

Re-running an import is safe: posts are recognised by their platform id (the
`imported_posts` table), a draft the writer edited since is never overwritten, a draft
they renamed is followed (by its `imported_from`), a draft they deleted is not brought
back, posts sharing a slug get "-2", "-3"…, and a draft of the same name that import-posts did not
write is left alone.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from newsletter import store
from newsletter.audience.events import now_iso
from newsletter.compose.layout import literal
from newsletter.compose.source import draft_files, parse_draft, slug_from_path
from newsletter.errors import ContentError, NewsletterError
from newsletter.settings import Settings
from newsletter.writer.posts.convert import image_urls
from newsletter.writer.posts.platforms import Post, PostImportError, read_export

__all__ = ["ImportReport", "PostImportError", "import_posts"]

MAX_IMAGE = 20 * 1024 * 1024


@dataclass
class ImportReport:
    platform: str
    written: list[Path] = field(default_factory=list)  # new drafts
    updated: list[Path] = field(default_factory=list)  # untouched drafts refreshed
    unchanged: list[Path] = field(default_factory=list)
    kept: list[tuple[Path, str]] = field(default_factory=list)  # (draft, why it was left)
    images: int = 0  # downloaded
    image_failures: list[str] = field(default_factory=list)  # "url: reason"
    dropped: list[str] = field(default_factory=list)  # what the export held but gave no draft
    dry_run: bool = False

    @property
    def total(self) -> int:
        return len(self.written) + len(self.updated) + len(self.unchanged) + len(self.kept)


_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}-")


def _jinja_text(body: str) -> str:
    """The body as Jinja that renders to exactly itself (braces are text, not template)."""
    if "{{" not in body and "{%" not in body and "{#" not in body:
        return body
    return literal("\n" + body) + "\n"


def _one_line(text: str) -> str:
    # A subject and a preheader are one line: a newline in a title would break the front
    # matter (and has no place in a Subject header).
    return " ".join(str(text).split())


def _draft_text(post: Post) -> str:
    meta: dict[str, object] = {"title": _one_line(post.title)}
    if post.subtitle:
        meta["preheader"] = _one_line(post.subtitle)
    if post.date:
        meta["date"] = post.date
    meta["slug"] = post.slug
    if post.sent:
        meta["sent"] = post.sent
    if post.audience:
        meta["audience"] = post.audience
    public = post.published and (post.audience or "everyone") in ("everyone", "public")
    if not public:
        meta["publish"] = False  # paid-only or never public: not for the open web
    elif not post.sent:
        meta["publish"] = True  # public on the platform's web, never emailed: still archived
    meta.update(post.extra)
    meta["imported_from"] = f"{post.source}:{post.post_id}"
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    # Jinja runs over drafts: braces in an imported post are text, not template code.
    return f"---\n{front}---\n\n{_jinja_text(post.markdown)}"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _download_images(
    post: Post, drafts_dir: Path, report: ImportReport, client: httpx.Client, dry_run: bool
) -> None:
    """Fetch the post's remote images into drafts/images/<slug>/ and point the draft at them."""
    for url in image_urls(post.markdown):
        try:
            data, kind = _fetch_image(client, url)
        except (httpx.HTTPError, ValueError) as exc:
            why = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
            if isinstance(exc, httpx.HTTPStatusError):
                why = f"HTTP {exc.response.status_code}"
            report.image_failures.append(f"{url}: {why}: kept the remote URL")
            continue
        suffix = mimetypes.guess_extension(kind) or Path(httpx.URL(url).path).suffix or ".img"
        name = f"images/{post.slug}/{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
        if not dry_run:
            target = drafts_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        post.markdown = post.markdown.replace(f"]({url}", f"]({name}")
        report.images += 1


def _fetch_image(client: httpx.Client, url: str) -> tuple[bytes, str]:
    """(bytes, content type) of an image, read no further than MAX_IMAGE (ValueError)."""
    with client.stream("GET", url) as response:
        response.raise_for_status()
        kind = response.headers.get("content-type", "").split(";")[0].strip()
        if not kind.startswith("image/"):
            raise ValueError(f"not an image ({kind or 'no type'})")
        chunks, size = [], 0
        # Streamed: a host that sends without end is cut off here, not read into memory.
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_IMAGE:
                raise ValueError(f"over {MAX_IMAGE // 1024 // 1024} MB")
            chunks.append(chunk)
    return b"".join(chunks), kind


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def import_posts(
    settings: Settings,
    export: Path,
    *,
    download_images: bool = False,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Turn a platform export into drafts; see the module docstring for the rules."""
    read = read_export(export)
    posts = read.posts
    report = ImportReport(platform=read.platform, dry_run=dry_run, dropped=read.dropped)
    drafts = settings.drafts_dir
    if dry_run and not settings.database.exists():
        db = store.connect(Path(":memory:"))  # a dry run leaves no database behind
    else:
        db = store.connect(settings.database)
    known = {(r[0], r[1]): (r[2], r[3]) for r in
             db.execute("SELECT source, post_id, path, sha256 FROM imported_posts")}
    taken: set[str] = set()
    # Every slug a draft already has: two drafts sharing one would share the sent check
    # and the archive page, so a post whose slug is taken gets "-2", "-3"….
    slugs, origins = _draft_slugs(settings)
    plans: list[tuple[Post, Path, str]] = []  # post, draft, written | updated | adopted
    for post in posts:
        record = known.get((post.source, post.post_id))
        if record is not None:
            path = settings.root / record[0]
            if not path.exists():  # renamed by the writer? Its front matter says whose it is.
                path = origins.get(f"{post.source}:{post.post_id}", path)
            # A re-import keeps the slug the first import gave (it may have been sent).
            post.slug = slugs.get(path, post.slug)
        elif (own := origins.get(f"{post.source}:{post.post_id}")) is not None \
                and own.name not in taken:
            # Unrecorded, yet its front matter says it is this post's: a run killed before
            # it recorded its drafts wrote it (adopted below if untouched, else kept).
            path = own
            post.slug = slugs.get(own, post.slug)
        else:
            stem = f"{post.date}-{post.slug}" if post.date else post.slug
            path = drafts / f"{stem}.md"
            # A draft already at this post's own name, that no post's record claims, is
            # the writer's (left alone, below) or this import's own from a run killed
            # before it recorded its drafts (adopted, below): no "-2" twin either way.
            if not (path.exists() and path.name not in taken
                    and not _imported_as(db, settings, path)):
                base, n = post.slug, 2
                # `newsletter send dup` finds 2023-05-01-dup.md too: its dateless name counts.
                used = set(slugs.values()) | {_DATED.sub("", p.stem) for p in slugs}
                while post.slug in used:
                    post.slug, n = f"{base}-{n}", n + 1
                stem = f"{post.date}-{post.slug}" if post.date else post.slug
                path, n = drafts / f"{stem}.md", 2
                while path.name in taken or (path.exists() and _imported_as(db, settings, path)):
                    path, n = drafts / f"{stem}-{n}.md", n + 1
            slugs[drafts / f".planned-{post.source}-{post.post_id}"] = post.slug
        taken.add(path.name)
        if record is not None and not path.exists():
            report.kept.append((path, "deleted since the last import: not brought back"))
            continue
        if record is not None and _sha(path.read_text(encoding="utf-8", errors="replace")) \
                != record[1]:
            report.kept.append((path, "edited since the last import: left as you made it"))
            continue
        if record is None and path.exists():
            if path.read_text(encoding="utf-8", errors="replace") == _draft_text(post):
                plans.append((post, path, "adopted"))  # ours, from a run that was killed
            else:
                report.kept.append((path, "a draft of that name exists: left alone"))
            continue
        plans.append((post, path, "updated" if record is not None else "written"))

    if not dry_run and plans:
        try:
            drafts.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ContentError(f"cannot make {drafts} ({exc.strerror}): check the folder") from None
    client = httpx.Client(timeout=20, follow_redirects=True) if download_images else None
    written: list[Path] = []
    rows = []
    try:
        for done, (post, path, outcome) in enumerate(plans, start=1):
            if client is not None and dry_run:
                report.images += len(image_urls(post.markdown))  # a dry run fetches nothing
            elif client is not None:
                _download_images(post, drafts, report, client, dry_run)
            text = _draft_text(post)
            if outcome in ("updated", "adopted") and path.read_text(encoding="utf-8") == text:
                report.unchanged.append(path)
            else:
                (report.written if outcome == "written" else report.updated).append(path)
                if not dry_run:
                    _write(path, text)
                    if outcome == "written":
                        written.append(path)
            rows.append((post.source, post.post_id,
                         path.relative_to(settings.root).as_posix(), _sha(text), now_iso()))
            if progress is not None:
                progress(done, len(plans))
    except OSError as exc:
        for path in written:  # nothing half-imported: the new drafts go again
            path.unlink(missing_ok=True)
        raise ContentError(f"cannot write {exc.filename or drafts} ({exc.strerror}): nothing "
                           "was imported; check the drafts folder") from None
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    finally:
        if client is not None:
            client.close()
    if not dry_run and rows:
        with db.conn:
            db.execute("BEGIN IMMEDIATE")
            db.conn.executemany(
                "INSERT INTO imported_posts (source, post_id, path, sha256, imported_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, post_id) DO UPDATE SET "
                "path = excluded.path, sha256 = excluded.sha256, "
                "imported_at = excluded.imported_at", rows)
    db.conn.close()
    return report


def _draft_slugs(settings: Settings) -> tuple[dict[Path, str], dict[str, Path]]:
    """(draft path → its slug, `imported_from` → draft path), for every draft.

    A draft that does not parse keeps the slug of its name.
    """
    slugs: dict[Path, str] = {}
    origins: dict[str, Path] = {}
    for path in draft_files(settings):
        try:
            draft = parse_draft(path)
        except (NewsletterError, OSError):
            slugs[path] = slug_from_path(path)
            continue
        slugs[path] = draft.slug
        origin = draft.extra.get("imported_from")
        if origin:
            origins.setdefault(str(origin), path)
    return slugs, origins


def _imported_as(db, settings: Settings, path: Path) -> bool:
    """True when this file is some other post's draft (two posts with the same date+slug)."""
    rel = path.relative_to(settings.root).as_posix()
    return db.execute("SELECT 1 FROM imported_posts WHERE path = ?", [rel]).fetchone() is not None
