"""Cleaning rounds without a worker: the training set, the configuration, the life-cycle
services, publishing and its already-decided rule, and whole rounds run in-process."""
import io
import json
import shutil
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from reviewapp import queueing
from reviewapp.runs import round_run_folder
from reviewapp.services import round_pipeline, round_recovery
from reviewapp.models import Dataset, Face, Flag, Round, Source
from reviewapp.services.imports import dataset_import
from reviewapp.services.labels import face_relabel, face_remove, identity_merge
from reviewapp.services.round_data import round_face_dataset, round_faces_current, round_train_config
from reviewapp.services.rounds import (
    RoundConflict,
    question_key,
    round_cancel,
    round_claim,
    round_heartbeat,
    round_publish,
    round_start,
)
from tests.factories import DatasetFactory, FaceFactory, IdentityFactory, jpeg_bytes

TINY = {"epochs": 1, "batch_size": 16, "num_workers": 0, "log_every": 1, "device": "cpu",
        "data": {"transform": {"crop": None, "size": 32}}}


@dataclass
class Candidate:
    """The fields of ml.mining.FlagCandidate that publishing reads."""

    kind: str
    score: float
    index: int | None
    label: int | None = None
    suggestion: str = "remove"
    target_label: int | None = None
    other_index: int | None = None
    other_label: int | None = None
    evidence: dict = field(default_factory=dict)


@pytest.fixture
def people(db):
    """Identities a, b, c of one dataset with faces 3, 2, 1."""
    a = IdentityFactory(name="a")
    b = IdentityFactory(name="b", source=a.source)
    c = IdentityFactory(name="c", source=a.source)
    faces = {name: [FaceFactory(identity=identity) for _ in range(n)]
             for name, identity, n in (("a", a, 3), ("b", b, 2), ("c", c, 1))}
    return {"a": a, "b": b, "c": c}, faces


def _round(dataset, status=Round.Status.QUEUED, number=1, method="arcface", **fields) -> Round:
    return Round.objects.create(dataset=dataset, number=number, method=method, status=status, **fields)


# -- the training set -----------------------------------------------------------------------------

def test_training_set_takes_current_labels_of_active_faces(people):
    ids, faces = people
    face_remove(face_id=faces["a"][2].pk, actor="t")
    face_relabel(face_id=faces["b"][0].pk, identity_id=ids["a"].pk, actor="t")
    identity_merge(identity_id=ids["c"].pk, into_id=ids["b"].pk, actor="t")

    snapshot = round_faces_current(dataset_id=ids["a"].dataset_id)

    expected = [faces["a"][0], faces["a"][1], faces["b"][0], faces["b"][1], faces["c"][0]]
    assert snapshot.face_ids.tolist() == [f.pk for f in expected]
    assert snapshot.identity_ids.tolist() == [ids["a"].pk, ids["b"].pk]  # c merged away: two classes
    assert snapshot.labels.tolist() == [0, 0, 0, 1, 1]


def test_training_set_reads_a_folder_and_a_recordio_source(db, tmp_path):
    from ml.data.transforms import build_transform
    from ml.io.recordio import write_insightface

    for name, color in (("ann", (250, 0, 0)), ("bob", (0, 250, 0))):
        (tmp_path / "folder" / name).mkdir(parents=True)
        (tmp_path / "folder" / name / "1.jpg").write_bytes(jpeg_bytes(color=color))
    (tmp_path / "rec").mkdir()
    write_insightface(tmp_path / "rec" / "train.rec", [(jpeg_bytes(color=(0, 0, 250)), 0)] * 2)
    dataset_import(path=tmp_path / "folder", name="mixed", fmt="folder")
    dataset_import(path=tmp_path / "rec", name=None, into="mixed", source="rec", fmt="recordio")
    dataset = Dataset.objects.get(name="mixed")
    assert Source.objects.filter(dataset=dataset).count() == 2

    snapshot = round_faces_current(dataset_id=dataset.pk)
    data = round_face_dataset(snapshot, dataset_id=dataset.pk, transform=build_transform({"size": 16}))

    assert len(data) == 4 and data.num_classes == 3
    for index in range(len(data)):
        image, label, item_index = data[index]
        assert image.shape == (3, 16, 16) and item_index == index and label == snapshot.labels[index]
        face = Face.objects.get(pk=snapshot.face_ids[index])
        dominant = int(image.mean(dim=(1, 2)).argmax())  # the channel each test colour lit
        assert dominant == {"ann": 0, "bob": 1, "0": 2}[face.identity.name]


