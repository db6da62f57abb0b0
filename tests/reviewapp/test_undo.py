"""decision_undo: one's own decision is reversed exactly, its flag reopened, and the undo
audited; anything else is refused, and a face that moved on since is a conflict."""
import pytest

from reviewapp.models import Decision, Face, Flag, Identity
from reviewapp.services import labels
from reviewapp.services.faces import faces_bulk_action
from reviewapp.services.flags import flag_decide
from reviewapp.services.labels import LabelConflict
from reviewapp.services.undo import UndoRefused, decision_undo
from tests.factories import FaceFactory, FlagFactory, IdentityFactory, RoundFactory


@pytest.fixture
def people(db):
    a = IdentityFactory(name="alice")
    b = IdentityFactory(name="bob", source=a.source)
    return a, b


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="other", password="pw-other-1")


def _state(*faces):
    return [tuple(Face.objects.filter(pk=f.pk).values_list("identity_id", "status").get()) for f in faces]


def _undo_rows():
    return list(Decision.objects.filter(action=Decision.Action.UNDO).values_list("after", flat=True))


def test_undo_remove_restores_the_face_and_reopens_its_flag(people, user):
    face = FaceFactory(identity=people[0])
    flag = FlagFactory(face=face)
    decision = flag_decide(flag_id=flag.pk, action="confirm", user=user)
    assert _state(face) == [(people[0].pk, "removed")]

    undo = decision_undo(decision_id=decision.pk, user=user)

    assert _state(face) == [(people[0].pk, "active")]
    flag.refresh_from_db()
    assert flag.state == Flag.State.OPEN
    assert undo.action == Decision.Action.UNDO and undo.after["undoes"] == decision.pk
    assert undo.flag_id == flag.pk and undo.user == user
    # The reversal itself is audited by labels.py and named by the undo row.
    reversal = Decision.objects.get(pk=undo.after["reversal"])
    assert reversal.action == Decision.Action.RESTORE and reversal.face_id == face.pk


def test_undo_low_quality_and_restore(people, user):
    face = FaceFactory(identity=people[0])
    faces_bulk_action(face_ids=[face.pk], action="low_quality", user=user, dataset=people[0].dataset)
    low = Decision.objects.get(action=Decision.Action.LOW_QUALITY)
    decision_undo(decision_id=low.pk, user=user)
    assert _state(face) == [(people[0].pk, "active")]

    labels.face_remove(face_id=face.pk, user=user)
    restore = labels.face_restore(face_id=face.pk, user=user)
    decision_undo(decision_id=restore.pk, user=user)
    assert _state(face) == [(people[0].pk, "removed")]


def test_undo_relabel_moves_the_face_back(people, user):
    face = FaceFactory(identity=people[0])
    decision = labels.face_relabel(face_id=face.pk, identity_id=people[1].pk, user=user)
    decision_undo(decision_id=decision.pk, user=user)
    assert _state(face) == [(people[0].pk, "active")]
    face.refresh_from_db()
    assert face.original_identity_id == people[0].pk


def test_undo_merge_moves_exactly_the_merged_faces_back(people, user):
    alice, bob = people
    moved = [FaceFactory(identity=alice) for _ in range(3)]
    labels.face_remove(face_id=moved[2].pk, user=user)  # removed faces move with a merge too
    bobs = [FaceFactory(identity=bob) for _ in range(2)]
    earlier = IdentityFactory(name="al", source=alice.source)  # merged into alice before
    labels.identity_merge(identity_id=earlier.pk, into_id=alice.pk, user=user)
    merge = labels.identity_merge(identity_id=alice.pk, into_id=bob.pk, user=user)
    assert Identity.objects.get(pk=earlier.pk).merged_into_id == bob.pk

    decision_undo(decision_id=merge.pk, user=user)

    assert _state(*moved) == [(alice.pk, "active"), (alice.pk, "active"), (alice.pk, "removed")]
    assert _state(*bobs) == [(bob.pk, "active")] * 2
    assert Identity.objects.get(pk=alice.pk).merged_into_id is None
    assert Identity.objects.get(pk=earlier.pk).merged_into_id == alice.pk
    assert _undo_rows()[0]["undoes"] == merge.pk


def test_undo_merge_decided_on_a_flag_reopens_the_flag(people, user):
    alice, bob = people
    faces = [FaceFactory(identity=alice), FaceFactory(identity=bob)]
    flag = FlagFactory(face=None, round=RoundFactory(dataset=alice.dataset), kind=Flag.Kind.DUPLICATE_IDENTITY,
                       identity_a=alice, identity_b=bob, suggestion=Flag.Suggestion.MERGE)
    merge = flag_decide(flag_id=flag.pk, action="confirm", user=user, survivor_id=alice.pk)
    assert _state(*faces) == [(alice.pk, "active")] * 2

    decision_undo(decision_id=merge.pk, user=user)

    assert _state(*faces) == [(alice.pk, "active"), (bob.pk, "active")]
    flag.refresh_from_db()
    assert flag.state == Flag.State.OPEN


