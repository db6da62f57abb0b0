"""Malformed input is a 400 naming what is wrong, never a 500 or a round that fails later in the
worker: round settings of the wrong type (API and the browser form's JSON box), and JSON
bodies nested deeper than any request of this app needs."""
import pytest
from django.urls import reverse

from reviewapp.json_bounds import MAX_JSON_DEPTH
from reviewapp.models import Decision, Membership, Round
from tests.reviewapp.test_api import api, make_world, member

pytestmark = pytest.mark.django_db

DEEP = 5000
DEEP_FORM = 3000  # the form's box takes 20,000 characters; still far past the json module's own limit


@pytest.fixture
def world(db):
    return make_world("v", "v")


@pytest.fixture
def admin(world, django_user_model):
    return member(django_user_model.objects.create_user("admin-v", password="pw-admin-v"), world.dataset,
                  Membership.Role.ADMIN)


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("config, message", [
    ({"epochs": "x"}, "config 'epochs' must be an integer, not 'x'"),
    ({"batch_size": [1]}, "config 'batch_size' must be an integer, not [1]"),
    ({"epochs": True}, "config 'epochs' must be an integer, not True"),
    ({"lr": "fast"}, "config 'lr' must be a number, not 'fast'"),
    ({"amp": "yes"}, "config 'amp' must be true or false, not 'yes'"),
    ({"optimizer": 3}, "config 'optimizer' must be a string, not 3"),
    ({"stop_at_step": "soon"}, "config 'stop_at_step' must be an integer or null, not 'soon'"),
    ({"head_kwargs": [1]}, "config 'head_kwargs' must be an object, not [1]"),
    ({"data": {"transform": {"size": "big"}}}, "config 'data.transform.size' must be an integer, a pair of integers or null, not 'big'"),
    ({"comining": {"r_max": "x"}}, "config 'comining.r_max' must be a number, not 'x'"),
    ({"selflearn": 1}, "config 'selflearn' must be an object of settings, not 1"),
])
def test_round_settings_of_the_wrong_type_are_a_400_naming_the_field(world, admin, config, message):
    response = api(admin).post("/api/rounds/", {"dataset": world.dataset.pk, "method": "arcface",
                                                "config": config}, format="json")
    assert response.status_code == 400
    assert response.json() == {"detail": message}
    assert not Round.objects.filter(status="queued").exists()


@pytest.mark.parametrize("method", ["arcface", "pretrained"])
def test_mining_settings_of_the_wrong_type_are_a_400(world, admin, method):
    response = api(admin).post("/api/rounds/", {"dataset": world.dataset.pk, "method": method,
                                                "config": {"mining": {"seed": "x"}}}, format="json")
    assert response.status_code == 400
    assert response.json() == {"detail": "config 'mining.seed' must be an integer, not 'x'"}


def test_round_settings_of_the_right_types_are_accepted(world, admin):
    config = {"epochs": 2, "lr": 1, "amp": False, "stop_at_step": None, "data": {"transform": {"size": 32}},
              "mining": {"seed": 3, "noise_k": 2, "margin": None}}
    response = api(admin).post("/api/rounds/", {"dataset": world.dataset.pk, "method": "arcface",
                                                "config": config}, format="json")
    assert response.status_code == 201, response.content


@pytest.mark.parametrize("config, message", [
    ('{"epochs": "x"}', "config &#x27;epochs&#x27; must be an integer, not &#x27;x&#x27;"),
    ('{"lr": "fast"}', "config &#x27;lr&#x27; must be a number, not &#x27;fast&#x27;"),
    (nested(DEEP_FORM), f"JSON nested deeper than {MAX_JSON_DEPTH} levels"),
    (nested(MAX_JSON_DEPTH + 1), f"JSON nested deeper than {MAX_JSON_DEPTH} levels"),
], ids=["epochs", "lr", "deep", "one-too-deep"])
def test_the_browser_round_form_refuses_bad_settings_with_a_400(client, world, admin, config, message):
    client.force_login(admin)
    response = client.post(reverse("round-start", args=[world.dataset.pk]), {"method": "arcface", "config": config})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Round.objects.filter(status="queued").exists()


@pytest.mark.parametrize("depth", [DEEP, MAX_JSON_DEPTH + 1])
def test_a_deeply_nested_json_body_is_a_400(world, admin, depth):
    flag = world.flags[0]
    decisions = Decision.objects.count()
    response = api(admin).post(f"/api/flags/{flag.pk}/decide/", nested(depth), content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"detail": f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels"}
    assert Decision.objects.count() == decisions


def test_json_nested_up_to_the_bound_is_parsed(world, admin):
    flag = world.flags[0]
    # Parsed, then refused by the request's own validation: no "action".
    body = '{"note":' + nested(MAX_JSON_DEPTH - 2) + "}"
    response = api(admin).post(f"/api/flags/{flag.pk}/decide/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"action": ["This field is required."]}