def test_method_picks_the_head_and_config_overrides_single_keys():
    assert round_train_config("arcface").head == "arcface"
    assert round_train_config("subcenter").head == "subcenter"
    assert round_train_config("robustface").head == "robustface"
    assert round_train_config("comining").method == "comining"
    config = round_train_config("arcface", {"epochs": 2, "data": {"transform": {"size": 32}}, "head_kwargs.s": 16.0})
    assert config.epochs == 2 and config.head_kwargs == {"s": 16.0}
    assert config.data.transform == {"crop": 150, "size": 32, "flip": True}  # crop and flip kept
    with pytest.raises(ValueError, match="epoch"):
        round_train_config("arcface", {"epoch": 2})


# -- starting, claiming, beating, cancelling -------------------------------------------------------

def test_start_numbers_rounds_refuses_a_second_active_one_and_enqueues_on_commit(
        people, monkeypatch, django_capture_on_commit_callbacks):
    dataset = people[0]["a"].dataset
    queued = []
    monkeypatch.setattr(queueing, "round_send", lambda round_id, countdown=None: queued.append(round_id))
    with django_capture_on_commit_callbacks(execute=True):
        first = round_start(dataset=dataset, method="arcface", config={"epochs": 1})
    assert (first.number, first.status, queued) == (1, "queued", [first.pk])
    with pytest.raises(RoundConflict):
        round_start(dataset=dataset, method="robustface")
    Round.objects.filter(pk=first.pk).update(status=Round.Status.PUBLISHED)
    with django_capture_on_commit_callbacks(execute=True):
        second = round_start(dataset=dataset, method="robustface")
    assert second.number == 2 and queued == [first.pk, second.pk]


@pytest.mark.parametrize("method, config", [
    ("arcface", {"epoch": 1}),
    ("arcface", {"stop_at_step": 3}),
    ("arcface", {"mining": {"no_such_threshold": 1}}),
    ("embeddings", {}),
    ("embeddings", {"embeddings": "/no/such/file.npy"}),
    ("kmeans", {}),
])
def test_start_refuses_a_bad_configuration_before_queueing(people, method, config):
    with pytest.raises(ValueError):
        round_start(dataset=people[0]["a"].dataset, method=method, config=config, enqueue=False)
    assert not Round.objects.exists()


def test_claim_takes_a_queued_round_once_and_a_stale_one_over(people):
    dataset = people[0]["a"].dataset
    round_ = _round(dataset)

    claimed = round_claim(round_id=round_.pk, worker="w1")
    assert (claimed.status, claimed.worker, claimed.progress["attempt"]) == ("training", "w1", 1)
    assert claimed.started_at is not None
    assert round_claim(round_id=round_.pk, worker="w2") is None  # a duplicate delivery: alive elsewhere

    Round.objects.filter(pk=round_.pk).update(status="extracting",
                                              heartbeat_at=timezone.now() - timedelta(seconds=600))
    taken = round_claim(round_id=round_.pk, worker="w2")
    assert (taken.status, taken.worker, taken.progress["attempt"]) == ("extracting", "w2", 2)
    assert taken.started_at == claimed.started_at
    assert round_heartbeat(round_id=round_.pk, worker="w1", progress={}) is False  # w1 must stop
    assert round_heartbeat(round_id=round_.pk, worker="w2", progress={"percent": 5}) is True


