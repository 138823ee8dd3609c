"""The writer's drafts: lay out a newsletter, start a draft, list drafts, build one.

Finding a draft by path or slug, listing the draft files and making slugs live below,
in compose/source.py: delivery (schedule, welcome) needs them and never imports the writer.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import yaml

from newsletter import __version__, store
from newsletter.compose.issue import Issue, build_issue
from newsletter.compose.layout import BUILTIN_DIR, BUILTIN_LAYOUTS, write_record
from newsletter.compose.layout import RECORD as LAYOUTS_RECORD
from newsletter.compose.message import SAMPLE_RECIPIENT, personalize
from newsletter.compose.source import (
    date_from_path,
    draft_files,
    parse_draft,
    read_text,
    resolve_draft,
    slugify,
)
from newsletter.errors import ContentError, NewsletterError
from newsletter.settings import (
    CONFIG_NAME,
    SECRET_ENV,
    SECRET_FILE,
    Settings,
    write_secret_file,
)
from newsletter.writer.publish import render_web_page


def new_draft(
    settings: Settings, title: str, *, slug: str | None = None, when: date | None = None
) -> Path:
    """Write `drafts/<date>-<slug>.md` with front matter; refuse to overwrite a draft."""
    title = " ".join(title.split())
    if not title:
        raise ContentError('a draft needs a title: newsletter draft "My first issue"')
    when = when or date.today()
    if slug is not None:
        slug = slug.strip()
        if slugify(slug) != slug.lower():
            raise ContentError(
                f"--slug {slug!r} must be lower-case letters, digits and dashes, "
                f"e.g. {slugify(slug)}"
            )
    slug = slug or slugify(title)
    path = settings.drafts_dir / f"{when.isoformat()}-{slug}.md"
    if path.exists():
        raise ContentError(
            f"{path} already exists: edit it, or pick another title or --slug"
        )
    meta = {"title": title, "subject": title, "date": when}
    front = yaml.safe_dump(meta, allow_unicode=True, sort_keys=False, width=1000)
    # A hint, not `preheader: ''`: an empty value is what `check` warns about.
    body = (
        f"---\n{front}{PREHEADER_HINT}\n---\n\n"
        "Write your issue here, in Markdown. Say hello with "
        '{{ subscriber.name | default("there") }}.\n'
    )
    try:
        settings.drafts_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # drafts is a file, or the folder cannot be written
        raise ContentError(
            f"cannot create {settings.drafts_dir}: {exc.strerror or exc}: it must be a folder "
            "you can write to"
        ) from None
    try:
        with path.open("x", encoding="utf-8") as f:  # "x": never overwrite, even in a race
            f.write(body)
    except FileExistsError:
        raise ContentError(f"{path} already exists: pick another title or --slug") from None
    except OSError as exc:
        # Created by us ("x" above), then the write failed (a full disk): no half a draft.
        path.unlink(missing_ok=True)
        raise ContentError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


# The delivery log's name for the provider whose sends are rehearsals (delivery/log.py's
# REHEARSAL_PROVIDER: the writer reads the campaigns table, never delivery's modules).
REHEARSAL_PROVIDER = "outbox"

PREHEADER_HINT = "# preheader: the line inboxes show after the subject (remove the #)"


@dataclass
class DraftInfo:
    path: Path
    slug: str
    date: date | None
    subject: str
    sent: str  # "" when never sent to the list, else e.g. "sent 2026-11-21", "rehearsed (outbox)"
    error: str | None = None  # why the draft cannot be read, if it cannot


def sent_states(settings: Settings) -> dict[str, str]:
    """slug → sent state from the campaigns table; {} when there is no database yet.

    A send through the outbox mailed nobody: it is shown as "rehearsed (outbox)", and any
    real send of the draft says more than it. Opens the database read-only: listing drafts
    never creates or migrates it.
    """
    rows = store.read_only_rows(
        settings.database,
        "SELECT slug, status, created_at, finished_at, provider FROM campaigns "
        "WHERE kind = 'list' AND audience != 'welcome' ORDER BY id",
    )
    states: dict[str, str] = {}
    for slug, status, created, finished, provider in rows:
        if provider == REHEARSAL_PROVIDER:
            if states.get(slug, "rehearsed").startswith("rehearsed"):
                when = f" {(finished or created or '')[:10]}" if status == "done" else ""
                states[slug] = f"rehearsed (outbox){when}".strip()
        elif status == "done":
            states[slug] = f"sent {(finished or created or '')[:10]}".strip()
        elif not states.get(slug, "").startswith("sent"):
            states[slug] = "partly sent" if status == "stopped" else "sending"
    return states


def list_drafts(settings: Settings) -> list[DraftInfo]:
    """Every draft with its date, subject and whether it was sent to the list."""
    states = sent_states(settings)
    infos = []
    for path in draft_files(settings):
        try:
            draft = parse_draft(path, read_text(path))
        except NewsletterError as exc:
            infos.append(DraftInfo(path, path.stem, date_from_path(path), "", "", str(exc)))
            continue
        state = states.get(draft.slug, "")
        # Emailed from another platform: that says more than a rehearsal here.
        if (not state or state.startswith("rehearsed")) and draft.extra.get("sent"):
            state = f"sent {str(draft.extra['sent'])[:10]} (imported)"
        elif not state and str(draft.extra.get("trigger", "")).lower() == "welcome":
            state = "welcome email"
        infos.append(DraftInfo(path, draft.slug, draft.date, draft.subject, state))
    return infos


# --- init -------------------------------------------------------------------------------

GITIGNORE_LINES = [
    "# newsletter: local data and secrets, never committed",
    "newsletter.db",
    "newsletter.db-*",
    ".newsletter.db.*",  # send locks and journals (removed after a run)
    "newsletter.db.*",  # the change journal, a database a restore kept aside
    "backups/",  # `newsletter backup`'s snapshots (copy them off the machine, not to git)
    "outbox/",
    "build/",
    SECRET_FILE,
]


@dataclass
class InitResult:
    root: Path
    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def init_newsletter(path: Path) -> InitResult:
    """Lay out a newsletter folder; files that exist are kept, never overwritten."""
    root = path.expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ContentError(f"{root} is a file: pass a folder to newsletter init")
    try:
        return _lay_out(root)
    except OSError as exc:
        # Read-only disk, no permission, a file where a folder goes: one line, not a traceback.
        # What was written stays; running init again keeps it and adds the rest.
        where = "" if exc.filename in (None, str(root)) else f"{exc.filename}: "
        raise ContentError(
            f"cannot lay out a newsletter in {root}: {where}{exc.strerror or exc}: pick a "
            "folder you can write to"
        ) from None


def _lay_out(root: Path) -> InitResult:
    result = InitResult(root)
    root.mkdir(parents=True, exist_ok=True)

    def write(target: Path, text: str | bytes) -> bool:
        # Bytes as they are (no newline translation): a layout's record is its sha256.
        data = text.encode("utf-8") if isinstance(text, str) else text
        try:
            with target.open("xb") as f:
                f.write(data)
            result.created.append(target)
            return True
        except FileExistsError:
            result.kept.append(target)
            return False

    name = " ".join(w.capitalize() for w in re.split(r"[-_\s]+", root.name) if w) or "My Newsletter"
    config = (BUILTIN_DIR / "init" / "newsletter.toml").read_text(encoding="utf-8")
    write(root / CONFIG_NAME, config.replace("{name}", name.replace('"', "")))
    for folder in ("drafts", "layouts"):
        target = root / folder
        if target.is_dir():
            result.kept.append(target)
        else:
            target.mkdir()
            result.created.append(target)
    copied: dict[str, bytes] = {}
    for layout in sorted(BUILTIN_LAYOUTS.iterdir()):
        data = layout.read_bytes()
        if write(root / "layouts" / layout.name, data):
            copied[layout.name] = data
    if copied:
        # What was copied, so a file left as it is follows the built-in in later versions.
        existed = (root / LAYOUTS_RECORD).exists()
        write_record(root, copied, __version__)
        (result.kept if existed else result.created).append(root / LAYOUTS_RECORD)

    gitignore = root / ".gitignore"
    if gitignore.exists():
        # Add only our missing lines; never rewrite the user's own.
        # surrogateescape: a .gitignore in another encoding is kept byte for byte.
        current = gitignore.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
        missing = [line for line in GITIGNORE_LINES[1:] if line not in current]
        if missing:
            with gitignore.open("a", encoding="utf-8") as f:
                prefix = "" if not current or current[-1] == "" else "\n"
                f.write(prefix + "\n".join([GITIGNORE_LINES[0], *missing]) + "\n")
        result.kept.append(gitignore)
    else:
        write(gitignore, "\n".join(GITIGNORE_LINES) + "\n")

    secret = root / SECRET_FILE
    if secret.exists():
        result.kept.append(secret)
    elif not os.environ.get(SECRET_ENV):  # with NEWSLETTER_SECRET set, that is the key
        write_secret_file(secret)
        result.created.append(secret)
    return result


# --- build ------------------------------------------------------------------------------


@dataclass
class BuildResult:
    issue: Issue
    files: list[tuple[Path, int]]  # written file and its size in bytes


def build_draft(settings: Settings, ref: str | Path, out_dir: Path | None = None) -> BuildResult:
    """Write <slug>.html (the web version), .txt and .eml (what a sample subscriber gets).

    The .html is the anonymous web version `publish` puts online, its images
    beside it under content-hashed names. With base_url set, the email's local
    images are copied at the paths it links to as well.
    """
    draft = resolve_draft(settings, ref)
    issue = build_issue(settings, draft)
    message = personalize(issue, SAMPLE_RECIPIENT, key="sample", settings=settings)
    web = render_web_page(settings, issue, issue.draft or parse_draft(draft, read_text(draft)))
    out = (out_dir or settings.root / "build").expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ContentError(f"cannot create {out}: {exc.strerror}: pass another --out") from None
    outputs = [
        (out / f"{issue.slug}.html", web.html.encode("utf-8")),
        (out / f"{issue.slug}.txt", message.text.encode("utf-8")),
        (out / f"{issue.slug}.eml", message.as_bytes()),
        *((out / name, data) for name, data in web.images.items()),
    ]
    files = []
    try:
        for target, data in outputs:
            # Write beside, then rename: a failed build never leaves half a file.
            tmp = target.with_name(f".{target.name}.tmp")
            try:
                tmp.write_bytes(data)
                tmp.replace(target)
            finally:
                tmp.unlink(missing_ok=True)
            files.append((target, len(data)))
        for rel, source in issue.assets:
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            files.append((target, target.stat().st_size))
    except OSError as exc:  # a folder where a file goes, a full or read-only disk
        where = exc.filename2 or exc.filename or out
        raise ContentError(
            f"cannot write {where}: {exc.strerror or exc}: pass another --out"
        ) from None
    return BuildResult(issue, files)
