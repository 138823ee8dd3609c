"""Subscribe, confirm, unsubscribe and manage against a real `newsletter serve`."""

from __future__ import annotations

import httpx

from newsletter.audience.events import history
from tests.legacy_tokens import unsubscribe_token
from tests.web.conftest import SECRET, Site, subscribe, wait_for


def unsub_url(address: str) -> str:
    return f"/unsubscribe?token={unsubscribe_token(SECRET.encode(), address.lower())}"


def test_double_opt_in_creates_pending_then_confirm_on_post_only(site: Site) -> None:
    with site.client() as c:
        r = subscribe(site, c, "Lin@Example.com", "Lin <b>", ("essays",))
        assert r.status_code == 200 and "Check your inbox" in r.text
        reader = site.reader("lin@example.com")
        assert reader.status == "pending" and reader.tags == ["essays"]
        assert len(site.outbox()) == 1
        link = site.confirm_link("lin@example.com")
        page = c.get(link)
        assert page.status_code == 200 and "Yes, subscribe me" in page.text
        assert site.reader("lin@example.com").status == "pending"  # GET changed nothing
        token = link.split("token=", 1)[1]
        done = c.post("/confirm", data={"token": token}, headers={"User-Agent": "Phone/1"})
        assert done.status_code == 200 and "You are subscribed" in done.text
    reader = site.reader("lin@example.com")
    assert reader.status == "active" and reader.confirmed_at
    db = site.db()
    confirmed = [e for e in history(db, reader.id) if e.kind == "confirmed"][0]
    assert (confirmed.source, confirmed.ip, confirmed.user_agent) == ("web", "127.0.0.1", "Phone/1")
    assert "Field Notes" in confirmed.consent


def test_same_answer_for_new_pending_and_active_and_no_email_to_active(site: Site) -> None:
    assert site.cli("subscribers", "add", "old@example.com").returncode == 0
    with site.client() as c:
        pages = [subscribe(site, c, a) for a in ("new@example.com", "new@example.com",
                                                  "old@example.com")]
    assert {p.status_code for p in pages} == {200}
    assert len({p.text for p in pages}) == 1
    assert site.reader("old@example.com").status == "active"
    sent = site.outbox()
    assert len(sent) == 2 and all(p.name.endswith("-new@example.com.eml") for p in sent)


def test_unsubscribed_reader_who_subscribes_again_stays_unsubscribed_until_confirmed(
        site: Site) -> None:
    # Issue 18: they used to become `pending` at once, before confirming anything.
    site.cli("subscribers", "add", "back@example.com")
    site.cli("subscribers", "unsubscribe", "back@example.com")
    with site.client() as c:
        assert subscribe(site, c, "back@example.com").status_code == 200
        assert site.reader("back@example.com").status == "unsubscribed"
        token = site.confirm_link("back@example.com").split("token=", 1)[1]
        assert c.get(f"/confirm?token={token}").status_code == 200
        assert site.reader("back@example.com").status == "unsubscribed"  # GET changes nothing
        c.post("/confirm", data={"token": token})
    reader = site.reader("back@example.com")
    assert reader.status == "active" and reader.unsubscribed_at is None
    changes = [(e.kind, e.status_before, e.status_after) for e in history(site.db(), reader.id)
               if e.status_after]
    assert changes[-2:] == [("subscribed", "unsubscribed", "unsubscribed"),
                            ("confirmed", "unsubscribed", "active")]


def test_bad_address_and_markup_are_escaped(site: Site) -> None:
    with site.client() as c:
        r = c.post("/subscribe", data={"email": "<script>x</script>", "name": "n"})
    assert r.status_code == 400
    assert "<script>x" not in r.text and "&lt;script&gt;x" in r.text
    assert "does not look like an email address" in r.text


def test_honeypot_sends_nothing(site: Site) -> None:
    with site.client() as c:
        r = c.post("/subscribe", data={"email": "bot@example.com", "website": "http://spam"})
    assert r.status_code == 200 and "Check your inbox" in r.text
    assert site.reader("bot@example.com") is None and site.outbox() == []


