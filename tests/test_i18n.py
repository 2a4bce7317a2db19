"""Which language a page is in, how a visitor or a member changes it, and how it is kept.

The order (app/i18n): ?lang= on one request, the account's choice, the visitor's choice in the
server-side session, Accept-Language, the school's default, English. The choice is never kept
in a cookie of its own: the session id stays the only cookie.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from flask_babel import force_locale
from sqlalchemy import func, select

from app.extensions import db
from app.i18n import formatting, mail_locale, select_locale
from app.models import User, WebSession
from tests.conftest import sign_in

HTML_TAG = re.compile(r"<html lang=\"([a-z]+)\" dir=\"(ltr|rtl)\">")


def page_language(response) -> tuple[str, str]:
    """(lang, dir) of a whole page's <html> element."""
    match = HTML_TAG.search(response.get_data(as_text=True))
    assert match, "every page names its language and direction"
    return match.group(1), match.group(2)


def session_rows() -> int:
    db.session.rollback()
    return db.session.execute(select(func.count()).select_from(WebSession)).scalar_one()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("es-MX,es;q=0.9,en;q=0.5", ("es", "ltr")),
        ("ar", ("ar", "rtl")),
        ("fr-FR,fr;q=0.9", ("en", "ltr")),  # no French: English, not an error
        ("fr;q=0.9,ar;q=0.4", ("ar", "rtl")),  # the best language we have
        (None, ("en", "ltr")),
    ],
)
def test_the_browser_language_picks_the_page_language(client, header, expected):
    headers = {"Accept-Language": header} if header else {}
    response = client.get("/privacy", headers=headers)
    assert response.status_code == 200
    assert page_language(response) == expected
    # A cache must not serve the Spanish page to an Arabic reader.
    assert "Accept-Language" in response.headers["Vary"]


def test_lang_in_the_address_picks_the_language_of_that_request_only(client):
    before = session_rows()
    assert page_language(client.get("/privacy?lang=ar")) == ("ar", "rtl")
    assert page_language(client.get("/privacy")) == ("en", "ltr")
    assert page_language(client.get("/privacy?lang=xx")) == ("en", "ltr")  # unknown: ignored
    assert session_rows() == before  # a GET stores nothing


def test_error_pages_are_in_the_visitors_language(client):
    response = client.get("/no-such-page", headers={"Accept-Language": "ar"})
    assert response.status_code == 404
    assert page_language(response) == ("ar", "rtl")


