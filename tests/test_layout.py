"""The design system's living style page, the favicon and the meta description (issue 15)."""

from __future__ import annotations

import re
from pathlib import Path

from app.models import Role
from tests.conftest import sign_in

CSS = Path(__file__).resolve().parents[1] / "app" / "static" / "css" / "app.css"


def test_the_style_page_exists_in_development_only(build_app):
    for env_name, expected in (("test", 404), ("production", 404), ("development", 200)):
        response = build_app(ENV_NAME=env_name).test_client().get("/dev/style")
        assert response.status_code == expected, env_name


def test_the_style_page_shows_each_component_with_its_markup(build_app):
    page = build_app(ENV_NAME="development").test_client().get("/dev/style").get_data(as_text=True)
    for component in ("card", "table-scroll", "avatar", "empty", "badge", "page-header", "button", "field"):
        assert f'class="{component}' in page, component  # rendered...
        assert f"class=&#34;{component}" in page, component  # ...and shown as markup to copy
    for token in ("--brand", "--text-xl", "--space-4", "--radius"):
        assert token in page


def test_every_class_the_templates_use_is_styled_or_known_to_need_no_style():
    """The restructured stylesheet kept every class the templates use (or it never had a rule)."""
    templates = Path(__file__).resolve().parents[1] / "app" / "templates"
    css = CSS.read_text()
    used: set[str] = set()
    for path in templates.rglob("*.html"):
        for value in re.findall(r'class="([^"{}]*)"', path.read_text()):
            used.update(value.split())
    styled = set(re.findall(r"\.([a-zA-Z][\w-]*)", re.sub(r"/\*.*?\*/", "", css, flags=re.S)))
    # Classes that are hooks for tests, htmx or JavaScript, not for looks.
    hooks = {
        "category",
        "decision",
        "demo",
        "directory-links",
        "event",
        "events",
        "export-actions",
        "grant",
        "import-counts",
        "not",
        "print",
        "reference",
        "settings-links",
        "staff-entries",
        "sign-ins",
        "audit",
        "all",
        "reject",
        "import-columns",
        # The home page's, the calendar's and the dev mailbox's regions (tests find them by class).
        "add-google",
        "add-ics",
        "add-outlook",
        "brand-preview",
        "calendar-month",
        "continued",
        "dev-headers",
        "feed",
        "home-main",
        "queues",
        "todo",
        "todo-request",
    }
    assert used - styled - hooks == set()


def test_the_brand_colour_is_one_token_that_an_identity_stylesheet_can_override():
    css = CSS.read_text()
    rules = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    root = rules.split(":root", 1)[1].split("}", 1)[0]
    assert "--brand:" in root and "--on-brand:" in root
    outside_root = rules.replace(root, "")
    assert "#1d4ed8" not in outside_root.lower()  # every use goes through var(--brand)


def test_favicon_ico_answers_with_the_svg_icon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    assert b"<svg" in response.data


def test_every_page_has_a_meta_description_and_the_icon_link(client, make_school, make_member):
    page = client.get("/sign-in").get_data(as_text=True)
    assert re.search(r'<meta name="description" content="[^"]{40,}">', page)
    assert 'rel="icon"' in page and "favicon.svg" in page
    member = make_member(make_school(), role=Role.ADMIN)
    sign_in(client, member.user.email)
    home = client.get("/").get_data(as_text=True)
    assert '<meta name="description"' in home
    assert '<details class="menu">' in home and "<summary>Menu</summary>" in home
    assert 'href="/" aria-current="page">Home</a>' in home  # the menu says where you are
    assert 'aria-current="page">Home</a>' not in client.get("/calendar/").get_data(as_text=True)
