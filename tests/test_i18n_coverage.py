"""Every page and partial each role reaches, in Spanish and in Arabic: no English left behind.

The pages are every GET route of ``url_map`` that the role may reach (filled with its school's
ids), plus every htmx partial (``hx-get``) those pages load, fetched as htmx would. In each
language a page fails on:
- a piece of text or a label (``title``, ``aria-label``, ``placeholder``, ``alt``, a button's
  ``value``) equal to an English message of the catalogue whose translation differs,
- a missing or wrong ``lang``/``dir`` on the page,
- a placeholder left unfilled (``%(name)s``), which a broken translation would show.
What people typed (names, messages) is not in the catalogue, so it cannot be mistaken; text in
``<code>`` (a CSV column's name, a cookie's) is what a file or a program must use, as written.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from babel.messages.pofile import read_po
from flask_babel import force_locale
from jinja2 import ChainableUndefined

from tests.hostile_world import ROLES, build_world, fill_rule, interesting_rules, may_reach, signed_in_client

TRANSLATIONS = Path(__file__).resolve().parents[1] / "app" / "translations"
LANGUAGES = {"es": "ltr", "ar": "rtl"}
# Endpoints that answer with something other than a page to read, or spend what they serve.
NOT_PAGES = re.compile(r"(sign_out|export|download|ical|feed|health|static|webhooks|dev\.)")
SPACE = re.compile(r"\s+")
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]")
BRAND = "Join Our Class"
LETTERS = re.compile(r"[^\W\d_]{3,}")
LABEL_ATTRIBUTES = ("title", "aria-label", "placeholder", "alt")


class English:
    """The catalogue's English texts whose translation differs: exact ones, and ones with values.

    A message with placeholders ("Hello %(name)s,") is matched as a pattern whose values may be
    anything, so an untranslated sentence with a name in it is caught too.
    """

    def __init__(self, texts: set[str]) -> None:
        self.exact = {t for t in texts if not PLACEHOLDER.search(t)}
        patterns = [
            ".+?".join(re.escape(piece.replace("%%", "%")) for piece in PLACEHOLDER.split(t))
            for t in texts
            if PLACEHOLDER.search(t) and "<" not in t and LETTERS.search(PLACEHOLDER.sub("", t))
        ]
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None

    def __len__(self) -> int:
        return len(self.exact)

    def __contains__(self, text: object) -> bool:
        if text in self.exact:
            return True
        return bool(self.pattern and isinstance(text, str) and self.pattern.fullmatch(text))


def english_messages(locale: str) -> English:
    """The catalogue's English texts whose translation in ``locale`` differs from them."""
    with (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalogue = read_po(handle, locale=locale)
    english: set[str] = set()
    for message in catalogue:
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for text in ids:
            if text not in strings:
                english.add(SPACE.sub(" ", text).strip())
    return English(english)


class _Texts(HTMLParser):
    """The text nodes, label attributes and hx-get targets of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self.html_attrs: dict[str, str | None] | None = None
        self.partials: list[tuple[str, str]] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        # htmx reads data-hx-* (valid HTML) as it reads hx-*: one name for both here.
        values = {
            name.removeprefix("data-") if name.startswith("data-hx-") else name: value
            for name, value in attrs
        }
        if tag == "html":
            self.html_attrs = values
        if tag in ("script", "style", "code"):  # code: names a file or a program must use, as is
            self._skip += 1
        for name in LABEL_ATTRIBUTES:
            if values.get(name):
                self.texts.append(values[name] or "")
        if tag == "input" and values.get("type") in ("submit", "button") and values.get("value"):
            self.texts.append(values["value"] or "")
        if values.get("hx-get"):
            target = (values.get("hx-target") or "").lstrip("#") or values.get("id") or ""
            self.partials.append((values["hx-get"] or "", target))

    def handle_endtag(self, tag):
        if tag in ("script", "style", "code") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.texts.append(data)


def problems_of(html: str, where: str, english: English, locale: str, whole_page: bool) -> list[str]:
    """What is wrong with one page or fragment in ``locale``."""
    parser = _Texts()
    parser.feed(html)
    found = []
    if whole_page:
        attrs = parser.html_attrs or {}
        if (attrs.get("lang"), attrs.get("dir")) != (locale, LANGUAGES[locale]):
            found.append(f"{where}: <html lang={attrs.get('lang')!r} dir={attrs.get('dir')!r}>")
    for raw in parser.texts:
        # The product's name is a brand, the same in every language ("Join %(school)s" would match it).
        text = SPACE.sub(" ", raw.replace(BRAND, " ")).strip(" ·:")
        if not text:
            continue
        if text in english:
            found.append(f"{where}: English left: {text!r}")
        if PLACEHOLDER.search(text):
            found.append(f"{where}: placeholder left: {text!r}")
    return found


def reachable_pages(app, side, role) -> list[str]:
    """Paths of every GET route this role may reach, filled with its school's ids."""
    paths = []
    for rule in interesting_rules(app, "GET"):
        if NOT_PAGES.search(rule.endpoint) or not may_reach(app, rule.endpoint, side, role):
            continue
        paths.append(fill_rule(rule, side.ids))
    return [*sorted(set(paths)), "/no-such-page"]  # and the error page everyone may meet


@pytest.mark.parametrize("locale", sorted(LANGUAGES))
@pytest.mark.parametrize("role", ROLES)
def test_every_page_a_role_reaches_is_translated(app, make_school, make_member, role, locale):
    english = english_messages(locale)
    assert len(english) > 500, "the catalogue is there and translated"
    world = build_world(make_school, make_member)
    client = signed_in_client(app, world.mine, role)
    headers = {"Accept-Language": locale}
    problems: list[str] = []
    checked = 0
    partials: set[tuple[str, str]] = set()
    for path in reachable_pages(app, world.mine, role):
        response = client.get(path, headers=headers)
        if response.status_code not in (200, 404) or response.mimetype != "text/html":
            continue
        checked += 1
        html = response.get_data(as_text=True)
        problems += problems_of(html, path, english, locale, whole_page="<html" in html)
        parser = _Texts()
        parser.feed(html)
        partials.update(p for p in parser.partials if urlsplit(p[0]).netloc == "")
    for partial, target in sorted(partials):
        response = client.get(partial, headers={**headers, "HX-Request": "true", "HX-Target": target})
        if response.status_code == 200 and response.mimetype == "text/html":
            html = response.get_data(as_text=True)
            problems += problems_of(html, f"{partial} (htmx)", english, locale, whole_page="<html" in html)
    assert checked >= 3, f"{role} reached only {checked} pages"
    assert problems == [], "\n".join(sorted(set(problems)))


class _Everything(ChainableUndefined):
    """A value for any name an email template asks for: true, printable, an empty list to loop over."""

    def __bool__(self) -> bool:
        return True

    def __str__(self) -> str:
        return "7"

    def __iter__(self):
        return iter(())


EMAIL_TEMPLATES = sorted(
    path.name.removesuffix(".subject.txt")
    for path in (Path(__file__).resolve().parents[1] / "app" / "templates" / "email").glob("*.subject.txt")
)


@pytest.mark.parametrize("locale", sorted(LANGUAGES))
def test_every_email_is_translated(app, locale):
    """Each email (subject, text, HTML) in Spanish and Arabic, its branches taken both ways."""
    english = english_messages(locale)
    everything = app.jinja_env.overlay(undefined=_Everything)
    problems: list[str] = []
    with app.test_request_context("/"), force_locale(locale):
        for name in EMAIL_TEMPLATES:
            for env, context in (
                (app.jinja_env, {"hours": 1, "count": 1, "items": []}),
                (everything, {"hours": 2, "count": 3, "items": []}),
            ):
                values = {
                    **context,
                    "lang": locale,
                    "dir": LANGUAGES[locale],
                    "product_name": "Join Our Class",
                }
                for part in ("subject.txt", "txt", "html"):
                    rendered = env.get_template(f"email/{name}.{part}").render(values)
                    lines = (
                        rendered
                        if part == "html"
                        else "".join(f"<p>{line}</p>" for line in rendered.splitlines())
                    )
                    problems += problems_of(lines, f"email/{name}.{part}", english, locale, whole_page=False)
    assert len(EMAIL_TEMPLATES) >= 13
    assert problems == [], "\n".join(sorted(set(problems)))


@pytest.mark.parametrize("locale", sorted(LANGUAGES))
@pytest.mark.parametrize("platform_role", ["support", "admin"])
def test_every_platform_page_is_translated(app, make_school, make_member, platform_role, locale):
    """The operator's own people: the console, support and policy pages their role reaches."""
    from app.extensions import db
    from app.models import PlatformRole
    from app.permissions import Access
    from tests.hostile_world import declared_access

    english = english_messages(locale)
    world = build_world(make_school, make_member)
    operator = world.mine.actors["parent"].user
    operator.platform_role = PlatformRole(platform_role)
    db.session.commit()
    client = signed_in_client(app, world.mine, "parent")
    problems: list[str] = []
    checked = 0
    for rule in interesting_rules(app, "GET"):
        access, roles = declared_access(app, rule.endpoint)
        if access is not Access.PLATFORM or (roles and platform_role not in roles):
            continue
        if NOT_PAGES.search(rule.endpoint):
            continue
        path = fill_rule(rule, world.mine.ids)
        response = client.get(path, headers={"Accept-Language": locale})
        if response.status_code != 200 or response.mimetype != "text/html":
            continue
        checked += 1
        html = response.get_data(as_text=True)
        problems += problems_of(html, path, english, locale, whole_page="<html" in html)
    assert checked >= (1 if platform_role == "support" else 4), f"{platform_role}: {checked} pages"
    assert problems == [], "\n".join(sorted(set(problems)))
