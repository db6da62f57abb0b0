"""selectors.review: queue order, keyset pages, claims, reference faces and evidence in words."""
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from reviewapp.models import Face, Flag, Round
from reviewapp.selectors import review as sel
from reviewapp.services.flags import flag_decide, flags_claim
from tests.factories import FaceFactory, FlagFactory, IdentityFactory, RoundFactory, SourceFactory


@pytest.fixture
def world(db):
    source = SourceFactory()
    alice = IdentityFactory(source=source, name="alice")
    bob = IdentityFactory(source=source, name="bob")
    round_ = RoundFactory(dataset=source.dataset, number=2)
    return SimpleNamespace(dataset=source.dataset, alice=alice, bob=bob, round=round_)


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="second", password="pw-second-1")


def flag(world, score, *, kind=Flag.Kind.NOISY, round_=None, identity=None, **extra):
    return FlagFactory(round=round_ or world.round, face=FaceFactory(identity=identity or world.alice),
                       kind=kind, score=score, **extra)


def walk(world, user, size, **kwargs):
    """Every page of a queue: (list of flag ids per page)."""
    pages, after = [], None
    while True:
        page = sel.review_queue(round_=world.round, kind=kwargs.get("kind", "noisy"), user=user, after=after,
                                size=size)
        pages.append([c.flag.pk for c in page.cards])
        if page.next_cursor is None:
            return pages
        after = page.next_cursor
        assert len(pages) < 50


def test_queue_is_open_flags_of_the_kind_highest_score_first_ties_by_id(world, user):
    ranked = [flag(world, s) for s in (0.2, 0.9, 0.5, 0.5, 0.7)]
    flag(world, 5.0, kind=Flag.Kind.HARD, suggestion="keep")
    flag(world, 9.0, round_=RoundFactory(dataset=world.dataset, number=1))
    decided = flag(world, 3.0)
    flag_decide(flag_id=decided.pk, action="reject", user=user)
    page = sel.review_queue(round_=world.round, kind="noisy", user=user)
    expected = sorted(ranked, key=lambda f: (-f.score, -f.pk))
    assert [c.flag.pk for c in page.cards] == [f.pk for f in expected]
    assert page.next_cursor is None


def test_keyset_pages_cover_the_queue_once_in_order(world, user):
    flags = [flag(world, s) for s in (0.9, 0.8, 0.8, 0.8, 0.7, 0.6, 0.5)]
    pages = walk(world, user, size=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    expected = [f.pk for f in sorted(flags, key=lambda f: (-f.score, -f.pk))]
    assert sum(pages, []) == expected


def test_no_next_cursor_when_the_page_is_exactly_full(world, user):
    for s in (0.9, 0.8):
        flag(world, s)
    page = sel.review_queue(round_=world.round, kind="noisy", user=user, size=2)
    assert len(page.cards) == 2 and page.next_cursor is None


def test_a_tampered_cursor_is_refused(world, user):
    for bad in ("nonsense!", "eDEuMDoz", "cTk5OnRlbg"):
        with pytest.raises(sel.InvalidCursor):
            sel.review_queue(round_=world.round, kind="noisy", user=user, after=bad)


def test_flags_someone_else_holds_are_skipped_until_the_claim_expires(world, user, other_user, settings):
    settings.FLAG_CLAIM_SECONDS = 60
    flags = [flag(world, s) for s in (0.9, 0.8, 0.7)]
    flags_claim(round_id=world.round.pk, kind="noisy", user=other_user, size=2)
    assert [c.flag.pk for c in sel.review_queue(round_=world.round, kind="noisy", user=user).cards] == [flags[2].pk]
    Flag.objects.update(claimed_at=timezone.now() - timedelta(seconds=120))
    assert len(sel.review_queue(round_=world.round, kind="noisy", user=user).cards) == 3


def test_my_batch_comes_first_then_the_rest_without_repeats(world, user, other_user):
    flags = [flag(world, s) for s in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4)]
    flags_claim(round_id=world.round.pk, kind="noisy", user=other_user, size=2)   # 0.9, 0.8
    flags_claim(round_id=world.round.pk, kind="noisy", user=user, size=2)         # 0.7, 0.6
    # A low-scored flag claimed by me jumps ahead of the unclaimed ones.
    Flag.objects.filter(pk=flags[5].pk).update(claimed_by=user, claimed_at=timezone.now())
    first = sel.review_queue(round_=world.round, kind="noisy", user=user, size=10)
    assert [c.flag.pk for c in first.cards] == [flags[2].pk, flags[3].pk, flags[5].pk, flags[4].pk]
    assert first.own_claimed == 3
    pages = walk(world, user, size=2)
    assert sum(pages, []) == [flags[2].pk, flags[3].pk, flags[5].pk, flags[4].pk]