def test_claim_of_user_embeddings_starts_at_mining_and_finished_rounds_are_never_claimed(people):
    dataset = people[0]["a"].dataset
    assert round_claim(round_id=_round(dataset, method="embeddings").pk, worker="w").status == "mining"
    for number, status in enumerate(("published", "failed", "cancelled"), start=2):
        assert round_claim(round_id=_round(dataset, status=status, number=number).pk, worker="w") is None
    assert round_claim(round_id=10**9, worker="w") is None


def test_claim_gives_up_after_the_last_attempt(people, settings):
    settings.ROUND_MAX_ATTEMPTS = 2
    round_ = _round(people[0]["a"].dataset, status="training", worker="dead",
                    heartbeat_at=timezone.now() - timedelta(hours=1), progress={"attempt": 2})
    assert round_claim(round_id=round_.pk, worker="w") is None
    round_.refresh_from_db()
    assert round_.status == "failed" and "2 attempts" in round_.error


def test_cancel_queued_and_running_rounds_but_not_finished_ones(people, user):
    dataset = people[0]["a"].dataset
    queued = _round(dataset)
    assert round_cancel(round_id=queued.pk, user=user).status == "cancelled"
    assert round_claim(round_id=queued.pk, worker="w") is None

    running = _round(dataset, number=2)
    round_claim(round_id=running.pk, worker="w")
    cancelled = round_cancel(round_id=running.pk, user=user)
    assert cancelled.status == "cancelled" and cancelled.error == "cancelled by reviewer while training"
    assert round_heartbeat(round_id=running.pk, worker="w", progress={}) is False
    with pytest.raises(RoundConflict):
        round_cancel(round_id=running.pk, user=user)


# -- publishing -----------------------------------------------------------------------------------

def _mining_round(dataset, number=1) -> Round:
    round_ = _round(dataset, number=number)
    round_claim(round_id=round_.pk, worker="w")
    Round.objects.filter(pk=round_.pk).update(status="mining")
    return round_


def test_publish_maps_candidates_to_flags_exactly_once(people):
    ids, faces = people
    snapshot = round_faces_current(dataset_id=ids["a"].dataset_id)  # classes a, b, c = 0, 1, 2
    round_ = _mining_round(ids["a"].dataset)
    candidates = [
        Candidate("noisy", 2.5, index=0, label=0, suggestion="relabel", target_label=1,
                  evidence={"theta": np.float32(1.5), "nan": float("nan"), "rows": np.arange(2)}),
        Candidate("near_duplicate", 0.99, index=1, other_index=2, label=0, other_label=0, suggestion="remove"),
        Candidate("duplicate_identity", 0.7, index=None, label=1, other_label=2, suggestion="merge", target_label=1),
    ]
    publish = dict(round_id=round_.pk, candidates=candidates, index_to_face=snapshot.face_ids,
                   class_to_identity=snapshot.identity_ids)

    assert round_publish(worker="someone-else", **publish) is None
    assert round_publish(worker="w", **publish) == 3
    assert round_publish(worker="w", **publish) is None  # published once, never twice

    round_.refresh_from_db()
    assert (round_.status, round_.progress["flags"]) == ("published", 3) and round_.finished_at
    noisy = Flag.objects.get(round=round_, kind="noisy")
    assert (noisy.face_id, noisy.suggested_identity_id) == (faces["a"][0].pk, ids["b"].pk)
    assert noisy.evidence == {"theta": 1.5, "nan": None, "rows": [0, 1]}
    pair = Flag.objects.get(round=round_, kind="near_duplicate")
    assert (pair.face_id, pair.other_face_id) == (faces["a"][1].pk, faces["a"][2].pk)
    same_person = Flag.objects.get(round=round_, kind="duplicate_identity")
    assert (same_person.face_id, same_person.identity_a_id, same_person.identity_b_id) == (
        None, ids["b"].pk, ids["c"].pk)
    assert Flag.objects.count() == 3


