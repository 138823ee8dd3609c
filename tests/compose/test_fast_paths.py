"""The shortcuts publish's first run takes (issue 21) give the bytes the long way gives.

- compile_body: a body's template code compiled once for every draft that shares it;
- render_markdown: one Markdown instance reused (reset) between documents;
- build_issue(web=True): the content without the email's layouts, text and inlining;
- parse_draft(meta=...): the front matter's YAML read once.
"""

from __future__ import annotations

import pytest

from newsletter.compose import layout as layouts
from newsletter.compose.issue import build_issue
from newsletter.compose.markdown import make_renderer, render_markdown
from newsletter.compose.source import parse_draft
from newsletter.errors import ContentError
from newsletter.settings import load_settings

BODIES = [
    'Hello {{ subscriber.name | default("reader") }},\n\nText with } and { alone.\n',
    "No template code at all.\n\n## A heading\n",
    "{% for n in [1, 2] %}line {{ n }}\n{% endfor %}after\n",
    "{% if issue.title %}<b>kept</b>\n{% else %}gone{% endif %}\n",
    "a {% raw %}{{ literal }}{% endraw %} b\n",
    "a {## a comment ##} b\n{## over\ntwo lines ##}\nc\n",
    "x {%- if true -%} y {% endif %}\n  z {{- '!' }}\n",
    "{% autoescape true %}<i>{{ '<b>' }}</i>{% endautoescape %}\n",
    "{% macro m(t) %}<{{ t }}>{% endmacro %}{{ m('one') }} and {{ m('two') }}\n",
    "{% filter upper %}shout {{ 'this' }}{% endfilter %}\n",
    "{% set x %}kept <b>aside</b>{% endset %}[{{ x }}]\n",
    'q {{ "}}" }} r\n',
    "```\n{{ code }}\n```\nand `{% inline %}` too {{ 1 + 1 }}\n",
]


def _render(template, extra):  # noqa: ANN001, ANN202
    context = {"issue": layouts.namespace("issue", title="T"),
               "subscriber": layouts.SubscriberStandIn(layouts.Slots()), **extra}
    return layouts.render_template(template, context, where="x.md")


@pytest.mark.parametrize("body", BODIES)
def test_a_shared_body_template_renders_what_compiling_the_body_renders(body):
    env = layouts.make_environment(None, autoescape=False, markdown=True)
    source = layouts.protect_code(body)
    slow = layouts.compile_string(env, source, filename="x.md")
    for _ in range(2):  # compiled, then from the kept templates
        fast, extra = layouts.compile_body(env, source, filename="x.md")
        assert _render(fast, extra) == _render(slow, {})


def test_drafts_sharing_template_code_share_one_compiled_template():
    env = layouts.make_environment(None, autoescape=False, markdown=True)
    one, _ = layouts.compile_body(env, "Hi {{ 1 }},\n\nfirst text\n", filename="a.md")
    two, extra = layouts.compile_body(env, "Hi {{ 1 }},\n\nsecond, longer\ntext\n",
                                      filename="b.md")
    assert one is not two  # the line break count differs: another template
    three, extra = layouts.compile_body(env, "Hi {{ 1 }},\n\nother\n", filename="c.md")
    assert three is one
    assert _render(three, extra) == "Hi 1,\n\nother\n"


def test_errors_name_the_drafts_line_through_a_shared_template(newsletter_dir, write_draft):
    write_draft("2026-01-01-a.md", "---\ntitle: A\n---\nHi {{ subscriber.name }},\n\nok\n")
    build_issue(load_settings(), newsletter_dir / "drafts" / "2026-01-01-a.md")
    bad = write_draft("2026-01-02-b.md",
                      "---\ntitle: B\n---\nHi {{ subscriber.name }},\n\n{{ nope.x }}\n")
    with pytest.raises(ContentError, match=r"2026-01-02-b\.md:6: .*nope"):
        build_issue(load_settings(), bad)
    broken = write_draft("2026-01-03-c.md", "---\ntitle: C\n---\nHi,\n\n{{ oops \n")
    with pytest.raises(ContentError, match=r"2026-01-03-c\.md:6: template syntax error"):
        build_issue(load_settings(), broken)


def test_a_reused_markdown_instance_renders_what_a_new_one_renders():
    docs = [
        "# Same\n\nText[^1] and more.\n\n[^1]: A note.\n\n# Same\n",
        "# Same\n\nOther[^1].\n\n[^1]: Its own note.\n\n<div>raw</div>\n",
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nx = 1\n```\n",
    ]
    for doc in docs * 2:
        assert render_markdown(doc) == make_renderer().convert(doc)


def test_the_web_build_has_the_content_of_the_email_build(newsletter_dir, write_draft):
    (newsletter_dir / "drafts" / "pic.png").write_bytes(b"\x89PNG not really")
    path = write_draft("2026-01-01-w.md",
                       "---\ntitle: W\nmood: calm\n---\nHi {{ subscriber.name | default('you') }}"
                       ", {{ issue.mood }}.\n\n![p](pic.png) [home](/about)\n")
    settings = load_settings()
    full, web = build_issue(settings, path), build_issue(settings, path, web=True)
    assert web.content == full.content
    assert (web.slots, web.assets, web.web_url, web.title) == (
        full.slots, full.assets, full.web_url, full.title)
    assert web.html == web.text == ""  # not for sending


def test_a_draft_parsed_with_its_known_front_matter_is_the_same_draft(newsletter_dir,
                                                                     write_draft):
    text = "---\ntitle: T\nsent: 2026-01-01\ntopics: []\n---\nBody\n"
    path = write_draft("2026-01-01-t.md", text)
    first = parse_draft(path, text)
    assert parse_draft(path, text, meta=first.meta) == first
