"""services.flags: every action on every kind of flag, conflicts, bulk decisions and claims."""
import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection
from django.utils import timezone

from reviewapp.models import Decision, Face, Flag, Identity
from reviewapp.services.flags import (
    LabelConflict, flag_decide, flags_claim, flags_decide_bulk, flags_release,
)
from tests.factories import FaceFactory, FlagFactory, IdentityFactory, RoundFactory, SourceFactory


@pytest.fixture
def world(db):
    source = SourceFactory()
    alice = IdentityFactory(source=source, name="alice")
    bob = IdentityFactory(source=source, name="bob")
    carol = IdentityFactory(source=source, name="carol")
    round_ = RoundFactory(dataset=source.dataset)
    return SimpleNamespace(source=source, dataset=source.dataset, alice=alice, bob=bob, carol=carol, round=round_)


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="second", password="pw-second-1")


def face_flag(world, *, kind=Flag.Kind.NOISY, suggestion=Flag.Suggestion.REMOVE, identity=None, suggested=None,
              **extra):
    face = FaceFactory(identity=identity or world.alice)
    return FlagFactory(round=world.round, face=face, kind=kind, suggestion=suggestion,
                       suggested_identity=suggested, **extra)


def pair_flag(world, **extra):
    return FlagFactory(round=world.round, face=None, kind=Flag.Kind.DUPLICATE_IDENTITY,
                       suggestion=Flag.Suggestion.MERGE, identity_a=world.alice, identity_b=world.bob,
                       evidence={"cosine": 0.61}, **extra)


def reload(obj):
    obj.refresh_from_db()
    return obj


# -- noisy ----------------------------------------------------------------------------------------

def test_confirm_relabel_moves_the_face_to_the_suggested_identity(world, user):
    flag = face_flag(world, suggestion=Flag.Suggestion.RELABEL, suggested=world.bob)
    decision = flag_decide(flag_id=flag.pk, action="confirm", user=user)
    assert reload(flag.face).identity_id == world.bob.pk
    assert reload(flag).state == Flag.State.CONFIRMED
    assert (decision.action, decision.flag_id, decision.user_id) == ("relabel", flag.pk, user.pk)
    assert decision.before["identity"] == world.alice.pk and decision.after["identity"] == world.bob.pk
    assert decision.evidence == flag.evidence


def test_confirm_remove_takes_the_face_out(world, user):
    flag = face_flag(world)
    decision = flag_decide(flag_id=flag.pk, action="confirm", user=user)
    assert reload(flag.face).status == Face.Status.REMOVED
    assert decision.action == "remove" and reload(flag).state == Flag.State.CONFIRMED


def test_reject_keeps_the_face_and_records_a_keep(world, user):
    flag = face_flag(world, suggestion=Flag.Suggestion.RELABEL, suggested=world.bob)
    decision = flag_decide(flag_id=flag.pk, action="reject", user=user)
    face = reload(flag.face)
    assert (face.identity_id, face.status) == (world.alice.pk, Face.Status.ACTIVE)
    assert decision.action == "keep" and decision.face_id == face.pk and decision.flag_id == flag.pk
    assert decision.before == decision.after == {"identity": world.alice.pk, "status": "active"}
    assert reload(flag).state == Flag.State.REJECTED


def test_relabel_elsewhere_overrides_and_relabel_as_suggested_confirms(world, user):
    elsewhere = face_flag(world, suggestion=Flag.Suggestion.RELABEL, suggested=world.bob)
    flag_decide(flag_id=elsewhere.pk, action="relabel", identity_id=world.carol.pk, user=user)
    assert reload(elsewhere.face).identity_id == world.carol.pk
    assert reload(elsewhere).state == Flag.State.OVERRIDDEN

    as_suggested = face_flag(world, suggestion=Flag.Suggestion.RELABEL, suggested=world.bob)
    flag_decide(flag_id=as_suggested.pk, action="relabel", identity_id=world.bob.pk, user=user)
    assert reload(as_suggested).state == Flag.State.CONFIRMED


def test_relabel_needs_an_identity_of_the_same_dataset(world, user):
    flag = face_flag(world)
    with pytest.raises(ValueError):
        flag_decide(flag_id=flag.pk, action="relabel", user=user)
    foreign = IdentityFactory()
    with pytest.raises(ValueError):
        flag_decide(flag_id=flag.pk, action="relabel", identity_id=foreign.pk, user=user)
    assert reload(flag).state == Flag.State.OPEN and not Decision.objects.exists()