def test_queue_round_is_the_latest_published_unless_a_number_is_given(world):
    RoundFactory(dataset=world.dataset, number=3, status=Round.Status.FAILED)
    assert sel.queue_round(dataset_id=world.dataset.pk) == world.round
    old = RoundFactory(dataset=world.dataset, number=1)
    assert sel.queue_round(dataset_id=world.dataset.pk, number=1) == old
    assert sel.queue_round(dataset_id=world.dataset.pk, number=7) is None


def test_cards_show_current_and_suggested_identity_with_reference_faces(world, user):
    alice_faces = [FaceFactory(identity=world.alice) for _ in range(4)]
    bob_faces = [FaceFactory(identity=world.bob) for _ in range(2)]
    Face.objects.filter(pk=alice_faces[0].pk).update(status=Face.Status.REMOVED)
    flagged = flag(world, 0.9, suggestion="relabel", suggested_identity=world.bob)
    card = sel.review_queue(round_=world.round, kind="noisy", user=user).cards[0]
    assert card.current == world.alice and card.suggested == world.bob
    # Active faces only, never the flagged face itself, at most three.
    assert card.refs_current == [f.pk for f in alice_faces[1:4]]
    assert card.refs_suggested == [f.pk for f in bob_faces]
    assert flagged.face_id not in card.refs_current
    assert card.box == "box-noisy"


def test_prototype_faces_from_the_evidence_come_first_when_still_valid(world, user):
    alice_faces = [FaceFactory(identity=world.alice) for _ in range(5)]
    bob_face = FaceFactory(identity=world.bob)
    evidence = {"theta_y_deg": 70.0, "theta_1_deg": 40.0,
                # the last alice face, a face now in bob (stale) and a missing id
                "reference_face_ids": {"own": [alice_faces[4].pk, bob_face.pk, 10**9], "nearest": [bob_face.pk]}}
    flag(world, 0.9, suggestion="relabel", suggested_identity=world.bob, evidence=evidence)
    card = sel.review_queue(round_=world.round, kind="noisy", user=user).cards[0]
    assert card.refs_current == [alice_faces[4].pk, alice_faces[0].pk, alice_faces[1].pk]
    assert card.refs_suggested == [bob_face.pk]


def test_hard_flags_name_the_nearest_identity_from_the_evidence(world, user):
    flag(world, 0.9, kind=Flag.Kind.HARD, suggestion="keep",
         evidence={"theta_y_deg": 50.0, "theta_1_deg": 62.5, "reason": "margin_band",
                   "nearest_identity_id": world.bob.pk})
    foreign = IdentityFactory(name="elsewhere")
    flag(world, 0.8, kind=Flag.Kind.HARD, suggestion="keep", evidence={"nearest_identity_id": foreign.pk})
    cards = sel.review_queue(round_=world.round, kind="hard", user=user).cards
    assert cards[0].suggested == world.bob and cards[0].box == "box-hard"
    assert cards[0].evidence_lines == ["Almost as close to bob as to alice: probably labelled right, worth a look."]
    assert cards[1].suggested is None  # an identity of another dataset is never shown


