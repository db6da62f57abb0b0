"""Round.summary: stored with the flags when a round publishes (flags per kind, the previous
round's counts), computed by a real in-process round, and the browser's confinement of the
embeddings method's files to the data root."""
import numpy as np
import pytest
from django.utils import timezone

from reviewapp.services import round_pipeline
from reviewapp.models import Flag, Round
from reviewapp.services.round_data import round_faces_current
from reviewapp.services.rounds import confine_round_config, round_publish, round_start
from tests.factories import FaceFactory, FlagFactory, IdentityFactory
from tests.reviewapp.test_rounds import TINY, Candidate


@pytest.fixture
def faces(db):
    a = IdentityFactory(name="a")
    b = IdentityFactory(name="b", source=a.source)
    return [FaceFactory(identity=a) for _ in range(3)] + [FaceFactory(identity=b) for _ in range(3)]


def test_publish_stores_the_summary_with_published_and_previous_counts(faces):
    dataset = faces[0].dataset
    earlier = Round.objects.create(dataset=dataset, number=1, method="arcface", status="published",
                                   finished_at=timezone.now())
    FlagFactory(round=earlier, face=faces[0], kind="noisy")
    FlagFactory(round=earlier, face=faces[1], kind="noisy")
    FlagFactory(round=earlier, face=faces[2], kind="hard", suggestion="keep", state="rejected")
    current = Round.objects.create(dataset=dataset, number=2, method="arcface", status="mining", worker="w")
    snapshot = round_faces_current(dataset_id=dataset.pk)
    summary = {"faces": 6, "angles": None, "norms": None, "flags": {"noisy": 2, "hard": 1},
               "extra": np.float32(1.5)}

    published = round_publish(round_id=current.pk, worker="w", index_to_face=snapshot.face_ids,
                              class_to_identity=snapshot.identity_ids, summary=summary,
                              candidates=[Candidate("noisy", 2.0, index=3), Candidate("hard", 1.0, index=2,
                                                                                      suggestion="keep")])

    assert published == 1  # the hard question was answered in round 1
    current.refresh_from_db()
    stored = current.summary
    assert stored["flags"] == {"noisy": 1, "hard": 0, "low_norm": 0, "duplicate_identity": 0, "near_duplicate": 0}
    assert stored["mined"] == {"noisy": 2, "hard": 1} and stored["already_decided"] == 1
    assert stored["previous"] == {"round": 1, "flags": {"noisy": 2, "hard": 1, "low_norm": 0,
                                                        "duplicate_identity": 0, "near_duplicate": 0}}
    assert stored["extra"] == 1.5 and stored["faces"] == 6


def test_a_round_that_does_not_publish_stores_no_summary(faces):
    current = Round.objects.create(dataset=faces[0].dataset, number=1, method="arcface", status="cancelled",
                                   worker="w")
    snapshot = round_faces_current(dataset_id=current.dataset_id)
    assert round_publish(round_id=current.pk, worker="w", candidates=[], index_to_face=snapshot.face_ids,
                         class_to_identity=snapshot.identity_ids, summary={"faces": 1}) is None
    current.refresh_from_db()
    assert current.summary == {} and not Flag.objects.exists()


def test_an_embeddings_round_publishes_chart_data(transactional_db, faces, settings, tmp_path):
    settings.RUNS_ROOT = tmp_path / "runs"
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 16))
    rows = centres[[0, 0, 0, 1, 1, 1]] + 0.05 * rng.normal(size=(6, 16))
    rows[0] = centres[1]  # a face of a that looks like b
    np.save(tmp_path / "emb.npy", rows.astype(np.float32))
    round_ = round_start(dataset=faces[0].dataset, method="embeddings", enqueue=False,
                         config={"embeddings": str(tmp_path / "emb.npy")})

    assert round_pipeline.execute_round(round_id=round_.pk, worker="here") == "published"

    round_.refresh_from_db()
    summary = round_.summary
    assert summary["faces"] == 6 and summary["angles"]["source"] == "embedding"
    assert len(summary["angles"]["band"]) == 6 and summary["angles"]["band"][0] == 2  # noisy
    assert sum(summary["flags"].values()) == Flag.objects.filter(round=round_).count() == round_.progress["flags"]
    assert summary["previous"] is None


def test_a_summary_that_cannot_be_computed_does_not_stop_the_round(transactional_db, faces, settings, tmp_path,
                                                                   monkeypatch):
    import ml.mining.summary

    settings.RUNS_ROOT = tmp_path / "runs"
    np.save(tmp_path / "emb.npy", np.random.default_rng(1).normal(size=(6, 8)).astype(np.float32))
    monkeypatch.setattr(ml.mining.summary, "round_summary", lambda **kw: 1 / 0)
    round_ = round_start(dataset=faces[0].dataset, method="embeddings", enqueue=False,
                         config={"embeddings": str(tmp_path / "emb.npy")})
    assert round_pipeline.execute_round(round_id=round_.pk, worker="here") == "published"
    round_.refresh_from_db()
    assert "ZeroDivisionError" in round_.summary["error"]


def test_browser_rounds_read_embeddings_inside_the_data_root_only(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    np.save(root / "e.npy", np.zeros((1, 2)))
    np.save(tmp_path / "e.npy", np.zeros((1, 2)))
    assert confine_round_config("embeddings", {"embeddings": "e.npy"}, root) == {
        "embeddings": str((root / "e.npy").resolve())}
    for path in (str(tmp_path / "e.npy"), "../e.npy"):
        with pytest.raises(ValueError, match="data root"):
            confine_round_config("embeddings", {"embeddings": path}, root)
    with pytest.raises(ValueError, match="norms"):
        confine_round_config("embeddings", {"embeddings": "e.npy", "norms": str(tmp_path / "e.npy")}, root)
    with pytest.raises(ValueError, match="cannot be set from the browser"):
        confine_round_config("arcface", {"data": {"labels": "/etc/passwd"}}, root)
    assert confine_round_config("arcface", {"data": {"transform": {"size": 32}}}, root) == {
        "data": {"transform": {"size": 32}}}


@pytest.mark.slow
def test_a_trained_round_charts_its_held_out_faces(transactional_db, att_root, settings, tmp_path):
    import shutil

    from reviewapp.models import Dataset
    from reviewapp.services.imports import dataset_import
    settings.RUNS_ROOT = tmp_path / "runs"
    for subject in ("s1", "s2", "s3", "s4"):
        shutil.copytree(att_root / subject, tmp_path / "att" / subject)
    dataset_import(path=tmp_path / "att", name="att", fmt="folder")
    round_ = round_start(dataset=Dataset.objects.get(name="att"), method="arcface", config=TINY, enqueue=False)

    assert round_pipeline.execute_round(round_id=round_.pk, worker="here") == "published"

    summary = Round.objects.get(pk=round_.pk).summary
    angles, norms = summary["angles"], summary["norms"]
    # Cross-fitted: no head judged these faces honestly, so the angles are the first fold model's
    # embedding angles of the faces it never trained on (half of them, stratified by identity).
    assert angles["source"] == "embedding" and angles["counted"] == "sample"
    assert sum(angles["counts"].values()) == len(angles["band"]) == 20
    assert all(0 <= v <= 180 for v in angles["theta_y"] + angles["theta_1"])
    assert norms["faces"] == 20 and sum(norms["counts"]) + norms["below"] + norms["above"] == 20
