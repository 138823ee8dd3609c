"""`newsletter check`: every rule with a draft that triggers it and one that does not."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest

from newsletter.errors import NewsletterError
from newsletter.settings import load_settings
from newsletter.writer.check import Finding, Report, check_draft
from tests.writer.conftest import red_png

CLEAN = """\
---
subject: A quiet week
preheader: Three things worth reading
---
# A quiet week

Some words, [a link](https://example.org/post) and a picture:

![A red square](images/red.png)
"""


@pytest.fixture
def check(newsletter_dir: Path, write_draft: Callable[..., Path]) -> Callable[[str], Report]:
    """check("draft text") → the Report for drafts/post.md (an image is at drafts/images/)."""
    (newsletter_dir / "drafts" / "images").mkdir()
    (newsletter_dir / "drafts" / "images" / "red.png").write_bytes(red_png())

    def run(text: str) -> Report:
        path = write_draft("post.md", text)
        return check_draft(load_settings(newsletter_dir), path)

    return run


def codes(report: Report) -> list[str]:
    return [f.code for f in report.findings]


def only(report: Report, code: str) -> Finding:
    found = [f for f in report.findings if f.code == code]
    assert len(found) == 1, f"{code}: {report.findings}"
    return found[0]


def set_toml(root: Path, old: str, new: str) -> None:
    path = root / "newsletter.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def custom_layout(root: Path, html: str) -> None:
    layouts = root / "layouts"
    layouts.mkdir(exist_ok=True)
    (layouts / "default.html").write_text(html)
    builtin = resources.files("newsletter").joinpath("templates/layouts/default.txt")
    (layouts / "default.txt").write_text(builtin.read_text())


def test_a_clean_draft_has_no_findings(check: Callable[[str], Report]) -> None:
    report = check(CLEAN)
    assert report.findings == []
    assert not report.failed() and not report.failed(strict=True)


# --- errors ---------------------------------------------------------------------------------

def test_no_subject(check: Callable[[str], Report]) -> None:
    report = check("Just some words, with no title or subject anywhere.\n")
    finding = only(report, "no-subject")
    assert finding.severity == "error"
    assert "Just some words" in finding.message  # says what would go out instead
    assert "no-subject" not in codes(check(CLEAN))
    assert "no-subject" not in codes(check("# A title is enough\n\nWords.\n"))


def test_a_draft_saved_with_a_byte_order_mark_is_read_as_compose_reads_it(
    check: Callable[[str], Report]
) -> None:
    # Windows editors save UTF-8 with a BOM; compose skips it, so check (and send's check,
    # which reads the text the issue was built from) sees the front matter's subject too.
    assert "no-subject" not in codes(check("\ufeff" + CLEAN))


def test_undefined_template_variable(check: Callable[[str], Report]) -> None:
    report = check(CLEAN + "\nHello {{ subscriber_nmae }}!\n")
    finding = only(report, "undefined-variable")
    assert finding.severity == "error"
    assert "subscriber_nmae" in finding.message
    assert finding.line == 11
    assert "undefined-variable" not in codes(check(CLEAN + "\nHello {{ subscriber.name }}!\n"))


def test_missing_local_image(check: Callable[[str], Report]) -> None:
    report = check(CLEAN + "\n![A chart](images/chart.png)\n")
    finding = only(report, "missing-image")
    assert "images/chart.png" in finding.message
    assert finding.line == 11
    assert "missing-image" not in codes(check(CLEAN))


def test_no_unsubscribe_link_in_a_custom_layout(check: Callable[[str], Report],
                                                newsletter_dir: Path) -> None:
    assert "no-unsubscribe" not in codes(check(CLEAN))
    custom_layout(newsletter_dir, "<html><body>{{ issue.content }}</body></html>")
    finding = only(check(CLEAN), "no-unsubscribe")
    assert "unsubscribe_url" in finding.message


def test_no_unsubscribe_link_without_base_url(check: Callable[[str], Report],
                                              newsletter_dir: Path) -> None:
    set_toml(newsletter_dir, 'base_url = "https://example.com/news"\n', "")
    finding = only(check(CLEAN), "no-unsubscribe")
    assert "base_url" in finding.message
    # An unsubscribe mailto is enough.
    set_toml(newsletter_dir, 'address = "', 'unsubscribe_mailto = "leave@example.com"\naddress = "')
    assert "no-unsubscribe" not in codes(check(CLEAN))


def test_relative_link_without_base_url(check: Callable[[str], Report],
                                        newsletter_dir: Path) -> None:
    draft = CLEAN + "\nSee [the archive](archive/index.html).\n"
    assert "relative-link" not in codes(check(draft))  # base_url makes it absolute
    set_toml(newsletter_dir, 'base_url = "https://example.com/news"\n',
             'unsubscribe_mailto = "leave@example.com"\n')
    finding = only(check(draft), "relative-link")
    assert finding.severity == "error" and finding.line == 11
    assert "archive/index.html" in finding.message and "base_url" in finding.message
    # The relative image in CLEAN is embedded instead, which is fine.
    assert codes(check(CLEAN)) == []


def test_html_over_102_kb(check: Callable[[str], Report]) -> None:
    long = CLEAN + "\n" + "\n\n".join(f"Paragraph {n} " + "words " * 40 for n in range(500))
    finding = only(check(long), "html-too-large")
    assert "102 KB" in finding.message
    assert "html-too-large" not in codes(check(CLEAN))


def test_style_block_over_16_kb(check: Callable[[str], Report], newsletter_dir: Path) -> None:
    rules = "\n".join(f"@media (max-width: {n}px) {{ .c{n} {{ color: red; }} }}"
                      for n in range(500))
    custom_layout(newsletter_dir, f"<html><head><style>{rules}</style></head><body>"
                  '{{ issue.content }}<a href="{{ unsubscribe_url }}">Unsubscribe</a>'
                  "</body></html>")
    finding = only(check(CLEAN), "style-too-large")
    assert "16 KB" in finding.message
    custom_layout(newsletter_dir, "<html><head><style>"
                  "@media (max-width: 600px) { p { color: red; } }</style></head>"
                  "<body>{{ issue.content }}"
                  '<a href="{{ unsubscribe_url }}">Unsubscribe</a></body></html>')
    assert "style-too-large" not in codes(check(CLEAN))


def test_from_not_configured(check: Callable[[str], Report], newsletter_dir: Path) -> None:
    assert "no-from" not in codes(check(CLEAN))
    set_toml(newsletter_dir, 'from = "Test Writer <writer@example.com>"\n', "")
    finding = only(check(CLEAN), "no-from")
    assert "newsletter.from" in finding.message


def test_from_still_the_init_example(check: Callable[[str], Report],
                                     newsletter_dir: Path) -> None:
    set_toml(newsletter_dir, 'from = "Test Writer <writer@example.com>"',
             'from = "Your Name <you@example.com>"')
    finding = only(check(CLEAN), "no-from")
    assert "example address you@example.com" in finding.message


def test_no_postal_address(check: Callable[[str], Report], newsletter_dir: Path) -> None:
    assert "no-postal-address" not in codes(check(CLEAN))
    set_toml(newsletter_dir, 'address = "1 Test Street, Testville"', 'address = ""')
    finding = only(check(CLEAN), "no-postal-address")
    assert finding.severity == "warning" and "newsletter.address" in finding.message


@pytest.mark.parametrize("placeholder", ["TODO", "TK", "lorem ipsum", "Lorem Ipsum"])
def test_leftover_placeholders(check: Callable[[str], Report], placeholder: str) -> None:
    finding = only(check(CLEAN + f"\nThe ending goes here: {placeholder}.\n"), "placeholder")
    assert finding.line == 11
    assert placeholder.lower() in finding.message.lower()


def test_placeholder_words_in_code_or_inside_words_are_fine(check: Callable[[str], Report]) -> None:
    draft = CLEAN + "\nMy TODOs app, a TKO, `TODO` in code.\n\n```\n# TODO: in a code block\n```\n"
    assert "placeholder" not in codes(check(draft))


# --- warnings -------------------------------------------------------------------------------

def test_image_without_alt_text(check: Callable[[str], Report]) -> None:
    finding = only(check(CLEAN.replace("![A red square]", "![]")), "image-alt")
    assert finding.severity == "warning" and finding.line == 9
    assert "image-alt" not in codes(check(CLEAN))


@pytest.mark.parametrize("target", ["", "#"])
def test_link_with_empty_or_hash_target(check: Callable[[str], Report], target: str) -> None:
    finding = only(check(CLEAN + f"\nClick [here]({target}).\n"), "empty-link")
    assert finding.severity == "warning" and finding.line == 11
    assert "empty-link" not in codes(check(CLEAN + "\nClick [here](https://example.org).\n"))


def test_css_that_common_clients_ignore(check: Callable[[str], Report]) -> None:
    draft = CLEAN + '\n<div style="box-shadow: 0 0 4px #333; display: flex">Boxed</div>\n'
    report = check(draft)
    found = [f for f in report.findings if f.code == "css-support"]
    messages = " | ".join(f.message for f in found)
    assert "box-shadow" in messages and "Gmail" in messages
    assert "display: flex" in messages and "Outlook for Windows" in messages
    assert all(f.severity == "warning" and f.line == 11 for f in found)
    # One finding per property, however often it is used.
    twice = check(draft + '\n<p style="box-shadow: 1px 1px red">again</p>\n')
    assert [f.message for f in twice.findings].count(
        next(f.message for f in found if "box-shadow" in f.message)) == 1
    # The built-in layout's own CSS does not warn.
    assert "css-support" not in codes(check(CLEAN))


def test_no_preheader(check: Callable[[str], Report]) -> None:
    finding = only(check(CLEAN.replace("preheader: Three things worth reading\n", "")),
                   "no-preheader")
    assert finding.severity == "warning"
    assert "no-preheader" not in codes(check(CLEAN))


def test_all_caps_or_very_long_subject(check: Callable[[str], Report]) -> None:
    caps = only(check(CLEAN.replace("subject: A quiet week", "subject: BIG NEWS TODAY")),
                "subject-caps")
    assert caps.line == 2
    long = only(check(CLEAN.replace("subject: A quiet week", "subject: " + "Long words " * 10)),
                "subject-long")
    assert "110 characters" in long.message or "characters" in long.message
    assert not {"subject-caps", "subject-long"} & set(codes(check(CLEAN)))
    assert "subject-caps" not in codes(check(CLEAN.replace("A quiet week", "An AI and a CEO")))


# --- the report and what send relies on -----------------------------------------------------

def test_report_failed_and_json(check: Callable[[str], Report]) -> None:
    warned = check(CLEAN.replace("![A red square]", "![]"))
    assert warned.warnings and not warned.errors
    assert not warned.failed() and warned.failed(strict=True)
    errored = check(CLEAN + "\nTODO\n")
    assert errored.failed()
    data = json.loads(errored.to_json())
    assert data["errors"] == 1 and data["warnings"] == 0
    assert data["findings"][0] == {"severity": "error", "code": "placeholder",
                                   "message": errored.findings[0].message, "line": 11}


def test_a_check_that_cannot_run_raises(newsletter_dir: Path) -> None:
    with pytest.raises(NewsletterError):
        check_draft(load_settings(newsletter_dir), newsletter_dir / "drafts" / "nope.md")


@pytest.mark.parametrize("slug", ["unsubscribe", "Webhooks", "healthz"])
def test_a_slug_the_server_answers_for_readers_is_an_error(
    check: Callable[[str], Report], slug: str
) -> None:
    report = check(f"---\nslug: {slug}\n---\n# Hello\n\nBody.\n")
    finding = only(report, "reserved-slug")
    assert finding.severity == "error" and "set another `slug:`" in finding.message


def test_check_exits_1_for_a_draft_whose_slug_is_reserved(newsletter_dir: Path, write_draft,
                                                          cli) -> None:
    write_draft("manage.md", "---\nslug: manage\n---\n# Manage\n\nBody.\n")
    result = cli("check", "manage")
    assert result.exit_code == 1
    assert "'manage' is a path the server answers for readers" in result.stdout + result.stderr
