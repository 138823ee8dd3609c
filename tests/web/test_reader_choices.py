"""Issue 18: a reader's choices honoured, and the record saying what they did.

Everything here goes through a real `newsletter serve` (and the real CLI for sends).
"""

from __future__ import annotations

import email
import email.policy
import html
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from newsletter.audience.events import history
from newsletter.compose.tokens import Kind, TokenMaker
from tests.legacy_tokens import unsubscribe_token
from tests.web.conftest import SECRET, Site, start_site, stop_site, subscribe, wait_for


def unsub_url(address: str) -> str:
    return f"/unsubscribe?token={unsubscribe_token(SECRET.encode(), address.lower())}"


def events_of(site: Site, address: str) -> list:  # noqa: ANN001
    reader = site.reader(address)
    return history(site.db(), reader.id)


def parse(path: Path) -> email.message.EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def sent_issue(site: Site, address: str) -> email.message.EmailMessage:
    (site.root / "drafts" / "hello.md").write_text("---\nsubject: Hello\n---\nHello.\n")
    run = site.cli("send", "hello", "--to", address, "--yes")
    assert run.returncode == 0, run.stderr
    [eml] = list((site.root / "outbox").glob("*hello*/*.eml"))
    return parse(eml)


# --- 1. a manage link in every email; coming back through double opt-in -------------------


def test_every_email_carries_a_manage_link_that_opens_the_readers_page(site: Site) -> None:
    site.cli("subscribers", "add", "mia@example.com", "--name", "Mia")
    msg = sent_issue(site, "mia@example.com")
    body = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    links = [html.unescape(u) for u in re.findall(r'href="([^"]*/manage\?token=[^"]+)"', body)]
    assert len(links) == 1 and "Manage your subscription" in body
    assert re.search(r"Manage your subscription: (\S+/manage\?token=\S+)", text).group(1) == (
        links[0])
    token = parse_qs(urlsplit(links[0]).query)["token"][0]
    link = TokenMaker(SECRET.encode(), site.url).read(token)
    assert link is not None and link.kind == Kind.MANAGE  # a manage token, not the unsubscribe one
    page = httpx.get(links[0], timeout=30)
    assert page.status_code == 200 and "Your subscription" in page.text
    assert "m***@example.com" in page.text and 'value="Mia"' in page.text


def test_an_unsubscribed_reader_comes_back_from_manage_only_by_confirming(site: Site) -> None:
    site.cli("subscribers", "add", "ola@example.com")
    msg = sent_issue(site, "ola@example.com")
    manage = html.unescape(re.search(r'href="([^"]*/manage\?token=[^"]+)"',
                                     msg.get_body(("html",)).get_content()).group(1))
    with site.client() as c:
        c.post(unsub_url("ola@example.com"), data={"List-Unsubscribe": "One-Click"})
        page = c.get(manage)
        assert page.status_code == 200 and "Subscribe again" in page.text
        assert 'value="unsubscribe"' not in page.text  # nothing to leave
        r = c.post(manage, data={"action": "resubscribe"})
        assert r.status_code == 200 and "Check your inbox" in r.text
        assert site.reader("ola@example.com").status == "unsubscribed"  # until they confirm
        token = site.confirm_link("ola@example.com").split("token=", 1)[1]
        assert c.post("/confirm", data={"token": token}).status_code == 200
    assert site.reader("ola@example.com").status == "active"
    asked = [e for e in events_of(site, "ola@example.com") if e.kind == "subscribed"][-1]
    assert (asked.status_before, asked.status_after) == ("unsubscribed", "unsubscribed")
    assert asked.consent  # asking to come back is a consent event


def test_an_unsubscribe_link_opened_after_unsubscribing_offers_to_come_back(site: Site) -> None:
    site.cli("subscribers", "add", "ida@example.com")
    with site.client() as c:
        c.post(unsub_url("ida@example.com"), data={"List-Unsubscribe": "One-Click"})
        page = c.get(unsub_url("ida@example.com"))
        assert page.status_code == 200 and "You are unsubscribed" in page.text
        assert "Stop sending" not in page.text and 'value="unsubscribe"' not in page.text
        action = html.unescape(re.search(r'<form method="post" action="([^"]+)"',
                                         page.text).group(1))
        assert 'value="resubscribe"' in page.text
        r = c.post(httpx.URL(site.url + "/unsubscribe").join(action),
                   data={"action": "resubscribe"})
        assert r.status_code == 200 and "Check your inbox" in r.text
    assert site.reader("ida@example.com").status == "unsubscribed"
    assert len(site.outbox()) == 1  # one confirmation email


