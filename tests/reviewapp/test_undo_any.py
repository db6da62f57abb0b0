"""Undo any of one's own decisions (not only the latest) while nothing changed its face since,
the exact refusals, the page-at-once undoability selector, batch undo (in the request and as a
job) and two undos of one decision at the same moment."""
import uuid

import pytest

from reviewapp.models import Decision, Flag, Job
from reviewapp.selectors.undo import undo_blockers, undoable_ids
from reviewapp.services import labels
from reviewapp.services.faces import faces_bulk_action
from reviewapp.services.flags import flag_decide
from reviewapp.services.jobs import job_execute
from reviewapp.services.labels import LabelConflict
from reviewapp.services import undo as undo_service
from reviewapp.services.undo import UndoRefused, batch_undo, batch_undo_start, decision_undo
from tests.factories import FaceFactory, FlagFactory, IdentityFactory, RoundFactory
from tests.reviewapp.test_undo import _state, other_user, people  # noqa: F401 (fixtures)


def test_an_older_decision_is_undone_while_later_ones_on_other_faces_stay(people, user):
    faces = [FaceFactory(identity=people[0]) for _ in range(3)]
    decisions = [labels.face_remove(face_id=f.pk, user=user) for f in faces]
    undo = decision_undo(decision_id=decisions[0].pk, user=user)
    assert undo.undoes_id == decisions[0].pk and undo.after["undoes"] == decisions[0].pk
    assert _state(*faces) == [(people[0].pk, "active"), (people[0].pk, "removed"), (people[0].pk, "removed")]
    assert undoable_ids(decisions, user=user) == {decisions[1].pk, decisions[2].pk}


def test_a_later_change_of_the_same_face_blocks_until_it_is_undone(people, user, other_user):
    alice, bob = people
    face = FaceFactory(identity=alice)
    relabel = labels.face_relabel(face_id=face.pk, identity_id=bob.pk, user=user)
    removal = labels.face_remove(face_id=face.pk, user=user)
    with pytest.raises(LabelConflict, match="^The face was changed since this decision$"):
        decision_undo(decision_id=relabel.pk, user=user)
    decision_undo(decision_id=removal.pk, user=user)
    # The removal undone, the face is again as the relabel left it: it can be undone now.
    decision_undo(decision_id=relabel.pk, user=user)
    assert _state(face) == [(alice.pk, "active")]


def test_a_face_changed_and_changed_back_by_someone_else_still_blocks(people, user, other_user):
    face = FaceFactory(identity=people[0])
    mine = labels.face_remove(face_id=face.pk, user=user)
    labels.face_restore(face_id=face.pk, user=other_user)
    labels.face_remove(face_id=face.pk, user=other_user)  # as mine left it, but not mine any more
    before = Decision.objects.count()
    with pytest.raises(LabelConflict, match="^The face was changed since this decision$"):
        decision_undo(decision_id=mine.pk, user=user)
    assert Decision.objects.count() == before


def test_refusals_say_why_word_for_word(people, user, other_user):
    face = FaceFactory(identity=people[0])
    theirs = labels.face_remove(face_id=FaceFactory(identity=people[0]).pk, user=other_user)
    with pytest.raises(UndoRefused, match="^Only your own decisions can be undone$"):
        decision_undo(decision_id=theirs.pk, user=user)
    mine = labels.face_remove(face_id=face.pk, user=user)
    undo = decision_undo(decision_id=mine.pk, user=user)
    with pytest.raises(UndoRefused, match="^This decision was already undone$"):
        decision_undo(decision_id=mine.pk, user=user)
    with pytest.raises(UndoRefused, match="^An undo decision cannot be undone$"):
        decision_undo(decision_id=undo.pk, user=user)
    reversal = Decision.objects.get(pk=undo.after["reversal"])
    with pytest.raises(UndoRefused, match="^This change was made by an undo and cannot be undone itself$"):
        decision_undo(decision_id=reversal.pk, user=user)


def test_a_merge_is_undoable_until_its_faces_or_its_pointer_move(people, user, other_user):
    alice, bob = people
    faces = [FaceFactory(identity=alice) for _ in range(2)]
    merge = labels.identity_merge(identity_id=alice.pk, into_id=bob.pk, user=user)
    assert undo_blockers([merge]) == {merge.pk: None}
    labels.face_relabel(face_id=faces[0].pk, identity_id=IdentityFactory(source=alice.source).pk, user=other_user)
    assert undo_blockers([merge]) == {merge.pk: "Some of the merged faces were changed since the merge"}
    with pytest.raises(LabelConflict, match="^Some of the merged faces were changed since the merge$"):
        decision_undo(decision_id=merge.pk, user=user)

    carol, dave = IdentityFactory(source=alice.source), IdentityFactory(source=alice.source)
    second = labels.identity_merge(identity_id=carol.pk, into_id=dave.pk, user=user)
    labels.identity_merge(identity_id=dave.pk, into_id=bob.pk, user=other_user)  # re-points carol to bob
    assert undo_blockers([second]) == {second.pk: "The merged identity was merged elsewhere or split since"}


def test_a_keep_whose_flag_a_later_round_superseded_is_refused(people, user):
    flag = FlagFactory(face=FaceFactory(identity=people[0]))
    keep = flag_decide(flag_id=flag.pk, action="reject", user=user)
    Flag.objects.filter(pk=flag.pk).update(state=Flag.State.SUPERSEDED)
    with pytest.raises(UndoRefused, match="^A later round superseded this decision's flag$"):
        decision_undo(decision_id=keep.pk, user=user)