def test_undo_keep_only_reopens_the_flag(people, user):
    face = FaceFactory(identity=people[0])
    flag = FlagFactory(face=face)
    keep = flag_decide(flag_id=flag.pk, action="reject", user=user)
    assert Flag.objects.get(pk=flag.pk).state == Flag.State.REJECTED
    undo = decision_undo(decision_id=keep.pk, user=user)
    assert Flag.objects.get(pk=flag.pk).state == Flag.State.OPEN
    assert _state(face) == [(people[0].pk, "active")]
    assert undo.after["reversal"] is None


def test_undo_not_the_same_person_reopens_the_pair_flag(people, user):
    alice, bob = people
    flag = FlagFactory(face=None, round=RoundFactory(dataset=alice.dataset), kind=Flag.Kind.DUPLICATE_IDENTITY,
                       identity_a=alice, identity_b=bob, suggestion=Flag.Suggestion.MERGE)
    keep = flag_decide(flag_id=flag.pk, action="reject", user=user)
    undo = decision_undo(decision_id=keep.pk, user=user)
    assert Flag.objects.get(pk=flag.pk).state == Flag.State.OPEN
    assert undo.identity_id == alice.pk and undo.face_id is None
    assert Identity.objects.filter(merged_into__isnull=False).count() == 0


def test_someone_elses_decision_is_refused(people, user, other_user):
    face = FaceFactory(identity=people[0])
    decision = labels.face_remove(face_id=face.pk, user=other_user)
    with pytest.raises(UndoRefused):
        decision_undo(decision_id=decision.pk, user=user)
    assert _state(face) == [(people[0].pk, "removed")]
    assert _undo_rows() == []


def test_any_own_decision_not_only_the_latest_and_never_twice(people, user):
    first, second = FaceFactory(identity=people[0]), FaceFactory(identity=people[0])
    d1 = labels.face_remove(face_id=first.pk, user=user)
    d2 = labels.face_remove(face_id=second.pk, user=user)
    undo = decision_undo(decision_id=d1.pk, user=user)  # the older one, d2 stays
    assert undo.undoes_id == d1.pk and undo.after["undoes"] == d1.pk
    assert _state(first, second) == [(people[0].pk, "active"), (people[0].pk, "removed")]
    with pytest.raises(UndoRefused, match="^This decision was already undone$"):
        decision_undo(decision_id=d1.pk, user=user)
    decision_undo(decision_id=d2.pk, user=user)
    assert _state(first, second) == [(people[0].pk, "active")] * 2


def test_import_and_undo_rows_cannot_be_undone(people, user):
    imported = Decision.objects.create(dataset=people[0].dataset, user=user, actor="reviewer",
                                       action=Decision.Action.IMPORT)
    with pytest.raises(UndoRefused):
        decision_undo(decision_id=imported.pk, user=user)
    face = FaceFactory(identity=people[0])
    undo = decision_undo(decision_id=labels.face_remove(face_id=face.pk, user=user).pk, user=user)
    with pytest.raises(UndoRefused):
        decision_undo(decision_id=undo.pk, user=user)


def test_a_face_changed_since_is_a_conflict_and_nothing_is_written(people, user, other_user):
    face = FaceFactory(identity=people[0])
    decision = labels.face_relabel(face_id=face.pk, identity_id=people[1].pk, user=user)
    labels.face_remove(face_id=face.pk, user=other_user)
    before = Decision.objects.count()
    with pytest.raises(LabelConflict):
        decision_undo(decision_id=decision.pk, user=user)
    assert _state(face) == [(people[1].pk, "removed")]
    assert Decision.objects.count() == before


def test_a_merged_face_moved_on_blocks_the_unmerge(people, user, other_user):
    alice, bob = people
    faces = [FaceFactory(identity=alice) for _ in range(2)]
    merge = labels.identity_merge(identity_id=alice.pk, into_id=bob.pk, user=user)
    third = IdentityFactory(source=alice.source)
    labels.face_relabel(face_id=faces[0].pk, identity_id=third.pk, user=other_user)
    with pytest.raises(LabelConflict):
        decision_undo(decision_id=merge.pk, user=user)
    assert _state(*faces) == [(third.pk, "active"), (bob.pk, "active")]
    assert Identity.objects.get(pk=alice.pk).merged_into_id == bob.pk


def test_bulk_action_reports_conflicts_and_goes_on(people, user):
    alice, bob = people
    faces = [FaceFactory(identity=alice) for _ in range(3)]
    labels.face_remove(face_id=faces[1].pk, user=user)
    stranger = FaceFactory()
    result = faces_bulk_action(face_ids=[f.pk for f in faces] + [stranger.pk], action="remove", user=user,
                               dataset=alice.dataset, from_identity_id=alice.pk)
    assert result.decided == [faces[0].pk, faces[2].pk]
    assert [c[0] for c in result.conflicts] == [faces[1].pk, stranger.pk]
    assert _state(stranger) == [(stranger.identity_id, "active")]

    moved = faces_bulk_action(face_ids=[faces[0].pk], action="relabel", identity_id=bob.pk, user=user,
                              dataset=alice.dataset, from_identity_id=bob.pk)
    assert moved.decided == [] and "changed by someone else" in moved.conflicts[0][1]