def test_remove_instead_of_relabel_is_overridden(world, user):
    flag = face_flag(world, suggestion=Flag.Suggestion.RELABEL, suggested=world.bob)
    flag_decide(flag_id=flag.pk, action="remove", user=user)
    assert reload(flag.face).status == Face.Status.REMOVED
    assert reload(flag).state == Flag.State.OVERRIDDEN


def test_confirm_relabel_without_a_suggested_identity_is_refused(world, user):
    flag = face_flag(world, suggestion=Flag.Suggestion.RELABEL)
    with pytest.raises(ValueError):
        flag_decide(flag_id=flag.pk, action="confirm", user=user)
    assert reload(flag).state == Flag.State.OPEN


def test_unknown_action_is_refused(world, user):
    flag = face_flag(world)
    with pytest.raises(ValueError):
        flag_decide(flag_id=flag.pk, action="delete", user=user)


# -- hard, low_norm, near_duplicate ---------------------------------------------------------------

def test_hard_confirm_keeps_the_face(world, user):
    flag = face_flag(world, kind=Flag.Kind.HARD, suggestion=Flag.Suggestion.KEEP)
    decision = flag_decide(flag_id=flag.pk, action="confirm", user=user)
    assert decision.action == "keep" and reload(flag).state == Flag.State.CONFIRMED
    assert reload(flag.face).status == Face.Status.ACTIVE


def test_hard_can_still_be_relabelled(world, user):
    flag = face_flag(world, kind=Flag.Kind.HARD, suggestion=Flag.Suggestion.KEEP)
    flag_decide(flag_id=flag.pk, action="relabel", identity_id=world.bob.pk, user=user)
    assert reload(flag.face).identity_id == world.bob.pk
    assert reload(flag).state == Flag.State.OVERRIDDEN


def test_low_norm_confirm_removes(world, user):
    flag = face_flag(world, kind=Flag.Kind.LOW_NORM, evidence={"norm": 2.1, "median_norm": 24.0})
    decision = flag_decide(flag_id=flag.pk, action="confirm", user=user)
    assert decision.action == "remove" and reload(flag.face).status == Face.Status.REMOVED


def test_low_quality_is_a_removal_recorded_as_low_quality(world, user):
    flag = face_flag(world, kind=Flag.Kind.LOW_NORM)
    decision = flag_decide(flag_id=flag.pk, action="low_quality", user=user)
    assert decision.action == "low_quality"
    assert decision.after == {"identity": world.alice.pk, "status": "removed"}
    assert reload(flag.face).status == Face.Status.REMOVED
    assert reload(flag).state == Flag.State.CONFIRMED

    relabel = face_flag(world, suggestion=Flag.Suggestion.RELABEL, suggested=world.bob)
    flag_decide(flag_id=relabel.pk, action="low_quality", user=user)
    assert reload(relabel).state == Flag.State.OVERRIDDEN


def test_near_duplicate_confirm_removes_face_and_keeps_the_other_copy(world, user):
    other = FaceFactory(identity=world.alice)
    flag = face_flag(world, kind=Flag.Kind.NEAR_DUPLICATE, other_face=other, evidence={"cosine": 0.999})
    flag_decide(flag_id=flag.pk, action="confirm", user=user)
    assert reload(flag.face).status == Face.Status.REMOVED
    assert reload(other).status == Face.Status.ACTIVE


def test_near_duplicate_removes_the_copy_the_evidence_names(world, user):
    # ml.mining.duplicates writes "remove": "other_index": the second face of the pair goes.
    other = FaceFactory(identity=world.bob)
    flag = face_flag(world, kind=Flag.Kind.NEAR_DUPLICATE, other_face=other,
                     evidence={"cosine": 0.999, "remove": "other_index"})
    decision = flag_decide(flag_id=flag.pk, action="confirm", user=user)
    assert decision.face_id == other.pk
    assert reload(other).status == Face.Status.REMOVED and reload(flag.face).status == Face.Status.ACTIVE


