"""Jinja2 layouts, and the per-recipient slots that personalization fills in later.

Layouts live in the newsletter's `layouts/` folder (`default.html`,
`default.txt`); one missing there falls back to the built-in copy shipped in
`newsletter/templates/layouts/`. HTML layouts are autoescaped; undefined
variables are errors naming the file and line.

A layout file the writer never edited follows the built-in: `init` records what it copied
(`.newsletter-layouts.json`: file name → sha256, and the tool's version), and a file still
equal to what was copied is read from the built-ins, so a newer version of the tool brings
its pages (and the manage link) to an older newsletter. A folder made before the record
existed counts a file equal to any past built-in (templates/past_layouts.json) as unedited.
An edited file is used as it is; `layouts_behind` names those whose built-in moved on.

Rendering happens once per issue, so per-recipient values cannot be known
yet. `subscriber.<anything>`, `unsubscribe_url` and `manage_url` render as markers (short
ASCII words no Markdown, Jinja or premailer step changes); `Slots` remembers
what each marker stands for, and personalize() splices the real, escaped
value in per recipient. `{{ subscriber.name | default("friend") }}`, the
case filters (upper, lower, title, capitalize, trim) and urlencode are applied
to each reader's value (cached per distinct value); any other filter on a
reader value (truncate, replace, length, first, …) would act on the marker, so
it is refused naming file, line and filter, as are `{% if subscriber.name %}`,
`subscriber.name or …` and indexing (the answer differs per recipient).
A reader value inside an href or src attribute is always percent-encoded
(`percent_encode_urls`), so reader data cannot add query parameters or
change where a link goes.

Trust: drafts and layouts are the writer's own files, as trusted as a
program they run, so Jinja2 is not sandboxed (a sandbox would only get in the
way of filters and methods a writer may use). The loaders read only
`layouts/` and the built-ins (`{% include %}` refuses `..`). What comes from
readers (names, attributes, addresses) is never rendered as a template: it
is spliced in after rendering, HTML-escaped, so `{{ … }}` in a name stays text.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import threading
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from jinja2 import filters as jinja_filters
from markupsafe import Markup

from newsletter.errors import ContentError

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "templates"
BUILTIN_LAYOUTS = BUILTIN_DIR / "layouts"
PAST_LAYOUTS = BUILTIN_DIR / "past_layouts.json"  # scripts/past_layouts.py writes it
RECORD = ".newsletter-layouts.json"  # in the newsletter folder: what init copied

_TRANSFORMS: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "lower": str.lower,
    "title": str.title,
    "capitalize": str.capitalize,
    "trim": str.strip,
    # Every character but letters, digits and -._~ (Jinja's keeps "/"; a reader's
    # value must not add path segments either).
    "urlencode": lambda text: quote(text, safe=""),
}
# Filters that leave a reader's value as it is: it is HTML-escaped when spliced in anyway.
_PASS_THROUGH = {"e", "escape", "string", "forceescape"}
SUPPORTED_FILTERS = ("default", *_TRANSFORMS)
# Per-reader links made by personalize (already URLs: never percent-encoded again).
LINK_FIELDS = frozenset({"unsubscribe_url", "manage_url"})


@dataclass(frozen=True)
class Slot:
    """A per-recipient value: which field, its fallback and a case transform."""

    # "email", "name", "attr:<name>", "unsubscribe_url", "manage_url", or "reader_ref" (the
    # reader value of tracked links: compose/message.py adds it when [analytics] is on)
    field: str
    default: str = ""
    transforms: tuple[str, ...] = ()

    def value(self, email: str, name: str, attributes: Mapping[str, Any], unsub: str,
              manage: str = "", ref: str = "") -> str:
        """This slot's text for one recipient (unescaped)."""
        f = self.field
        if f == "reader_ref":
            return ref
        if f == "email":
            v: Any = email
        elif f == "name":
            v = name
        elif f == "unsubscribe_url":
            v = unsub
        elif f == "manage_url":
            v = manage
        else:
            v = attributes.get(f[5:], "")
        text = "" if v is None else str(v)
        if not text:
            text = self.default
        return _transform(self.transforms, text) if self.transforms else text


