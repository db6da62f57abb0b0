"""Undo through the JSON API: POST /api/decisions/<id>/undo/ and /api/batches/<uuid>/undo/."""
import uuid

import pytest

from reviewapp.models import Decision, Face
from reviewapp.services import labels
from reviewapp.services.faces import faces_bulk_action
from tests.factories import FaceFactory, IdentityFactory, MembershipFactory
from tests.reviewapp.test_api import api

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(user):
    identity = IdentityFactory(name="alice")
    MembershipFactory(user=user, dataset=identity.dataset)
    return identity


def test_undo_a_decision(alice, user, django_user_model):
    faces = [FaceFactory(identity=alice) for _ in range(2)]
    older = labels.face_remove(face_id=faces[0].pk, user=user)
    labels.face_remove(face_id=faces[1].pk, user=user)
    response = api(user).post(f"/api/decisions/{older.pk}/undo/")
    assert response.status_code == 201, response.content
    assert response.json()["action"] == "undo" and response.json()["after"]["undoes"] == older.pk
    assert Face.objects.get(pk=faces[0].pk).status == "active"
    again = api(user).post(f"/api/decisions/{older.pk}/undo/")
    assert again.status_code == 409 and again.json()["detail"] == "This decision was already undone"
    stranger = django_user_model.objects.create_user(username="stranger", password="pw-stranger-1")
    MembershipFactory(user=stranger)
    assert api(stranger).post(f"/api/decisions/{older.pk}/undo/").status_code == 404
    assert api().post(f"/api/decisions/{older.pk}/undo/").status_code in (401, 403)


def test_undo_a_batch(alice, user):
    faces = [FaceFactory(identity=alice) for _ in range(3)]
    batch = faces_bulk_action(face_ids=[f.pk for f in faces], action="remove", user=user,
                              dataset=alice.dataset).batch
    response = api(user).post(f"/api/batches/{batch}/undo/")
    assert response.status_code == 200, response.content
    assert {k: response.json()[k] for k in ("undone", "conflicts", "conflict_sample", "summary")} == {
        "undone": 3, "conflicts": 0, "conflict_sample": [], "summary": "Undid 3 decisions."}
    assert set(Face.objects.filter(pk__in=[f.pk for f in faces]).values_list("status", flat=True)) == {"active"}
    assert Decision.objects.filter(action="undo").count() == 3
    missing = api(user).post(f"/api/batches/{uuid.uuid4()}/undo/")
    assert missing.status_code == 404 and missing.json()["detail"] == "You took no decision in this batch."
