"""The school's identity: a brand colour checked at WCAG AA, a crest checked by its content and kept
in the database, both served with long caching to the school's own members only, the header and
email showing them, and initials avatars on the directory's cards."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from flask import render_template_string
from PIL import Image
from sqlalchemy import select
from werkzeug.test import EnvironBuilder

from app import tenancy
from app.extensions import db
from app.identity import avatars, colours
from app.identity import services as identity
from app.models import MembershipStatus, Role, School
from app.models.audit import AuditEntry
from app.models.identity import SchoolCrest
from tests.conftest import ROOT, sign_in

COLOUR_TARGET = "section-brand"


def _school(school_id: int) -> School:
    db.session.expire_all()
    return db.session.get_one(School, school_id)


def _entries(school_id: int, action: str) -> list[AuditEntry]:
    db.session.expire_all()
    with tenancy.bound(school_id):
        query = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        return list(db.session.scalars(query))


def _crest_row(school_id: int) -> SchoolCrest | None:
    db.session.expire_all()
    with tenancy.bound(school_id):
        return db.session.scalar(select(SchoolCrest))


def _image(size=(128, 96), kind="PNG", colour=(20, 60, 140), exif=None, **save) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", size, colour)
    if exif is not None:
        save["exif"] = exif
    image.save(out, kind, **save)
    return out.getvalue()


def _secret_exif() -> Image.Exif:
    """EXIF a phone would write: the camera, a description and where the photo was taken."""
    exif = Image.Exif()
    exif[0x010F] = "SecretCamMaker"  # Make
    exif[0x010E] = "Taken at 12 Hidden Lane"  # ImageDescription
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 12.0), 3: "W", 4: (0.0, 7.0, 39.0)}  # GPSInfo
    return exif


@pytest.fixture
def admin(client, make_school, make_member):
    school = make_school(name="Hawthorn Primary")
    member = make_member(school, role=Role.ADMIN)
    sign_in(client, member.user.email)
    client.school = school
    return client


def _upload(client, data: bytes, filename="crest.png", content_type="image/png", headers=None):
    fields = {"crest": (io.BytesIO(data), filename, content_type), "csrf_token": client.csrf_token()}
    # A large body is spooled to a temporary file: close it even when the app never read it all.
    builder = EnvironBuilder(
        "/settings/crest", method="POST", data=fields, content_type="multipart/form-data", headers=headers
    )
    environ = builder.get_environ()
    try:
        return client.open(environ)
    finally:
        environ["wsgi.input"].close()
        builder.close()


# -- colours, as WCAG 2 measures them ---------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "ratio"),
    [
        ("#ffffff", "#000000", 21.0),
        ("#000000", "#ffffff", 21.0),  # the lighter over the darker, whichever comes first
        ("#767676", "#ffffff", 4.54),  # the lightest grey that passes AA on white
        ("#777777", "#ffffff", 4.48),  # one step lighter fails
        ("#1d4ed8", "#ffffff", 6.70),
        ("#ff0000", "#ffffff", 4.00),
        ("#0000ff", "#ffffff", 8.59),
        ("#123456", "#123456", 1.0),
    ],
)
def test_contrast_ratios_of_known_pairs(first, second, ratio):
    assert colours.contrast_ratio(first, second) == pytest.approx(ratio, abs=0.005)


def test_relative_luminance_ends_and_the_linear_segment():
    assert colours.relative_luminance("#000000") == 0
    assert colours.relative_luminance("#ffffff") == pytest.approx(1)
    # Channel 10/255 is below 0.04045: the linear part, c / 12.92 (green weighs 0.7152).
    assert colours.relative_luminance("#000a00") == pytest.approx(0.7152 * (10 / 255) / 12.92)


@pytest.mark.parametrize(
    ("typed", "parsed"),
    [
        ("#1D4ED8", "#1d4ed8"),
        (" 1d4ed8 ", "#1d4ed8"),
        ("#14d", "#1144dd"),
        ("#1d4ed", None),
        ("#1d4ed8ff", None),
        ("blue", None),
        ("#gggggg", None),
        ("", None),
        (None, None),
    ],
)
def test_hex_colours_are_parsed_and_normalised(typed, parsed):
    assert colours.parse_hex(typed) == parsed


# -- the brand colour on the settings page ------------------------------------------------------


def test_a_bad_hex_colour_is_refused_next_to_the_field_with_what_was_typed(admin):
    response = admin.htmx("/settings/brand-colour", {"brand_colour": "#12345z"}, target=COLOUR_TARGET)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Enter a colour as # and six hex digits, such as #1d4ed8." in page
    assert 'value="#12345z"' in page and 'aria-invalid="true"' in page
    assert _school(admin.school.id).brand_colour is None
    assert _entries(admin.school.id, "settings.changed") == []


def test_a_colour_too_light_for_white_text_is_refused_with_its_ratio_and_kept(admin):
    response = admin.form("/settings/brand-colour", {"brand_colour": "#FFCC00"})
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    ratio = colours.lowest_contrast("#ffcc00")
    assert f"#ffcc00 has a contrast of only {int(ratio * 100) / 100:.2f}:1" in page
    assert "needs at least 4.5:1" in page
    assert 'value="#FFCC00"' in page  # as typed, not normalised
    assert _school(admin.school.id).brand_colour is None


def test_a_colour_that_passes_on_white_but_not_on_the_page_background_is_refused(admin):
    # #767676 passes AA with white (4.54) but as link text on the page's #f5f7fa it is 4.23.
    assert colours.meets_aa("#767676") and not colours.meets_aa("#767676", colours.PAGE_BACKGROUND)
    response = admin.form("/settings/brand-colour", {"brand_colour": "#767676"})
    assert response.status_code == 400
    assert _school(admin.school.id).brand_colour is None


def test_a_dark_enough_colour_is_saved_normalised_and_audited(admin):
    response = admin.form("/settings/brand-colour", {"brand_colour": " #0E7490 "})
    assert response.status_code == 303
    assert _school(admin.school.id).brand_colour == "#0e7490"
    (entry,) = _entries(admin.school.id, "settings.changed")
    assert entry.target == "Brand colour"
    assert entry.detail["changes"] == {"brand_colour": ["", "#0e7490"]}
    # The same colour again changes nothing and writes nothing; clearing it is audited too.
    again = admin.htmx("/settings/brand-colour", {"brand_colour": "#0e7490"}, target=COLOUR_TARGET)
    assert again.status_code == 200 and "Nothing to change." in again.get_data(as_text=True)
    admin.form("/settings/brand-colour", {"brand_colour": ""})
    assert _school(admin.school.id).brand_colour is None
    entries = _entries(admin.school.id, "settings.changed")
    assert [e.detail["changes"]["brand_colour"] for e in entries] == [["", "#0e7490"], ["#0e7490", ""]]


@pytest.mark.parametrize("role", [Role.PARENT, Role.STAFF])
def test_only_those_who_change_settings_set_the_identity(client, make_school, make_member, role):
    school = make_school()
    sign_in(client, make_member(school, role=role).user.email)
    assert client.form("/settings/brand-colour", {"brand_colour": "#0e7490"}).status_code == 403
    assert _upload(client, _image()).status_code == 403
    assert client.form("/settings/crest/remove").status_code == 403
    assert _school(school.id).brand_colour is None and _crest_row(school.id) is None


# -- the crest upload ---------------------------------------------------------------------------


def test_a_real_png_is_kept_in_the_database_and_audited(admin):
    response = _upload(admin, _image((200, 120)))
    assert response.status_code == 303
    crest = _crest_row(admin.school.id)
    assert crest is not None and crest.content_type == "image/png"
    assert (crest.width, crest.height) == (200, 120)
    assert _school(admin.school.id).crest_checksum == crest.checksum
    with Image.open(io.BytesIO(crest.data)) as kept:
        assert kept.format == "PNG" and kept.size == (200, 120)
    (entry,) = _entries(admin.school.id, "crest.uploaded")
    assert entry.target == "School crest" and entry.detail["changes"]["type"] == "image/png"


def test_a_new_upload_replaces_the_crest(admin):
    _upload(admin, _image(colour=(10, 10, 10)))
    first = _crest_row(admin.school.id).checksum
    _upload(admin, _image(kind="WEBP", colour=(200, 10, 10)), "crest.webp", "image/webp")
    db.session.expire_all()
    with tenancy.bound(admin.school.id):
        crests = list(db.session.scalars(select(SchoolCrest)))
    assert len(crests) == 1 and crests[0].content_type == "image/webp" and crests[0].checksum != first
    assert admin.get(f"/school/crest/{first}").status_code == 404  # the old URL names nothing now


def test_a_text_file_named_png_is_refused_whatever_it_claims(admin):
    response = admin.htmx(
        "/settings/crest",
        {"crest": (io.BytesIO(b"just some text, not a picture\n" * 20), "crest.png", "image/png")},
        target=COLOUR_TARGET,
        content_type="multipart/form-data",
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "This file is not a PNG, JPEG or WebP image." in page
    assert _crest_row(admin.school.id) is None and _school(admin.school.id).crest_checksum is None
    assert _entries(admin.school.id, "crest.uploaded") == []


def test_a_png_cut_short_is_refused(admin):
    whole = _image((300, 300))
    response = _upload(admin, whole[: len(whole) // 2])
    assert response.status_code == 400
    assert "This file is not a PNG, JPEG or WebP image." in response.get_data(as_text=True)


def test_a_real_gif_is_refused_as_a_type_not_accepted(admin):
    response = _upload(admin, _image(kind="GIF"), filename="crest.gif", content_type="image/gif")
    assert response.status_code == 400
    assert "This file is not a PNG, JPEG or WebP image." in response.get_data(as_text=True)


def test_an_image_over_512_kb_is_refused(admin):
    noise = Image.frombytes("RGB", (600, 600), os.urandom(600 * 600 * 3))  # incompressible
    out = io.BytesIO()
    noise.save(out, "PNG")
    assert len(out.getvalue()) > identity.MAX_CREST_BYTES
    response = _upload(admin, out.getvalue())
    assert response.status_code == 400
    assert "The crest must be at most 512 KB." in response.get_data(as_text=True)
    assert _crest_row(admin.school.id) is None


@pytest.mark.parametrize("size", [(63, 200), (200, 40), (2049, 100), (100, 3000)])
def test_sides_outside_64_to_2048_pixels_are_refused(admin, size):
    response = _upload(admin, _image(size))
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert f"The crest is {size[0]} × {size[1]} pixels" in page
    assert "between 64 and 2048 pixels" in page
    assert _crest_row(admin.school.id) is None


@pytest.mark.parametrize(
    "size, message",
    [
        ((9000, 9000), "The crest is 9000 × 9000 pixels"),  # hundreds of MB once decoded
        ((20000, 10000), "This file is not a PNG, JPEG or WebP image."),  # past Pillow's bomb limit
    ],
)
def test_a_small_file_declaring_huge_sides_is_refused_before_it_is_decoded(admin, size, message):
    """A few KB of 1-bit PNG: refused from its header, never a 500 or a huge decode."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("1", size).save(out, format="PNG", optimize=True)
    assert len(out.getvalue()) < identity.MAX_CREST_BYTES
    response = _upload(admin, out.getvalue())
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert _crest_row(admin.school.id) is None


