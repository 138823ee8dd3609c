"""build_issue(): layouts, inlining, images, links and the errors a writer can make."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from newsletter.compose.issue import build_issue
from newsletter.errors import ContentError
from newsletter.settings import load_settings

# A 1×1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def no_base_url(root: Path) -> None:
    toml = root / "newsletter.toml"
    toml.write_text(toml.read_text().replace('base_url = "https://example.com/news"\n', ""))


def test_default_layout_falls_back_to_the_built_in(newsletter_dir, write_draft):
    path = write_draft("2026-01-01-hi.md", "---\ntitle: Hi\npreheader: Peek\n---\nHello.\n")
    issue = build_issue(load_settings(), path)
    assert not (newsletter_dir / "layouts").exists()
    assert issue.html.startswith("<!DOCTYPE html>")
    assert 'width="600"' in issue.html  # the 600px table layout
    assert "prefers-color-scheme: dark" in issue.html  # media queries kept in <style>
    assert 'class="preheader"' in issue.html and "Peek" in issue.html
    assert "1 Test Street, Testville" in issue.html  # the postal address in the footer
    assert "Unsubscribe" in issue.html
    # CSS is inlined: the paragraph carries its style.
    assert '<p style="' in issue.html
    assert issue.web_url == "https://example.com/news/2026-01-01-hi/"
    assert "Hello." in issue.text and "Unsubscribe: " in issue.text
    assert issue.warnings == []


def test_newsletter_layouts_folder_wins(newsletter_dir, write_draft):
    (newsletter_dir / "layouts").mkdir()
    (newsletter_dir / "layouts" / "default.html").write_text(
        "<html><head><style>p { color: red }</style></head><body>"
        "<h1>{{ newsletter.name }}: {{ issue.title }}</h1>{{ issue.content }}"
        '<a href="{{ unsubscribe_url }}">u</a></body></html>'
    )
    path = write_draft("x.md", "# Title & more\n\nHi <b>there</b>.\n")
    issue = build_issue(load_settings(), path)
    assert "<h1>Test Letter: Title &amp; more</h1>" in issue.html  # autoescaped
    assert '<p style="color:red">Hi <b>there</b>.</p>' in issue.html
    assert "Test Letter" in issue.text  # default.txt still from the built-ins


def test_layout_chosen_in_front_matter(newsletter_dir, write_draft):
    (newsletter_dir / "layouts").mkdir()
    (newsletter_dir / "layouts" / "short.html").write_text("<p>SHORT {{ issue.content }}</p>")
    (newsletter_dir / "layouts" / "short.txt").write_text("SHORT {{ issue.content }}")
    path = write_draft("x.md", "---\nlayout: short\n---\nBody\n")
    issue = build_issue(load_settings(), path)
    assert "SHORT" in issue.html and issue.text.startswith("SHORT Body")


def test_missing_layout_is_a_clear_error(write_draft):
    path = write_draft("x.md", "---\nlayout: nope\n---\nBody\n")
    with pytest.raises(ContentError, match=r"layout nope.html not found"):
        build_issue(load_settings(), path)


def test_unknown_variable_in_a_layout_names_file_and_line(newsletter_dir, write_draft):
    (newsletter_dir / "layouts").mkdir()
    layout = newsletter_dir / "layouts" / "default.html"
    layout.write_text("<html><body>\n{{ issue.content }}\n{{ issue.nope }}\n</body></html>")
    path = write_draft("x.md", "Body\n")
    with pytest.raises(ContentError) as err:
        build_issue(load_settings(), path)
    assert f"{layout}:3:" in str(err.value) and "nope" in str(err.value)


def test_unknown_variable_in_a_draft_names_file_and_line(write_draft):
    path = write_draft("x.md", "---\ntitle: T\n---\nLine one\n\nHello {{ nope }}\n")
    with pytest.raises(ContentError) as err:
        build_issue(load_settings(), path)
    assert f"{path}:6:" in str(err.value) and "'nope' is undefined" in str(err.value)


def test_template_syntax_error_in_a_draft(write_draft):
    path = write_draft("x.md", "one\n\n{{ subscriber.name \n")
    with pytest.raises(ContentError, match=r"x.md:3: template syntax error"):
        build_issue(load_settings(), path)


def test_conditionals_on_subscriber_values_are_refused_with_a_hint(write_draft):
    path = write_draft("x.md", "{% if subscriber.name %}Hi{% endif %}\n")
    with pytest.raises(ContentError, match=r"x.md:1: .*default"):
        build_issue(load_settings(), path)


def test_heading_ids_survive_jinja(write_draft):
    path = write_draft("x.md", "## Part one {#one}\n\n{## a Jinja comment ##}Text\n")
    issue = build_issue(load_settings(), path)
    assert 'id="one"' in issue.html and "Jinja comment" not in issue.html


def test_local_images_become_absolute_urls_with_base_url(newsletter_dir, write_draft):
    (newsletter_dir / "drafts" / "img").mkdir()
    (newsletter_dir / "drafts" / "img" / "a b.png").write_bytes(PNG)
    path = write_draft(
        "x.md",
        "![alt](img/a%20b.png)\n\n![remote](https://cdn.example.org/x.png)\n\n"
        '<img src="img/a b.png" alt="raw">\n\n[next](next-issue.html) [top](#top) '
        "[abs](/about.html) [mail](mailto:a@example.com)\n",
    )
    issue = build_issue(load_settings(), path)
    assert 'src="https://example.com/news/img/a%20b.png"' in issue.html
    assert 'src="https://cdn.example.org/x.png"' in issue.html
    assert 'href="https://example.com/news/next-issue.html"' in issue.html
    assert 'href="https://example.com/news/about.html"' in issue.html
    assert 'href="#top"' in issue.html and 'href="mailto:a@example.com"' in issue.html
    assert issue.attachments == ()
    assert [rel for rel, _ in issue.assets] == ["img/a b.png"]


def test_local_images_are_embedded_without_base_url(newsletter_dir, write_draft):
    no_base_url(newsletter_dir)
    (newsletter_dir / "drafts" / "pic.png").write_bytes(PNG)
    path = write_draft("x.md", "![one](pic.png) ![again](./pic.png) [rel](other.html)\n")
    issue = build_issue(load_settings(), path)
    assert len(issue.attachments) == 1
    image = issue.attachments[0]
    assert image.content_type == "image/png" and image.data == PNG
    assert issue.html.count(f'src="cid:{image.cid}"') == 2
    assert 'href="other.html"' in issue.html  # no base to make it absolute
    assert issue.web_url is None
    assert any("base_url is not set" in w for w in issue.warnings)
    assert "Unsubscribe: " not in issue.text and "unsubscribe" in issue.html.lower()


def test_missing_image_is_a_clear_error(write_draft):
    path = write_draft("x.md", "Text\n\n![photo](photos/missing.jpg)\n")
    with pytest.raises(ContentError) as err:
        build_issue(load_settings(), path)
    assert str(err.value).startswith(f"{path}:3: image photos/missing.jpg not found")


def test_inlining_prints_no_warnings(write_draft, capfd):
    path = write_draft("x.md", "Body\n")
    build_issue(load_settings(), path)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_html_over_102_kb_is_a_warning(write_draft):
    path = write_draft("big.md", "\n\n".join(f"Paragraph {i} " + "word " * 60 for i in range(400)))
    issue = build_issue(load_settings(), path)
    assert any("Gmail clips" in w for w in issue.warnings)


def test_unicode_in_title_subject_and_body(write_draft):
    path = write_draft("x.md", "---\ntitle: Café “au lait” — 🙂\n---\nNaïve — “yes” 🎉\n")
    issue = build_issue(load_settings(), path)
    assert issue.subject == "Café “au lait” — 🙂"
    assert "Café “au lait” — 🙂" in issue.html and "Naïve — “yes” 🎉" in issue.html
    assert "Naïve — “yes” 🎉" in issue.text


def test_template_syntax_inside_code_is_left_alone(write_draft):
    path = write_draft(
        "x.md",
        "Hi {{ subscriber.name }}, in Hugo write `{{ .Title }}` or:\n\n"
        "```go-html-template\n{{ range .Pages }}{% not jinja %}{{ end }}\n```\n",
    )
    issue = build_issue(load_settings(), path)
    assert "{{ .Title }}" in issue.text
    assert "{{ range .Pages }}{% not jinja %}{{ end }}" in issue.text
    assert "raw %}" not in issue.text
