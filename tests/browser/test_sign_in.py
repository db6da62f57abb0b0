"""Signing in through the real login form, in a real browser."""
import pytest

from tests.factories import MembershipFactory

pytestmark = pytest.mark.browser


def test_sign_in_shows_my_datasets_with_names_as_text(live_server, page, screenshot, django_user_model):
    user = django_user_model.objects.create_user(username="rev", password="a-long-pass-123")
    MembershipFactory(user=user, dataset__name="<b>bold</b> set")

    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url
    page.fill("input[name=username]", "rev")
    page.fill("input[name=password]", "a-long-pass-123")
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Datasets')")
    assert page.locator("td", has_text="<b>bold</b> set").count() == 1
    assert page.locator("b", has_text="bold").count() == 0
    screenshot("datasets")


def test_wrong_password_stays_on_the_login_page(live_server, page, django_user_model):
    django_user_model.objects.create_user(username="rev", password="a-long-pass-123")
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", "rev")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    assert page.locator(".error").inner_text() == "Wrong user name or password."
