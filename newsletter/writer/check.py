"""`newsletter check`: a pre-send linter over the issue exactly as it would be sent.

`check_draft()` builds the issue with the same `build_issue()` send uses and
hands it to `check_issue()`, which personalizes it for the sample reader and
inspects the result and the draft text; with a database it also checks the
`subscriber.*` values against the audience (personalization_problems). Findings
name the draft line where the offending text can be found. `send` builds once and
hands delivery `pre_send_errors()`, which delivery calls with its audience; it refuses
on errors unless `--force`.

A check that cannot run at all (no such draft, broken settings) raises
NewsletterError; a draft that fails to build is a finding, not a crash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from functools import cache
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from newsletter import paths, store
from newsletter.compose import message as compose_message
from newsletter.compose.issue import Issue, build_issue
from newsletter.compose.message import Message
from newsletter.compose.parts import unsubscribe_mailto
from newsletter.compose.personal import personalization_problems
from newsletter.compose.source import Draft, parse_draft, split_front_matter
from newsletter.errors import ContentError
from newsletter.settings import Settings, hosting_warnings
from newsletter.writer import css_support
from newsletter.writer.publish import unpublished

if TYPE_CHECKING:
    import sqlite_utils

Severity = Literal["error", "warning"]

GMAIL_CLIP_BYTES = 102 * 1024  # Gmail shows "[Message clipped]" past this
STYLE_BLOCK_BYTES = 16 * 1024  # Gmail drops a <style> block larger than this
SUBJECT_MAX_CHARS = 80  # inboxes show 40–70 characters; past this it is cut off everywhere

SAMPLE_READER = compose_message.SAMPLE_RECIPIENT  # the one sample reader, kept by this name


@dataclass(frozen=True)
class Finding:
    """One problem: `code` is a short stable id tools can match on."""

    severity: Severity
    code: str
    message: str
    line: int | None = None  # 1-based line in the draft file, when it can be found


@dataclass
class Report:
    """Everything `check` found in one draft."""

    draft: Path
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def failed(self, strict: bool = False) -> bool:
        """True when the send should be refused: any error, or any warning when strict."""
        return bool(self.errors) or (strict and bool(self.warnings))

    def to_json(self) -> str:
        """Findings for tools: {"draft", "errors", "warnings", "findings": [...]}."""
        return json.dumps(
            {
                "draft": str(self.draft),
                "errors": len(self.errors),
                "warnings": len(self.warnings),
                "findings": [asdict(f) for f in self.findings],
            },
            indent=2,
        )

    def add(self, severity: Severity, code: str, message: str, line: int | None = None) -> None:
        self.findings.append(Finding(severity, code, message, line))


# --- reading the draft and the HTML -----------------------------------------------------------

class _EmailParts(HTMLParser):
    """Collects what the rules look at: style blocks, inline styles, images, links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.style_blocks: list[str] = []
        self.inline_styles: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.links: list[dict[str, str | None]] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("style"):
            self.inline_styles.append(attributes["style"] or "")
        if tag == "style":
            self._in_style = True
            self.style_blocks.append("")
        elif tag == "img":
            self.images.append(attributes)
        elif tag == "a":
            self.links.append(attributes)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style_blocks[-1] += data


def _parse(html: str) -> _EmailParts:
    parts = _EmailParts()
    parts.feed(html)
    parts.close()
    return parts