@pytest.mark.parametrize("size", [(64, 64), (2048, 64)])
def test_the_limits_themselves_are_accepted(admin, size):
    assert _upload(admin, _image(size, kind="JPEG"), "crest.jpg", "image/jpeg").status_code == 303


def test_no_file_is_refused_next_to_the_field(admin):
    response = admin.form("/settings/crest", {}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "Choose an image file for the crest." in response.get_data(as_text=True)


@pytest.mark.parametrize("kind", ["JPEG", "PNG", "WEBP"])
def test_metadata_is_stripped_from_the_kept_image(admin, kind):
    original = _image((160, 160), kind=kind, exif=_secret_exif())
    with Image.open(io.BytesIO(original)) as uploaded:  # the upload really carries it
        assert uploaded.getexif().get(0x010F) == "SecretCamMaker"
    assert b"SecretCamMaker" in original
    assert _upload(admin, original, f"crest.{kind.lower()}", f"image/{kind.lower()}").status_code == 303
    kept = _crest_row(admin.school.id).data
    assert b"SecretCamMaker" not in kept and b"Hidden Lane" not in kept
    with Image.open(io.BytesIO(kept)) as image:
        assert image.format == kind
        assert dict(image.getexif()) == {}
        assert "exif" not in image.info


def test_the_exif_orientation_is_applied_before_it_is_dropped(admin):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    turned = _image((200, 100), kind="JPEG", exif=exif)
    assert _upload(admin, turned, "c.jpg", "image/jpeg").status_code == 303
    crest = _crest_row(admin.school.id)
    assert (crest.width, crest.height) == (200, 100)  # as uploaded (the limits are orientation-free)
    with Image.open(io.BytesIO(crest.data)) as image:
        assert image.size == (100, 200)  # upright, as the school saw it


def test_removing_the_crest_is_audited_and_its_url_stops_working(admin):
    _upload(admin, _image())
    checksum = _school(admin.school.id).crest_checksum
    response = admin.htmx("/settings/crest/remove", target=COLOUR_TARGET)
    assert response.status_code == 200 and "Crest removed." in response.get_data(as_text=True)
    assert _crest_row(admin.school.id) is None and _school(admin.school.id).crest_checksum is None
    assert [e.target for e in _entries(admin.school.id, "crest.removed")] == ["School crest"]
    assert admin.get(f"/school/crest/{checksum}").status_code == 404
    again = admin.form("/settings/crest/remove")
    assert again.status_code == 303 and len(_entries(admin.school.id, "crest.removed")) == 1


# -- serving the crest and the stylesheet -------------------------------------------------------


def test_the_crest_is_served_with_its_checksum_a_long_cache_and_an_etag(admin):
    _upload(admin, _image())
    crest = _crest_row(admin.school.id)
    url = f"/school/crest/{crest.checksum}"
    response = admin.get(url)
    assert response.status_code == 200
    assert response.data == crest.data and response.mimetype == "image/png"
    assert response.headers["ETag"] == f'"{crest.checksum}"'
    assert response.headers["Cache-Control"] == "private, max-age=31536000, immutable"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    again = admin.get(url, headers={"If-None-Match": f'"{crest.checksum}"'})
    assert again.status_code == 304 and again.data == b""
    assert admin.get(url, headers={"If-None-Match": '"something-else"'}).status_code == 200


def test_another_schools_crest_url_shows_nothing(admin, client, make_school, make_member, app):
    other = make_school(name="Other School")
    with tenancy.bound(other.id):
        other_crest = identity.save_crest(other, _image(colour=(1, 2, 3)))
        db.session.commit()
        checksum = other_crest.checksum
    response = admin.get(f"/school/crest/{checksum}")
    assert response.status_code == 404 and response.data != other_crest.data
    # Signed out: sent to sign in; the other school's member sees it.
    stranger = app.test_client()
    assert stranger.get(f"/school/crest/{checksum}").status_code == 302
    insider = app.test_client()
    sign_in(insider, make_member(other).user.email)
    assert insider.get(f"/school/crest/{checksum}").status_code == 200


def test_a_pending_member_is_not_shown_the_crest(app, make_school, make_member):
    school = make_school()
    with tenancy.bound(school.id):
        crest = identity.save_crest(school, _image())
        db.session.commit()
        checksum = crest.checksum
    client = app.test_client()
    sign_in(client, make_member(school, status=MembershipStatus.PENDING).user.email)
    response = client.get(f"/school/crest/{checksum}")
    assert response.status_code == 302 and response.headers["Location"].startswith("/pending")


def test_the_brand_stylesheet_sets_the_colour_and_is_linked_from_every_page(admin):
    home = admin.get("/").get_data(as_text=True)
    assert "/school/brand/" not in home  # no colour chosen: the app's own, no extra request
    admin.form("/settings/brand-colour", {"brand_colour": "#0e7490"})
    home = admin.get("/").get_data(as_text=True)
    (url,) = re.findall(r'<link rel="stylesheet" href="(/school/brand/[0-9a-f]{16}\.css)">', home)
    response = admin.get(url)
    css = response.get_data(as_text=True)
    assert response.status_code == 200 and response.mimetype == "text/css"
    assert "--brand:#0e7490;" in css and "--brand-contrast:#ffffff;" in css
    dark = re.search(r"--brand-dark:(#[0-9a-f]{6});", css).group(1)
    assert colours.contrast_ratio(dark, "#ffffff") > colours.contrast_ratio("#0e7490", "#ffffff")
    assert response.headers["Cache-Control"] == "private, max-age=31536000, immutable"
    etag = response.headers["ETag"]
    assert admin.get(url, headers={"If-None-Match": etag}).status_code == 304
    # A new colour is a new URL; the old one names nothing.
    admin.form("/settings/brand-colour", {"brand_colour": "#7c2d12"})
    assert admin.get(url).status_code == 404
    assert admin.get("/school/brand/0123456789abcdef.css").status_code == 404


def test_the_header_shows_the_schools_name_and_crest_linking_home(admin):
    page = admin.get("/").get_data(as_text=True)
    assert '<a class="brand brand-school" href="/"><bdi>Hawthorn Primary</bdi></a>' in page
    assert ">Join Our Class</a>" not in page
    _upload(admin, _image())
    checksum = _school(admin.school.id).crest_checksum
    page = admin.get("/").get_data(as_text=True)
    assert (
        f'<a class="brand brand-school" href="/"><img class="brand-crest" src="/school/crest/{checksum}" '
        'alt=""><bdi>Hawthorn Primary</bdi></a>'
    ) in page


def test_signed_out_pages_keep_the_products_name(client):
    page = client.get("/sign-in").get_data(as_text=True)
    assert '<a class="brand" href="/">Join Our Class</a>' in page and "/school/brand/" not in page


def test_public_pages_show_nothing_of_the_school_signed_in_to(admin):
    """The privacy policy and links from email (perhaps someone else's) are the platform's pages."""
    admin.form("/settings/brand-colour", {"brand_colour": "#0e7490"})
    page = admin.get("/privacy").get_data(as_text=True)
    assert '<a class="brand" href="/">Join Our Class</a>' in page
    assert "Hawthorn Primary" not in page and "/school/brand/" not in page


# -- email ----------------------------------------------------------------------------------------


def test_a_schools_email_shows_its_name_on_its_colour(app, make_school, make_member, send_email, sent_mail):
    school = make_school(name="Hawthorn Primary")
    school.brand_colour = "#0e7490"
    db.session.commit()
    reader = make_member(school).user
    message = send_email([reader], school=school)
    heading = "background:#0e7490;color:#ffffff;"
    assert heading in message.html_body and ">Hawthorn Primary</div>" in message.html_body
    (sent,) = sent_mail
    assert heading in sent.html and "Hawthorn Primary" in sent.html
    assert "/school/crest/" not in sent.html  # no crest in mail (see email/_layout.html)


def test_a_school_without_a_colour_mails_in_the_apps_own(app, make_school, make_member, send_email):
    school = make_school(name="Plain School")
    message = send_email([make_member(school).user], school=school)
    assert f"background:{colours.DEFAULT_BRAND};color:#ffffff;" in message.html_body


def test_platform_mail_has_no_school_heading(app, make_school, make_member, send_email):
    message = send_email([make_member(make_school()).user])
    assert "color:#ffffff;border-radius:8px 8px 0 0" not in message.html_body


# -- initials avatars -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "letters"),
    [
        ("Ana María López", "AL"),
        ("ana lópez", "AL"),
        ("Cher", "C"),
        ("émile zola", "ÉZ"),
        ("e\u0301mile Zola", "ÉZ"),  # a combining accent stays with its letter (NFC)
        ("(Bob) O'Neil", "BO"),  # punctuation before a word is skipped
        ("محمد عبد الله", "م\u200cا"),  # first and last words, kept apart (Arabic letters join)
        ("王小明", "王"),
        ("", ""),
        ("   ", ""),
        ("- -", ""),
        (None, ""),
    ],
)
def test_initials_of_names(name, letters):
    assert avatars.initials(name) == letters