def test_near_duplicate_reject_keeps_both(world, user):
    other = FaceFactory(identity=world.alice)
    flag = face_flag(world, kind=Flag.Kind.NEAR_DUPLICATE, other_face=other)
    flag_decide(flag_id=flag.pk, action="reject", user=user)
    assert {reload(flag.face).status, reload(other).status} == {Face.Status.ACTIVE}


def copy_flag(world, other_identity, remove, suggestion=Flag.Suggestion.REMOVE):
    """A near-duplicate as ml.mining.copies writes it: face = the copy to keep by default."""
    other = FaceFactory(identity=other_identity)
    return face_flag(world, kind=Flag.Kind.NEAR_DUPLICATE, other_face=other, suggestion=suggestion,
                     evidence={"exact": False, "pixel_distance": 0.4, "same_identity": other_identity == world.alice,
                               "remove": remove}), other


def test_a_copy_across_identities_with_no_named_copy_removes_nothing_by_default(world, user):
    flag, other = copy_flag(world, world.bob, None, suggestion=Flag.Suggestion.KEEP)
    flag_decide(flag_id=flag.pk, action="confirm", user=user)  # "Keep both"
    assert {reload(flag.face).status, reload(other).status} == {Face.Status.ACTIVE}
    assert reload(flag).state == Flag.State.CONFIRMED


def test_remove_without_a_chosen_copy_is_refused_when_the_evidence_names_none(world, user):
    flag, other = copy_flag(world, world.bob, None, suggestion=Flag.Suggestion.KEEP)
    with pytest.raises(ValueError, match="choose which copy"):
        flag_decide(flag_id=flag.pk, action="remove", user=user)
    assert {reload(flag.face).status, reload(other).status} == {Face.Status.ACTIVE}
    assert reload(flag).state == Flag.State.OPEN


@pytest.mark.parametrize("chosen", ["face", "other"])
def test_the_reviewer_may_remove_either_copy(world, user, chosen):
    flag, other = copy_flag(world, world.bob, "other_index")
    target = flag.face if chosen == "face" else other
    decision = flag_decide(flag_id=flag.pk, action="remove", user=user, remove_face_id=target.pk)
    assert decision.face_id == target.pk and reload(target).status == Face.Status.REMOVED
    kept = other if chosen == "face" else flag.face
    assert reload(kept).status == Face.Status.ACTIVE
    # Removing the copy the evidence named is the suggestion; the other one is an override.
    assert reload(flag).state == (Flag.State.CONFIRMED if chosen == "other" else Flag.State.OVERRIDDEN)


def test_a_chosen_copy_must_be_one_of_the_pair(world, user):
    flag, _ = copy_flag(world, world.bob, "other_index")
    stranger = FaceFactory(identity=world.alice)
    with pytest.raises(ValueError, match="one of the two copies"):
        flag_decide(flag_id=flag.pk, action="remove", user=user, remove_face_id=stranger.pk)
    assert reload(stranger).status == Face.Status.ACTIVE


# -- duplicate identities -------------------------------------------------------------------------

def test_duplicate_identity_confirm_merges_into_identity_b_by_default(world, user):
    faces = [FaceFactory(identity=world.alice) for _ in range(2)]
    flag = pair_flag(world)
    decision = flag_decide(flag_id=flag.pk, action="confirm", user=user)
    assert decision.action == "merge" and decision.flag_id == flag.pk
    assert reload(world.alice).merged_into_id == world.bob.pk
    assert {reload(f).identity_id for f in faces} == {world.bob.pk}
    assert reload(flag).state == Flag.State.CONFIRMED


def test_duplicate_identity_survivor_can_be_chosen(world, user):
    face = FaceFactory(identity=world.bob)
    flag = pair_flag(world, suggested_identity=world.bob)
    flag_decide(flag_id=flag.pk, action="confirm", survivor_id=world.alice.pk, user=user)
    assert reload(world.bob).merged_into_id == world.alice.pk
    assert reload(face).identity_id == world.alice.pk


def test_duplicate_identity_default_survivor_is_the_suggested_one(world, user):
    flag = pair_flag(world, suggested_identity=world.alice)
    flag_decide(flag_id=flag.pk, action="confirm", user=user)
    assert reload(world.bob).merged_into_id == world.alice.pk