class _DraftText:
    """The draft's lines, for pointing findings at a place."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines()

    def line_of(self, needle: str | None) -> int | None:
        """1-based line of the first occurrence of `needle`, or None."""
        if not needle:
            return None
        index = self.text.find(needle)
        if index < 0:
            return None
        return self.text.count("\n", 0, index) + 1

    def prose_lines(self) -> list[tuple[int, str]]:
        """(line number, text) outside fenced code blocks, inline code removed."""
        result: list[tuple[int, str]] = []
        fence: str | None = None
        for number, line in enumerate(self.lines, start=1):
            stripped = line.lstrip()
            if fence is None and stripped.startswith(("```", "~~~")):
                fence = stripped[:3]
                continue
            if fence is not None:
                if stripped.startswith(fence):
                    fence = None
                continue
            result.append((number, re.sub(r"`[^`]*`", "", line)))
        return result


# --- the rules ------------------------------------------------------------------------------

_PLACEHOLDERS = [
    (re.compile(r"\bTODO\b"), "TODO"),
    (re.compile(r"\bTK\b"), "TK"),
    (re.compile(r"\blorem ipsum\b", re.I), "lorem ipsum"),
    (re.compile(r"\bFIXME\b"), "FIXME"),
]
# What a build error is about, from compose's message; first match wins.
_BUILD_ERRORS = [
    (re.compile(r"is undefined|undefined variable|unknown template variable", re.I),
     "undefined-variable"),
    (re.compile(r"\bimage\b.*\bnot found\b|outside the newsletter folder", re.I),
     "missing-image"),
    (re.compile(r"front matter", re.I), "front-matter"),
    (re.compile(r"template syntax error", re.I), "template-syntax"),
]
_NON_RELATIVE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//|#|\{)", re.I)


def _placeholders(report: Report, draft: _DraftText) -> None:
    for number, line in draft.prose_lines():
        for pattern, label in _PLACEHOLDERS:
            if pattern.search(line):
                report.add("error", "placeholder",
                           f"leftover placeholder {label!r}: finish or remove it", number)


def _build_error(report: Report, exc: ContentError, draft: _DraftText) -> None:
    """A draft that does not build: classify the error, keep its line when it names one."""
    message = str(exc)
    code = next((c for pattern, c in _BUILD_ERRORS if pattern.search(message)), "build-failed")
    match = re.search(re.escape(report.draft.name) + r":(\d+)", message)
    line = int(match.group(1)) if match else None
    report.add("error", code, message, line)


# The address `newsletter init` writes into newsletter.toml for the writer to replace.
INIT_SENDER = "you@example.com"


def _settings_rules(report: Report, settings: Settings) -> None:
    if not settings.sender_address:
        report.add("error", "no-from",
                   'no From address: set newsletter.from = "Name <you@example.com>" in '
                   "newsletter.toml")
    elif settings.sender_address.lower() == INIT_SENDER:
        report.add("error", "no-from",
                   f"newsletter.from is still the example address {INIT_SENDER} that "
                   "`newsletter init` wrote: set your own in newsletter.toml")
    for warning in hosting_warnings(settings):
        report.add("warning", "no-server", warning)
    if not settings.address.strip():
        report.add("warning", "no-postal-address",
                   "no postal address for the footer: anti-spam laws (CAN-SPAM) ask for one; "
                   'set newsletter.address = "…" in newsletter.toml')


_HEADING = re.compile(r"^(#\s+\S|=+\s*$)", re.M)


def _subject_is_set(path: Path, draft: _DraftText) -> bool:
    """True when the writer chose a subject: front matter subject/title, or a heading.

    Otherwise compose falls back to the first line or the file name, which is
    never what a writer means to send.
    """
    meta, body, _ = split_front_matter(path, draft.text)
    if any(str(meta.get(key) or "").strip() for key in ("subject", "title")):
        return True
    prose = "\n".join(line for _, line in _DraftText(body).prose_lines())
    return bool(_HEADING.search(prose))


def _subject_rules(report: Report, issue: Issue, draft: _DraftText) -> None:
    subject = issue.subject.strip()
    line = draft.line_of(subject) if subject else draft.line_of("subject:")
    if not subject or not _subject_is_set(report.draft, draft):
        shown = f" (it would go out as {subject!r})" if subject else ""
        report.add("error", "no-subject",
                   f"the draft sets no subject{shown}: add `subject:` to the front matter or "
                   "start with a # title", draft.line_of("subject:"))
        return
    letters = [c for c in subject if c.isalpha()]
    if len(letters) >= 4 and all(c.isupper() for c in letters):
        report.add("warning", "subject-caps",
                   "the subject is all capitals, which reads as shouting and trips spam "
                   "filters: use sentence case", line)
    if len(subject) > SUBJECT_MAX_CHARS:
        report.add("warning", "subject-long",
                   f"the subject is {len(subject)} characters; inboxes cut it off after about "
                   f"{SUBJECT_MAX_CHARS}: shorten it", line)


def _html_rules(report: Report, settings: Settings, message: Message, draft: _DraftText) -> None:
    html = message.html
    parts = _parse(html)

    size = len(html.encode("utf-8"))
    if size > GMAIL_CLIP_BYTES:
        report.add("error", "html-too-large",
                   f"the HTML is {size / 1024:.0f} KB after inlining; Gmail clips messages over "
                   "102 KB (hiding the unsubscribe link): shorten the issue or split it")
    for block in parts.style_blocks:
        block_size = len(block.encode("utf-8"))
        if block_size > STYLE_BLOCK_BYTES:
            report.add("error", "style-too-large",
                       f"a <style> block is {block_size / 1024:.0f} KB; Gmail drops blocks over "
                       "16 KB: trim the layout's CSS")

    _unsubscribe_rule(report, settings, message, parts)

    reported_relative: set[str] = set()
    for link in parts.links:
        href = (link.get("href") or "").strip()
        if "href" not in link or href in {"", "#"}:
            report.add("warning", "empty-link",
                       f"a link has an empty target ({href or 'no href'}): give it a URL",
                       draft.line_of(f"]({href})") if href else draft.line_of("]()"))
        elif not _NON_RELATIVE.match(href) and href not in reported_relative:
            reported_relative.add(href)
            why = "" if settings.base_url else " and no base_url is set"
            report.add("error", "relative-link",
                       f"the link {href!r} is relative{why}, so it goes nowhere in an inbox: "
                       "set newsletter.base_url or use a full URL", draft.line_of(href))

    for image in parts.images:
        alt = image.get("alt")
        if alt is None or not alt.strip():
            src = image.get("src") or ""
            shown = src if not src.startswith(("cid:", "data:")) else "an embedded image"
            line = _image_line(draft, src)
            report.add("warning", "image-alt",
                       f"{shown} has no alt text, which readers with images off see instead: "
                       "write one, e.g. ![A red bicycle](bike.jpg)", line)

    baseline = _builtin_layout_features()
    for use in css_support.scan_css(parts.style_blocks, parts.inline_styles):
        prop = use.label.split(":")[0]
        line = draft.line_of(prop + ":") if use.label[:1].isalpha() else None
        if use.feature_id in baseline and line is None:
            continue  # the built-in layout's deliberate choice (with a fallback), not the writer's
        report.add("warning", "css-support", css_support.describe(use), line)


@cache
def _builtin_layout_features() -> frozenset[str]:
    """Features the built-in layout uses on purpose: a copy of it should not warn for them."""
    try:
        text = resources.files("newsletter").joinpath("templates/layouts/default.html") \
            .read_text("utf-8")
    except OSError:
        return frozenset()
    parts = _parse(text)
    return frozenset(u.feature_id for u in css_support.scan_css(parts.style_blocks,
                                                                parts.inline_styles))


def _unsubscribe_rule(report: Report, settings: Settings, message: Message,
                      parts: _EmailParts) -> None:
    mailto = unsubscribe_mailto(settings)
    hrefs = [(link.get("href") or "").strip() for link in parts.links]
    if any(h == message.unsubscribe_url for h in hrefs if message.unsubscribe_url):
        return
    if mailto and any(h.lower().startswith(mailto.split("?")[0].lower()) for h in hrefs):
        return
    if not message.unsubscribe_url and not mailto:
        how = ("set newsletter.base_url (unsubscribe links are made under it) or "
               "newsletter.unsubscribe_mailto in newsletter.toml")
    else:
        how = f"put <a href=\"{{{{ unsubscribe_url }}}}\"> in the layout ({settings.layout}.html)"
    report.add("error", "no-unsubscribe",
               f"the message has no unsubscribe link, which the law and inbox providers "
               f"require: {how}")


def _image_line(draft: _DraftText, src: str) -> int | None:
    """The draft line of an image; embedded images are found by their file name."""
    if not src or src.startswith("data:"):
        return None
    if src.startswith("cid:"):
        return None
    return draft.line_of(src) or draft.line_of(src.rsplit("/", 1)[-1])


LONG_PARAGRAPH_CHARS = 1500


def _long_paragraphs(report: Report, path: Path, draft: _DraftText,
                     parsed: Draft | None = None) -> None:
    """A paragraph this long holding single line breaks is usually a pasted post read as
    Markdown: its lines were meant as paragraphs. `parsed`: the draft as already parsed."""
    if parsed is None:
        try:
            parsed = parse_draft(path, draft.text)
        except ContentError:
            return  # reported as a build error
    if parsed.paragraphs == "lines":
        return
    block: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in [*enumerate(parsed.body.split("\n"), parsed.body_line), (0, "")]:
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif fence is not None:
            if stripped.startswith(fence):
                fence = None
            continue
        if fence is None and line.strip():
            block.append((number, line))
            continue
        text = "\n".join(t for _, t in block)
        if len(block) > 1 and len(text) > LONG_PARAGRAPH_CHARS:
            report.add("warning", "long-paragraph",
                       f"a {len(text):,}-character paragraph of {len(block)} lines: Markdown "
                       "joins lines without a blank line between them; if each line is a "
                       "paragraph (a pasted post), add `paragraphs: lines` to the front matter "
                       "or blank lines between them", block[0][0])
        block = []


def check_issue(
    issue: Issue,
    settings: Settings,
    *,
    text: str | None = None,
    db: sqlite_utils.Database | None = None,
    where_sql: str = "status = 'active'",
    params: Sequence[Any] | dict[str, Any] = (),
) -> Report:
    """Lint an issue already built with build_issue() (send builds once and calls this).

    `text` is the draft's text (read from issue.source when None). With `db`,
    the `subscriber.*` values the issue uses are checked against the readers
    `where_sql` selects (send passes its audience); see personalization_problems.
    """
    path = Path(issue.source)
    if text is None:  # the text the issue was built from, else the file's
        text = issue.draft.text if issue.draft and issue.draft.text else _read_draft(path)
    draft = _DraftText(text)
    report = Report(draft=path)
    _settings_rules(report, settings)
    _placeholders(report, draft)
    _long_paragraphs(report, path, draft,
                     issue.draft if issue.draft and issue.draft.text == text else None)
    try:
        message = compose_message.personalize(issue, SAMPLE_READER, key="check",
                                              settings=settings)
    except ContentError as exc:
        _build_error(report, exc, draft)
        return _sorted(report)
    _subject_rules(report, issue, draft)
    if not issue.preheader.strip():
        hint = draft.line_of("# preheader:")
        how = ("write it on the `# preheader:` line and remove the #" if hint else
               "add `preheader:` to the front matter")
        report.add("warning", "no-preheader",
                   f"no preheader (the preview line inboxes show after the subject): {how}",
                   hint)
    _html_rules(report, settings, message, draft)
    if db is not None:
        for problem in personalization_problems(issue, db, where_sql, params):
            message_text = re.sub(r"^\S+?:\d+: |^\S+ \(or its layout\): ", "",
                                  problem.message)
            report.add(problem.severity, problem.code, message_text, problem.line)
    _publish_rule(report, settings, issue)
    _slug_rule(report, issue)
    return _sorted(report)


def pre_send_errors(
    issue: Issue,
    settings: Settings,
    db: sqlite_utils.Database,
    where_sql: str,
    params: Sequence[Any],
) -> list[str]:
    """The check errors in `issue` for a send to the readers `where_sql` selects in `db`.

    What `send` and `newsletter run` hand delivery as its pre-send check (delivery does not
    import the writer's tools): delivery refuses the send on any, unless forced.
    """
    report = check_issue(issue, settings, db=db, where_sql=where_sql, params=params)
    return [f.message for f in report.errors]


def _slug_rule(report: Report, issue: Issue) -> None:
    if paths.is_reserved(issue.slug):
        report.add("error", "reserved-slug",
                   f"the slug {issue.slug!r} is a path the server answers for readers "
                   f"(/{issue.slug.strip('/').split('/')[0]}): the issue's page could never be "
                   "reached there; set another `slug:` in the front matter")


def _publish_rule(report: Report, settings: Settings, issue: Issue) -> None:
    missing = unpublished(settings, issue)
    if not missing:
        return
    if settings.web.hosting == "serve":  # `serve` answers from [publish] out
        how = ("`newsletter send` publishes them there before the first message leaves (a "
               "test send's page unlisted); `newsletter publish` after sending updates the rest")
    else:  # the archive on a static host: what is uploaded there is what answers
        how = ("publish (add `publish: true` to the front matter, then `newsletter publish`) "
               "and upload the site to base_url before a list send, which asks for each "
               "and refuses while one does not answer")
    report.add("warning", "not-published",
               f"not on the published site yet: {', '.join(missing)}; the email links there: "
               f"{how}")


def _read_draft(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # as compose reads it: a BOM is no text
    except FileNotFoundError:
        raise ContentError(f"{path} does not exist: pass a draft path or slug") from None
    except (UnicodeDecodeError, IsADirectoryError):
        raise ContentError(f"{path} is not a UTF-8 text file: save it as UTF-8") from None


def check_draft(
    settings: Settings, path: Path, db: sqlite_utils.Database | None = None
) -> Report:
    """Lint one draft as it would be sent; see the module docstring for what is checked.

    Readers' attributes are checked against the active list in `db`, or in the
    newsletter's database when it exists. Raises ContentError when the draft
    file cannot be read (exit 2 from the CLI).
    """
    path = Path(path)
    text = _read_draft(path)
    try:
        issue = build_issue(settings, path)
    except ContentError as exc:
        draft = _DraftText(text)
        report = Report(draft=path)
        _settings_rules(report, settings)
        _placeholders(report, draft)
        _build_error(report, exc, draft)
        return _sorted(report)
    if db is None and settings.database.exists():
        with closing(store.connect(settings.database)) as opened:
            return check_issue(issue, settings, text=text, db=opened)
    return check_issue(issue, settings, text=text, db=db)


def _sorted(report: Report) -> Report:
    # Errors first, then by place in the draft; stable within a line.
    report.findings.sort(key=lambda f: (f.severity != "error", f.line or 0))
    return report


def shown_path(path: Path) -> str:
    """`path` relative to the current folder when it is inside it, else in full."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def format_finding(report: Report, finding: Finding) -> str:
    """`drafts/x.md:12: error: message [code]`, the way compilers print them."""
    shown = shown_path(report.draft)
    place = f"{shown}:{finding.line}" if finding.line else shown
    return f"{place}: {finding.severity}: {finding.message} [{finding.code}]"
