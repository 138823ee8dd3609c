"""The routes table is built from the reserved paths, and the server reads v3 tokens."""

from __future__ import annotations

from starlette.routing import Route

from newsletter import paths
from newsletter.compose.tokens import Kind, TokenMaker, unsubscribe_token
from newsletter.web import site
from newsletter.web.app import ROUTES
from tests.web.conftest import SECRET, Site


def test_every_route_is_a_reserved_path_and_every_reserved_path_is_served() -> None:
    # The published site (web/site.py: `/` and `/{path}`) comes after every reserved one.
    reader = [r for r in ROUTES if isinstance(r, Route) and r.endpoint.__module__ != site.__name__]
    firsts = {r.path.strip("/").split("/")[0] for r in reader}
    assert firsts == paths.RESERVED_PATHS
    assert [r.path for r in ROUTES[len(reader):]] == ["/", "/{path:path}"]
    for slug in ("unsubscribe", "Webhooks", "/healthz/", "confirm/x"):
        assert paths.is_reserved(slug)
    for slug in ("leaving-facebook-meta", "subscribers", "2026-11-21-confirm"):
        assert not paths.is_reserved(slug)


def test_the_server_takes_this_newsletters_v3_links_only(site: Site) -> None:
    for address in ("kim@example.com", "lou@example.com"):
        assert site.cli("subscribers", "add", address).returncode == 0
    ours = unsubscribe_token(SECRET.encode(), "kim@example.com", site.url)
    theirs = unsubscribe_token(SECRET.encode(), "lou@example.com", "https://other.example")
    manage_kind = TokenMaker(SECRET.encode(), site.url).make("lou@example.com", Kind.MANAGE)
    assert ours.startswith("3")
    with site.client() as c:
        for token in (theirs, manage_kind):
            assert c.post(f"/unsubscribe?token={token}").status_code == 400
        r = c.post(f"/unsubscribe?token={ours}")
        assert r.status_code == 200 and "You are unsubscribed" in r.text
        with_campaign = TokenMaker(SECRET.encode(), site.url).make("lou@example.com",
                                                                   campaign=3)
        assert c.get(f"/manage?token={with_campaign}").status_code == 200
    assert site.reader("kim@example.com").status == "unsubscribed"
    assert site.reader("lou@example.com").status == "active"
