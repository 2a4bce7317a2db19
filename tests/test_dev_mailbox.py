"""The development mailbox shows each caught email's headers, text part and HTML part (sandboxed)."""

from __future__ import annotations

import re

from markupsafe import escape
from sqlalchemy import select

from app import jobs, tenancy
from app.extensions import db
from app.mail import queue_email
from app.models import Category, DevMail, Role
from tests.conftest import sign_in


def _caught(build_app, make_school, make_member):
    """A dev-mailbox app, a SuperAdmin signed in, and one school announcement caught for a parent."""
    school = make_school()
    admin = make_member(school, role=Role.SUPERADMIN)
    parent = make_member(school, name="Pat Parent")
    app = build_app(DEV_MAILBOX=True, MAIL_BACKEND="devmailbox")
    with app.app_context():
        with tenancy.bound(school.id):
            queue_email(
                "email_change_notice",
                [db.session.merge(parent.user)],
                category=Category.SCHOOL_ANNOUNCEMENTS,
                school_id=school.id,
                name="<b>Pat</b>",
            )
            db.session.commit()
        jobs.run_ready_jobs()
        mail = db.session.scalars(select(DevMail)).one()
        mail_id, headers = mail.id, dict(mail.headers)
        db.session.remove()
    client = app.test_client()
    sign_in(client, admin.user.email)
    return app, client, mail_id, headers, parent


def test_the_backend_records_the_envelope_with_the_headers(build_app, make_school, make_member):
    _app, _client, _mail_id, headers, parent = _caught(build_app, make_school, make_member)
    assert headers["To"] == parent.user.email
    assert headers["From"]  # MAIL_FROM, as a provider would get it
    assert headers["List-Unsubscribe"].startswith("<http")  # optional mail carries one


def test_the_mail_page_lists_the_headers_and_frames_the_html(build_app, make_school, make_member):
    app, client, mail_id, headers, parent = _caught(build_app, make_school, make_member)
    page = client.get(f"/dev/mailbox/{mail_id}").get_data(as_text=True)
    rows = dict(re.findall(r'<tr><th scope="row">([^<]+)</th><td><bdi>([^<]*)</bdi></td></tr>', page))
    assert rows["To"] == parent.user.email
    assert rows["List-Unsubscribe"] == escape(headers["List-Unsubscribe"])
    assert list(rows)[:2] == ["From", "To"]
    frame = re.search(r"<iframe[^>]*>", page).group(0)
    assert re.search(r"\ssandbox[\s>]", frame), "the frame carries an empty sandbox attribute"
    assert f'src="/dev/mailbox/{mail_id}/html"' in frame
    assert 'class="mail-body"' in page  # the text part too
    assert "&lt;b&gt;Pat&lt;/b&gt;" in page  # escaped in the text part as anywhere


def test_the_html_part_is_served_as_its_own_sandbox(build_app, make_school, make_member):
    app, client, mail_id, _headers, _parent = _caught(build_app, make_school, make_member)
    response = client.get(f"/dev/mailbox/{mail_id}/html")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    csp = [part.strip() for part in response.headers["Content-Security-Policy"].split(";")]
    assert csp[0] == "sandbox"  # no allow-scripts, no allow-same-origin: an opaque origin
    assert "default-src 'none'" in csp and "frame-ancestors 'self'" in csp
    assert "script-src" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    body = response.get_data(as_text=True)
    assert "<html" in body.lower() and "&lt;b&gt;Pat&lt;/b&gt;" in body  # the template escaped it


def test_the_html_part_is_for_superadmins_in_development_only(build_app, make_school, make_member):
    app, client, mail_id, _headers, _parent = _caught(build_app, make_school, make_member)
    school = make_school()
    admin = make_member(school, role=Role.ADMIN)
    other = app.test_client()
    sign_in(other, admin.user.email)
    assert other.get(f"/dev/mailbox/{mail_id}/html").status_code == 403
    assert client.get("/dev/mailbox/999999/html").status_code == 404
    off = build_app(DEV_MAILBOX=False).test_client()
    assert off.get(f"/dev/mailbox/{mail_id}/html").status_code in (302, 404)