def test_duplicate_identity_refuses_a_foreign_survivor_and_face_actions(world, user):
    flag = pair_flag(world)
    with pytest.raises(ValueError):
        flag_decide(flag_id=flag.pk, action="confirm", survivor_id=world.carol.pk, user=user)
    for action in ("remove", "relabel", "low_quality"):
        with pytest.raises(ValueError):
            flag_decide(flag_id=flag.pk, action=action, identity_id=world.carol.pk, user=user)
    assert reload(flag).state == Flag.State.OPEN
    assert not Identity.objects.filter(merged_into__isnull=False).exists()
    assert not Decision.objects.exists()


def test_duplicate_identity_reject_keeps_them_apart(world, user):
    flag = pair_flag(world)
    decision = flag_decide(flag_id=flag.pk, action="reject", user=user)
    assert decision.action == "keep" and decision.identity_id == world.alice.pk
    assert reload(world.alice).merged_into_id is None
    assert reload(flag).state == Flag.State.REJECTED


# -- conflicts ------------------------------------------------------------------------------------

def test_second_reviewer_on_the_same_flag_gets_a_conflict_and_writes_nothing(world, user, other_user):
    flag = face_flag(world, suggestion=Flag.Suggestion.RELABEL, suggested=world.bob)
    flag_decide(flag_id=flag.pk, action="confirm", user=user)
    with pytest.raises(LabelConflict) as info:
        flag_decide(flag_id=flag.pk, action="remove", user=other_user)
    assert info.value.current["state"] == Flag.State.CONFIRMED
    assert info.value.current["decided_by"] == user.username
    assert "reviewer" in str(info.value)
    assert Decision.objects.count() == 1
    assert reload(flag.face).status == Face.Status.ACTIVE


def test_a_label_conflict_leaves_the_flag_open(world, user, other_user):
    flag = face_flag(world)
    # Someone removed the face through another flag (or the identity page) meanwhile.
    Face.objects.filter(pk=flag.face_id).update(status=Face.Status.REMOVED)
    with pytest.raises(LabelConflict):
        flag_decide(flag_id=flag.pk, action="confirm", user=other_user)
    assert reload(flag).state == Flag.State.OPEN and not Decision.objects.exists()


def test_merge_of_an_identity_merged_away_since_merges_its_survivor(world, user):
    # The card shows carol in alice's place (issue 11): confirming merges what stands for the pair.
    world.alice.merged_into = world.carol
    world.alice.save()
    flag = pair_flag(world)
    decision = flag_decide(flag_id=flag.pk, action="confirm", user=user)
    assert (decision.action, decision.identity_id, decision.after["merged_into"]) == ("merge", world.carol.pk,
                                                                                      world.bob.pk)
    assert reload(world.carol).merged_into_id == world.bob.pk and reload(world.alice).merged_into_id == world.bob.pk
    assert reload(flag).state == Flag.State.CONFIRMED
    # Both sides one identity already: confirming records the agreement and merges nothing.
    again = pair_flag(world)
    assert flag_decide(flag_id=again.pk, action="confirm", user=user).action == "keep"
    assert reload(again).state == Flag.State.CONFIRMED