@lru_cache(maxsize=4096)
def _transform(transforms: tuple[str, ...], text: str) -> str:
    # Cached per distinct value: many readers share a city, a plan, a first name.
    for t in transforms:
        text = _TRANSFORMS[t](text)
    return text


class Personal(str):
    """A marker standing for a per-recipient value while templates render."""

    slot: Slot
    slots: Slots

    def __new__(cls, marker: str, slot: Slot, slots: Slots) -> Personal:
        obj = super().__new__(cls, marker)
        obj.slot = slot
        obj.slots = slots
        return obj

    def __html__(self) -> str:
        return str.__str__(self)  # escaped when spliced in, per recipient

    def _refuse(self, what: str) -> _PersonalTestError:
        name = self.slot.field.replace("attr:", "")
        return _PersonalTestError(
            f"{what} on subscriber.{name} is not supported (reader values are filled in per "
            f"reader after the issue renders once): use only the filters "
            f"{', '.join(SUPPORTED_FILTERS)}"
        )

    def __getitem__(self, key: Any) -> Any:
        raise self._refuse("indexing")

    def __len__(self) -> int:
        raise self._refuse("length")

    def __iter__(self) -> Any:
        raise self._refuse("a loop")

    def __bool__(self) -> bool:
        if self.slot.field in LINK_FIELDS:
            return True  # every recipient has one when it exists at all
        name = self.slot.field.replace("attr:", "")
        raise _PersonalTestError(
            f"`if` and `or` on subscriber.{name} are not supported (the answer differs per "
            f"subscriber and the issue renders once): write "
            f'{{{{ subscriber.{name} | default("…") }}}} instead'
        )


class _PersonalTestError(Exception):
    pass


class Slots:
    """The markers of one issue and the slot each stands for."""

    def __init__(self, avoid: str = ""):
        # A prefix the source never contains, so markers are unambiguous.
        prefix = "zqnl"
        n = 0
        while prefix in avoid:
            n += 1
            prefix = f"zq{n}nl"
        self.prefix = prefix
        self.by_marker: dict[str, Slot] = {}
        self._by_slot: dict[Slot, str] = {}

    def get(self, slot: Slot) -> Personal:
        marker = self._by_slot.get(slot)
        if marker is None:
            marker = f"{self.prefix}{len(self._by_slot)}qz"
            self._by_slot[slot] = marker
            self.by_marker[marker] = slot
        return Personal(marker, slot, self)


class SubscriberStandIn:
    """`subscriber` while rendering: every attribute is a per-recipient marker."""

    def __init__(self, slots: Slots):
        self._slots = slots

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "attributes":
            return _AttributesStandIn(self._slots)
        field = name if name in ("email", "name") else f"attr:{name}"
        return self._slots.get(Slot(field))

    def __getitem__(self, name: str) -> Any:
        return self.__getattr__(name)

    def __str__(self) -> str:
        return self._slots.get(Slot("email"))

    def __html__(self) -> str:
        return str(self)


class _AttributesStandIn:
    def __init__(self, slots: Slots):
        self._slots = slots

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._slots.get(Slot(f"attr:{name}"))

    def __getitem__(self, name: str) -> Any:
        return self.__getattr__(name)


def _marker_filter(name: str) -> Callable[..., Any]:
    builtin = jinja_filters.FILTERS[name]

    def apply(value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, Personal):
            return value.slots.get(
                replace(value.slot, transforms=(*value.slot.transforms, name))
            )
        return builtin(value, *args, **kwargs)

    return apply