def test_an_old_confirmation_link_does_not_undo_a_later_unsubscribe(site: Site) -> None:
    site.cli("subscribers", "add", "eve@example.com")
    with site.client() as c:
        c.post(unsub_url("eve@example.com"), data={"List-Unsubscribe": "One-Click"})
        subscribe(site, c, "eve@example.com")
        token = site.confirm_link("eve@example.com").split("token=", 1)[1]
        c.post(unsub_url("eve@example.com"), data={"action": "unsubscribe"})  # left again
        r = c.post("/confirm", data={"token": token})
    assert r.status_code == 409
    assert site.reader("eve@example.com").status == "unsubscribed"


def test_the_invalid_link_page_offers_a_fresh_link_and_the_writers_address(
        tmp_path: Path) -> None:
    site = start_site(tmp_path / "site", "confirmations_per_day = 2\n"
                                         "signups_per_ip_per_hour = 5\n")
    try:
        site.cli("subscribers", "add", "ann@example.com")
        with site.client() as c:
            page = c.get("/unsubscribe?token=garbage")
            assert page.status_code == 400
            assert 'action="manage"' in page.text and 'name="email"' in page.text
            assert "ada@example.com" in page.text  # the writer's address ([newsletter] from)
            stranger = c.post("/manage", data={"email": "nobody@example.com"})
            known = c.post("/manage", data={"email": "Ann@Example.com"})
            assert stranger.status_code == known.status_code == 200
            assert stranger.text == known.text and "Check your inbox" in known.text
            [mail] = wait_for(lambda: site.outbox("manage"), 10, "the manage link email")
            link = re.search(r"https?://\S+/manage\?token=\S+",
                             parse(mail).get_body(("plain",)).get_content()).group(0)
            assert mail.name.endswith("-ann@example.com.eml")
            assert c.get(link).status_code == 200
            c.post("/manage", data={"email": "ann@example.com"})
            c.post("/manage", data={"email": "ann@example.com"})  # over 2 a day: no email
            codes = [c.post("/manage", data={"email": f"x{i}@example.com"}).status_code
                     for i in range(3)]
            assert codes[-1] == 429  # 5 requests an hour from one IP, like sign-ups
        time.sleep(1.0)  # the email leaves after the answer: give a third one time to show
        assert len(site.outbox("manage")) == 2
    finally:
        stop_site(site)


# --- 2. the sign-up form does not change a stopped reader's status -------------------------


def test_a_stopped_readers_sign_up_changes_no_status_until_confirmed(site: Site) -> None:
    site.cli("subscribers", "add", "ben@example.com")
    site.cli("subscribers", "unsubscribe", "ben@example.com")
    with site.client() as c:
        assert subscribe(site, c, "ben@example.com").status_code == 200
    reader = site.reader("ben@example.com")
    assert reader.status == "unsubscribed" and reader.unsubscribed_at


# --- 3. the record says what happened ------------------------------------------------------