@pytest.mark.django_db(transaction=True)
def test_two_reviewers_at_the_same_moment_one_wins(django_user_model):
    source = SourceFactory()
    flag = FlagFactory(face=FaceFactory(identity=IdentityFactory(source=source)),
                       round=RoundFactory(dataset=source.dataset))
    users = [django_user_model.objects.create_user(username=f"r{i}", password="pw-x-12345") for i in range(2)]
    barrier, outcomes = threading.Barrier(2), []

    def decide(user, action):
        try:
            barrier.wait(timeout=10)
            flag_decide(flag_id=flag.pk, action=action, user=user)
            outcomes.append("decided")
        except LabelConflict:
            outcomes.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(u, a)) for u, a in zip(users, ("confirm", "reject"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["conflict", "decided"]
    assert Decision.objects.filter(flag=flag).count() == 1


# -- bulk -----------------------------------------------------------------------------------------

def test_bulk_skips_a_conflict_in_the_middle_and_decides_the_rest(world, user, other_user):
    flags = [face_flag(world) for _ in range(3)]
    flag_decide(flag_id=flags[1].pk, action="reject", user=other_user)
    result = flags_decide_bulk(flag_ids=[f.pk for f in flags], action="confirm", user=user)
    assert result.decided == [flags[0].pk, flags[2].pk]
    assert [c[0] for c in result.conflicts] == [flags[1].pk]
    assert "second" in result.conflicts[0][1]
    assert [reload(f).state for f in flags] == [Flag.State.CONFIRMED, Flag.State.REJECTED, Flag.State.CONFIRMED]
    assert reload(flags[1].face).status == Face.Status.ACTIVE
    assert Decision.objects.filter(user=user).count() == 2


def test_bulk_relabel_and_flags_of_other_datasets(world, user):
    flags = [face_flag(world) for _ in range(2)]
    foreign = FlagFactory()
    result = flags_decide_bulk(flag_ids=[foreign.pk] + [f.pk for f in flags], action="relabel",
                               identity_id=world.carol.pk, user=user, dataset_id=world.dataset.pk)
    assert sorted(result.decided) == sorted(f.pk for f in flags)
    assert result.conflicts == [(foreign.pk, "No such flag")]
    assert {reload(f.face).identity_id for f in flags} == {world.carol.pk}
    assert reload(foreign).state == Flag.State.OPEN


def test_bulk_reports_flags_the_action_does_not_fit(world, user):
    face = face_flag(world)
    pair = pair_flag(world)
    result = flags_decide_bulk(flag_ids=[face.pk, pair.pk], action="remove", user=user)
    assert result.decided == [face.pk]
    assert result.conflicts[0][0] == pair.pk


def test_bulk_relabel_without_identity_is_refused(world, user):
    with pytest.raises(ValueError):
        flags_decide_bulk(flag_ids=[face_flag(world).pk], action="relabel", user=user)


# -- claims ---------------------------------------------------------------------------------------

def test_two_reviewers_claim_disjoint_batches_highest_score_first(world, user, other_user):
    flags = [face_flag(world, score=s) for s in (0.9, 0.8, 0.7, 0.6, 0.5)]
    face_flag(world, kind=Flag.Kind.HARD, suggestion=Flag.Suggestion.KEEP, score=5.0)  # another queue
    assert flags_claim(round_id=world.round.pk, kind="noisy", user=user, size=2) == 2
    assert flags_claim(round_id=world.round.pk, kind="noisy", user=other_user, size=2) == 2
    mine = set(Flag.objects.filter(claimed_by=user).values_list("pk", flat=True))
    theirs = set(Flag.objects.filter(claimed_by=other_user).values_list("pk", flat=True))
    assert mine == {flags[0].pk, flags[1].pk}
    assert theirs == {flags[2].pk, flags[3].pk}


def test_claiming_again_replaces_the_batch_and_release_gives_it_back(world, user, other_user):
    flags = [face_flag(world, score=s) for s in (0.9, 0.8, 0.7)]
    flags_claim(round_id=world.round.pk, kind="noisy", user=user, size=1)
    assert flags_claim(round_id=world.round.pk, kind="noisy", user=user, size=2) == 2
    assert set(Flag.objects.filter(claimed_by=user).values_list("pk", flat=True)) == {flags[0].pk, flags[1].pk}
    assert flags_release(round_id=world.round.pk, kind="noisy", user=user) == 2
    assert not Flag.objects.filter(claimed_by__isnull=False).exists()


def test_an_expired_claim_can_be_retaken(world, user, other_user, settings):
    settings.FLAG_CLAIM_SECONDS = 60
    flags = [face_flag(world, score=s) for s in (0.9, 0.8)]
    flags_claim(round_id=world.round.pk, kind="noisy", user=user, size=2)
    assert flags_claim(round_id=world.round.pk, kind="noisy", user=other_user, size=2) == 0
    Flag.objects.filter(claimed_by=user).update(claimed_at=timezone.now() - timedelta(seconds=61))
    assert flags_claim(round_id=world.round.pk, kind="noisy", user=other_user, size=2) == 2
    assert {reload(f).claimed_by_id for f in flags} == {other_user.pk}


def test_decided_flags_are_neither_claimed_nor_kept_in_a_batch(world, user, other_user):
    decided, open_ = face_flag(world, score=0.9), face_flag(world, score=0.1)
    flags_claim(round_id=world.round.pk, kind="noisy", user=user, size=5)
    flag_decide(flag_id=decided.pk, action="confirm", user=user)
    assert reload(decided).claimed_by_id is None
    assert reload(open_).claimed_by_id == user.pk
    assert flags_claim(round_id=world.round.pk, kind="noisy", user=other_user, size=5) == 0
