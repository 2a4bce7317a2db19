from tests.conftest import sign_in


def test_signed_in_admin_reaches_home(client, make_school, make_member):
    school = make_school(name="Oak Hill")
    admin = make_member(school, role="superadmin")
    response = sign_in(client, admin.user.email)
    assert response.status_code == 303
    page = client.get("/")
    assert page.status_code == 200
    assert "Oak Hill" in page.get_data(as_text=True)