def test_unsubscribe_page_masks_and_changes_nothing_then_post_unsubscribes(site: Site) -> None:
    site.cli("subscribers", "add", "lea@example.com")
    with site.client() as c:
        page = c.get(unsub_url("lea@example.com"))
        assert page.status_code == 200 and "l***@example.com" in page.text
        assert "lea@example.com" not in page.text
        assert site.reader("lea@example.com").status == "active"
        for _ in range(2):  # idempotent: the second POST is the same 200 page
            r = c.post(unsub_url("lea@example.com"), data={"List-Unsubscribe": "One-Click"})
            assert r.status_code == 200 and "You are unsubscribed" in r.text
            assert "set-cookie" not in r.headers
    reader = site.reader("lea@example.com")
    assert reader.status == "unsubscribed"
    kinds = [(e.kind, e.source) for e in history(site.db(), reader.id)]
    # The body is RFC 8058's: recorded as a mail client's one-click (issue 18), not "web".
    assert kinds.count(("unsubscribed", "one-click")) == 1


def test_forged_altered_and_foreign_tokens_get_the_same_page(site: Site) -> None:
    site.cli("subscribers", "add", "kim@example.com")
    good = unsubscribe_token(SECRET.encode(), "kim@example.com")
    foreign = unsubscribe_token(b"another-newsletter-secret-" + b"z" * 40, "kim@example.com")
    altered = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    gone = unsubscribe_token(SECRET.encode(), "nobody@example.com")
    with site.client() as c:
        answers = []
        for token in ("", "garbage", altered, foreign, gone):
            for method in ("GET", "POST"):
                r = c.request(method, f"/unsubscribe?token={token}")
                answers.append((r.status_code, r.text))
        for path in ("/confirm?token=x", "/manage?token=" + altered):
            r = c.get(path)
            answers.append((r.status_code, r.text))
    assert len(set(answers)) == 1 and answers[0][0] == 400
    assert site.reader("kim@example.com").status == "active"


def test_manage_changes_name_and_topics_only_on_post(site: Site) -> None:
    site.cli("subscribers", "add", "max@example.com", "--name", "Max", "--tag", "vip")
    url = unsub_url("max@example.com").replace("/unsubscribe", "/manage")
    with site.client() as c:
        page = c.get(url)
        assert page.status_code == 200 and 'value="Max"' in page.text
        r = c.post(url, data={"action": "save", "name": "Maxine <i>", "topics": ["links"]})
        assert r.status_code == 200 and "Saved." in r.text and "Maxine &lt;i&gt;" in r.text
        reader = site.reader("max@example.com")
        assert (reader.name, reader.tags, reader.status) == ("Maxine <i>", ["vip", "links"],
                                                              "active")
        r = c.post(url, data={"action": "unsubscribe"})
        assert "You are unsubscribed" in r.text
    assert site.reader("max@example.com").status == "unsubscribed"


def test_gmail_one_click_post_exactly_as_sent(site: Site) -> None:
    """RFC 8058 §3.2: a POST with the form body, no cookies, no referrer."""
    site.cli("subscribers", "add", "gmail.user@example.com")
    body = b"List-Unsubscribe=One-Click"
    r = httpx.post(site.url + unsub_url("gmail.user@example.com"), content=body, headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": "Mozilla/5.0 (compatible; Google-Unsubscribe)"})
    assert r.status_code == 200
    files = {"List-Unsubscribe": (None, "One-Click")}  # the multipart spelling
    site.cli("subscribers", "add", "multi@example.com")
    r2 = httpx.post(site.url + unsub_url("multi@example.com"), files=files)
    assert r2.status_code == 200
    assert site.reader("gmail.user@example.com").status == "unsubscribed"
    assert site.reader("multi@example.com").status == "unsubscribed"


def test_body_limit_healthz_and_access_log_without_tokens(site: Site) -> None:
    with site.client() as c:
        assert c.get("/healthz").text == "ok\n"
        big = c.post("/subscribe", content=b"email=" + b"a" * 200_000,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert big.status_code == 413
        c.get(unsub_url("someone@example.com"))
        c.post("/subscribe", data={"email": "logged@example.com"})
        r = c.post("/webhooks/nobody", content=b"{}")
        assert r.status_code == 404  # handed to feedback.webhooks.handle (no such provider)
    # The line is written just after the response is sent: wait for the last one.
    def logged() -> str:
        text = site.log.read_text()
        return text if "POST /webhooks/nobody 404" in text else ""

    log = wait_for(logged, 10, "the access log")
    assert "POST /subscribe 413" in log and "GET /unsubscribe 400" in log
    access = [line for line in log.splitlines() if " GET /" in line or " POST /" in line]
    assert len([line for line in access if "/healthz" not in line]) == 4
    assert not any("token" in line or "@" in line or "127.0.0.1" in line for line in access)
