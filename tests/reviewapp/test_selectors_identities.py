"""Identity selectors: keyset pages, flag boxes, name search, nearest identities from a
round's embeddings, and the history with its filters."""
import numpy as np
import pytest

from ml.api import RunFolder, identity_centres
from reviewapp.api.filters import HistoryFilter
from reviewapp.models import Decision, Flag, Round
from reviewapp.selectors import identities as sel
from reviewapp.services import labels
from reviewapp.services.round_data import SNAPSHOT_FILE, RoundFaces, round_key, save_round_faces
from reviewapp.services.round_pipeline import round_centres_write
from reviewapp.services.round_recovery import rounds_centres_backfill
from reviewapp.services.undo import decision_undo
from tests.factories import FaceFactory, FlagFactory, IdentityFactory, RoundFactory

DIM = 8


def write_round_run(runs_root, round_, face_rows):
    """A published round's run folder as the worker leaves it: faces.npz,
    embeddings/embeddings.npy (rows in face-id order) and the identity centres it writes when the
    round publishes. face_rows: [(face, vector)]."""
    face_rows = sorted(face_rows, key=lambda fr: fr[0].pk)
    face_ids = np.array([f.pk for f, _ in face_rows], dtype=np.int64)
    identity_ids, labels_ = np.unique([f.identity_id for f, _ in face_rows], return_inverse=True)
    run_dir = runs_root / f"round-{round_.pk}"
    save_round_faces(RoundFaces(face_ids, labels_.astype(np.int64), identity_ids.astype(np.int64)),
                     run_dir / SNAPSHOT_FILE, round_key=round_key(round_))
    (run_dir / "embeddings").mkdir(parents=True)
    np.save(run_dir / "embeddings" / "embeddings.npy", np.array([v for _, v in face_rows], dtype=np.float32))
    round_centres_write(round_=round_)
    return run_dir


def axis(*weights):
    v = np.zeros(DIM, dtype=np.float32)
    v[:len(weights)] = weights
    return v


@pytest.fixture
def planted(db, settings, tmp_path):
    """Four identities on their own axes; D lies close to A; one face of A looks like C."""
    settings.RUNS_ROOT = tmp_path / "runs"
    a = IdentityFactory(name="Anna")
    b, c, d = (IdentityFactory(name=n, source=a.source) for n in ("Boris", "Carla", "Dana"))
    rng = np.random.default_rng(0)
    rows = []
    for identity, centre in ((a, axis(1)), (b, axis(0, 1)), (c, axis(0, 0, 1)), (d, axis(1, 0, 0, .6))):
        for _ in range(3):
            rows.append((FaceFactory(identity=identity), centre + rng.normal(0, .02, DIM).astype(np.float32)))
    odd = FaceFactory(identity=a)
    rows.append((odd, axis(.1, 0, 1)))
    round_ = RoundFactory(dataset=a.dataset, status=Round.Status.PUBLISHED)
    run_dir = write_round_run(settings.RUNS_ROOT, round_, rows)
    return {"a": a, "b": b, "c": c, "d": d, "odd": odd, "round": round_, "run_dir": run_dir}


def test_nearest_identities_of_a_face_find_the_planted_one(planted):
    found = sel.nearest_identities(dataset_id=planted["a"].dataset_id, face=planted["odd"])
    assert found.identities[0] == planted["c"]
    assert planted["a"] not in found.identities  # its own identity is not an option
    assert found.scores[planted["c"].pk] > 0.9
    assert found.identities[0].active_faces == 3 and found.identities[0].reference_face is not None


def test_nearest_identities_of_an_identity_use_its_centre_and_cache_it(planted):
    found = sel.nearest_identities(dataset_id=planted["a"].dataset_id, identity=planted["a"])
    assert found.identities[0] == planted["d"]
    cache = RunFolder(planted["run_dir"]).identity_centres
    assert cache.exists()
    with np.load(cache) as data:
        assert data["centres"].shape == (4, DIM)
    cache.write_bytes(cache.read_bytes())  # the cached file is read as it is, not recomputed
    assert sel.nearest_identities(dataset_id=planted["a"].dataset_id, identity=planted["a"]).identities[0] \
        == planted["d"]