def test_evidence_in_words_for_each_kind(world, user):
    noisy = flag(world, 0.9, suggestion="relabel", suggested_identity=world.bob,
                 evidence={"theta_y_deg": 81.04, "theta_1_deg": 52.0, "reason": "closed_set", "norm": 21.5})
    low = flag(world, 3.0, kind=Flag.Kind.LOW_NORM, evidence={"norm": 2.05, "median_norm": 24.0, "log_norm_z": -2.0})
    pair = FlagFactory(round=world.round, face=None, kind=Flag.Kind.DUPLICATE_IDENTITY, suggestion="merge",
                       identity_a=world.alice, identity_b=world.bob,
                       evidence={"cosine": 0.612, "size": 40, "other_size": 12})
    other = FaceFactory(identity=world.bob)
    near = flag(world, 0.99, kind=Flag.Kind.NEAR_DUPLICATE, other_face=other,
                evidence={"exact": False, "pixel_distance": 0.8, "same_identity": False, "remove": None})
    cards = {c.flag.pk: c for c in sel.cards_for_flags(flag_ids=[noisy.pk, low.pk, pair.pk, near.pk],
                                                       dataset_id=world.dataset.pk)}
    assert cards[noisy.pk].evidence_lines == [
        "Looks more like bob than like alice: probably filed under the wrong name.",
        "Clearly nearer bob's faces than its own."]
    assert ("θy: angle to its own identity (°)", "81.04") in cards[noisy.pk].raw_numbers
    assert cards[low.pk].evidence_lines == [
        "The model sees less of a face here than in 98% of images (lowest 2.3%): blurred, tiny or not a face."]
    assert cards[pair.pk].evidence_lines == ["The faces of alice and bob look like one person's.",
                                             "alice had 40 faces and bob 12 when the round ran."]
    assert cards[pair.pk].is_pair and cards[pair.pk].current == world.alice and cards[pair.pk].suggested == world.bob
    assert cards[near.pk].evidence_lines == ["Practically the same pixels.",
                                             "Filed under alice and under bob: which label is right?",
                                             "Nothing is removed unless you choose a copy."]
    assert cards[near.pk].removal_face is None
    assert cards[near.pk].faces_shown == [near.face, other]


def test_malformed_evidence_does_not_break_a_card(world, user):
    flag(world, 0.9, evidence={"theta_y_deg": "NaN", "reference_face_ids": "x", "nearest_identity_id": True})
    card = sel.review_queue(round_=world.round, kind="noisy", user=user).cards[0]
    assert card.evidence_lines == ["Far from the other faces of alice."]


def test_a_page_costs_the_same_few_queries_whatever_its_size(world, user):
    def queries(count):
        Flag.objects.all().delete()
        for i in range(count):
            other = IdentityFactory(source=world.alice.source)
            FaceFactory(identity=other)
            flag(world, 1.0 - i / 100, suggestion="relabel", suggested_identity=other,
                 evidence={"nearest_identity_id": other.pk})
        with CaptureQueriesContext(connection) as captured:
            page = sel.review_queue(round_=world.round, kind="noisy", user=user)
            for card in page.cards:  # what the template reads
                (card.face.status, card.current.name, card.suggested.name, card.refs_current, card.evidence_lines)
        return len(captured)

    few, many = queries(2), queries(20)
    # own batch, the queue, the reference faces
    assert few == many == 3, (few, many)


def test_flag_card_of_a_decided_flag_names_the_decision(world, user):
    decided = flag(world, 0.9)
    flag_decide(flag_id=decided.pk, action="confirm", user=user)
    card = sel.flag_card(flag_id=decided.pk, dataset_id=world.dataset.pk)
    assert not card.is_open and card.state_label == "done as suggested"
    assert (card.last_decision.actor, card.last_decision.action) == ("reviewer", "remove")
    assert sel.flag_card(flag_id=decided.pk, dataset_id=IdentityFactory().dataset_id) is None


def test_pair_cards_show_four_faces_a_side_prototypes_first(world, user):
    alice_faces = [FaceFactory(identity=world.alice) for _ in range(6)]
    bob_faces = [FaceFactory(identity=world.bob) for _ in range(2)]
    FlagFactory(round=world.round, face=None, kind=Flag.Kind.DUPLICATE_IDENTITY, suggestion="merge",
                identity_a=world.alice, identity_b=world.bob, suggested_identity=world.alice, score=0.7,
                evidence={"reference_face_ids": {"label": [alice_faces[5].pk], "other_label": [bob_faces[1].pk]}})
    card = sel.review_queue(round_=world.round, kind="duplicate_identity", user=user).cards[0]
    assert card.is_pair and card.box == "" and card.survivor == world.alice
    assert card.refs_current == [alice_faces[5].pk] + [f.pk for f in alice_faces[:3]]
    assert card.refs_suggested == [bob_faces[1].pk, bob_faces[0].pk]


def test_near_duplicate_cards_name_the_copy_a_confirm_removes(world, user):
    other = FaceFactory(identity=world.bob)
    flag(world, 0.99, kind=Flag.Kind.NEAR_DUPLICATE, other_face=other, evidence={"remove": "other_index"})
    card = sel.review_queue(round_=world.round, kind="near_duplicate", user=user).cards[0]
    assert card.is_near_duplicate and card.removal_face == other
    assert card.confirm_label == "Remove duplicate"
    assert card.current == world.alice and card.refs_current == []
