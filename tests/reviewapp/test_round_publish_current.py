"""Publishing a round against the data as it is when it publishes, not as it was frozen when
the round started: decisions taken while it trained are not asked again, merges are followed,
and a published round supersedes the older rounds' open flags on the same subjects."""
import pytest
from django.utils import timezone

from reviewapp.models import Face, Flag, Round
from reviewapp.selectors.manage import dataset_stats
from reviewapp.services.flags import LabelConflict, flag_decide, flags_claim
from reviewapp.services.labels import face_mark_low_quality, face_relabel, face_remove, identity_merge
from reviewapp.services.round_data import round_faces_current
from reviewapp.services.rounds import decided_questions, question_key, round_claim, round_publish
from tests.factories import FaceFactory, FlagFactory, IdentityFactory, MembershipFactory
from tests.reviewapp.test_rounds import Candidate


@pytest.fixture
def people(db):
    """Identities a, b, c, d of one dataset with three faces each."""
    a = IdentityFactory(name="a")
    ids = {"a": a, **{name: IdentityFactory(name=name, source=a.source) for name in "bcd"}}
    faces = {name: [FaceFactory(identity=identity) for _ in range(3)] for name, identity in ids.items()}
    return ids, faces


class Snapshot:
    """A round claimed and its training set frozen, as the round pipeline does on a round's first start."""

    def __init__(self, dataset, number):
        self.round = Round.objects.create(dataset=dataset, number=number, method="arcface")
        round_claim(round_id=self.round.pk, worker="w")
        Round.objects.filter(pk=self.round.pk).update(status=Round.Status.MINING)
        self.round.refresh_from_db()
        self.faces = round_faces_current(dataset_id=dataset.pk)
        self._index = {int(f): i for i, f in enumerate(self.faces.face_ids)}
        self._label = {int(identity): c for c, identity in enumerate(self.faces.identity_ids)}

    def face(self, kind, face, suggestion="remove", target=None, other=None, score=1.0):
        """A candidate about `face` (and `other`), labelled as the snapshot has them."""
        i = self._index[face.pk]
        j = None if other is None else self._index[other.pk]
        return Candidate(kind, score, index=i, label=int(self.faces.labels[i]), suggestion=suggestion,
                         target_label=None if target is None else self._label[target.pk], other_index=j,
                         other_label=None if j is None else int(self.faces.labels[j]))

    def pair(self, a, b, survivor=None, score=1.0):
        return Candidate("duplicate_identity", score, index=None, label=self._label[a.pk],
                         other_label=self._label[b.pk], suggestion="merge",
                         target_label=self._label[(survivor or a).pk])

    def publish(self, candidates):
        count = round_publish(round_id=self.round.pk, worker="w", candidates=candidates,
                              index_to_face=self.faces.face_ids, class_to_identity=self.faces.identity_ids)
        self.round.refresh_from_db()
        return count

    def flags(self, **filters):
        return list(Flag.objects.filter(round=self.round, **filters))


def _published_round(dataset, number=1):
    return Round.objects.create(dataset=dataset, number=number, method="arcface", status="published",
                                finished_at=timezone.now())


# -- decisions taken while the round ran ----------------------------------------------------------

def test_a_relabel_decided_while_the_round_trains_is_not_asked_again(people, user):
    """The defect: round 2 published "NOW person_013 · SUGGESTED person_013" for a face a
    reviewer had relabelled (through round 1's hard flag) while round 2 trained."""
    ids, faces = people
    x, y = faces["a"][0], faces["a"][1]
    hard = FlagFactory(round=_published_round(ids["a"].dataset), face=x, kind="hard", suggestion="keep")
    second = Snapshot(ids["a"].dataset, number=2)
    flag_decide(flag_id=hard.pk, action="relabel", identity_id=ids["b"].pk, user=user)  # while round 2 trains
    face_relabel(face_id=y.pk, identity_id=ids["c"].pk, actor="t")  # by hand, elsewhere

    published = second.publish([
        second.face("noisy", x, "relabel", target=ids["b"]),  # what is already true
        second.face("noisy", y, "relabel", target=ids["b"]),  # the reviewer chose c meanwhile
        second.face("noisy", faces["b"][0], "remove"),  # nobody touched it
    ])

    assert published == 1 and [f.face_id for f in second.flags()] == [faces["b"][0].pk]
    assert second.round.summary["dropped"] == {"face_removed": 0, "already_true": 1, "changed_during_round": 1,
                                               "merged": 0}
    assert second.round.summary["already_decided"] == 0
    assert second.round.progress["dropped_during_round"] == 2