def test_one_click_and_the_button_are_different_sources_and_consent_is_for_consent(
        site: Site) -> None:
    for address in ("one@example.com", "two@example.com"):
        site.cli("subscribers", "add", address, "--name", "Old")
    with site.client() as c:
        c.post(unsub_url("one@example.com"), content=b"List-Unsubscribe=One-Click",
               headers={"Content-Type": "application/x-www-form-urlencoded"})
        page = c.get(unsub_url("two@example.com"))
        button = re.search(r'<button[^>]*name="([^"]+)" value="([^"]+)"', page.text)
        assert button is not None and "List-Unsubscribe" not in page.text
        c.post(unsub_url("two@example.com"), data={button.group(1): button.group(2)})
        subscribe(site, c, "new@example.com", "New")
        token = site.confirm_link("new@example.com").split("token=", 1)[1]
        c.post("/confirm", data={"token": token})
        manage = unsub_url("new@example.com").replace("/unsubscribe", "/manage")
        c.post(manage, data={"action": "save", "name": "Newer", "topics": ["links"]})
    [one] = [e for e in events_of(site, "one@example.com") if e.kind == "unsubscribed"]
    [two] = [e for e in events_of(site, "two@example.com") if e.kind == "unsubscribed"]
    assert (one.source, two.source) == ("one-click", "web")
    assert one.consent is None and two.consent is None
    new = {e.kind: e for e in events_of(site, "new@example.com")}
    assert new["subscribed"].consent and new["confirmed"].consent
    assert new["renamed"].source == "web" and "Newer" in new["renamed"].detail
    assert new["renamed"].consent is None and new["updated"].consent is None


# --- 4. names over the limit; the 413 page ---------------------------------------------------


@pytest.mark.parametrize("length", [16 * 1024, 201])
def test_a_name_over_the_limit_is_refused_with_a_message_about_the_name(
        site: Site, length: int) -> None:
    with site.client() as c:
        form = c.get("/subscribe")
        assert "up to 200 characters" in form.text and 'maxlength="200"' in form.text
        r = subscribe(site, c, "long@example.com", "N" * length)
    assert r.status_code == 400
    assert f"That name is {length:,} characters long: at most 200 fit" in r.text
    assert "email address" not in r.text.split("role=\"alert\"")[1].split("</p>")[0]
    assert site.reader("long@example.com") is None and site.outbox() == []


def test_a_name_at_the_limit_is_kept_whole_and_manage_refuses_a_longer_one(site: Site) -> None:
    with site.client() as c:
        assert subscribe(site, c, "full@example.com", "F" * 200).status_code == 200
        assert site.reader("full@example.com").name == "F" * 200
        manage = unsub_url("full@example.com").replace("/unsubscribe", "/manage")
        r = c.post(manage, data={"action": "save", "name": "G" * 300})
    assert r.status_code == 400 and "That name is 300 characters long" in r.text
    assert site.reader("full@example.com").name == "F" * 200  # not cut, not changed


def test_a_body_over_the_limit_gets_a_page_in_the_newsletters_style(site: Site) -> None:
    with site.client() as c:
        r = c.post("/subscribe", content=b"email=" + b"a" * 200_000,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413 and r.headers["content-type"].startswith("text/html")
    assert "<title>Too much text · Field Notes</title>" in r.text and "<h1>" in r.text
    assert "65,536 bytes" in r.text


def test_a_kept_copy_of_the_form_records_the_consent_text_it_showed(tmp_path: Path) -> None:
    # The snippet pasted into another site, or an archived page, shows the consent text of
    # the day it was printed. Signing up through it records that text, not today's.
    site = start_site(tmp_path / "letter", 'consent = "New words: daily emails."')
    try:
        toml = site.root / "newsletter.toml"
        today = toml.read_text()
        toml.write_text(today.replace("New words: daily emails.", "Old words: one email a week."))
        kept = site.cli("serve", "--embed")  # printed back when the settings said that
        toml.write_text(today)
        assert kept.returncode == 0, kept.stderr
        fields = dict(re.findall(r'name="(consent_text|consent_seal)" value="([^"]*)"',
                                 kept.stdout))
        assert fields["consent_text"] == "Old words: one email a week."
        with site.client() as c:
            c.post("/subscribe", data={"email": "kept@example.com", **fields})
            forged = {**fields, "consent_text": "Words the writer never wrote."}
            c.post("/subscribe", data={"email": "forged@example.com", **forged})
            c.post("/subscribe", data={"email": "plain@example.com"})
        shown = {address: [e.consent for e in events_of(site, address)
                           if e.kind == "subscribed"]
                 for address in ("kept@example.com", "forged@example.com", "plain@example.com")}
    finally:
        stop_site(site)
    assert shown == {"kept@example.com": ["Old words: one email a week."],
                     "forged@example.com": ["New words: daily emails."],
                     "plain@example.com": ["New words: daily emails."]}
