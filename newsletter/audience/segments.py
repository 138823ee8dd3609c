"""The segment language of `--to` (and its alias `--tag`): which readers, by tag, topic and
attribute, as one parameterized SQL condition on `subscribers`.

    EXPR  := TERM ('+' TERM)* (',' '-' TERM)*      '+': and; ',-X': and not X
    TERM  := ['-'] ( tag:NAME | topic:NAME | has:ATTR | ATTR=VALUE | ATTR!=VALUE )

Rules (README: "Sending to a segment"):
- tag and topic names, and attribute names, ignore letter case; values compare as text,
  case-sensitively, after trimming spaces on both sides (JSON true/false are `true`/`false`,
  numbers as written: `age=30`);
- a reader who lacks an attribute (absent, null or empty) never matches `ATTR=VALUE`, always
  matches `ATTR!=VALUE`, and matches `-has:ATTR`;
- a value (or name) with spaces, `+`, `,`, `=` or `"` is written in double quotes, with `\\"`
  and `\\\\` inside: `city="New York"`;
- `topic:NAME` is who gets an issue about NAME: readers who chose it and readers who get
  everything.
Names and values never become SQL text: every one is a parameter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from newsletter.errors import SubscriberError

GRAMMAR = (
    "--to takes `subscribers`, `tag:NAME` (`tag:a+tag:b`: both; `tag:a,-tag:b`: a but not b), "
    "attributes (`plan=paid`, `city!=Oslo`, `has:city`, `city=\"New York\"`), `topic:NAME`, "
    "joined with + (`tag:friends+plan=paid`, `-tag:press`), or email addresses separated "
    "by commas"
)


def _bad(option: str, text: str, problem: str) -> SubscriberError:
    """The one error line for text that is not an expression: the grammar, then what is wrong."""
    grammar = GRAMMAR if option == "--to" else GRAMMAR.replace("--to", option, 1).replace(
        ", or email addresses separated by commas", "")
    return SubscriberError(f"{grammar}: {option} {text!r} {problem}")


_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
_BLANKS = " \t\r\n"  # what "after trimming" trims, here and in SQL's trim()
_KINDS = ("tag", "topic", "has")


@dataclass(frozen=True)
class Term:
    """One condition: `kind` is tag, topic, has, eq or ne; `negated` for a leading `-`."""

    kind: str
    name: str  # casefolded tag, topic or attribute name
    value: str = ""  # for eq and ne, trimmed
    negated: bool = False

    def text(self) -> str:
        """The canonical text of the term (quoted where the grammar needs it)."""
        sign = "-" if self.negated else ""
        if self.kind in _KINDS:
            return f"{sign}{self.kind}:{_quote(self.name, spaces=self.kind == 'has')}"
        op = "=" if self.kind == "eq" else "!="
        return (f"{sign}{_quote(self.name, name=True, spaces=True)}{op}"
                f"{_quote(self.value, spaces=True)}")


@dataclass(frozen=True)
class Segment:
    """Readers matching every term (terms are ANDed; a negated term is a NOT)."""

    terms: tuple[Term, ...]
    # [subscribe] topics, so `topic:NAME` is known before any reader chose it.
    known_topics: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        """The canonical text, stored in campaigns.audience and schedules.audience: the
        included terms joined by `+`, then each left-out term as `,-X` (`tag:a,-tag:b`, as
        tag expressions were always written)."""
        plus = "+".join(t.text() for t in self.terms if not t.negated)
        minus = [t.text() for t in self.terms if t.negated]
        return ",".join([plus, *minus]) if plus else ",".join(minus)

    @property
    def only_tags(self) -> bool:
        return all(t.kind == "tag" for t in self.terms)

    def describe(self) -> str:
        """For people: "tags a and b but not press", "tag friends and plan=paid"."""
        included = [t for t in self.terms if not t.negated]
        excluded = [t for t in self.terms if t.negated]
        if self.only_tags and included:
            word = "tag" if len(included) == 1 else "tags"
            text = f"{word} {' and '.join(t.name for t in included)}"
            if excluded:
                text += f" but not {' or '.join(t.name for t in excluded)}"
            return text
        text = " and ".join(_describe(t) for t in included) or "everyone"
        if excluded:
            text += f" but not {' or '.join(_describe(t) for t in excluded)}"
        return text


def _describe(term: Term) -> str:
    if term.kind == "has":
        return f"with {term.name}"
    if term.kind in ("tag", "topic"):
        return f"{term.kind} {term.name}"
    return Term(term.kind, term.name, term.value).text()


def _quote(text: str, name: bool = False, spaces: bool = False) -> str:
    """`text` as the grammar reads it back: bare when it can be, else in double quotes.
    Values and attribute names with spaces are quoted (`city="New York"`), tag names are
    not (`tag:early birds` keeps the text campaigns stored before quoting existed)."""
    if (text and not re.search(r'[+,="!@\\]', text) and not text.startswith("-")
            and not (name and ":" in text) and not (spaces and re.search(r"\s", text))
            and text.lower() not in ("subscribers", "list", "all")):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _split(text: str, option: str) -> list[tuple[str, str]]:
    """Split at `+` and `,` outside double quotes: [(separator before, term), ...]."""
    parts: list[tuple[str, str]] = []
    current: list[str] = []
    sep, quoted, escaped = "", False, False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif not quoted and ch in "+,":
            parts.append((sep, "".join(current)))
            sep, current = ch, []
        else:
            current.append(ch)
    if quoted:
        raise _bad(option, text, "has a quote that is not closed")
    parts.append((sep, "".join(current)))
    return parts


def _unquote(text: str, what: str, option: str, whole: str) -> str:
    """A bare or double-quoted name or value, trimmed; SubscriberError when quoting is
    broken (text after the closing quote) or the result is empty."""
    text = text.strip(_BLANKS)
    if text.startswith('"'):
        out: list[str] = []
        i = 1
        while i < len(text) and text[i] != '"':
            if text[i] == "\\" and i + 1 < len(text):
                i += 1
            out.append(text[i])
            i += 1
        if i != len(text) - 1:
            raise _bad(option, whole, f"has text after the closing quote of {text!r}")
        text = "".join(out).strip(_BLANKS)
    elif '"' in text:
        raise _bad(option, whole, f'has a quote inside {text!r}: quote the whole {what}, '
                   'like city="New York"')
    text = _CONTROLS.sub(" ", text).strip(_BLANKS)
    if not text:
        raise _bad(option, whole, f"has an empty {what}")
    return text


def _operator(term: str) -> tuple[str, str, str] | None:
    """(name, op, value) at the first `=` or `!=` outside quotes; None when there is none."""
    quoted = False
    for i, ch in enumerate(term):
        if ch == '"' and (i == 0 or term[i - 1] != "\\"):
            quoted = not quoted
        elif ch == "=" and not quoted:
            if i > 0 and term[i - 1] == "!":
                return term[: i - 1], "ne", term[i + 1:]
            return term[:i], "eq", term[i + 1:]
    return None


def _term(raw: str, option: str, whole: str, bare_is_tag: bool) -> Term:
    text = raw.strip(_BLANKS)
    negated = text.startswith("-")
    if negated:
        text = text[1:].strip(_BLANKS)
    found = _operator(text)
    if found is not None:
        name, op, value = found
        if name.strip(_BLANKS).lower() in (f"{k}:" for k in _KINDS) or ":" in name.split('"')[0]:
            raise _bad(option, whole, f"has {raw.strip()!r}, which is not a term")
        return Term(op, _unquote(name, "attribute name", option, whole).casefold(),
                    _unquote(value, f"value for {name.strip()}", option, whole), negated)
    kind, colon, rest = text.partition(":")
    if colon and kind.strip(_BLANKS).lower() in _KINDS:
        kind = kind.strip(_BLANKS).lower()
        what = "attribute name" if kind == "has" else f"{kind} name"
        return Term(kind, _unquote(rest, what, option, whole).casefold(), negated=negated)
    if bare_is_tag and text and not colon:
        return Term("tag", _unquote(text, "tag name", option, whole).casefold(), negated=negated)
    raise _bad(option, whole, f"has {raw.strip()!r}, which is not a term")


def parse_segment(text: str, option: str = "--to", bare_is_tag: bool = False) -> Segment:
    """`tag:friends+plan=paid,-tag:press` → Segment; SubscriberError (naming the term and the
    grammar) when the text is not one. `bare_is_tag`: `founders` means `tag:founders` (the
    `--tag` alias, where `tag:` was always optional)."""
    terms: list[Term] = []
    for sep, raw in _split(text, option):
        if not raw.strip(_BLANKS):
            raise _bad(option, text, f"has an empty term (a {sep or '+'} with nothing "
                       "beside it)")
        term = _term(raw, option, text, bare_is_tag)
        if sep == "," and not term.negated:
            raise _bad(option, text, "has a term to include after a comma: after a comma "
                       "comes one to leave out (`-tag:NAME`); for readers with both tags write "
                       "`tag:a+tag:b`")
        if term not in terms:
            terms.append(term)
    return Segment(tuple(terms))


# --- SQL ----------------------------------------------------------------------------------

# Attributes that are not valid JSON are no attributes (never an SQL error mid-send); an
# array or a scalar has no named keys, so it matches nothing either.
_ATTRIBUTES_JSON = ("CASE WHEN json_valid(subscribers.attributes) THEN subscribers.attributes "
                    "END")
_ATTRIBUTES = f"json_each(coalesce({_ATTRIBUTES_JSON}, '{{}}')) AS a"


def _value_text(source: str, path: str) -> str:
    """SQL for an attribute's value as text, trimmed like the value it is compared with:
    JSON true/false as `true`/`false`, null as absent (NULL), numbers and strings as
    written. `path` is SQL for the JSON path (a parameter)."""
    return (f"trim(CASE json_type({source}, {path}) WHEN 'true' THEN 'true' WHEN 'false' "
            f"THEN 'false' WHEN 'null' THEN NULL ELSE CAST(json_extract({source}, {path}) AS "
            f"TEXT) END, '{_BLANKS}')")


def _attribute_sql(term: Term, spellings: list[str]) -> tuple[str, list[Any]]:
    """SQL and parameters for has/eq/ne on an attribute stored under any of `spellings`.

    json_extract with a path per spelling (3-4 times faster than json_each); a key with a
    double quote cannot be written in a JSON path, so it is looked up with json_each."""
    tests: list[str] = []
    params: list[Any] = []
    for key in spellings:
        if '"' in key:
            value = (f"trim(CASE a.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
                     f"WHEN 'null' THEN NULL ELSE CAST(a.value AS TEXT) END, '{_BLANKS}')")
            tests.append(f"EXISTS (SELECT 1 FROM {_ATTRIBUTES} WHERE a.key = ? AND "
                         + (f"{value} != ''" if term.kind == "has" else f"{value} = ?") + ")")
            params += [key] if term.kind == "has" else [key, term.value]
            continue
        path = '$."' + key + '"'
        value = _value_text(_ATTRIBUTES_JSON, "?")
        if term.kind == "has":
            tests.append(f"coalesce({value} != '', 0)")
            params += [path, path]
        else:
            tests.append(f"coalesce({value} = ?, 0)")
            params += [path, path, term.value]
    found = "(" + " OR ".join(tests) + ")"
    return (f"NOT {found}" if term.kind == "ne" else found), params


def known_attributes(db: sqlite_utils.Database) -> dict[str, list[str]]:
    """Every attribute name in use, casefolded → its spellings (`City`, `city`)."""
    rows = db.execute(
        f"SELECT DISTINCT a.key FROM subscribers, {_ATTRIBUTES} WHERE a.type != 'null'"
    ).fetchall()
    names: dict[str, list[str]] = {}
    for (key,) in rows:
        if isinstance(key, str):
            names.setdefault(key.casefold(), []).append(key)
    return names


def known_tags(db: sqlite_utils.Database) -> list[str]:
    """Every tag in use, as spelled, sorted ignoring case."""
    rows = db.execute(
        "SELECT DISTINCT json_each.value FROM subscribers, json_each(subscribers.tags)"
    ).fetchall()
    return sorted({r[0] for r in rows if isinstance(r[0], str)}, key=str.casefold)


def _chosen_topics(db: sqlite_utils.Database) -> list[str]:
    rows = db.execute(
        "SELECT DISTINCT json_each.value FROM subscribers, json_each(subscribers.topics) "
        "WHERE subscribers.topics IS NOT NULL"
    ).fetchall()
    return [r[0] for r in rows if isinstance(r[0], str)]


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def segment_where(db: sqlite_utils.Database, segment: Segment) -> tuple[str, list[Any]]:
    """SQL (on `subscribers`) and its parameters for `segment`.

    SubscriberError names a tag, attribute or topic that no reader has (a topic in
    `segment.known_topics` is known even before a reader chose it).
    """
    kinds = {t.kind for t in segment.terms}
    tags: dict[str, list[str]] = {}
    if "tag" in kinds:
        for tag in known_tags(db):
            tags.setdefault(tag.casefold(), []).append(tag)
    attributes = known_attributes(db) if kinds & {"has", "eq", "ne"} else {}
    topic_names: dict[str, list[str]] = {}
    if "topic" in kinds:
        for topic in [*segment.known_topics, *_chosen_topics(db)]:
            spellings = topic_names.setdefault(topic.casefold(), [])
            if topic not in spellings:
                spellings.append(topic)
    where: list[str] = []
    params: list[Any] = []
    for term in segment.terms:
        if term.kind == "tag":
            if term.name not in tags:
                have = ", ".join(sorted(tags)[:30]) or "none yet"
                raise SubscriberError(
                    f"no subscriber has the tag {term.name!r}; tags in use: {have} "
                    "(`newsletter subscribers add EMAIL --tag NAME` tags a reader)")
            names = tags[term.name]
            sql = (f"EXISTS (SELECT 1 FROM json_each(subscribers.tags) "
                   f"WHERE json_each.value IN ({_marks(names)}))")
            params += names
        elif term.kind == "topic":
            if term.name not in topic_names:
                have = ", ".join(sorted(topic_names)) or "none are set"
                raise SubscriberError(
                    f"no topic {term.name!r}: topics are {have} ([subscribe] topics in "
                    f"newsletter.toml). {GRAMMAR}")
            names = topic_names[term.name]
            # NULL: the reader gets everything (subscribers.topic_choice).
            sql = ("(subscribers.topics IS NULL OR EXISTS (SELECT 1 FROM json_each("
                   f"subscribers.topics) WHERE json_each.value IN ({_marks(names)})))")
            params += names
        else:
            if term.name not in attributes:
                have = ", ".join(sorted(attributes)[:30]) or "none yet"
                raise SubscriberError(
                    f"no subscriber has the attribute {term.name!r}; attributes in use: "
                    f"{have}. {GRAMMAR}")
            sql, term_params = _attribute_sql(term, attributes[term.name])
            params += term_params
        where.append(f"NOT {sql}" if term.negated else sql)
    return " AND ".join(where) or "1", params
