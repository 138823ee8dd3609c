"""Shared-body requests: every reader gets, byte for byte, the message personalize() made.

SendGrid and Mailgun put each reader's values into one shared body themselves
(the fakes substitute as the providers document). These tests send a real
issue whose layout uses names, addresses, attributes, defaults and case
filters, to readers whose values hold HTML specials, the providers' own tag
syntax, unicode or nothing, and compare what each reader receives with their
personalized message. Postmark, Resend and SES get whole messages: they are
held to the same comparison.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter.compose.issue import Issue, build_issue
from newsletter.compose.message import Message, Recipient, personalize
from newsletter.delivery.providers.base import Outcome
from newsletter.delivery.providers.fields import split_address
from newsletter.settings import Settings, load_settings
from tests.providers_http.conftest import API
from tests.providers_http.messages import make_message

DRAFT = """\
---
title: "Field notes — issue 9"
---
Hello {{ subscriber.name | default("friend") }} ({{ subscriber.name | upper }}),

Weather in {{ subscriber.city | default("your town") }} for {{ subscriber.email }}:
[the forecast](https://example.com/weather?city={{ subscriber.city }}).

Your code: %{{ subscriber.code | default("none") }}% and plan {{ subscriber.plan }}.
"""


def variable(message: Message, field: str) -> str:
    """The template variable that holds `field` (as the layout uses it, no filter)."""
    assert message.template is not None
    return next(v for v in message.template.variables
                if v.rsplit("_", 1)[0] == field)


def build(write_draft: Callable[..., Path], newsletter_dir: Path,
          text: str = DRAFT) -> tuple[Issue, Settings]:
    draft = write_draft("2026-12-01-notes.md", text)
    settings = load_settings(newsletter_dir)
    return build_issue(settings, draft), settings


def readers(email_var: str) -> list[Recipient]:
    """Ordinary readers, then the odd ones."""
    plain = [Recipient(f"reader{i}@example.org", f"Reader {i}",
                       {"city": "Lisboa", "code": f"A{i}", "plan": "paid"}) for i in range(6)]
    odd = [
        Recipient("specials@example.org", """<b>Ann & "Bob" 'O'</b>""",
                  {"city": "<Zürich> & \"Genève\"", "code": "&amp;", "plan": "<i>"}),
        Recipient("mailgun-tag@example.org", f"%recipient.nl_{email_var}%",
                  {"city": "%recipient.x%", "code": "c", "plan": "p"}),
        Recipient("sendgrid-tag@example.org", f"%nl_{email_var}%",
                  {"city": f"%nl_{email_var}_html%", "code": "c", "plan": "p"}),
        Recipient("dashes@example.org", "-name-", {"city": "-city-", "code": "-code-",
                                                   "plan": "-plan-"}),
        Recipient("unicode@example.org", "Zoë Ångström 山田", {"city": "Kraków 🙂",
                                                               "code": "ß", "plan": "ü"}),
        Recipient("nameless@example.org", "", {}),
        # With the "%" before it in the draft, this code spells a tag of each provider.
        Recipient("straddle-sg@example.org", "Straddle", {"city": "x", "plan": "y",
                                                          "code": f"nl_{email_var}"}),
        Recipient("straddle-mg@example.org", "Straddle", {"city": "x", "plan": "y",
                                                          "code": f"recipient.nl_{email_var}"}),
        Recipient("percent@example.org", "100% Reader", {"city": "São Paulo 50%",
                                                         "code": "%%", "plan": "%"}),
    ]
    return plain + odd


def personalized(issue: Issue, settings: Settings, recipients: list[Recipient]) -> list[Message]:
    return [personalize(issue, r, key=str(i + 1), settings=settings)
            for i, r in enumerate(recipients)]


def assert_each_gets_their_own(api: API, messages: list[Message]) -> None:
    got = {email.utils.parseaddr(d.to[0])[1]: d for d in api.fake.delivered}
    assert sorted(got) == sorted(m.recipient for m in messages)
    for message in messages:
        d = got[message.recipient]
        assert len(d.to) == 1
        if api.name == "ses":  # raw MIME: the parser's text, line ends as it reads them
            assert d.html.replace("\r\n", "\n") == message.html
            assert d.text.replace("\r\n", "\n") == message.text
        else:
            assert d.html.encode() == message.html.encode(), message.recipient
            assert d.text.encode() == message.text.encode(), message.recipient
        assert d.subject == message.subject
        assert d.headers["List-Unsubscribe"] == f"<{message.unsubscribe_url}>"


def test_every_reader_value_batches_and_arrives_exactly(
        api: API, newsletter_dir: Path, write_draft: Callable[..., Path]) -> None:
    issue, settings = build(write_draft, newsletter_dir)
    sample = personalize(issue, Recipient("a@example.org", "A"), key="0", settings=settings)
    recipients = readers(variable(sample, "email"))
    messages = personalized(issue, settings, recipients)
    # The layout's values travel with each message, every attribute included.
    assert messages[0].reader_values[variable(sample, "city")] == "Lisboa"
    assert messages[0].reader_values[variable(sample, "plan")] == "paid"

    results = api.provider().send(messages)

    assert all(r.outcome is Outcome.SENT for r in results), results
    assert_each_gets_their_own(api, messages)
    # Readers whose values hold the provider's tag syntax (or spell a tag with the
    # draft's "%") go whole; everyone else shares one request.
    whole = {"sendgrid": {"sendgrid-tag@example.org", "straddle-sg@example.org"},
             "mailgun": {"mailgun-tag@example.org", "straddle-mg@example.org"}}
    if api.name in whole:
        assert len(api.fake.requests) == 1 + len(whole[api.name])
        # The shared body holds a tag where each value goes; the values travel apart.
        assert "Lisboa" not in shared_body(api) and "reader3@example.org" not in shared_body(api)


def shared_body(api: API) -> str:
    """The html and text of the request that carried the most readers."""
    if api.name == "sendgrid":
        body = max((json.loads(b) for b in api.fake.bodies),
                   key=lambda b: len(b["personalizations"]))
        return "".join(c["value"] for c in body["content"])
    form = max((r.form for r in api.fake.requests), key=lambda f: len(f.getlist("to")))
    return form["html"] + form["text"]


@pytest.mark.parametrize("name", ["sendgrid", "mailgun"])
def test_a_draft_holding_the_tag_syntax_is_sent_whole(
        make_api: Callable[[str], API], newsletter_dir: Path,
        write_draft: Callable[..., Path], name: str) -> None:
    text = DRAFT + "\nTemplates look like %nl_name_0% and %recipient.nl_name_0%.\n"
    issue, settings = build(write_draft, newsletter_dir, text)
    recipients = [Recipient(f"r{i}@example.org", f"Reader {i}", {"city": "Oslo", "plan": "x"})
                  for i in range(4)]
    messages = personalized(issue, settings, recipients)
    api = make_api(name)
    assert all(r.outcome is Outcome.SENT for r in api.provider().send(messages))
    assert_each_gets_their_own(api, messages)
    assert "%nl_name_0% and %recipient.nl_name_0%" in api.fake.delivered[0].text
    assert len(api.fake.requests) == 4  # correctness first: one request each


@pytest.mark.parametrize("name", ["sendgrid", "mailgun"])
def test_side_by_side_values_cannot_form_a_tag(
        make_api: Callable[[str], API], newsletter_dir: Path,
        write_draft: Callable[..., Path], name: str) -> None:
    text = ("---\ntitle: Pairs\n---\n{{ subscriber.first }} in {{ subscriber.city }}:\n\n"
            "Dear {{ subscriber.first }}{{ subscriber.last }}.\n")
    issue, settings = build(write_draft, newsletter_dir, text)
    sample = personalize(issue, Recipient("a@example.org"), key="0", settings=settings)
    city = variable(sample, "city")
    recipients = [
        Recipient("a@example.org", "", {"first": "Ada", "last": "Lovelace", "city": "Oslo"}),
        # Right after the first value's tag, the last one would read as the city's tag.
        Recipient("b@example.org", "", {"first": "Ada", "last": f"nl_{city}%", "city": "Oslo"}),
        Recipient("c@example.org", "", {"first": "Ada", "last": f"recipient.nl_{city}%",
                                        "city": "Oslo"}),
        Recipient("d@example.org", "", {"first": "%", "last": f"nl_{city}%", "city": "Oslo"}),
    ]
    messages = personalized(issue, settings, recipients)
    api = make_api(name)
    assert all(r.outcome is Outcome.SENT for r in api.provider().send(messages))
    assert_each_gets_their_own(api, messages)


def test_sendgrid_values_over_its_limit_go_whole(
        make_api: Callable[[str], API], newsletter_dir: Path,
        write_draft: Callable[..., Path]) -> None:
    issue, settings = build(write_draft, newsletter_dir)
    recipients = [Recipient(f"r{i}@example.org", f"Reader {i}", {"city": "Oslo", "plan": "x"})
                  for i in range(3)]
    recipients.append(Recipient("long@example.org", "Long", {"city": "Ö" * 4000, "plan": "x"}))
    # 840 characters, but 12 bytes each as JSON escapes them: over the limit too.
    recipients.append(Recipient("emoji@example.org", "E", {"city": "Oslo", "plan": "🙂" * 420}))
    messages = personalized(issue, settings, recipients)
    api = make_api("sendgrid")
    assert all(r.outcome is Outcome.SENT for r in api.provider().send(messages))
    assert_each_gets_their_own(api, messages)
    assert len(api.fake.requests) == 3


@pytest.mark.parametrize("name", ["sendgrid", "mailgun"])
def test_a_message_without_a_template_is_sent_as_it_is(
        make_api: Callable[[str], API], name: str) -> None:
    from dataclasses import replace

    # As a plug-in might build them: rendered fields only.
    messages = [replace(make_message(i, name=f"%nl_name_0% {i}"), template=None,
                        reader_values={}) for i in range(3)]
    api = make_api(name)
    assert all(r.outcome is Outcome.SENT for r in api.provider().send(messages))
    assert_each_gets_their_own(api, messages)
    if name == "mailgun":  # alone and without recipient-variables: nothing substituted
        assert all("recipient-variables" not in r.form for r in api.fake.requests)


@pytest.mark.parametrize("value", [
    "Reader 1 <reader1@example.org>", "Zoë <z@example.org>", '"Doe, Jane" <j@example.org>',
    "J. Doe <j@example.org>", "a@example.org", "A  B <ab@example.org>",
    "=?utf-8?q?Z=C3=B6e?= <z@x.y>",
    "Ann (the first) <a@example.org>", "Ann <a.b+c@mail.example.org>", "x <y>", "<a@b.c>",
    "O'Neil-Smith <o@example.org>", "Tab\tName <t@example.org>",
])
def test_split_address_agrees_with_the_email_package(value: str) -> None:
    from newsletter.delivery.providers.fields import unfold

    assert split_address(value) == email.utils.parseaddr(unfold(value))