def test_a_flag_suggestion_comes_first_and_merged_identities_map_to_their_survivor(planted):
    FlagFactory(face=planted["odd"], round=planted["round"], suggestion=Flag.Suggestion.RELABEL,
                suggested_identity=planted["b"])
    labels.identity_merge(identity_id=planted["c"].pk, into_id=planted["d"].pk)
    found = sel.nearest_identities(dataset_id=planted["a"].dataset_id, face=planted["odd"])
    assert found.identities[:2] == [planted["b"], planted["d"]]
    assert planted["c"] not in found.identities


def test_the_evidence_nearest_identity_is_a_class_of_the_round(planted):
    classes = sorted(planted[k].pk for k in "abcd")
    FlagFactory(face=planted["odd"], round=planted["round"], kind=Flag.Kind.HARD,
                evidence={"nearest_identity": classes.index(planted["b"].pk)})
    found = sel.nearest_identities(dataset_id=planted["a"].dataset_id, face=planted["odd"])
    assert found.identities[:2] == [planted["b"], planted["c"]]
    FlagFactory(face=planted["odd"], round=planted["round"], kind=Flag.Kind.NOISY, score=9.0,
                evidence={"nearest_identity_id": planted["d"].pk})
    found = sel.nearest_identities(dataset_id=planted["a"].dataset_id, face=planted["odd"])
    assert found.identities[:3] == [planted["d"], planted["b"], planted["c"]]


def test_a_centres_file_of_another_round_is_not_used(planted):
    sel.nearest_identities(dataset_id=planted["a"].dataset_id, identity=planted["a"])
    cache = RunFolder(planted["run_dir"]).identity_centres
    with np.load(cache) as data:
        fields = dict(data)
    fields["round_key"] = np.array("another database's round")
    np.savez(cache, **fields)
    found = sel.nearest_identities(dataset_id=planted["a"].dataset_id, identity=planted["a"])
    assert found.identities == [] and "holds no embedding" in found.note


def test_a_search_never_writes_the_centres_it_lacks(planted):
    cache = RunFolder(planted["run_dir"]).identity_centres
    cache.unlink()
    found = sel.nearest_identities(dataset_id=planted["a"].dataset_id, identity=planted["a"])
    assert found.identities == [] and "holds no embedding" in found.note
    assert not cache.exists()  # a GET reads; the round's publish writes (services.round_pipeline)


def test_a_rounds_worker_writes_the_centres_a_round_published_before_them_lacks(planted):
    # A round published before rounds wrote their centres: the search finds them once a rounds
    # worker has started, and a second start writes nothing.
    cache = RunFolder(planted["run_dir"]).identity_centres
    cache.unlink()
    assert rounds_centres_backfill() == 1 and cache.exists()
    found = sel.nearest_identities(dataset_id=planted["a"].dataset_id, face=planted["odd"])
    assert found.identities[0] == planted["c"]
    assert rounds_centres_backfill() == 0


def test_no_published_round_means_no_nearest_identities(db):
    face = FaceFactory()
    found = sel.nearest_identities(dataset_id=face.dataset_id, face=face)
    assert found.identities == [] and "No published round" in found.note


def test_identity_centres_are_unit_means_of_unit_rows():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(50, DIM)).astype(np.float32)
    labels_ = rng.integers(0, 5, size=50)
    skip = np.zeros(50, dtype=bool)
    skip[:5] = True
    centres = identity_centres(embeddings, labels_, np.flatnonzero(~skip), 5, batch_size=7).centres
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    for c in range(5):
        mean = unit[(labels_ == c) & ~skip].sum(axis=0)
        np.testing.assert_allclose(centres[c], mean / np.linalg.norm(mean), atol=1e-5)


def test_identity_faces_page_is_keyset_and_hides_removed(db):
    identity = IdentityFactory()
    faces = [FaceFactory(identity=identity) for _ in range(7)]
    labels.face_remove(face_id=faces[3].pk)
    FaceFactory(identity=IdentityFactory(source=identity.source))  # another identity's face
    first, after = sel.identity_faces_page(identity=identity, round_=None, limit=3)
    second, after2 = sel.identity_faces_page(identity=identity, round_=None, after=after, limit=3)
    assert [c.face.pk for c in first] == [f.pk for f in faces[:3]]
    assert [c.face.pk for c in second] == [faces[4].pk, faces[5].pk, faces[6].pk]
    assert after2 is None
    with_removed, _ = sel.identity_faces_page(identity=identity, round_=None, after=after, include_removed=True,
                                              limit=3)
    assert [c.face.pk for c in with_removed] == [f.pk for f in faces[3:6]]