def test_the_footer_switch_is_a_form_that_works_without_javascript(client):
    page = client.get("/privacy").get_data(as_text=True)
    form = re.search(r'<form class="language-switch" method="post" action="([^"]+)">(.*?)</form>', page, re.S)
    assert form, "a plain POST form in the footer"
    assert form.group(1) == "/language"
    assert 'name="csrf_token"' in form.group(2)
    assert '<option value="ar" lang="ar">العربية</option>' in form.group(2)
    assert '<label for="language-choice">' in form.group(2)

    response = client.form("/language", {"lang": "es", "next": "/privacy"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/privacy"
    # Kept in the server-side session: later pages are Spanish, whatever the browser says.
    assert page_language(client.get("/privacy", headers={"Accept-Language": "ar"})) == ("es", "ltr")


def test_the_choice_adds_no_cookie_beyond_the_session_id(client):
    client.get("/privacy")
    response = client.form("/language", {"lang": "ar", "next": "/privacy"})
    set_cookies = response.headers.getlist("Set-Cookie")
    assert all(cookie.startswith("session=") for cookie in set_cookies)
    # The session cookie is only a random id: the choice is in the server-side row.
    assert [cookie.key for cookie in client._cookies.values()] == ["session"]
    [cookie] = client._cookies.values()
    assert "lang" not in cookie.value and "=" not in cookie.value
    db.session.rollback()
    rows = db.session.scalars(select(WebSession.data)).all()
    assert any(json.loads(data).get("lang") == "ar" for data in rows)


@pytest.mark.parametrize(
    ("form", "location"),
    [
        ({"lang": "klingon", "next": "/privacy"}, "/privacy"),  # nothing kept, back to the page
        ({"lang": "es", "next": "//evil.example/steal"}, "/"),  # never off the site
        ({"lang": "es", "next": "https://evil.example/"}, "/"),
        ({"lang": "es"}, "/"),
    ],
)
def test_a_tampered_switch_changes_nothing_it_should_not(client, form, location):
    response = client.form("/language", form)
    assert response.status_code == 303
    assert response.headers["Location"] == location
    expected = "es" if form["lang"] == "es" else "en"
    assert page_language(client.get("/privacy"))[0] == expected


def test_the_switch_needs_its_csrf_token(client):
    response = client.post("/language", data={"lang": "es", "next": "/privacy"})
    assert response.status_code == 400
    assert page_language(client.get("/privacy")) == ("en", "ltr")


def test_a_member_switching_keeps_it_on_the_account(client, app, make_school, make_member):
    member = make_member(make_school())
    email = member.user.email
    sign_in(client, email)
    client.form("/language", {"lang": "ar", "next": "/"})
    assert db.session.execute(select(User.language).where(User.email == email)).scalar_one() == "ar"

    # Another browser, signing in: the account's language, not the browser's.
    other = app.test_client()
    sign_in(other, email)
    assert page_language(other.get("/privacy", headers={"Accept-Language": "es"})) == ("ar", "rtl")


def test_the_schools_default_applies_when_the_browser_names_none_of_ours(client, make_school, make_member):
    school = make_school()
    school.default_language = "es"
    db.session.commit()
    member = make_member(school)
    sign_in(client, member.user.email)
    assert page_language(client.get("/", headers={"Accept-Language": "de, fr;q=0.8"})) == ("es", "ltr")
    assert page_language(client.get("/")) == ("es", "ltr")
    # The browser's language, where we have it, comes before the school's.
    assert page_language(client.get("/", headers={"Accept-Language": "ar"})) == ("ar", "rtl")

    member.user.language = "en"  # and the person's own choice before both
    db.session.commit()
    assert page_language(client.get("/", headers={"Accept-Language": "ar"})) == ("en", "ltr")


def test_select_locale_outside_a_request_is_english(app):
    with app.app_context():
        assert select_locale() == "en"


def test_mail_goes_in_the_recipients_language_then_the_schools():
    assert mail_locale("ar", "es") == "ar"
    assert mail_locale(None, "es") == "es"
    assert mail_locale(None, None) == "en"
    assert mail_locale("xx", "yy") == "en"  # stale codes fall back, never raise


MOMENT = datetime(2020, 5, 4, 13, 30, tzinfo=UTC)  # a Monday, New York on summer time


@pytest.mark.parametrize(
    ("locale", "moment", "day", "number"),
    [
        ("en", "Mon, May 4, 2020, 9:30\u202fAM", "May 4, 2020", "12,345"),
        ("es", "lun, 4 may 2020, 9:30", "4 may 2020", "12.345"),
        ("ar", "الاثنين، 4 مايو 2020، 9:30 ص", "4 مايو 2020", "12,345"),
    ],
)
def test_dates_and_numbers_follow_the_language_and_the_zone(app, locale, moment, day, number):
    new_york = ZoneInfo("America/New_York")  # 13:30 UTC is 9:30 in New York in May
    with app.test_request_context("/"), force_locale(locale):
        assert formatting.moment(MOMENT, new_york) == moment
        assert formatting.number(12345) == number
        assert formatting.utc_moment(MOMENT).endswith("UTC")
        assert "13:30" in formatting.utc_moment(MOMENT) or "1:30" in formatting.utc_moment(MOMENT)
        assert formatting.day(MOMENT, new_york) == day
        assert formatting.moment(None) == ""


def test_a_time_falls_on_the_day_of_its_zone(app):
    late = datetime(2020, 5, 5, 2, 0, tzinfo=UTC)  # still May 4 in New York
    with app.test_request_context("/"), force_locale("en"):
        assert formatting.day(late, "America/New_York") == "May 4, 2020"
        assert formatting.day(late, "UTC") == "May 5, 2020"
        assert formatting.clock_time(late, "America/New_York") == "10:00\u202fPM"


@pytest.mark.parametrize(
    ("header", "kept"), [("es-ES,es;q=0.9", "es"), ("ar", "ar"), ("de", None), (None, None)]
)
def test_a_new_account_keeps_the_language_it_joined_in(client, make_school, header, kept):
    school = make_school(code="MAPLE-1")
    headers = {"Accept-Language": header} if header else {}
    form = {
        "invite_code": "MAPLE-1",
        "name": "Nadia Newparent",
        "email": "newparent@example.org",
        "password": "plum orchard lantern",
        "accept_policy": "y",
        "csrf_token": client.csrf_token(),
    }
    response = client.post("/join", data=form, headers=headers)
    assert response.status_code == 303, response.get_data(as_text=True)
    user = db.session.scalar(select(User).where(User.email == "newparent@example.org"))
    # None: no preference, so their mail follows the school's default.
    assert user.language == kept
    assert school.default_language == "en"


def test_a_language_chosen_before_signing_in_is_kept_on_the_account(client, make_school, make_member):
    member = make_member(make_school())
    client.form("/language", {"lang": "es", "next": "/sign-in"})
    sign_in(client, member.user.email)
    db.session.rollback()
    assert db.session.get(User, member.user_id).language == "es"
    assert page_language(client.get("/privacy")) == ("es", "ltr")


def test_signing_in_does_not_overwrite_a_language_the_account_has(client, make_school, make_member):
    member = make_member(make_school())
    member.user.language = "ar"
    db.session.commit()
    client.form("/language", {"lang": "es", "next": "/sign-in"})
    sign_in(client, member.user.email)
    db.session.rollback()
    assert db.session.get(User, member.user_id).language == "ar"


# -- the account's language and the school's default --------------------------------------------


def test_a_member_sets_their_language_on_the_account_page(client, make_school, make_member):
    member = make_member(make_school())
    sign_in(client, member.user.email)
    page = client.get("/account").get_data(as_text=True)
    assert 'id="language-section"' in page and "The school&#39;s default (English)" in page

    response = client.form("/account/language", {"lg-language": "ar"})
    assert response.status_code == 303 and response.headers["Location"] == "/account"
    db.session.rollback()
    assert db.session.get(User, member.user_id).language == "ar"
    assert page_language(client.get("/account", headers={"Accept-Language": "es"})) == ("ar", "rtl")

    # Back to the school's default: no language of their own, and no leftover in the session.
    client.form("/account/language", {"lg-language": ""})
    db.session.rollback()
    assert db.session.get(User, member.user_id).language is None
    assert page_language(client.get("/account")) == ("en", "ltr")


def test_an_unknown_language_is_refused_next_to_the_field(client, make_school, make_member):
    member = make_member(make_school())
    member.user.language = "es"
    db.session.commit()
    sign_in(client, member.user.email)
    response = client.htmx("/account/language", {"lg-language": "xx"}, target="language-section")
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert "<html" not in body and 'aria-invalid="true"' in body
    db.session.rollback()
    assert db.session.get(User, member.user_id).language == "es"  # nothing changed


def test_an_admin_sets_the_schools_default_language_audited(client, make_school, make_member):
    from app import tenancy
    from app.models import Role, School
    from app.models.audit import AuditEntry

    school = make_school()
    admin = make_member(school, role=Role.ADMIN)
    parent = make_member(school)
    sign_in(client, admin.user.email)
    response = client.form(
        "/settings/profile", {"name": school.name, "timezone": "UTC", "default_language": "es"}
    )
    assert response.status_code == 303
    db.session.rollback()
    assert db.session.get(School, school.id).default_language == "es"
    with tenancy.bound(school.id):
        entry = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert entry.action == "settings.changed" and entry.detail["changes"]["default_language"] == ["en", "es"]

    other = client.application.test_client()
    sign_in(other, parent.user.email)
    assert page_language(other.get("/")) == ("es", "ltr")

    # A profile form posted without the field (an old page) keeps the school's language.
    client.form("/settings/profile", {"name": "Renamed", "timezone": "UTC"})
    db.session.rollback()
    assert db.session.get(School, school.id).default_language == "es"
    bad = client.form("/settings/profile", {"name": "Renamed", "timezone": "UTC", "default_language": "zz"})
    assert bad.status_code == 400


def test_switching_on_a_page_opened_with_lang_takes_effect(client):
    client.get("/privacy?lang=es")
    response = client.form("/language", {"lang": "ar", "next": "/privacy?lang=es&x=1"})
    assert response.headers["Location"] == "/privacy?x=1"  # the address's lang would outrank it
    assert page_language(client.get(response.headers["Location"])) == ("ar", "rtl")


def test_the_switch_on_a_page_answering_a_post_goes_home_not_to_the_post_address(
    client, make_school, make_member
):
    member = make_member(make_school())
    sign_in(client, member.user.email)
    page = client.form("/account/language", {"lg-language": "xx"}).get_data(as_text=True)
    form = re.search(r'<form class="language-switch".*?</form>', page, re.S)
    assert form and 'name="next"' not in form.group(0)
    assert client.form("/language", {"lang": "es"}).headers["Location"] == "/"


# -- the privacy policy: ours translated, the operator's as written ------------------------------


def test_our_placeholder_policy_is_shown_in_the_readers_language(client, app):
    from app.consent import policy

    with app.test_request_context("/"):
        policy.ensure_placeholder()  # stored in English, whoever stores it
        db.session.commit()
    page = client.get("/privacy", headers={"Accept-Language": "es"}).get_data(as_text=True)
    with app.test_request_context("/"), force_locale("es"):
        spanish = str(policy.render_markdown(policy.placeholder_body()))
    with app.test_request_context("/"), force_locale("ar"):
        arabic_body = str(policy.render_markdown(policy.placeholder_body()))
    assert spanish in page  # rendered through gettext in the reader's language, not as stored
    assert '<div lang="es" dir="ltr">' in page
    arabic = client.get("/privacy/versions/1", headers={"Accept-Language": "ar"}).get_data(as_text=True)
    assert 'lang="ar" dir="rtl"' in arabic and arabic_body in arabic
    assert "نص مؤقت مرفق بالبرنامج." in arabic  # its summary too


def _publish_spanish_policy(app, body: str) -> None:
    """Post an operator's version written in Spanish, after our placeholder (version 1)."""
    from app.consent import policy

    with app.test_request_context("/"):
        policy.ensure_placeholder()
        draft = policy.create_draft(
            body=body, summary="Nueva.", material=False, email=False, notice=False, by=None, language="es"
        )
        policy.publish(draft)
        db.session.commit()


def test_an_operators_policy_is_shown_as_written_marked_with_its_language(client, app):
    _publish_spanish_policy(app, "## Privacidad\n\nTexto del operador.")
    page = client.get("/privacy", headers={"Accept-Language": "ar"}).get_data(as_text=True)
    assert 'dir="rtl"' in page  # the page around it is Arabic
    assert '<div lang="es" dir="ltr"><h2>Privacidad</h2>' in page  # the text as written, in Spanish


def test_the_policy_editor_records_the_language_a_version_is_written_in(client, make_school, make_member):
    from app.models import PlatformRole
    from app.models.consent import PolicyVersion

    member = make_member(make_school())
    member.user.platform_role = PlatformRole.ADMIN
    db.session.commit()
    sign_in(client, member.user.email)
    response = client.form(
        "/platform/policy/new",
        {"body": "## Política\n\nTexto.", "summary": "Primera versión.", "language": "es"},
    )
    assert response.status_code == 303, response.get_data(as_text=True)
    db.session.rollback()
    version = db.session.scalars(select(PolicyVersion).order_by(PolicyVersion.number.desc())).first()
    assert (version.body_markdown, version.language) == ("## Política\n\nTexto.", "es")


def test_a_new_draft_starts_in_the_language_of_the_text_it_starts_from(client, app, make_school, make_member):
    from app.models import PlatformRole

    member = make_member(make_school())
    member.user.platform_role = PlatformRole.ADMIN
    db.session.commit()
    _publish_spanish_policy(app, "## Privacidad")
    sign_in(client, member.user.email)
    page = client.get("/platform/policy/new").get_data(as_text=True)  # the admin reads English
    assert '<option lang="es" selected value="es">Español</option>' in page  # the text's, not the page's