def _guard_filter(name: str, builtin: Callable[..., Any]) -> Callable[..., Any]:
    """A built-in filter that refuses a reader value instead of acting on its marker."""
    pass_arg = getattr(builtin, "jinja_pass_arg", None)
    at = 1 if pass_arg is not None else 0  # context/environment comes first

    def apply(*args: Any, **kwargs: Any) -> Any:
        values = [*args[at:], *kwargs.values()]
        personal = next((v for v in values if isinstance(v, Personal)), None)
        if personal is not None:
            if name in _PASS_THROUGH and args[at:][:1] == (personal,):
                return personal
            raise personal._refuse(f"the filter `{name}`")
        return builtin(*args, **kwargs)

    if pass_arg is not None:
        apply.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    return apply


def percent_encode_urls(html: str, slots: Slots) -> str:
    """Reader values inside href/src attributes, percent-encoded for every reader."""
    markers = [m for m, s in slots.by_marker.items()
               if s.field not in LINK_FIELDS and s.transforms[-1:] != ("urlencode",)]
    if not markers:
        return html
    find = re.compile("|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True)))

    def encode(m: re.Match[str]) -> str:
        slot = slots.by_marker[m.group(0)]
        return str.__str__(slots.get(replace(slot, transforms=(*slot.transforms, "urlencode"))))

    def attribute(m: re.Match[str]) -> str:
        return m.group(1) + find.sub(encode, m.group(2))

    return re.sub(r"""(\s(?:href|src)\s*=\s*)("[^"]*"|'[^']*'|[^\s>]+)""", attribute, html,
                  flags=re.IGNORECASE)


def _default_filter(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    if isinstance(value, Personal):
        return value.slots.get(replace(value.slot, default=str(default_value)))
    return jinja_filters.do_default(value, default_value, boolean)


class _Environment(jinja2.Environment):
    """Refuses str methods on reader values: `subscriber.name.upper()` would act on the
    marker, as filters did (issue 13)."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Personal) and hasattr(str, attribute):
            raise obj._refuse(f"the method `{attribute}()`")
        return super().getattr(obj, attribute)


def layouts_fingerprint(layouts_dir: Path | None) -> tuple[Any, ...]:
    """What the writer's layouts are right now: each file's path, mtime_ns and size, and
    init's record beside the folder (it decides which files follow a built-in)."""
    if layouts_dir is None:
        return ()
    seen: list[tuple[Any, ...]] = []
    folders = [str(layouts_dir)]
    while folders:
        try:
            entries = list(os.scandir(folders.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_dir():
                folders.append(entry.path)
            else:
                seen.append(_file_key(entry.path))
    try:
        record: tuple[Any, ...] | None = _file_key(str(layouts_dir.parent / RECORD))
    except OSError:
        record = None
    return (str(layouts_dir), record, *sorted(seen))


def _file_key(path: str) -> tuple[Any, ...]:
    st = os.stat(path)
    # A file written in the last two seconds may be written again within the clock's tick
    # at the same size (git's "racy clean"): its bytes decide then.
    recent = time.time_ns() - st.st_mtime_ns < 2_000_000_000
    digest = _digest(Path(path).read_bytes()) if recent else None
    return (path, st.st_mtime_ns, st.st_size, digest)


_ENVIRONMENTS: dict[tuple[Any, ...], jinja2.Environment] = {}
_ENVIRONMENTS_KEPT = 8
_ENVIRONMENTS_LOCK = threading.Lock()


def make_environment(
    layouts_dir: Path | None, *, autoescape: bool | None = None, markdown: bool = False
) -> jinja2.Environment:
    """A Jinja2 environment for layouts: the newsletter's folder first, then the built-ins.

    `markdown=True` is for draft bodies: there `{#id}` is a Markdown heading id
    (attr_list), so Jinja comments are spelled `{## … ##}` instead.

    Environments are kept and shared, so each layout compiles once per process, not once
    per issue (compiling was most of publish's time). The key holds every layout file's
    path, mtime_ns and size, so an edited, added or removed layout gets a fresh one.
    Callers must not change the environment they get.
    """
    key = (layouts_fingerprint(layouts_dir), autoescape, markdown)
    with _ENVIRONMENTS_LOCK:
        env = _ENVIRONMENTS.get(key)
        if env is None:
            env = _ENVIRONMENTS[key] = _new_environment(layouts_dir, autoescape, markdown)
            while len(_ENVIRONMENTS) > _ENVIRONMENTS_KEPT:  # drop the oldest
                del _ENVIRONMENTS[next(iter(_ENVIRONMENTS))]
    return env


def _new_environment(layouts_dir: Path | None, autoescape: bool | None, markdown: bool
                     ) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if layouts_dir is not None:
        loaders.append(_WritersLayouts(layouts_dir))
    loaders.append(jinja2.FileSystemLoader(str(BUILTIN_LAYOUTS)))
    comments: dict[str, Any] = (
        {"comment_start_string": "{##", "comment_end_string": "##}"} if markdown else {})
    env = _Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=(lambda name: bool(name and name.endswith((".html", ".htm"))))
        if autoescape is None
        else autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,
        **comments,
    )
    for name, builtin in list(env.filters.items()):
        env.filters[name] = _guard_filter(name, builtin)
    for name in _TRANSFORMS:
        env.filters[name] = _marker_filter(name)
    env.filters["default"] = env.filters["d"] = _default_filter
    return env


# --- the writer's layouts and the built-ins they were copied from -------------------------


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=1)
def _past_builtins() -> dict[str, frozenset[str]]:
    data = json.loads(PAST_LAYOUTS.read_text(encoding="utf-8"))
    return {name: frozenset(hashes) for name, hashes in data.items()}


def read_record(root: Path) -> dict[str, str]:
    """What `init` copied into `root`/layouts: file name → sha256; {} before the record."""
    path = root / RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it is not JSON"
        raise ContentError(f"cannot read {path} ({why}): delete it (layouts equal to a "
                           "built-in then still follow it)") from None
    copied = data.get("copied") if isinstance(data, dict) else None
    if not isinstance(copied, dict):
        raise ContentError(f"{path} is not the record init writes: delete it")
    return {str(k): str(v) for k, v in copied.items()}


def write_record(root: Path, copied: Mapping[str, bytes], version: str) -> None:
    """Add the layouts init just copied (file name → the bytes) to `root`'s record."""
    record = {**read_record(root), **{name: _digest(data) for name, data in copied.items()}}
    (root / RECORD).write_text(json.dumps(
        {"about": "What `newsletter init` copied into layouts/ (sha256 of each file). A file "
                  "still equal to its copy follows the built-in layout of the installed "
                  "version; edit it and yours is used.",
         "version": version, "copied": dict(sorted(record.items()))}, indent=1) + "\n",
        encoding="utf-8")


def follows_builtin(name: str, data: bytes, record: Mapping[str, str]) -> bool:
    """True when layouts/`name` holding `data` is a built-in's copy the writer never edited.

    With a record, unedited means equal to what init copied; a file init did not copy
    (or a folder made before the record) is unedited when it equals any version of the
    built-in, today's or a past one.
    """
    builtin = BUILTIN_LAYOUTS / name
    if not builtin.is_file():
        return False  # the writer's own layout
    digest = _digest(data)
    if name in record:
        return digest == record[name] or digest == _digest(builtin.read_bytes())
    return digest == _digest(builtin.read_bytes()) or digest in _past_builtins().get(
        name, frozenset())


class _WritersLayouts(jinja2.FileSystemLoader):
    """layouts/, where a file that only copies a built-in steps aside for the built-in."""

    def __init__(self, layouts_dir: Path):
        super().__init__(str(layouts_dir))
        self.root = layouts_dir.parent
        self._record: dict[str, str] | None = None

    def get_source(self, environment: jinja2.Environment, template: str
                   ) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        if "/" not in template:
            if self._record is None:
                self._record = read_record(self.root)
            if follows_builtin(template, Path(filename).read_bytes(), self._record):
                raise jinja2.TemplateNotFound(template)  # the ChoiceLoader's next: built-ins
        return source, filename, uptodate


@dataclass(frozen=True)
class Behind:
    """An edited layout whose built-in changed since it was copied."""

    name: str
    path: Path  # the writer's file
    builtin: Path
    command: str  # what shows the difference

    def __str__(self) -> str:
        return (f"layouts/{self.name} is edited and the built-in changed since: "
                f"see what with `{self.command}`")


def layouts_behind(root: Path) -> list[Behind]:
    """Each edited layout in `root`/layouts whose built-in is not what it was copied from.

    An edited file follows nothing: it misses what the built-in gained (the manage link,
    the new pages). With a record, a file is behind when today's built-in differs from
    the copy init made; without one (a folder from before the record, a file init did
    not copy), when it differs from today's built-in.
    """
    folder = root / "layouts"
    if not folder.is_dir():
        return []
    record = read_record(root)
    behind = []
    for path in sorted(folder.iterdir()):
        builtin = BUILTIN_LAYOUTS / path.name
        if not (path.is_file() and builtin.is_file()):
            continue
        data = path.read_bytes()
        if follows_builtin(path.name, data, record):
            continue
        now = _digest(builtin.read_bytes())
        if record.get(path.name, _digest(data)) != now:
            behind.append(Behind(path.name, path, builtin, f"newsletter layouts diff {path.name}"))
    return behind


def layout_states(root: Path) -> list[tuple[str, str]]:
    """(file name, what is used) for each file in `root`/layouts, for `newsletter layouts`."""
    folder = root / "layouts"
    if not folder.is_dir():
        return []
    record = read_record(root)
    behind = {b.name: b for b in layouts_behind(root)}
    states = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if not (BUILTIN_LAYOUTS / path.name).is_file():
            state = "yours (no built-in of that name)"
        elif follows_builtin(path.name, path.read_bytes(), record):
            state = "follows the built-in (never edited)"
        elif path.name in behind:
            state = f"edited, and the built-in changed since: {behind[path.name].command}"
        else:
            state = "edited (yours is used)"
        states.append((path.name, state))
    return states


def layout_diff(root: Path, name: str) -> str:
    """A unified diff from the built-in `name` to the writer's layouts/`name` ("" if equal)."""
    builtin = BUILTIN_LAYOUTS / name
    mine = root / "layouts" / name
    if "/" in name or not builtin.is_file():
        known = ", ".join(sorted(p.name for p in BUILTIN_LAYOUTS.iterdir()))
        raise ContentError(f"there is no built-in layout {name!r}: name one of {known}")
    if not mine.is_file():
        raise ContentError(f"layouts/{name} does not exist: the built-in is used as it is")

    def lines(path: Path) -> list[str]:
        try:
            return path.read_text(encoding="utf-8").splitlines(keepends=True)
        except UnicodeDecodeError:
            raise ContentError(f"{path} is not UTF-8 text: save it as UTF-8") from None

    return "".join(difflib.unified_diff(lines(builtin), lines(mine),
                                        f"built-in/{name}", f"layouts/{name}"))


def _error_line(exc: BaseException, filename: str) -> int | None:
    """The template line a render error happened on (Jinja rewrites tracebacks to it)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _explain(exc: BaseException) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        message = re.sub(
            r"^'(\w+) object' has no attribute '(\w+)'$", r"\1.\2 is undefined", exc.message or ""
        )
        return f"{message}: check the spelling (layouts and drafts can use newsletter, issue, " \
            "subscriber, unsubscribe_url, manage_url, web_url)"
    if isinstance(exc, _PersonalTestError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def render_template(
    template: jinja2.Template, context: Mapping[str, Any], *, where: str, line_offset: int = 0
) -> str:
    """Render with errors turned into ContentError `where:line: what; how to fix`."""
    try:
        return template.render(context)
    except (jinja2.TemplateError, _PersonalTestError, TypeError, ValueError,
            AttributeError, KeyError, IndexError, ZeroDivisionError) as exc:
        line = _error_line(exc, template.filename or "<template>")
        at = f"{where}:{line + line_offset}" if line else where
        raise ContentError(f"{at}: {_explain(exc)}") from None


def load_layout(env: jinja2.Environment, name: str) -> jinja2.Template:
    """The layout file `name` (e.g. default.html); ContentError when missing or broken."""
    try:
        return env.get_template(name)
    except jinja2.TemplateNotFound:
        raise ContentError(
            f"layout {name} not found in layouts/ or the built-in layouts: create "
            f"layouts/{name} or set layout to \"default\""
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise ContentError(
            f"{exc.filename or name}:{exc.lineno}: template syntax error: {exc.message}"
        ) from None
    except UnicodeDecodeError:  # saved as Latin-1 or UTF-16 by an editor
        raise ContentError(f"layouts/{name} is not UTF-8 text: save it as UTF-8") from None
    except OSError as exc:
        raise ContentError(f"cannot read layouts/{name}: {exc.strerror or exc}") from None


_FENCE_LINE = re.compile(r"^\s*(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_TEMPLATE_SYNTAX = ("{{", "{%", "{##")  # {## ##} is a comment in draft bodies
# The raw tags as Jinja's lexer reads them, whitespace control (- and +) included.
_RAW_BEGIN = re.compile(r"\{%[-+]?\s*raw\s*-?%\}")
_RAW_END = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}")


def has_template_syntax(body: str) -> bool:
    """Whether a draft body holds anything Jinja reads (else it renders to itself)."""
    return any(token in body for token in _TEMPLATE_SYNTAX)


def protect_code(markdown: str) -> str:
    """Wrap code blocks and code spans holding `{{`/`{%` in {% raw %}: code is never a template.

    A writer explaining Jinja, Go or Vue templates in a code block should not
    get a template error; the raw tags vanish when the body renders. The
    writer's own `{% raw %}…{% endraw %}` (around code, inside it as Jekyll
    drafts have it, or around a paragraph) is left as Jinja reads it: code
    inside one is literal already, and a second raw tag there would end the
    writer's block early (its `{% endraw %}` then an unknown tag).
    """
    if not has_template_syntax(markdown):
        return markdown
    lines = markdown.split("\n")
    out: list[str] = []
    in_raw = False  # inside the writer's {% raw %} block, in reading order
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _FENCE_LINE.match(line)
        if m:
            fence = m.group(1)
            end = next(
                (j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence)), None
            )
            if end is not None:
                out.append(line)
                in_raw = _follow_raw(line, in_raw)
                if end > i + 1:
                    block, in_raw = _protect("\n".join(lines[i + 1 : end]), in_raw)
                    out.append(block)
                out.append(lines[end])
                in_raw = _follow_raw(lines[end], in_raw)
                i = end + 1
                continue
        pieces: list[str] = []
        pos = 0
        for span in _CODE_SPAN.finditer(line):
            in_raw = _follow_raw(line[pos : span.start()], in_raw)
            code, in_raw = _protect(span.group(2), in_raw)
            pieces += [line[pos : span.start()], span.group(1), code, span.group(1)]
            pos = span.end()
        in_raw = _follow_raw(line[pos:], in_raw)
        out.append("".join(pieces) + line[pos:])
        i += 1
    return "\n".join(out)


def literal(text: str) -> str:
    """`text` in {% raw %}…{% endraw %}, so Jinja shows it as written.

    An endraw inside it would end the block early and let what follows run as template
    code: its "{%" is cut off from the rest by closing the block and opening it again.
    """
    text = _RAW_END.sub(lambda t: t.group(0)[:2] + "{% endraw %}{% raw %}" + t.group(0)[2:],
                        text)
    return "{% raw %}" + text + "{% endraw %}"


def _follow_raw(text: str, in_raw: bool) -> bool:
    """Whether the writer's raw block is open after `text` (template text, left as it is)."""
    return _protect(text, in_raw, wrap=False)[1]


def _protect(code: str, in_raw: bool, wrap: bool = True) -> tuple[str, bool]:
    """`code` with its parts outside the writer's raw blocks wrapped in raw tags, and
    whether a raw block is open after it."""
    out: list[str] = []
    pos = 0
    while pos < len(code):
        if in_raw:
            m = _RAW_END.search(code, pos)
            stop = m.end() if m else len(code)
            out.append(code[pos:stop])
            in_raw, pos = m is None, stop
            continue
        m = _RAW_BEGIN.search(code, pos)
        stop = m.start() if m else len(code)
        part = code[pos:stop]
        if wrap and any(token in part for token in _TEMPLATE_SYNTAX):
            part = literal(part)
        out.append(part)
        if m:
            out.append(m.group(0))
            in_raw, pos = True, m.end()
        else:
            pos = stop
    return "".join(out), in_raw


def compile_string(
    env: jinja2.Environment, source: str, *, filename: str, line_offset: int = 0
) -> jinja2.Template:
    """Compile a template held in a string (a draft body), errors naming file and line."""
    try:
        code = env.compile(source, name=filename, filename=filename)
    except jinja2.TemplateSyntaxError as exc:
        raise ContentError(
            f"{filename}:{(exc.lineno or 1) + line_offset}: template syntax error in the draft: "
            f"{exc.message} (write {{% raw %}}…{{% endraw %}} around literal {{{{ }}}})"
        ) from None
    return env.template_class.from_code(env, code, env.make_globals(None))


BODY_TEXT = "_newsletter_body_text"  # the context variable compile_body's templates read
_SKELETONS: dict[tuple[jinja2.Environment, str], jinja2.Template] = {}
_SKELETONS_KEPT = 256
_SKELETONS_LOCK = threading.Lock()


def compile_body(
    env: jinja2.Environment, source: str, *, filename: str, line_offset: int = 0
) -> tuple[jinja2.Template, dict[str, Any]]:
    """A draft body's template and the context it needs besides the usual variables.

    Compiling a template costs milliseconds however little of it is template code, and
    drafts share their template code (`Hello {{ subscriber.name | default("…") }},`) but
    not their text. So the text between tags is swapped for `{{ BODY_TEXT[i] }}` (with the
    text's line breaks, so lines and errors stay where they were) and the template is
    compiled once per distinct code. The text goes in as Markup: never escaped, also
    inside `{% autoescape %}`. When Jinja's tokens do not add up to the source (whitespace
    control trimmed some text), the body is compiled as it is.
    """
    try:
        tokens = list(env.lex(source))
    except jinja2.TemplateSyntaxError:
        tokens = []  # compile_string says where
    text: list[Markup] = []
    whole: list[str] = []
    skeleton: list[str] = []
    for _, kind, value in tokens:
        whole.append(value)
        if kind == "data":
            skeleton.append(f"{{{{ {BODY_TEXT}[{len(text)}]{chr(10) * value.count(chr(10))} }}}}")
            text.append(Markup(value))
        elif kind in ("raw_begin", "raw_end"):
            if "\n" in value:
                whole.append("\0")  # a raw tag over lines: not worth a special case
        else:
            skeleton.append(value)
    if not tokens or "".join(whole) != source:
        return compile_string(env, source, filename=filename, line_offset=line_offset), {}
    code = "".join(skeleton)
    key = (env, code)
    with _SKELETONS_LOCK:
        template = _SKELETONS.get(key)
    if template is None:
        try:
            template = compile_string(env, code, filename=filename, line_offset=line_offset)
        except ContentError:  # said as the source has it
            return compile_string(env, source, filename=filename, line_offset=line_offset), {}
        with _SKELETONS_LOCK:
            _SKELETONS[key] = template
            while len(_SKELETONS) > _SKELETONS_KEPT:  # drop the oldest
                del _SKELETONS[next(iter(_SKELETONS))]
    return template, {BODY_TEXT: text}


_NAMESPACES: dict[str, type] = {}


def namespace(_name: str, **values: Any) -> types.SimpleNamespace:
    """The layout variable `_name` (attribute access; a missing attribute is an error).

    Its class carries the variable's name so errors read "issue.nope is undefined".
    """
    cls = _NAMESPACES.get(_name)
    if cls is None:
        cls = _NAMESPACES[_name] = type(_name, (types.SimpleNamespace,), {"__module__": "builtins"})
    return cls(**values)