def test_faces_removed_or_marked_low_quality_while_the_round_trains_get_no_flag(people):
    ids, faces = people
    x, y, z = faces["a"]
    second = Snapshot(ids["a"].dataset, number=1)
    face_remove(face_id=x.pk, actor="t")
    face_mark_low_quality(face_id=y.pk, actor="t")

    published = second.publish([
        second.face("noisy", x, "remove"),
        second.face("low_norm", y, "remove"),
        second.face("near_duplicate", z, other=y),  # one copy of the pair is gone
        second.face("hard", z, "keep"),
    ])

    assert published == 1 and second.flags()[0].kind == "hard"
    assert second.round.summary["dropped"]["face_removed"] == 3


def test_a_face_kept_while_the_round_trains_is_not_asked_about_again(people, user):
    """Any decision on a face after the snapshot (here a keep, which changes no data) means the
    reviewer has just looked at it: the round asks nothing more about that face."""
    ids, faces = people
    x = faces["a"][0]
    noisy = FlagFactory(round=_published_round(ids["a"].dataset), face=x, kind="noisy", suggestion="remove")
    before = FlagFactory(round=noisy.round, face=faces["a"][1], kind="noisy", suggestion="remove")
    flag_decide(flag_id=before.pk, action="reject", user=user)  # before round 2 started: the snapshot has it
    second = Snapshot(ids["a"].dataset, number=2)
    flag_decide(flag_id=noisy.pk, action="reject", user=user)

    published = second.publish([
        second.face("noisy", x, "relabel", target=ids["b"]),  # another question, same face
        second.face("hard", x, "keep"),
        second.face("noisy", faces["a"][1], "relabel", target=ids["b"]),  # decided before the round began
    ])

    assert published == 1 and second.flags()[0].face_id == faces["a"][1].pk
    assert second.round.summary["dropped"]["changed_during_round"] == 2


def test_identities_merged_while_the_round_trains_are_followed_to_their_survivor(people):
    ids, faces = people
    second = Snapshot(ids["a"].dataset, number=1)
    identity_merge(identity_id=ids["c"].pk, into_id=ids["b"].pk, actor="t")  # c is b now

    published = second.publish([
        second.pair(ids["b"], ids["c"]),  # one identity now: nothing to ask
        second.pair(ids["c"], ids["d"], survivor=ids["c"]),  # is b (ex-c) the same as d?
        second.face("noisy", faces["a"][0], "relabel", target=ids["c"]),  # c merged away: relabel to b
        second.face("noisy", faces["c"][0], "relabel", target=ids["b"]),  # its identity is b already
        second.face("noisy", faces["c"][1], "relabel", target=ids["d"]),  # moved by the merge, still a question
    ])

    assert published == 3
    pair = second.flags(kind="duplicate_identity")[0]
    assert (sorted((pair.identity_a_id, pair.identity_b_id)), pair.suggested_identity_id) == (
        sorted((ids["b"].pk, ids["d"].pk)), ids["b"].pk)
    relabels = {f.face_id: f.suggested_identity_id for f in second.flags(kind="noisy")}
    assert relabels == {faces["a"][0].pk: ids["b"].pk, faces["c"][1].pk: ids["d"].pk}
    assert second.round.summary["dropped"] == {"face_removed": 0, "already_true": 1, "changed_during_round": 0,
                                               "merged": 1}


