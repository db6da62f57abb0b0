"""The JSON API's writes: flag decisions (409 on a conflict), rounds and exports (admins only)."""
import pytest
from rest_framework.test import APIClient

from reviewapp.models import Decision, Face, Flag, Job, Membership, Round
from tests.factories import IdentityFactory
from tests.reviewapp.test_api import api, make_world, member

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db):
    return make_world("w", "w")


@pytest.fixture
def reviewer(world, user):
    return member(user, world.dataset)


@pytest.fixture
def admin(world, django_user_model):
    return member(django_user_model.objects.create_user("admin1", password="pw-admin-1"), world.dataset,
                  Membership.Role.ADMIN)


def decide(user, flag, **body):
    return api(user).post(f"/api/flags/{flag.pk}/decide/", body, format="json")


def test_confirm_a_removal_decides_the_flag(world, reviewer):
    flag = world.flags[0]
    response = decide(reviewer, flag, action="confirm")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["flag"] == flag.pk and body["action"] == "remove" and body["user"] == reviewer.pk
    flag.refresh_from_db()
    assert flag.state == Flag.State.CONFIRMED
    assert Face.objects.get(pk=flag.face_id).status == Face.Status.REMOVED


def test_second_decision_is_a_409_with_the_current_state(world, reviewer, django_user_model):
    flag = world.flags[0]
    assert decide(reviewer, flag, action="reject").status_code == 201
    other = member(django_user_model.objects.create_user("second"), world.dataset)
    rows = Decision.objects.count()
    response = decide(other, flag, action="confirm")
    assert response.status_code == 409
    body = response.json()
    assert body["detail"] and body["current"]
    assert "rejected" in str(body["current"])
    assert Decision.objects.count() == rows  # nothing written


def test_relabel_to_an_identity_of_the_same_dataset(world, reviewer):
    flag = world.flags[0]
    response = decide(reviewer, flag, action="relabel", identity_id=world.other_identity.pk)
    assert response.status_code == 201, response.content
    assert Face.objects.get(pk=flag.face_id).identity_id == world.other_identity.pk


def test_relabel_into_another_dataset_is_refused(world, reviewer):
    stranger = IdentityFactory()
    response = decide(reviewer, world.flags[0], action="relabel", identity_id=stranger.pk)
    assert response.status_code == 404  # an identity the reviewer cannot see does not exist for them
    member(reviewer, stranger.dataset)
    response = decide(reviewer, world.flags[0], action="relabel", identity_id=stranger.pk)
    assert response.status_code == 400
    assert Flag.objects.get(pk=world.flags[0].pk).state == Flag.State.OPEN


@pytest.mark.parametrize("body", [{}, {"action": "delete"}, {"action": "relabel"}])
def test_bad_decisions_are_400(world, reviewer, body):
    assert decide(reviewer, world.flags[0], **body).status_code == 400
    assert not Decision.objects.filter(flag=world.flags[0]).exists()


def test_a_face_action_on_an_identity_pair_is_400(world, reviewer):
    pair = world.flags[3]
    assert decide(reviewer, pair, action="remove").status_code == 400


def test_flags_of_other_datasets_cannot_be_decided(world, reviewer):
    theirs = make_world("t", "t")
    assert decide(reviewer, theirs.flags[0], action="confirm").status_code == 404
    assert Flag.objects.get(pk=theirs.flags[0].pk).state == Flag.State.OPEN


def test_anonymous_cannot_decide(world):
    response = APIClient().post(f"/api/flags/{world.flags[0].pk}/decide/", {"action": "confirm"}, format="json")
    assert response.status_code in (401, 403)


# -- rounds -----------------------------------------------------------------------------------------

def start(user, dataset, **body):
    return api(user).post("/api/rounds/", {"dataset": dataset.pk, **body}, format="json")


def test_admin_starts_a_round(world, admin, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as enqueued:
        response = start(admin, world.dataset, method="arcface")
    assert response.status_code == 201, response.content
    assert len(enqueued) == 1
    body = response.json()
    assert body["status"] == "queued" and body["number"] == world.round.number + 1
    assert Round.objects.get(pk=body["id"]).created_by == admin


def test_a_second_active_round_is_409(world, admin):
    assert start(admin, world.dataset, method="arcface").status_code == 201
    response = start(admin, world.dataset, method="arcface")
    assert response.status_code == 409
    assert "queued" in response.json()["detail"]


def test_bad_round_requests_are_400(world, admin):
    assert start(admin, world.dataset, method="magic").status_code == 400
    assert start(admin, world.dataset, method="arcface", config=[1, 2]).status_code == 400
    assert not Round.objects.filter(status="queued").exists()


def test_reviewers_cannot_start_or_cancel_rounds(world, reviewer):
    assert start(reviewer, world.dataset, method="arcface").status_code == 404
    queued = Round.objects.create(dataset=world.dataset, number=99, method="arcface")
    assert api(reviewer).post(f"/api/rounds/{queued.pk}/cancel/").status_code == 404
    assert Round.objects.get(pk=queued.pk).status == "queued"


def test_admin_cancels_a_round_once(world, admin):
    queued = Round.objects.create(dataset=world.dataset, number=99, method="arcface")
    response = api(admin).post(f"/api/rounds/{queued.pk}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    again = api(admin).post(f"/api/rounds/{queued.pk}/cancel/")
    assert again.status_code == 409
    assert again.json()["current"]["status"] == "cancelled"


# -- exports ----------------------------------------------------------------------------------------

def test_admin_starts_an_export(world, admin, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as enqueued:
        response = api(admin).post("/api/jobs/export/", {"dataset": world.dataset.pk, "format": "list"},
                                   format="json")
    assert response.status_code == 202, response.content
    assert len(enqueued) == 1  # the worker is told once the job row is committed
    body = response.json()
    job = Job.objects.get(pk=body["id"])
    assert (job.kind, job.dataset_id, job.created_by) == ("export", world.dataset.pk, admin)
    assert body["status"] == "queued" and body["download_url"] is None


def test_reviewers_cannot_export(world, reviewer):
    before = Job.objects.count()
    response = api(reviewer).post("/api/jobs/export/", {"dataset": world.dataset.pk}, format="json")
    assert response.status_code == 404
    assert Job.objects.count() == before


def test_unknown_export_format_is_400(world, admin):
    response = api(admin).post("/api/jobs/export/", {"dataset": world.dataset.pk, "format": "zip"}, format="json")
    assert response.status_code == 400


def test_a_done_export_links_its_download(world, admin):
    Job.objects.filter(pk=world.job.pk).update(status=Job.Status.DONE, file="x/export.txt")
    body = api(admin).get(f"/api/jobs/{world.job.pk}/").json()
    assert body["download_url"] == f"/jobs/{world.job.pk}/download"
    assert "file" not in body


def test_an_embeddings_round_from_the_api_may_only_read_under_the_data_root(db, staff, tmp_path, settings):
    from rest_framework.test import APIClient

    from reviewapp.models import Round
    from tests.factories import DatasetFactory

    settings.DATA_ROOT = tmp_path / "data"
    settings.DATA_ROOT.mkdir()
    outside = tmp_path / "elsewhere.npy"
    outside.write_bytes(b"\x93NUMPY")
    dataset = DatasetFactory()
    client = APIClient()
    client.force_authenticate(staff)
    response = client.post("/api/rounds/", {"dataset": dataset.pk, "method": "embeddings",
                                            "config": {"embeddings": str(outside)}}, format="json")
    assert response.status_code == 400
    assert not Round.objects.filter(dataset=dataset).exists()