def test_publish_drops_questions_the_reviewers_already_answered(people):
    ids, faces = people
    dataset = ids["a"].dataset
    x, y, z, v = faces["a"][0], faces["a"][1], faces["a"][2], faces["b"][0]
    face_relabel(face_id=v.pk, identity_id=ids["c"].pk, actor="t")  # before round 1 was published
    snapshot = round_faces_current(dataset_id=dataset.pk)
    index = {face_id: i for i, face_id in enumerate(snapshot.face_ids.tolist())}
    label = {identity_id: c for c, identity_id in enumerate(snapshot.identity_ids.tolist())}

    first = _mining_round(dataset)
    round_publish(round_id=first.pk, worker="w", index_to_face=snapshot.face_ids,
                  class_to_identity=snapshot.identity_ids, candidates=[
                      Candidate("noisy", 1, index=index[x.pk], suggestion="remove"),
                      Candidate("noisy", 1, index=index[y.pk], suggestion="relabel", target_label=label[ids["b"].pk]),
                      Candidate("low_norm", 1, index=index[z.pk], suggestion="remove"),
                      Candidate("noisy", 1, index=index[v.pk], suggestion="remove"),
                      Candidate("duplicate_identity", 1, index=None, label=label[ids["a"].pk],
                                other_label=label[ids["b"].pk], suggestion="merge"),
                  ])
    face_remove(face_id=x.pk, actor="t", flag=Flag.objects.get(round=first, face=x))  # answers x's flag
    face_relabel(face_id=z.pk, identity_id=ids["b"].pk, actor="t")  # z seen again, not via its flag
    Flag.objects.filter(round=first, kind="duplicate_identity").update(state=Flag.State.REJECTED)

    second = _mining_round(dataset, number=2)
    published = round_publish(round_id=second.pk, worker="w", index_to_face=snapshot.face_ids,
                              class_to_identity=snapshot.identity_ids, candidates=[
                                  # x was removed (answering its flag): no flag on it at all now
                                  Candidate("noisy", 1, index=index[x.pk], suggestion="remove"),
                                  Candidate("noisy", 1, index=index[x.pk], suggestion="keep"),
                                  Candidate("noisy", 1, index=index[y.pk], suggestion="relabel",
                                            target_label=label[ids["b"].pk]),  # still open: asked again
                                  Candidate("noisy", 1, index=index[y.pk], suggestion="relabel",
                                            target_label=label[ids["c"].pk]),
                                  Candidate("low_norm", 1, index=index[z.pk], suggestion="remove"),  # revisited
                                  Candidate("noisy", 1, index=index[z.pk], suggestion="remove"),  # other kind
                                  Candidate("noisy", 1, index=index[v.pk], suggestion="remove"),  # decided before
                                  Candidate("duplicate_identity", 1, index=None, label=label[ids["b"].pk],
                                            other_label=label[ids["a"].pk], suggestion="merge"),  # rejected
                              ])

    assert published == 4
    kept = {question_key(f) for f in Flag.objects.filter(round=second)}
    assert not any(key[3] == x.pk for key in kept if key[0] == "face")
    assert ("face", "low_norm", "remove", z.pk, None) not in kept
    assert ("face", "noisy", "remove", v.pk, None) in kept
    assert ("face", "noisy", "relabel", y.pk, ids["b"].pk) in kept
    assert not any(key[0] == "identities" for key in kept)
    second.refresh_from_db()
    assert second.progress["already_decided"] == 2 and second.summary["dropped"]["face_removed"] == 2


# -- whole rounds, in this process ----------------------------------------------------------------