def test_a_resumed_round_keeps_its_snapshot_time(people, settings):
    """The snapshot time is Round.started_at, stamped on the first claim only: a round taken over
    by another worker (resumed from its faces.npz) still counts decisions from its first start."""
    ids, faces = people
    settings.ROUND_STALE_SECONDS = 0
    first = Snapshot(ids["a"].dataset, number=1)
    started = first.round.started_at
    face_remove(face_id=faces["a"][0].pk, actor="t")
    face_relabel(face_id=faces["a"][1].pk, identity_id=ids["d"].pk, actor="t")
    Round.objects.filter(pk=first.round.pk).update(heartbeat_at=timezone.now() - timezone.timedelta(seconds=5))
    taken = round_claim(round_id=first.round.pk, worker="w2")
    assert taken is not None and taken.started_at == started
    Round.objects.filter(pk=first.round.pk).update(worker="w")

    assert first.publish([first.face("noisy", faces["a"][0]), first.face("hard", faces["a"][1], "keep")]) == 0


# -- superseding the older rounds' open flags -----------------------------------------------------

def test_a_published_round_supersedes_older_open_flags_on_the_same_subjects(people, user, django_user_model):
    ids, faces = people
    dataset = ids["a"].dataset
    x, y, z, w, v = faces["a"][0], faces["a"][1], faces["a"][2], faces["b"][0], faces["b"][1]
    one = _published_round(dataset, number=1)
    old = {
        "relabel": FlagFactory(round=one, face=x, kind="noisy", suggestion="relabel", suggested_identity=ids["b"]),
        "low_norm": FlagFactory(round=one, face=y, kind="low_norm"),
        "pair": FlagFactory(round=one, face=y, other_face=z, kind="near_duplicate"),
        "identities": FlagFactory(round=one, face=None, identity_a=ids["a"], identity_b=ids["c"],
                                  kind="duplicate_identity", suggestion="merge"),
        "other_kind": FlagFactory(round=one, face=w, kind="noisy"),
        "not_flagged": FlagFactory(round=one, face=v, kind="noisy"),
    }
    decided = FlagFactory(round=one, face=faces["c"][0], kind="noisy")
    flag_decide(flag_id=decided.pk, action="reject", user=user)
    # The older round's open flags sit in a reviewer's batch.
    assert flags_claim(round_id=one.pk, kind="noisy", user=user, size=10) == 3
    two = Snapshot(dataset, number=2)

    published = two.publish([
        two.face("noisy", x, "relabel", target=ids["c"]),  # same face and kind, another target
        two.face("low_norm", y, "remove"),
        two.face("near_duplicate", z, other=y),  # the same pair, the other way round
        two.pair(ids["c"], ids["a"]),
        two.face("hard", w, "keep"),  # w's noisy flag is another kind: it stays
        two.face("noisy", faces["c"][0], "remove"),  # answered in round 1: dropped, so nothing to supersede
    ])

    assert published == 5
    states = {name: Flag.objects.get(pk=flag.pk) for name, flag in old.items()}
    superseded = {name for name, flag in states.items() if flag.state == Flag.State.SUPERSEDED}
    assert superseded == {"relabel", "low_norm", "pair", "identities"}
    assert {flag.superseded_by_id for name, flag in states.items() if name in superseded} == {two.round.pk}
    assert all(flag.claimed_by_id is None for name, flag in states.items() if name in superseded)
    assert states["other_kind"].state == states["not_flagged"].state == Flag.State.OPEN
    assert states["other_kind"].claimed_by_id == user.pk  # untouched: still in the reviewer's batch
    assert Flag.objects.get(pk=decided.pk).state == Flag.State.REJECTED
    # The audit equals the data: the summary counts exactly the flags that name this round.
    assert two.round.summary["superseded"] == {"noisy": 1, "hard": 0, "low_norm": 1, "duplicate_identity": 1,
                                               "near_duplicate": 1}
    assert two.round.progress["superseded"] == Flag.objects.filter(superseded_by=two.round).count() == 4


def test_an_older_pair_of_merged_away_identities_is_superseded_by_its_survivors_pair(people):
    ids, faces = people
    one = _published_round(ids["a"].dataset, number=1)
    old = FlagFactory(round=one, face=None, identity_a=ids["c"], identity_b=ids["d"], kind="duplicate_identity",
                      suggestion="merge")
    identity_merge(identity_id=ids["c"].pk, into_id=ids["b"].pk, actor="t")
    two = Snapshot(ids["a"].dataset, number=2)
    assert two.publish([two.pair(ids["d"], ids["b"])]) == 1
    old.refresh_from_db()
    assert (old.state, old.superseded_by_id) == (Flag.State.SUPERSEDED, two.round.pk)


