"""/manage and the sign-up form show exactly what a reader gets: everything, or topics."""

from __future__ import annotations

import re
from pathlib import Path

from newsletter.audience.subscribers import EVERYTHING, TopicChoice, topic_choice
from tests.legacy_tokens import unsubscribe_token
from tests.web.conftest import SECRET, Site, start_site, stop_site, subscribe


def _manage(address: str) -> str:
    return f"/manage?token={unsubscribe_token(SECRET.encode(), address)}"


def _checked(html: str) -> set[str]:
    """The ids of the ticked checkboxes."""
    return {m.group(1) for m in re.finditer(r'<input id="([^"]+)" type="checkbox"[^>]*checked',
                                            html)}


def _choice(site: Site, address: str) -> TopicChoice:
    db = site.db()
    try:
        return topic_choice(db, site.reader(address).id, ("essays", "links"))
    finally:
        db.conn.close()


def test_an_imported_reader_sees_everything_ticked_on_manage_and_can_narrow_it(
        site: Site) -> None:
    site.cli("subscribers", "add", "old@example.com")  # as imported readers are: everything
    with site.client() as c:
        page = c.get(_manage("old@example.com")).text
        assert _checked(page) == {"m-topics-all", "m-topic-1", "m-topic-2"}
        assert "You get every issue." in page
        # Unticking every box: only issues without a topic, which is not "everything".
        saved = c.post(_manage("old@example.com"),
                       data={"action": "save", "name": "", "topics_shown": "1"}).text
        assert _checked(saved) == set() and "You get only issues without a topic." in saved
        assert _choice(site, "old@example.com") == TopicChoice(False, ())
        saved = c.post(_manage("old@example.com"), data={
            "action": "save", "name": "", "topics_shown": "1", "topics": ["links"]}).text
        assert _checked(saved) == {"m-topic-2"}
        assert "You get issues about links, and issues without a topic." in saved
        saved = c.post(_manage("old@example.com"), data={
            "action": "save", "name": "", "topics_shown": "1", "everything": "1"}).text
        assert _checked(saved) == {"m-topics-all", "m-topic-1", "m-topic-2"}
    assert _choice(site, "old@example.com") == EVERYTHING


def test_the_form_starts_with_everything_and_a_reader_who_unticks_a_topic_gets_the_rest(
        site: Site) -> None:
    with site.client() as c:
        form = c.get("/subscribe").text
        assert _checked(form) == {"nl-topics-all", "nl-topic-1", "nl-topic-2"}
        # As the browser posts the form with "links" unticked.
        r = c.post("/subscribe", data={"email": "pick@example.com", "name": "", "website": "",
                                       "topics_shown": "1", "everything": "1",
                                       "topics": ["essays"]})
        assert r.status_code == 200
        subscribe(site, c, "all@example.com")  # a form without topic boxes: everything
        r = c.post("/subscribe", data={"email": "every@example.com", "website": "",
                                       "topics_shown": "1", "everything": "1",
                                       "topics": ["essays", "links"]})
        assert r.status_code == 200
    assert _choice(site, "pick@example.com") == TopicChoice(False, ("essays",))
    assert _choice(site, "all@example.com") == EVERYTHING
    assert _choice(site, "every@example.com") == EVERYTHING


def test_default_topics_none_ticks_nothing_on_the_form(tmp_path: Path) -> None:
    site = start_site(tmp_path / "site", extra_toml='default_topics = "none"')
    try:
        with site.client() as c:
            assert _checked(c.get("/subscribe").text) == set()
            c.post("/subscribe", data={"email": "none@example.com", "website": "",
                                       "topics_shown": "1"})
        assert _choice(site, "none@example.com") == TopicChoice(False, ())
    finally:
        stop_site(site)