def _render_avatar(name) -> str:
    template = '{% from "macros/_avatar.html" import avatar %}{{ avatar(name) }}'
    return render_template_string(template, name=name)


def test_the_avatar_macro_renders_initials_on_a_tone_of_the_name(app):
    with app.test_request_context():
        html = _render_avatar("Ana María López")
        tone = avatars.tone("Ana María López")
        assert html == f'<span class="avatar avatar-tone-{tone}" aria-hidden="true" dir="auto">AL</span>'
        assert _render_avatar("ana maría lópez") == html  # case changes neither letters nor colour
        assert _render_avatar("") == (
            f'<span class="avatar avatar-tone-{avatars.tone("")}" aria-hidden="true" dir="auto">·</span>'
        )
        assert _render_avatar("Cher").endswith('dir="auto">C</span>')


def test_avatar_tones_are_stable_and_spread():
    assert avatars.tone("Ana López") == avatars.tone("  ana lópez ")
    # crc32, not Python's salted hash(): the same index in every process.
    assert avatars.tone("Ana López") == 1
    tones = {avatars.tone(f"Family {n}") for n in range(200)}
    assert tones == set(range(len(avatars.PALETTE)))


def test_every_avatar_colour_meets_aa_and_matches_the_stylesheet():
    css = Path(ROOT, "app/static/css/app.css").read_text()
    block = css.split("/* == identity == */")[1].split("/* == end identity == */")[0]
    declared = dict(re.findall(r"\.avatar-tone-(\d+) \{ background: (#[0-9a-f]{6}); \}", block))
    assert declared == {str(i): colour for i, colour in enumerate(avatars.PALETTE)}
    for colour in avatars.PALETTE:
        assert colours.contrast_ratio(colour, "#ffffff") >= 4.5, colour


def test_directory_cards_and_the_staff_directory_show_initials(
    client, make_school, make_member, make_family, make_class
):
    school = make_school()
    guardian = make_member(school, name="Layla Haddad")
    hazel = make_class(school, "Hazel")
    make_family(school, [guardian], name="Haddad Family", children=[("Sami", "Haddad", [hazel.id])])
    admin = make_member(school, role=Role.ADMIN, name="Nora Nurse")
    sign_in(client, admin.user.email)
    directory = client.get("/directory/").get_data(as_text=True)
    tone = avatars.tone("Haddad Family")
    assert (
        f'<h3 class="with-avatar"><span class="avatar avatar-tone-{tone}" aria-hidden="true" dir="auto">'
        "HF</span><span>Haddad Family</span></h3>"
    ) in directory
    client.form("/classes/staff", {"member": str(admin.id), "title": "School nurse"})
    staff = client.get("/directory/staff").get_data(as_text=True)
    assert 'dir="auto">NN</span><span>Nora Nurse</span>' in staff
    editing = client.get("/classes/staff").get_data(as_text=True)
    assert '<h2 class="with-avatar"><span class="avatar avatar-tone-' in editing