@pytest.fixture
def att_copy(att_root, tmp_path):
    """Six AT&T subjects in a folder of their own, with two undecodable JPEGs and one file
    that will have vanished by training time."""
    root = tmp_path / "att"
    for subject in ("s1", "s2", "s3", "s4", "s5", "s6"):
        shutil.copytree(att_root / subject, root / subject)
    truncated = jpeg_bytes(size=(64, 64))[:200]
    (root / "s1" / "broken.jpg").write_bytes(truncated)
    (root / "s2" / "broken.jpg").write_bytes(truncated)
    return root


@pytest.mark.slow
def test_inline_round_with_unreadable_images_publishes(transactional_db, att_copy, settings, tmp_path):
    settings.RUNS_ROOT = tmp_path / "runs"
    dataset_import(path=att_copy, name="att", fmt="folder")
    (att_copy / "s3" / "1.pgm").unlink()
    round_ = round_start(dataset=Dataset.objects.get(name="att"), method="arcface", config=TINY, enqueue=False)
    seen = []

    assert round_pipeline.execute_round(round_id=round_.pk, worker="here", on_progress=seen.append) == "published"

    round_.refresh_from_db()
    assert round_.status == "published" and round_.error == ""
    assert round_.progress["faces"] == 62 and round_.progress["unreadable"] == 3
    assert round_.progress["flags"] == Flag.objects.filter(round=round_).count()
    # Six identities of 10 or 11 faces: a median of 10, about 5 of them learned by each fold model.
    assert round_.progress["crossfit"] == {"folds": 2, "median_faces_per_identity": 10.0,
                                           "median_faces_learned": 5.0}
    assert [s for s in ("training", "extracting", "mining") if any(p["stage"] == s for p in seen)] == [
        "training", "extracting", "mining"]
    unreadable = set(Face.objects.filter(path__in=["s1/broken.jpg", "s2/broken.jpg", "s3/1.pgm"])
                     .values_list("pk", flat=True))
    assert not Flag.objects.filter(round=round_, face__in=unreadable).exists()


def test_a_cancelled_queued_round_never_runs(transactional_db, people, settings, tmp_path):
    settings.RUNS_ROOT = tmp_path / "runs"
    round_ = round_start(dataset=people[0]["a"].dataset, method="arcface", enqueue=False)
    round_cancel(round_id=round_.pk)
    assert round_pipeline.execute_round(round_id=round_.pk, worker="here") == "not claimed"
    assert not (tmp_path / "runs").exists()


def test_a_failing_round_records_its_error(transactional_db, people, settings, tmp_path):
    settings.RUNS_ROOT = tmp_path / "runs"  # the faces' files do not exist: nothing is readable
    round_ = round_start(dataset=people[0]["a"].dataset, method="arcface", config=TINY, enqueue=False)
    assert round_pipeline.execute_round(round_id=round_.pk, worker="here") == "failed"
    round_.refresh_from_db()
    assert round_.status == "failed" and round_.error and round_.finished_at


def test_a_round_cannot_resume_past_training_without_its_run_folder(transactional_db, people, settings, tmp_path):
    settings.RUNS_ROOT = tmp_path / "runs"
    round_ = _round(people[0]["a"].dataset, status="extracting", worker="gone",
                    heartbeat_at=timezone.now() - timedelta(hours=1), progress={"attempt": 1})
    assert round_pipeline.execute_round(round_id=round_.pk, worker="here") == "failed"
    round_.refresh_from_db()
    assert round_.status == "failed" and "RUNS_ROOT" in round_.error


def test_recovery_requeues_unfinished_rounds_for_when_they_can_be_claimed(people, monkeypatch, settings):
    settings.ROUND_STALE_SECONDS = 100
    dataset, now = people[0]["a"].dataset, timezone.now()
    # One active round per dataset (a constraint), so the three unfinished ones need three.
    queued = _round(dataset, number=1)
    fresh = _round(DatasetFactory(), number=1, status="training", heartbeat_at=now - timedelta(seconds=30))
    stale = _round(DatasetFactory(), number=1, status="mining", heartbeat_at=now - timedelta(seconds=300))
    _round(dataset, number=4, status="published")
    calls = {}
    monkeypatch.setattr(queueing, "round_send",
                        lambda round_id, countdown=None: calls.update({round_id: countdown}))

    assert round_recovery.rounds_recover() == 3

    assert calls[queued.pk] is None and calls[stale.pk] is None
    assert 65 <= calls[fresh.pk] <= 72  # stale in about 70 s, and one more to be sure


