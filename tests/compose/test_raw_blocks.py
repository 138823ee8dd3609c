"""`{% raw %}…{% endraw %}` in a draft, as the template-error message tells writers to write it.

Code is protected from Jinja on its own (protect_code); a writer's own raw block around
code, inside it (as Jekyll drafts have it) or around a paragraph must keep working in
build, a personalized send and publish.
"""

from __future__ import annotations

import email
import email.policy
import html as html_lib
import re
from pathlib import Path

from newsletter.compose.issue import build_issue
from newsletter.settings import load_settings

DRAFT = """\
---
title: Templates
---
Hi {{ subscriber.name | default("reader") }}, a variable looks like this:

{% raw %}
`{{ x }}`
{% endraw %}

In a block:

{% raw %}
```jinja
{{ y }}
```
{% endraw %}

As Jekyll has it: `{% raw %}{{ page.title }}{% endraw %}`, next to `{{ auto }}`.

```
{% raw %}{{ fenced }}{% endraw %}
```

{% raw %}Plain text: {{ z }} and {% if %}.{% endraw %}
"""


def parts(eml: Path) -> tuple[str, str]:
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    return html, text


def shown(html: str) -> str:
    """What a reader sees of the HTML: its text, without tags (Pygments splits code in spans)."""
    return html_lib.unescape(re.sub(r"<[^>]+>", "", html))


def assert_literal(html: str, text: str) -> None:
    assert re.search(r"<code[^>]*>\{\{ x \}\}</code>", html)
    assert re.search(r"<code[^>]*>\{\{ page.title \}\}</code>", html)
    assert re.search(r"<code[^>]*>\{\{ auto \}\}</code>", html)
    for literal in ("{{ y }}", "{{ fenced }}", "Plain text: {{ z }} and {% if %}."):
        assert literal in shown(html) and literal in text
    assert "{{ x }}" in text and "{{ page.title }}" in text
    assert "raw %}" not in html and "raw %}" not in text


def test_raw_blocks_build(write_draft, newsletter_dir, cli):
    path = write_draft("2026-03-01-templates.md", DRAFT)
    issue = build_issue(load_settings(), path)
    assert_literal(issue.html, issue.text)

    run = cli("build", "templates")
    assert run.exit_code == 0, run.stderr
    built = newsletter_dir / "build" / "2026-03-01-templates"
    assert_literal(built.with_suffix(".html").read_text(), built.with_suffix(".txt").read_text())


def test_raw_blocks_in_a_personalized_send(write_draft, newsletter_dir, cli):
    write_draft("2026-03-01-templates.md", DRAFT)
    assert cli("subscribers", "add", "liu@example.com", "--name", "Liu").exit_code == 0
    run = cli("send", "templates", "--to", "subscribers", "--yes")
    assert run.exit_code == 0, run.stderr
    (eml,) = (newsletter_dir / "outbox").rglob("*.eml")
    html, text = parts(eml)
    assert "Hi Liu," in html and "Hi Liu," in text
    assert_literal(html, text)


def test_raw_blocks_publish(write_draft, newsletter_dir, cli):
    write_draft("2026-03-01-templates.md", "---\npublish: true\n" + DRAFT.removeprefix("---\n"))
    run = cli("publish")
    assert run.exit_code == 0, run.stderr
    page = (newsletter_dir / "site" / "2026-03-01-templates" / "index.html").read_text()
    assert re.search(r"<code[^>]*>\{\{ x \}\}</code>", page)
    assert "{{ y }}" in shown(page) and "Plain text: {{ z }}" in page
    assert "raw %}" not in page


def test_code_holding_endraw_stays_code(write_draft):
    path = write_draft(
        "x.md",
        "Close a block with `{% endraw %}` or `{%- endraw -%}`:\n\n"
        "```jinja\n{% raw %}{{ kept }}{% endraw %}\n{{ shown }} {% endraw %}\n```\n",
    )
    issue = build_issue(load_settings(), path)
    assert "{% endraw %}" in issue.text and "{%- endraw -%}" in issue.text
    assert "{{ kept }}" in issue.text and "{{ shown }} {% endraw %}" in issue.text
