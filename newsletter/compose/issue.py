"""build_issue(): the one entry point that preview, build, check and send share.

draft file ──parse──▶ Draft ──Jinja (body)──▶ Markdown ──▶ HTML fragment
──images/links──▶ ──layout (Jinja2)──▶ full HTML + text ──premailer──▶ Issue

All of this runs once per issue. Per-recipient values (`subscriber.*`,
`unsubscribe_url`, `manage_url`) are left as markers listed in `Issue.slots`;
`personalize()` fills them in.

Images with a relative path resolve against the draft's folder (a leading `/`
against the newsletter folder). With `base_url` set they become
`{base_url}/<path relative to the draft's folder>` (build --out copies them
there, next to `<slug>.html`); without it they are embedded as inline (CID)
attachments. Relative links become absolute under `base_url`.
"""

from __future__ import annotations

import hashlib
import html as html_lib
import mimetypes
import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from markupsafe import Markup

from newsletter.compose import layout as layouts
from newsletter.compose.inline import inline_css
from newsletter.compose.markdown import render_markdown
from newsletter.compose.parts import InlineImage, unsubscribe_mailto
from newsletter.compose.plaintext import html_to_text
from newsletter.compose.source import (
    Draft,
    check_topics,
    lines_to_paragraphs,
    parse_draft,
    read_text,
)
from newsletter.errors import ContentError
from newsletter.settings import Settings

GMAIL_CLIP_BYTES = 102 * 1024

