"""The landing page at /, the favicon, and player.d.ts served as TypeScript."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.contrib.staticfiles.views import serve
from django.test import Client, RequestFactory

from heartbeat.services import get_stream_manager


class PageLinks(HTMLParser):
    """The href of every <a> and <link> of a page, and whether it has any inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: dict[str, str] = {}  # id -> href
        self.icons: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("id"):
            self.anchors[found["id"]] = found["href"] or ""
        if tag == "link" and found.get("rel") == "icon":
            self.icons.append(found["href"] or "")
        if tag == "style" or (tag == "script" and not found.get("src")) or "style" in found:
            self.inline.append(tag)
        self.inline.extend(name for name in found if name.startswith("on"))


def links_of(client: Client) -> PageLinks:
    response = client.get("/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    parser = PageLinks()
    parser.feed(response.content.decode())
    return parser


@pytest.fixture
def demo_on(settings) -> None:
    settings.STREAMLIMIT_DEMO = True


def test_the_landing_page_links_the_demo_dashboard_api_docs_and_probes(client: Client, demo_on) -> None:
    page = links_of(client)
    assert page.anchors["link-demo"] == "/demo/"
    assert page.anchors["link-dashboard"] == "/dashboard/"
    assert page.anchors["link-api-docs"] == "/api/docs/"
    assert page.anchors["link-schema"] == "/api/schema/"
    assert page.anchors["link-healthz"] == "/healthz"
    assert page.anchors["link-readyz"] == "/readyz"
    assert page.anchors["link-metrics"] == "/metrics"
    assert page.anchors["link-player-js"].endswith("streamlimit/player.js")
    assert page.anchors["link-player-types"].endswith("streamlimit/player.d.ts")
    # Every link leads somewhere: the dashboard to its login, the rest answer.
    get_stream_manager().load_scripts()
    for name in ("link-demo", "link-api-docs", "link-schema", "link-healthz", "link-readyz", "link-metrics"):
        assert client.get(page.anchors[name]).status_code == 200, name
    dashboard = client.get(page.anchors["link-dashboard"])
    assert dashboard.status_code == 302 and "/admin/login/" in dashboard["Location"]


def test_without_the_demo_the_landing_page_does_not_offer_it(client: Client, settings) -> None:
    settings.STREAMLIMIT_DEMO = False
    page = links_of(client)
    assert "link-demo" not in page.anchors
    assert all("/demo/" not in href for href in page.anchors.values())
    assert "link-dashboard" in page.anchors and "link-api-docs" in page.anchors


def test_the_landing_page_has_no_inline_script_or_style(client: Client, demo_on) -> None:
    # A strict Content-Security-Policy (no 'unsafe-inline') must not break it.
    assert links_of(client).inline == []


def test_the_favicon_is_an_icon_at_the_path_browsers_ask_for(client: Client) -> None:
    assert links_of(client).icons == ["/favicon.ico"]
    response = client.get("/favicon.ico")
    assert response.status_code == 200 and response["Content-Type"] == "image/x-icon"
    icon = response.content
    # ICO header: reserved 0, type 1 (icon), then at least one image.
    assert icon[:4] == b"\x00\x00\x01\x00" and int.from_bytes(icon[4:6], "little") >= 1
    assert re.search(r"max-age=\d+", response["Cache-Control"])
    assert client.post("/favicon.ico").status_code == 405


def test_player_types_are_served_as_typescript_by_whitenoise(settings) -> None:
    # whitenoise, as in production, finding the files itself (no collectstatic
    # needed for the test): its own table says .ts is video/mp2t.
    settings.WHITENOISE_USE_FINDERS = True
    response = Client().get("/static/streamlimit/player.d.ts")
    assert response.status_code == 200
    media_type, _, params = response["Content-Type"].partition(";")
    assert media_type == "text/typescript" and "utf-8" in params
    assert b"StreamLimitSession" in b"".join(response.streaming_content)


def test_player_types_are_served_as_typescript_by_django() -> None:
    # Django's own static view (runserver with DJANGO_DEBUG) guesses from mimetypes.
    request = RequestFactory().get("/static/streamlimit/player.d.ts")
    response = serve(request, "streamlimit/player.d.ts", insecure=True)
    assert response.status_code == 200 and response["Content-Type"] == "text/typescript"


def test_check_warns_until_the_static_files_are_collected(settings, tmp_path) -> None:
    from django.core.management import call_command

    from streamlimit.static_check import static_files_collected

    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    settings.STATIC_ROOT = str(tmp_path / "static")
    (warning,) = static_files_collected()
    assert warning.id == "streamlimit.W020" and "collectstatic" in warning.hint
    call_command("collectstatic", "--noinput", verbosity=0)
    assert static_files_collected() == []
