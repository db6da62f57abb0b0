"""Label services: each change writes exactly one Decision row, conflicts write nothing."""
import pytest

from reviewapp.models import Decision, Face, Identity
from reviewapp.services.labels import LabelConflict, face_relabel, face_remove, face_restore, identity_merge
from tests.factories import FaceFactory, IdentityFactory


@pytest.fixture
def pair(db):
    a = IdentityFactory(name="a")
    b = IdentityFactory(name="b", source=a.source)
    return a, b


def test_remove_then_restore_are_audited(pair, user):
    face = FaceFactory(identity=pair[0])
    face_remove(face_id=face.pk, user=user)
    face.refresh_from_db()
    assert face.status == Face.Status.REMOVED
    face_restore(face_id=face.pk, user=user)
    decisions = list(Decision.objects.order_by("id").values("action", "actor", "before", "after"))
    assert [d["action"] for d in decisions] == ["remove", "restore"]
    assert decisions[0]["actor"] == "reviewer"
    assert decisions[0]["before"]["status"] == "active" and decisions[0]["after"]["status"] == "removed"


def test_second_reviewer_gets_a_conflict_and_no_row(pair):
    face = FaceFactory(identity=pair[0])
    face_remove(face_id=face.pk, actor="first")
    with pytest.raises(LabelConflict) as info:
        face_remove(face_id=face.pk, actor="second")
    assert info.value.current["status"] == "removed"
    assert Decision.objects.count() == 1


def test_expected_state_guards_against_stale_decisions(pair):
    face = FaceFactory(identity=pair[0])
    face_relabel(face_id=face.pk, identity_id=pair[1].pk, actor="first")
    with pytest.raises(LabelConflict):
        face_remove(face_id=face.pk, actor="second", expected={"identity": pair[0].pk})
    face.refresh_from_db()
    assert face.status == Face.Status.ACTIVE


def test_relabel_keeps_original_identity(pair):
    face = FaceFactory(identity=pair[0])
    face_relabel(face_id=face.pk, identity_id=pair[1].pk, actor="cli")
    face.refresh_from_db()
    assert (face.identity_id, face.original_identity_id) == (pair[1].pk, pair[0].pk)


def test_relabel_across_datasets_is_refused(pair):
    face = FaceFactory(identity=pair[0])
    stranger = IdentityFactory()
    with pytest.raises(ValueError):
        face_relabel(face_id=face.pk, identity_id=stranger.pk)
    assert Decision.objects.count() == 0


def test_merge_moves_faces_and_repoints_earlier_merges(pair):
    a, b = pair
    c = IdentityFactory(name="c", source=a.source)
    faces_a = [FaceFactory(identity=a) for _ in range(3)]
    identity_merge(identity_id=c.pk, into_id=a.pk, actor="x")
    identity_merge(identity_id=a.pk, into_id=b.pk, actor="x")
    assert set(Face.objects.values_list("identity_id", flat=True)) == {b.pk}
    assert Identity.objects.get(pk=c.pk).merged_into_id == b.pk  # no chain c -> a -> b
    merge = Decision.objects.filter(action="merge").order_by("id").last()
    assert sorted(merge.before["faces"]) == sorted(f.pk for f in faces_a)
    # Relabelling to a merged identity lands on the survivor.
    face = FaceFactory(identity=b)
    with pytest.raises(LabelConflict):
        face_relabel(face_id=face.pk, identity_id=a.pk, actor="x")  # a resolves to b: no change


def test_merge_twice_is_a_conflict(pair):
    identity_merge(identity_id=pair[0].pk, into_id=pair[1].pk)
    with pytest.raises(LabelConflict):
        identity_merge(identity_id=pair[0].pk, into_id=pair[1].pk)


def test_decisions_are_append_only(pair):
    decision = face_remove(face_id=FaceFactory(identity=pair[0]).pk)
    decision.action = "keep"
    with pytest.raises(TypeError):
        decision.save()
    with pytest.raises(TypeError):
        decision.delete()
    with pytest.raises(TypeError):
        Decision.objects.all().update(action="keep")
    with pytest.raises(TypeError):
        Decision.objects.all().delete()