# -- the command ----------------------------------------------------------------------------------

def test_command_runs_user_embeddings_inline(transactional_db, people, settings, tmp_path):
    settings.RUNS_ROOT = tmp_path / "runs"
    ids, faces = people
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    labels = [0, 0, 0, 1, 1, 2]
    rows = centres[labels] + 0.05 * rng.normal(size=(6, 16))
    rows[2] = centres[1]  # a face of a that looks like b
    path = tmp_path / "emb.npy"
    np.save(path, (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32))
    out = io.StringIO()

    call_command("run_round", dataset=ids["a"].dataset.name, method="embeddings", inline=True,
                 config=json.dumps({"embeddings": str(path)}), stdout=out)

    round_ = Round.objects.get()
    assert round_.status == "published" and "published" in out.getvalue() and "mining" in out.getvalue()
    assert Flag.objects.filter(round=round_).count() == round_.progress["flags"]


def test_command_refuses_bad_config_and_reports_a_failed_round(transactional_db, people, tmp_path, monkeypatch):
    name = people[0]["a"].dataset.name
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("run_round", dataset=name, method="arcface", config="{epochs: 1}")
    bad = tmp_path / "bad.json"
    bad.write_text('{"epochs": 0}')
    with pytest.raises(CommandError, match="at least 1"):
        call_command("run_round", dataset=name, method="arcface", config=str(bad))

    def worker_that_fails(round_id, countdown=None):
        Round.objects.filter(pk=round_id).update(status="failed", error="out of memory")

    monkeypatch.setattr(queueing, "round_send", worker_that_fails)
    with pytest.raises(CommandError, match="failed") as info:
        call_command("run_round", dataset=name, method="arcface", wait=True, stdout=io.StringIO())
    assert info.value.returncode == 1


def test_a_round_flags_an_image_copied_under_another_identity(transactional_db, settings, tmp_path):
    # Near duplicates come from the images' fingerprints, computed once into the run folder.
    settings.RUNS_ROOT = tmp_path / "runs"
    root = tmp_path / "copies"
    rng = np.random.default_rng(1)
    for name in ("ann", "bob"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            color = (40 * i, 90, 200 if name == "ann" else 20)
            (root / name / f"{i}.jpg").write_bytes(jpeg_bytes(size=(64, 64), color=color))
    (root / "ann" / "0.jpg").write_bytes(_textured_jpeg(rng))
    shutil.copyfile(root / "ann" / "0.jpg", root / "bob" / "copy.jpg")
    dataset_import(path=root, name="copies", fmt="folder")
    faces = list(Face.objects.order_by("pk").values_list("pk", "path"))
    emb = tmp_path / "emb.npy"
    np.save(emb, rng.normal(size=(len(faces), 16)).astype(np.float32))
    round_ = round_start(dataset=Dataset.objects.get(name="copies"), method="embeddings",
                         config={"embeddings": str(emb)}, enqueue=False)

    assert round_pipeline.execute_round(round_id=round_.pk, worker="here") == "published"

    flag = Flag.objects.get(round=round_, kind="near_duplicate")
    pair = {Face.objects.get(pk=flag.face_id).path, Face.objects.get(pk=flag.other_face_id).path}
    assert pair == {"ann/0.jpg", "bob/copy.jpg"}
    assert flag.evidence["exact"] and not flag.evidence["same_identity"]
    assert round_run_folder(round_.pk).fingerprints.is_file()


def _textured_jpeg(rng) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()
