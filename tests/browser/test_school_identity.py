"""The school's identity in a real browser, under the real CSP: the admin sets a colour and uploads a
crest without JavaScript's help being needed, and the header then wears both (the brand stylesheet
is a file, not inline style, so the CSP lets it apply; the crest image loads from its route)."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from playwright.sync_api import expect

from app.models import Role
from tests.browser.helpers import sign_in

pytestmark = pytest.mark.browser


def _crest_file(tmp_path) -> str:
    path = tmp_path / "crest.png"
    out = io.BytesIO()
    Image.new("RGB", (120, 120), (14, 116, 144)).save(out, "PNG")
    path.write_bytes(out.getvalue())
    return str(path)


@pytest.mark.parametrize("javascript", [True, False])
def test_an_admin_brands_the_school_and_the_header_shows_it(
    new_context, make_school, make_member, tmp_path, javascript
):
    school = make_school(name="Hawthorn Primary")
    admin = make_member(school, role=Role.ADMIN)
    page = new_context(java_script_enabled=javascript).new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, admin.user.email)
    header = page.locator(".site-header")
    expect(header.get_by_role("link", name="Hawthorn Primary")).to_be_visible()

    page.goto("/settings/")
    page.get_by_label("Brand colour").fill("#ffcc00")
    page.get_by_role("button", name="Save colour").click()
    expect(page.locator("#section-brand .error")).to_contain_text("needs at least 4.5:1")
    expect(page.get_by_label("Brand colour")).to_have_value("#ffcc00")
    page.get_by_label("Brand colour").fill("#7c2d12")
    page.get_by_role("button", name="Save colour").click()
    expect(page.get_by_text("Brand colour saved.")).to_be_visible()
    page.get_by_label("Crest image").set_input_files(_crest_file(tmp_path))
    page.get_by_role("button", name="Upload crest").click()
    expect(page.get_by_text("Crest saved.")).to_be_visible()

    page.goto("/")
    crest = header.locator("img.brand-crest")
    expect(crest).to_be_visible()
    assert crest.evaluate("img => img.complete && img.naturalWidth") == 120
    colour = header.evaluate("h => getComputedStyle(h).borderTopColor")
    assert colour == "rgb(124, 45, 18)"  # #7c2d12, from the brand stylesheet
    assert not [e for e in errors if "Content Security Policy" in e], errors
    page.screenshot(path=str(tmp_path / f"identity-header-js-{javascript}.png"))
