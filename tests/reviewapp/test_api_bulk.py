"""The API's queue-wide bulk decisions (POST /api/flags/bulk/), 401 without credentials, and
what a relabel decision answers."""
import uuid

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from reviewapp.models import Decision, Face, Flag, Job, Membership
from reviewapp.services import jobs
from tests.factories import FaceFactory, FlagFactory, IdentityFactory, RoundFactory
from tests.reviewapp.test_api import api, make_world, member

pytestmark = pytest.mark.django_db
URL = "/api/flags/bulk/"


@pytest.fixture
def world(db):
    return make_world("bulk", "bulk")


@pytest.fixture
def reviewer(world, user):
    return member(user, world.dataset)


def post(user, **body):
    return api(user).post(URL, body, format="json")


def noisy(world, n, score=0.5):
    return [FlagFactory(round=world.round, face=FaceFactory(identity=world.identity), score=score)
            for _ in range(n)]


# -- 401, not 403 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method, url", [("get", "/api/"), ("get", "/api/datasets/"), ("get", "/api/schema/"),
                                         ("get", "/api/jobs/1/"), ("post", URL)])
def test_no_credentials_is_a_401_with_the_challenge(method, url):
    response = getattr(APIClient(), method)(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert b"Authentication credentials were not provided." in response.content


def test_a_wrong_token_is_a_401(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    response = client.get("/api/datasets/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


def test_a_session_still_signs_in_and_a_token_too(client, world, user):
    member(user, world.dataset)
    client.force_login(user)
    assert client.get("/api/datasets/").status_code == 200
    token = APIClient()
    token.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    assert token.get("/api/datasets/").status_code == 200


# -- a relabel says where the face went -----------------------------------------------------------

def test_a_relabel_decision_carries_the_new_identity(world, reviewer):
    flag = world.flags[0]
    response = api(reviewer).post(f"/api/flags/{flag.pk}/decide/", {"action": "relabel",
                                                                    "identity_id": world.other_identity.pk},
                                  format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["action"], body["identity"], body["batch"]) == ("relabel", world.other_identity.pk, None)
    assert body["before"]["identity"] == world.identity.pk
    listed = api(reviewer).get(f"/api/decisions/{body['id']}/").json()
    assert listed["identity"] == world.other_identity.pk


def test_a_merge_decision_still_names_the_merged_identity(world, reviewer):
    pair = world.flags[3]
    body = api(reviewer).post(f"/api/flags/{pair.pk}/decide/", {"action": "confirm"}, format="json").json()
    assert body["action"] == "merge" and body["identity"] == pair.identity_a_id


# -- preview --------------------------------------------------------------------------------------

def test_preview_counts_and_samples_without_starting_anything(world, reviewer):
    extra = noisy(world, 3, score=0.95)
    response = post(reviewer, dataset=world.dataset.pk, kind="noisy", min_score=0.6, preview=True)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 4 and body["held_by_others"] == 0 and body["round"] == world.round.pk
    assert [s["flag"] for s in body["sample"]] == sorted([f.pk for f in extra], reverse=True) + [world.flags[0].pk]
    assert body["sample"][0] == {"flag": extra[-1].pk, "face": extra[-1].face_id, "other_face": None, "score": 0.95,
                                 "face_thumbnail_url": f"/faces/{extra[-1].face_id}/thumbnail"}
    assert not Job.objects.filter(kind="bulk_decide").exists()


# -- start ----------------------------------------------------------------------------------------

def test_start_answers_202_with_the_job_a_reviewer_can_poll(world, reviewer, django_capture_on_commit_callbacks):
    noisy(world, 2)
    with django_capture_on_commit_callbacks(execute=False):
        response = post(reviewer, dataset=world.dataset.pk, kind="noisy", action="reject", expected_count=4)
    assert response.status_code == 202, response.content
    body = response.json()
    job = Job.objects.get(kind="bulk_decide")
    assert (body["id"], body["kind"], body["status"], body["url"]) == (job.pk, "bulk_decide", "queued",
                                                                       f"/api/jobs/{job.pk}/")
    assert body["params"]["action"] == "reject" and uuid.UUID(body["params"]["batch"])

    assert jobs.job_execute(job_id=job.pk, worker="here") == "done"
    polled = api(reviewer).get(body["url"])
    assert polled.status_code == 200
    result = polled.json()["result"]
    assert (result["decided"], result["conflicts"], result["batch"]) == (4, 0, body["params"]["batch"])
    assert result["summary"] == "4 flags kept as they are."
    assert job.pk in [row["id"] for row in api(reviewer).get("/api/jobs/").json()["results"]]
    assert Decision.objects.filter(batch=body["params"]["batch"]).count() == 4


@pytest.mark.parametrize("body, errors", [
    ({}, {"dataset": ["This field is required."], "kind": ["This field is required."]}),
    ({"kind": "noisy"}, {"action": ["Choose what to do with the matching flags."]}),
    ({"kind": "noisy", "action": "relabel"}, {"identity_id": ["relabel needs the identity to move the faces to"]}),
    ({"kind": "noisy", "action": "explode"}, {"action": ['"explode" is not a valid choice.']}),
    ({"kind": "noisy", "action": "remove", "min_score": "high"}, {"min_score": ["A valid number is required."]}),
    ({"kind": "noisy", "action": "remove", "round": 0}, {"round": ["Ensure this value is greater than or equal to 1."]}),
])
def test_bad_requests_are_400_with_field_messages(world, reviewer, body, errors):
    if "kind" in body:
        body["dataset"] = world.dataset.pk
    response = post(reviewer, **body)
    assert response.status_code == 400
    assert response.json() == errors


def test_ids_of_other_datasets_are_field_errors(world, reviewer):
    stranger = IdentityFactory()
    response = post(reviewer, dataset=world.dataset.pk, kind="noisy", action="remove", round=RoundFactory().pk,
                    identity=stranger.pk)
    assert response.status_code == 400
    assert response.json() == {"round": "Not a published round of this dataset.",
                               "identity": "Not an identity of this dataset."}
    response = post(reviewer, dataset=world.dataset.pk, kind="noisy", action="relabel", identity_id=stranger.pk)
    assert response.status_code == 400
    assert response.json() == {"identity_id": ["not an identity of this dataset"]}


def test_nothing_to_decide_is_a_400_and_a_grown_count_a_409(world, reviewer):
    response = post(reviewer, dataset=world.dataset.pk, kind="low_norm", action="remove")
    assert response.status_code == 400
    assert response.json() == {"detail": "No open flag matches this filter: there is nothing to decide."}
    noisy(world, 19)  # and the world's two
    response = post(reviewer, dataset=world.dataset.pk, kind="noisy", action="remove", expected_count=5)
    assert response.status_code == 409
    assert response.json() == {"detail": "21 open flags match now, not the 5 you previewed: preview again before "
                                         "you start.", "current": {"count": 21}}
    assert not Job.objects.filter(kind="bulk_decide").exists()


def test_a_pair_queue_takes_only_merge_or_keep(world, reviewer):
    response = post(reviewer, dataset=world.dataset.pk, kind="duplicate_identity", action="remove")
    assert response.status_code == 400
    assert response.json() == {"detail": "Identity pairs can only be merged (confirm) or kept apart (reject)."}


def test_a_non_member_gets_404_for_the_dataset_and_its_jobs(world, reviewer, django_user_model):
    noisy(world, 1)
    stranger = django_user_model.objects.create_user("stranger", password="pw-stranger-1")
    response = post(stranger, dataset=world.dataset.pk, kind="noisy", action="remove", preview=True)
    assert response.status_code == 404
    assert response.json() == {"detail": "No such dataset"}
    started = post(reviewer, dataset=world.dataset.pk, kind="noisy", action="remove").json()
    assert api(stranger).get(started["url"]).status_code == 404
    # A reviewer sees the dataset's bulk jobs, not its exports (admin work, as before).
    assert api(reviewer).get(f"/api/jobs/{world.job.pk}/").status_code == 404
    admin = member(django_user_model.objects.create_user("boss2"), world.dataset, Membership.Role.ADMIN)
    assert api(admin).get(started["url"]).status_code == 200