def test_a_superseded_flag_is_no_answer_and_cannot_be_decided(people, user):
    ids, faces = people
    x = faces["a"][0]
    one = _published_round(ids["a"].dataset, number=1)
    old = FlagFactory(round=one, face=x, kind="noisy", suggestion="relabel", suggested_identity=ids["b"])
    two = Snapshot(ids["a"].dataset, number=2)
    assert two.publish([two.face("noisy", x, "relabel", target=ids["c"])]) == 1
    old.refresh_from_db()
    assert old.state == Flag.State.SUPERSEDED

    # Nobody answered it: a later round may ask its question again.
    assert question_key(old) not in decided_questions(dataset_id=ids["a"].dataset_id)
    with pytest.raises(LabelConflict):
        flag_decide(flag_id=old.pk, action="confirm", user=user)
    old.refresh_from_db()
    assert old.state == Flag.State.SUPERSEDED and x.identity_id == ids["a"].pk


def test_superseded_noisy_flags_do_not_count_as_confirmed_noise(people, user):
    ids, faces = people
    one = _published_round(ids["a"].dataset, number=1)
    FlagFactory(round=one, face=faces["a"][0], kind="noisy", state=Flag.State.SUPERSEDED)
    flag_decide(flag_id=FlagFactory(round=one, face=faces["a"][1], kind="noisy").pk, action="reject", user=user)
    stats = dataset_stats(dataset=ids["a"].dataset)
    assert (stats.noisy_confirmed, stats.noisy_rejected) == (0, 1)


# -- over HTTP ------------------------------------------------------------------------------------

def test_the_older_rounds_queue_no_longer_shows_superseded_flags(client, people, user):
    from tests.reviewapp.test_views_review import card_ids

    ids, faces = people
    dataset = ids["a"].dataset
    MembershipFactory(user=user, dataset=dataset)
    one = _published_round(dataset, number=1)
    again = FlagFactory(round=one, face=faces["a"][0], kind="noisy", score=0.9)
    stays = FlagFactory(round=one, face=faces["a"][1], kind="noisy", score=0.8)
    client.force_login(user)
    url = f"/datasets/{dataset.pk}/review/noisy/?round=1"
    assert card_ids(client.get(url).content.decode()) == [again.pk, stays.pk]

    two = Snapshot(dataset, number=2)
    assert two.publish([two.face("noisy", faces["a"][0], "remove")]) == 1

    assert card_ids(client.get(url).content.decode()) == [stays.pk]
    # Opened from an old link, its card says why and takes no decision.
    html = client.get(f"/flags/{again.pk}/").content.decode()
    assert "Superseded by a later round" in html and 'name="action"' not in html
    response = client.post(f"/flags/{again.pk}/decide", {"action": "confirm"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "superseded by a later round" in response.content.decode()
    assert Flag.objects.get(pk=again.pk).state == Flag.State.SUPERSEDED
    assert Face.objects.get(pk=faces["a"][0].pk).status == Face.Status.ACTIVE


def test_the_round_page_says_what_was_not_asked_and_what_was_replaced(client, people, user):
    ids, faces = people
    dataset = ids["a"].dataset
    MembershipFactory(user=user, dataset=dataset)
    FlagFactory(round=_published_round(dataset, number=1), face=faces["a"][0], kind="noisy")
    two = Snapshot(dataset, number=2)
    face_remove(face_id=faces["b"][0].pk, actor="t")
    assert two.publish([two.face("noisy", faces["a"][0]), two.face("noisy", faces["b"][0])]) == 1
    client.force_login(user)
    html = client.get(f"/rounds/{two.round.pk}/").content.decode()
    assert "1 not asked because reviewers changed or decided those faces while it ran" in html
    assert "It replaces 1 open flag of earlier rounds" in html