def test_boxes_come_from_open_flags_of_the_latest_published_round(db):
    identity = IdentityFactory()
    noisy, hard, decided, old_only, plain = (FaceFactory(identity=identity) for _ in range(5))
    old = RoundFactory(dataset=identity.dataset, number=1)
    latest = RoundFactory(dataset=identity.dataset, number=2)
    RoundFactory(dataset=identity.dataset, number=3, status=Round.Status.MINING)
    FlagFactory(face=noisy, round=latest, kind=Flag.Kind.NOISY)
    FlagFactory(face=noisy, round=latest, kind=Flag.Kind.HARD, score=5.0)
    FlagFactory(face=hard, round=latest, kind=Flag.Kind.HARD)
    FlagFactory(face=decided, round=latest, kind=Flag.Kind.NOISY, state=Flag.State.CONFIRMED)
    FlagFactory(face=old_only, round=old, kind=Flag.Kind.NOISY)
    cards, _ = sel.identity_faces_page(identity=identity,
                                       round_=sel.latest_published_round(dataset_id=identity.dataset_id))
    assert [c.box for c in cards] == ["box-noisy", "box-hard", "", "", ""]


def test_name_search_puts_prefix_matches_first_and_skips_merged(db):
    anna = IdentityFactory(name="Anna Smith")
    src = anna.source
    mary = IdentityFactory(name="Mary-Ann Jones", source=src)
    IdentityFactory(name="Bob", source=src)
    annabel = IdentityFactory(name="Annabel", source=src)
    gone = IdentityFactory(name="Anne-Gone", source=src)
    labels.identity_merge(identity_id=gone.pk, into_id=anna.pk)
    found = sel.identities_by_name(dataset_id=anna.dataset_id, q="Ann")
    assert set(found[:2]) == {anna, annabel} and found[2:] == [mary]  # prefix matches, then the rest
    assert set(sel.identities_by_name(dataset_id=anna.dataset_id, q="ann", exclude={mary.pk})) == {anna, annabel}
    assert sel.identities_by_name(dataset_id=anna.dataset_id, q="100%") == []


def test_history_pages_and_filters(db, user, django_user_model):
    other = django_user_model.objects.create_user(username="other", password="pw-other-1")
    identity = IdentityFactory()
    faces = [FaceFactory(identity=identity) for _ in range(5)]
    round_ = RoundFactory(dataset=identity.dataset, number=4)
    flag = FlagFactory(face=faces[0], round=round_)
    from reviewapp.services.flags import flag_decide

    flag_decide(flag_id=flag.pk, action="confirm", user=user)
    for face in faces[1:4]:
        labels.face_remove(face_id=face.pk, user=other)
    last = labels.face_remove(face_id=faces[4].pk, user=user)
    decision_undo(decision_id=last.pk, user=user)
    everything = HistoryFilter({})
    page1, before = sel.history_page(dataset_id=identity.dataset_id, filters=everything, limit=4)
    page2, before2 = sel.history_page(dataset_id=identity.dataset_id, filters=everything, before=before, limit=4)
    ids = [r.decision.pk for r in page1 + page2]
    assert ids == sorted(ids, reverse=True) and len(ids) == len(set(ids)) == 7 and before2 is None
    actions = [r.decision.action for r in page1]
    assert actions[:3] == ["undo", "restore", "remove"]
    assert page1[2].undone and page1[1].reversal_of_undo

    mine, _ = sel.history_page(dataset_id=identity.dataset_id, filters=HistoryFilter({"user": other.pk}))
    assert {r.decision.actor for r in mine} == {"other"} and len(mine) == 3
    in_round, _ = sel.history_page(dataset_id=identity.dataset_id, filters=HistoryFilter({"round": 4}))
    assert [r.decision.flag_id for r in in_round] == [flag.pk]
    assert "θy 81.0°" in in_round[0].evidence_summary
    undos, _ = sel.history_page(dataset_id=identity.dataset_id, filters=HistoryFilter({"action": "undo"}))
    assert [r.decision.action for r in undos] == [Decision.Action.UNDO]