def test_undoability_of_a_page_costs_a_few_queries(people, user, django_assert_max_num_queries):
    alice, bob = people
    decisions = []
    for _ in range(20):
        face = FaceFactory(identity=alice)
        decisions.append(labels.face_relabel(face_id=face.pk, identity_id=bob.pk, user=user))
        flag = FlagFactory(face=face)
        decisions.append(flag_decide(flag_id=flag.pk, action="reject", user=user))
    for _ in range(5):
        decisions.append(labels.identity_merge(identity_id=IdentityFactory(source=alice.source).pk,
                                               into_id=bob.pk, user=user))
    decisions = list(Decision.objects.filter(pk__in=[d.pk for d in decisions]))
    with django_assert_max_num_queries(6):
        blockers = undo_blockers(decisions)
    assert len(blockers) == 45 and all(reason is None for reason in blockers.values())


# -- batches -------------------------------------------------------------------------------------

def _bulk_remove(identity, faces, user):
    result = faces_bulk_action(face_ids=[f.pk for f in faces], action="remove", user=user,
                               dataset=identity.dataset, from_identity_id=identity.pk)
    assert result.batch is not None and not result.conflicts
    return result.batch


def test_batch_undo_undoes_the_users_rows_reports_conflicts_and_reopens_flags(people, user, other_user):
    alice = people[0]
    faces = [FaceFactory(identity=alice) for _ in range(4)]
    flag = FlagFactory(face=faces[3], round=RoundFactory(dataset=alice.dataset))
    batch = _bulk_remove(alice, faces[:3], user)
    flagged = flag_decide(flag_id=flag.pk, action="remove", user=user, batch=batch)  # same action, a flag
    labels.face_restore(face_id=faces[1].pk, user=other_user)  # changed since: a conflict

    result = batch_undo(dataset_id=alice.dataset_id, batch=batch, user=user)

    assert (result.undone, result.conflicts, result.skipped) == (3, 1, 0)
    assert _state(faces[3]) == [(alice.pk, "active")]
    assert result.conflict_sample == [f"decision #{Decision.objects.get(batch=batch, face=faces[1]).pk}: "
                                      "The face was changed since this decision"]
    assert result.summary == "Undid 3 decisions; 1 could not be undone (changed since)."
    assert _state(faces[0], faces[2]) == [(alice.pk, "active")] * 2
    assert _state(faces[1]) == [(alice.pk, "active")]  # restored by the other reviewer, left alone
    assert Flag.objects.get(pk=flag.pk).state == Flag.State.OPEN
    undo_rows = Decision.objects.filter(action=Decision.Action.UNDO)
    assert set(undo_rows.values_list("undoes_id", flat=True)) == {
        *Decision.objects.filter(batch=batch, face__in=[faces[0], faces[2]]).values_list("pk", flat=True),
        flagged.pk}
    assert len({row.batch for row in undo_rows}) == 1  # the undo is one batch of its own
    again = batch_undo(dataset_id=alice.dataset_id, batch=batch, user=user)
    assert (again.undone, again.skipped, again.conflicts) == (0, 3, 1)


def test_batch_undo_takes_only_the_users_own_decisions(people, user, other_user):
    alice = people[0]
    batch = _bulk_remove(alice, [FaceFactory(identity=alice)], other_user)
    with pytest.raises(ValueError, match="^You took no decision in this batch$"):
        batch_undo_start(dataset=alice.dataset, batch=batch, user=user)
    with pytest.raises(ValueError):
        batch_undo_start(dataset=alice.dataset, batch=uuid.uuid4(), user=other_user)


def test_a_large_batch_is_undone_by_a_job_that_reports_progress(people, user, monkeypatch):
    alice = people[0]
    faces = [FaceFactory(identity=alice) for _ in range(5)]
    batch = _bulk_remove(alice, faces, user)
    monkeypatch.setattr(undo_service, "BATCH_IN_REQUEST", 2)
    monkeypatch.setattr(undo_service, "BATCH_CHUNK", 2)
    monkeypatch.setattr("reviewapp.queueing.job_send", lambda job_id, expires=None: True)

    job = batch_undo_start(dataset=alice.dataset, batch=batch, user=user)

    assert isinstance(job, Job) and job.kind == Job.Kind.BATCH_UNDO and job.status == Job.Status.QUEUED
    assert job.params == {"batch": str(batch), "decisions": 5}
    assert _state(*faces) == [(alice.pk, "removed")] * 5  # nothing undone in the request
    assert job_execute(job_id=job.pk, worker="test-worker") == "done"
    job.refresh_from_db()
    assert job.status == Job.Status.DONE
    assert {k: job.result[k] for k in ("undone", "conflicts", "conflict_sample", "summary")} == {
        "undone": 5, "conflicts": 0, "conflict_sample": [], "summary": "Undid 5 decisions."}
    assert _state(*faces) == [(alice.pk, "active")] * 5


# -- two undos at once ---------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_two_undos_of_one_decision_at_once_undo_it_once(django_user_model):
    from tests.reviewapp.test_concurrency import race

    user = django_user_model.objects.create_user(username="clicker", password="pw-clicker-1")
    face = FaceFactory()
    decision = labels.face_remove(face_id=face.pk, user=user)
    refused = []

    def second():
        try:
            decision_undo(decision_id=decision.pk, user=user)
        except UndoRefused as error:
            refused.append(str(error))

    order = race(lambda: decision_undo(decision_id=decision.pk, user=user), second)
    assert order == ["first", "second"]  # the second waited for the first's lock
    assert refused == ["This decision was already undone"]
    assert Decision.objects.filter(action=Decision.Action.UNDO).count() == 1
    assert _state(face) == [(face.identity_id, "active")]
