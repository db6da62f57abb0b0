"""Sign-in is throttled per account and per address, the API per user, and guessing API tokens
per address: after the limit every attempt is refused, the right password or token too, until
the window passes. Limits are set low here; the defaults are in config/settings.py."""
import time

import pytest
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import UserRateThrottle

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
WRONG = "Wrong user name or password."
LOCKED = "Too many failed sign-ins. Try again in 1 minute."


@pytest.fixture(autouse=True)
def clean_counters():
    cache.clear()  # throttle counters live in the cache; none may leak into or out of a test
    yield
    cache.clear()


@pytest.fixture
def limits(settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 100
    settings.LOGIN_FAILURE_WINDOW_SECONDS = 60
    settings.API_TOKEN_FAILURE_LIMIT = 3
    return settings


def sign_in(client, username, password, address="10.0.0.1"):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def test_wrong_passwords_lock_the_account_even_for_the_right_password(client, user, limits):
    for _ in range(3):
        response = sign_in(client, "reviewer", "wrong")
        assert response.status_code == 200 and WRONG in response.content.decode()
    response = sign_in(client, "reviewer", "pw-reviewer-1")
    assert response.status_code == 429
    assert LOCKED in response.content.decode() and WRONG not in response.content.decode()
    assert "_auth_user_id" not in client.session
    # From another address too: the count is the account's.
    assert sign_in(client, "reviewer", "pw-reviewer-1", address="10.0.0.2").status_code == 429


def test_other_accounts_are_not_locked_by_one(client, user, staff, limits):
    for _ in range(3):
        sign_in(client, "reviewer", "wrong")
    response = sign_in(client, "boss", "pw-boss-1")
    assert response.status_code == 302 and response["Location"] == "/"


def test_the_lock_lifts_when_the_window_passes(client, user, limits):
    limits.LOGIN_FAILURE_WINDOW_SECONDS = 1
    for _ in range(3):
        sign_in(client, "reviewer", "wrong")
    assert sign_in(client, "reviewer", "pw-reviewer-1").status_code == 429
    time.sleep(1.2)
    response = sign_in(client, "reviewer", "pw-reviewer-1")
    assert response.status_code == 302 and response["Location"] == "/"


def test_a_success_clears_the_account_count(client, user, limits):
    for _ in range(2):
        sign_in(client, "reviewer", "wrong")
    assert sign_in(client, "reviewer", "pw-reviewer-1").status_code == 302
    client.logout()
    for _ in range(2):
        assert sign_in(client, "reviewer", "wrong").status_code == 200
    assert sign_in(client, "reviewer", "pw-reviewer-1").status_code == 302


def test_many_accounts_guessed_from_one_address_lock_that_address(client, user, limits):
    limits.LOGIN_FAILURE_LIMIT = 100
    limits.LOGIN_ADDRESS_FAILURE_LIMIT = 4
    for name in ("a", "b", "c", "d"):
        assert sign_in(client, name, "wrong").status_code == 200
    assert sign_in(client, "reviewer", "pw-reviewer-1").status_code == 429
    # Another address signs in as usual.
    assert sign_in(client, "reviewer", "pw-reviewer-1", address="10.0.0.9").status_code == 302


def test_the_sign_in_page_itself_is_not_throttled_by_looking(client, user, limits):
    for _ in range(3):
        sign_in(client, "reviewer", "wrong")
    assert client.get(LOGIN).status_code == 200


# -- the API ------------------------------------------------------------------------------------------

def test_token_guessing_is_throttled_per_address_even_for_a_valid_token(user, limits):
    token = Token.objects.create(user=user)
    client = APIClient(REMOTE_ADDR="10.0.0.1")
    for guess in range(3):
        client.credentials(HTTP_AUTHORIZATION=f"Token guess-{guess}")
        assert client.get("/api/datasets/").status_code == 401  # a wrong token: token auth is listed first
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.get("/api/datasets/")
    assert response.status_code == 429
    assert response.json()["detail"].startswith("Request was throttled.")
    assert int(response["Retry-After"]) > 0
    other = APIClient(REMOTE_ADDR="10.0.0.2")
    other.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert other.get("/api/datasets/").status_code == 200


def test_the_api_throttles_each_user(user, monkeypatch):
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "3/minute", "anon": "3/minute"})
    client = APIClient()
    client.force_authenticate(user)
    assert [client.get("/api/datasets/").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_the_api_has_throttles_by_default(settings):
    from rest_framework.settings import api_settings

    assert {c.__name__ for c in api_settings.DEFAULT_THROTTLE_CLASSES} == {"AnonRateThrottle", "UserRateThrottle"}
    assert set(api_settings.DEFAULT_THROTTLE_RATES) == {"anon", "user"}


def test_the_admin_signs_in_through_the_throttled_page(client):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?next=/admin/"