_TAG = re.compile(r"<(img|a)\b[^>]*>", re.IGNORECASE)
_ATTR = re.compile(r"""(\s(src|href)\s*=\s*)("([^"]*)"|'([^']*)')""", re.IGNORECASE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


@dataclass
class Issue:
    """A draft rendered once: inlined HTML and text with per-recipient slots left open."""

    source: Path  # the draft file
    slug: str
    title: str
    subject: str
    preheader: str
    date: date
    html: str  # full, CSS-inlined HTML; per-recipient values not yet filled in
    text: str  # the plain-text part; per-recipient values not yet filled in
    attachments: tuple[InlineImage, ...] = ()  # local images embedded by CID
    web_url: str | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. no base_url, HTML over 102 KB
    # The draft as parsed for this build (front matter, text): send's guards, check and
    # publish read it here instead of reading and parsing the file again.
    draft: Draft | None = field(default=None, repr=False, compare=False)
    # Additions (compose): marker → Slot for the per-recipient values left in html/text,
    # and local images referenced by URL under base_url: (path under base_url, file).
    slots: dict[str, layouts.Slot] = field(default_factory=dict)
    assets: tuple[tuple[str, Path], ...] = ()
    # The body as an HTML fragment before the layout (slots left open): the web version's content.
    content: str = ""
    # personalize() caches the per-issue templates here.
    prepared: Any = field(default=None, repr=False, compare=False)


def build_issue(settings: Settings, draft: Path, *, inline: bool = True, web: bool = False,
                parsed: Draft | None = None, text: str | None = None) -> Issue:
    """Parse, render Markdown, apply the layout and inline CSS, once.

    `inline=False` skips premailer (half the cost) for callers that use only
    `Issue.content`; `web=True` also skips the email's layouts and plain text, for
    `publish`, whose page is the web layout around `Issue.content`: such an Issue's html
    and text are empty, and it is not for sending. `parsed` and `text` are the draft
    as the caller read and parsed it already (both or neither).

    Raises ContentError (naming file and line) for broken front matter, an
    unknown template variable, a missing image, …
    """
    if parsed is None or text is None:
        text = read_text(draft)
        parsed = parse_draft(draft, text)
    parsed.topics = check_topics(parsed, settings.web.topics)  # an unknown topic is an error
    slots = layouts.Slots(avoid=text)
    # The issue's page in the archive `newsletter publish` writes (site/<slug>/index.html);
    # none for an issue kept off the web with `publish: false`.
    on_web = settings.base_url and parsed.extra.get("publish") is not False
    web_url = f"{settings.base_url}/{parsed.slug}/" if on_web else None
    # Reader links go to the server (settings.server_url: base_url, or [server] url when
    # the archive is on a static host); with no server at all, the footer's mailto.
    reader_links = bool(settings.base_url and settings.server_url)
    unsub: Any = (
        slots.get(layouts.Slot("unsubscribe_url")) if reader_links else None
    )
    # The reader's own page: name, topics, leave or come back (every email's footer).
    manage: Any = slots.get(layouts.Slot("manage_url")) if reader_links else None
    mailto = unsubscribe_mailto(settings)
    newsletter = layouts.namespace(
        "newsletter",
        name=settings.name,
        base_url=settings.base_url,
        address=settings.address,
        sender=settings.sender,
        reply_to=settings.reply_to,
        unsubscribe_mailto=mailto,
    )
    issue_vars: dict[str, Any] = {
        **parsed.extra,
        "title": parsed.title,
        "subject": parsed.subject,
        "date": parsed.date,
        "preheader": parsed.preheader,
        "slug": parsed.slug,
        "web_url": web_url,
    }
    context: dict[str, Any] = {
        "newsletter": newsletter,
        "subscriber": layouts.SubscriberStandIn(slots),
        "unsubscribe_url": unsub,
        "manage_url": manage,
        "web_url": web_url,
    }

    # The body is a template too, so a draft may say {{ subscriber.name }}. One without
    # template syntax renders to itself (keep_trailing_newline, no line statements):
    # compiling it would cost more than its Markdown.
    body_md = parsed.body
    if layouts.has_template_syntax(body_md):
        body_env = layouts.make_environment(None, autoescape=False, markdown=True)
        body_template, body_text = layouts.compile_body(
            body_env,
            layouts.protect_code(parsed.body),
            filename=str(draft),
            line_offset=parsed.body_line - 1,
        )
        body_md = layouts.render_template(
            body_template,
            {**context, **body_text, "issue": layouts.namespace("issue", **issue_vars)},
            where=str(draft),
            line_offset=parsed.body_line - 1,
        )
    if parsed.paragraphs == "lines":
        # After Jinja, so template errors keep the draft's line numbers.
        body_md = lines_to_paragraphs(body_md)
    fragment = render_markdown(body_md)
    fragment, attachments, assets = resolve_urls(settings, parsed, fragment, slots.prefix)

    if web:
        return Issue(
            source=draft, slug=parsed.slug, title=parsed.title, subject=parsed.subject,
            preheader=parsed.preheader, date=parsed.date, html="", text="",
            attachments=tuple(attachments), web_url=web_url, draft=parsed,
            slots=dict(slots.by_marker), assets=tuple(assets), content=fragment,
        )

    layout_name = parsed.layout or settings.layout
    env = layouts.make_environment(settings.layouts_dir)
    html_layout = layouts.load_layout(env, f"{layout_name}.html")
    text_layout = layouts.load_layout(env, f"{layout_name}.txt")
    full_html = layouts.render_template(
        html_layout,
        {**context, "issue": layouts.namespace("issue", **issue_vars, content=Markup(fragment))},
        where=_layout_where(html_layout),
    )
    text_issue = layouts.namespace("issue", **issue_vars, content=html_to_text(fragment))
    text_body = layouts.render_template(
        text_layout,
        {**context, "issue": text_issue},
        where=_layout_where(text_layout),
    )
    inlined = inline_css(full_html, where=_layout_where(html_layout)) if inline else full_html
    inlined = layouts.percent_encode_urls(inlined, slots)

    warnings = []
    if not settings.base_url:
        warnings.append(
            "base_url is not set in newsletter.toml: images are embedded and unsubscribe and "
            "web links cannot be made yet; set [newsletter] base_url before sending"
        )
    if not settings.sender:
        warnings.append(
            'from is not set in newsletter.toml: set [newsletter] from = "Name <you@example.com>"'
        )
    size = len(inlined.encode("utf-8"))
    if size > GMAIL_CLIP_BYTES:
        warnings.append(
            f"the HTML is {size / 1024:.0f} KB: Gmail clips messages over 102 KB behind a "
            "'View entire message' link; shorten the issue or split it"
        )

    return Issue(
        source=draft,
        slug=parsed.slug,
        title=parsed.title,
        subject=parsed.subject,
        preheader=parsed.preheader,
        date=parsed.date,
        html=inlined,
        text=_normalize_text(text_body),
        attachments=tuple(attachments),
        web_url=web_url,
        warnings=warnings,
        draft=parsed,
        slots=dict(slots.by_marker),
        assets=tuple(assets),
        content=fragment,
    )


def _layout_where(template: Any) -> str:
    return template.filename or template.name or "layout"


def _normalize_text(text: str) -> str:
    # Collapse runs of blank lines a layout's conditionals leave behind.
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


def _find_line(parsed: Draft, needle: str) -> int | None:
    for i, line in enumerate(parsed.body.split("\n"), 1):
        if needle in line:
            return parsed.body_line + i - 1
    return None


def resolve_urls(
    settings: Settings, parsed: Draft, fragment: str, marker_prefix: str = "\0"
) -> tuple[str, list[InlineImage], list[tuple[str, Path]]]:
    """Make relative image and link URLs work in a mailbox; embed images without base_url."""
    draft_dir = parsed.path.parent.resolve()
    root = settings.root.resolve()
    attachments: dict[Path, InlineImage] = {}
    assets: dict[str, Path] = {}

    def local_file(url: str) -> Path:
        path = unquote(urlsplit(url).path)
        return (root / path.lstrip("/")) if path.startswith("/") else (draft_dir / path)

    def public_path(file: Path) -> str:
        file = Path(os.path.normpath(file))
        for base in (draft_dir, root):
            try:
                return file.relative_to(base).as_posix()
            except ValueError:
                continue
        raise ContentError(
            f"{parsed.path}: {file} is outside the newsletter folder: move it under {root}"
        )

    def fix_image(url: str) -> str:
        if not url or _SCHEME.match(url) or url.startswith("//"):
            return url  # remote, data: or cid: images are left alone
        file = local_file(url)
        if not file.is_file():
            line = _find_line(parsed, url) or _find_line(parsed, unquote(url))
            at = f"{parsed.path}:{line}" if line else str(parsed.path)
            raise ContentError(
                f"{at}: image {url} not found (looked for {file}): fix the path or add the file"
            )
        if settings.base_url:
            rel = public_path(file)
            assets[rel] = file
            return f"{settings.base_url}/{quote(rel)}"
        resolved = file.resolve()
        if resolved not in attachments:
            data = resolved.read_bytes()
            ctype = mimetypes.guess_type(resolved.name)[0] or "application/octet-stream"
            cid = f"{hashlib.sha256(data).hexdigest()[:16]}.{_safe_name(resolved.name)}@newsletter"
            attachments[resolved] = InlineImage(
                cid=cid, filename=resolved.name, content_type=ctype, data=data
            )
        return "cid:" + attachments[resolved].cid

    def fix_link(url: str) -> str:
        if (
            not url
            or not settings.base_url
            or url.startswith(("#", "//", marker_prefix))
            or _SCHEME.match(url)
        ):
            return url
        if url.startswith("/"):
            return settings.base_url + url
        return f"{settings.base_url}/{url.removeprefix('./')}"

    def fix_tag(tag_match: re.Match[str]) -> str:
        tag = tag_match.group(1).lower()

        def fix_attr(m: re.Match[str]) -> str:
            name = m.group(2).lower()
            raw = m.group(4) if m.group(4) is not None else m.group(5)
            url = html_lib.unescape(raw)
            if tag == "img" and name == "src":
                new = fix_image(url)
            elif tag == "a" and name == "href":
                new = fix_link(url)
            else:
                return m.group(0)
            if new == url:
                return m.group(0)
            return f'{m.group(1)}"{html_lib.escape(new, quote=True)}"'

        return _ATTR.sub(fix_attr, tag_match.group(0))

    fragment = _TAG.sub(fix_tag, fragment)
    return fragment, list(attachments.values()), sorted(assets.items())


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:40] or "image"
