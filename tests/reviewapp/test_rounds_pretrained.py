"""The pretrained method, embeddings brought by path, and the default method per host."""
import functools
import json
import shutil
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from reviewapp.services import round_pipeline
from reviewapp.models import Dataset, Face, Flag, Round
from reviewapp.services import round_data
from reviewapp.services.imports import dataset_import
from reviewapp.services.round_data import (
    default_round_method,
    host_has_cuda,
    round_model_note,
    round_train_config,
)
from reviewapp.services.rounds import first_stage, round_start

SUBJECTS = ("s1", "s2", "s3", "s4")


# -- the default per host -------------------------------------------------------------------------

@pytest.fixture
def fake_host(monkeypatch):
    """set(cuda): this host has a CUDA GPU or not, as torch and the driver would say."""
    import torch

    def set_cuda(cuda: bool) -> None:
        monkeypatch.setattr(round_data, "_nvidia_driver_loaded", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        host_has_cuda.cache_clear()

    yield set_cuda
    host_has_cuda.cache_clear()


def test_default_method_is_pretrained_without_a_gpu_and_training_with_one(fake_host):
    fake_host(False)
    assert host_has_cuda() is False and default_round_method() == "pretrained"
    fake_host(True)
    assert host_has_cuda() is True and default_round_method() == round_data.DEFAULT_GPU_METHOD
    assert round_data.DEFAULT_GPU_METHOD in round_data.METHOD_CONFIGS  # a training method


def test_a_driver_without_cuda_torch_is_no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(round_data, "_nvidia_driver_loaded", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    host_has_cuda.cache_clear()
    try:
        assert host_has_cuda() is False
    finally:
        host_has_cuda.cache_clear()


@pytest.mark.parametrize("method", ["arcface", "subcenter", "robustface", "comining"])
def test_a_cuda_host_trains_the_gpu_preset_unless_the_config_says_otherwise(method):
    from ml.heads.factory import build_head

    gpu = round_train_config(method, {}, cuda=True)
    assert (gpu.backbone, gpu.amp, gpu.channels_last) == ("iresnet50", True, True)
    assert gpu.data.transform["size"] == 112 and gpu.data.transform["crop"] == 150
    assert gpu.method == ("comining" if method == "comining" else "single")
    build_head(gpu.head, 512, 10, **gpu.head_kwargs)  # the head takes the preset's keywords
    assert round_train_config(method, {}, cuda=False).backbone == "cpu_small"
    assert round_train_config(method, {"preset": "cpu"}, cuda=True).backbone == "cpu_small"
    assert round_train_config(method, {"device": "cpu"}, cuda=True).backbone == "cpu_small"
    assert round_train_config(method, {"preset": "gpu"}, cuda=False).backbone == "iresnet50"
    assert round_train_config(method, {"epochs": 3}, cuda=True).epochs == 3


def test_a_bad_preset_is_refused_at_start(db):
    from tests.factories import DatasetFactory

    with pytest.raises(ValueError, match="preset"):
        round_start(dataset=DatasetFactory(), method="arcface", config={"preset": "tpu"}, enqueue=False)


def test_the_note_says_which_model_judged_and_why():
    note = round_model_note("pretrained", {}, cuda=False)
    assert "dlib" in note["model"] and "no GPU" in note["why"]
    assert "no GPU" not in round_model_note("pretrained", {}, cuda=True)["why"]
    gpu = round_model_note("robustface", {}, cuda=True)
    assert "iresnet50" in gpu["model"] and "112x112" in gpu["model"] and "CUDA" in gpu["why"]
    assert "cpu_small" in round_model_note("arcface", {}, cuda=False)["model"]
    assert "CPU preset" in round_model_note("arcface", {"preset": "cpu"}, cuda=True)["why"]
    assert "emb.npz" in round_model_note("embeddings", {"embeddings": "/x/emb.npz"}, cuda=False)["model"]


def test_the_dataset_page_preselects_the_host_default(client, staff, fake_host):
    from tests.factories import DatasetFactory

    dataset = DatasetFactory()
    client.force_login(staff)
    for cuda, expected in ((False, "pretrained"), (True, round_data.DEFAULT_GPU_METHOD)):
        fake_host(cuda)
        page = client.get(f"/datasets/{dataset.pk}/").content.decode()
        assert f'<option value="{expected}" selected>' in page


# -- embeddings named by path ---------------------------------------------------------------------

@pytest.fixture
def folder_dataset(db, tmp_path):
    """Folder source a/ (3 faces), b/ (3 faces); files need not decode for the embeddings method."""
    from tests.factories import jpeg_bytes

    root = tmp_path / "faces"
    for name, count in (("a", 3), ("b", 3)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            (root / name / f"{i}.jpg").write_bytes(jpeg_bytes(color=(40 * i, 80, 120)))
    dataset_import(path=root, name="byo", fmt="folder")
    return Dataset.objects.get(name="byo"), root


def _rows(paths):
    """Unit rows: a/* near one centre, b/* near another, b/2 looking like a."""
    rng = np.random.default_rng(0)
    centres = {"a": rng.normal(size=16), "b": rng.normal(size=16)}
    rows = []
    for path in paths:
        person = "a" if path.endswith("b/2.jpg") else path.split("/")[-2]
        centre = centres.setdefault(person, np.random.default_rng(len(centres)).normal(size=16))
        rows.append(centre + 0.05 * rng.normal(size=16))
    rows = np.array(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _run(dataset, config, settings, tmp_path) -> Round:
    settings.RUNS_ROOT = tmp_path / "runs"
    round_ = round_start(dataset=dataset, method="embeddings", config=config, enqueue=False)
    assert round_pipeline.execute_round(round_id=round_.pk, worker="here") == "published"
    round_.refresh_from_db()
    return round_


def test_npz_rows_in_any_order_are_matched_by_path_missing_faces_left_unjudged(
        transactional_db, folder_dataset, settings, tmp_path):
    dataset, root = folder_dataset
    # Shuffled; one face (a/1.jpg) absent; one absolute path; two rows naming no face.
    paths = ["b/2.jpg", str(root / "a" / "0.jpg"), "b/0.jpg", "elsewhere/x.jpg", "a/2.jpg", "b/1.jpg",
             "c/9.jpg"]
    np.savez(tmp_path / "emb.npz", paths=np.array(paths), embeddings=_rows(paths))

    round_ = _run(dataset, {"embeddings": str(tmp_path / "emb.npz")}, settings, tmp_path)

    report = round_.progress["embeddings_file"]
    assert report["matched"] == 5 and report["missing"] == 1 and report["missing_examples"] == ["a/1.jpg"]
    assert report["extra"] == 2 and sorted(report["extra_examples"]) == ["c/9.jpg", "elsewhere/x.jpg"]
    assert round_.progress["unreadable"] == 1
    missing = Face.objects.get(path="a/1.jpg")
    assert not Flag.objects.filter(round=round_, face=missing).exists()
    assert not Flag.objects.filter(round=round_, other_face=missing).exists()
    # The matched rows are in face order in the run folder, where the identity search reads them.
    from reviewapp.runs import round_search_embeddings

    matched = np.load(round_search_embeddings(round_))
    order = list(Face.objects.filter(dataset=dataset).order_by("pk").values_list("path", flat=True))
    expected = _rows(paths)[[paths.index(p) if p in paths else paths.index(str(root / p)) for p in order
                             if p != "a/1.jpg"]]
    np.testing.assert_allclose(np.delete(matched, order.index("a/1.jpg"), axis=0), expected, rtol=1e-6)


def test_npy_with_a_paths_file_and_norms(transactional_db, folder_dataset, settings, tmp_path):
    dataset, _ = folder_dataset
    paths = ["b/1.jpg", "a/0.jpg", "a/1.jpg", "a/2.jpg", "b/0.jpg", "b/2.jpg"]
    np.save(tmp_path / "emb.npy", _rows(paths))
    np.save(tmp_path / "norms.npy", np.arange(1, 7, dtype=np.float32))
    (tmp_path / "paths.txt").write_text("\n".join(paths) + "\n")

    round_ = _run(dataset, {"embeddings": str(tmp_path / "emb.npy"), "paths": str(tmp_path / "paths.txt"),
                            "norms": str(tmp_path / "norms.npy")}, settings, tmp_path)

    assert round_.progress["embeddings_file"]["missing"] == 0 and round_.progress["embeddings_file"]["extra"] == 0
    norms = np.load(settings.RUNS_ROOT / f"round-{round_.pk}" / "embeddings" / "norms.npy")
    order = list(Face.objects.filter(dataset=dataset).order_by("pk").values_list("path", flat=True))
    assert norms.tolist() == [float(paths.index(p) + 1) for p in order]


def test_a_file_naming_no_face_fails_the_round_saying_why(transactional_db, folder_dataset, settings, tmp_path):
    dataset, _ = folder_dataset
    paths = ["x/1.jpg", "x/2.jpg"]
    np.savez(tmp_path / "emb.npz", paths=np.array(paths), embeddings=_rows(["a/0.jpg", "a/1.jpg"]))
    settings.RUNS_ROOT = tmp_path / "runs"
    round_ = round_start(dataset=dataset, method="embeddings", config={"embeddings": str(tmp_path / "emb.npz")},
                         enqueue=False)
    assert round_pipeline.execute_round(round_id=round_.pk, worker="here") == "failed"
    round_.refresh_from_db()
    assert "no row of the embeddings file names a face" in round_.error


@pytest.mark.parametrize("arrays, paths_file, message", [
    ({"embeddings": np.zeros((2, 4))}, False, "paths"),
    ({"paths": np.array(["a", "b"]), "embeddings": np.zeros((2, 4))}, True, "either an .npz"),
])
def test_a_malformed_embeddings_file_is_refused_at_start(db, tmp_path, arrays, paths_file, message):
    from tests.factories import DatasetFactory

    np.savez(tmp_path / "emb.npz", **arrays)
    (tmp_path / "p.txt").write_text("a\nb\n")
    config = {"embeddings": str(tmp_path / "emb.npz")} | ({"paths": str(tmp_path / "p.txt")} if paths_file else {})
    with pytest.raises(ValueError, match=message):
        round_start(dataset=DatasetFactory(), method="embeddings", config=config, enqueue=False)


def test_the_paths_file_is_confined_to_the_data_root_from_the_browser(db, tmp_path):
    from tests.factories import DatasetFactory

    np.save(tmp_path / "emb.npy", np.zeros((2, 4), dtype=np.float32))
    (tmp_path / "p.txt").write_text("a\nb\n")
    inside = tmp_path / "root"
    inside.mkdir()
    with pytest.raises(ValueError, match="paths"):
        round_start(dataset=DatasetFactory(), method="embeddings", enqueue=False, data_root=inside,
                    config={"embeddings": str(tmp_path / "emb.npy"), "paths": str(tmp_path / "p.txt")})


# -- a pretrained round ---------------------------------------------------------------------------

@pytest.fixture
def att_small(att_root, tmp_path):
    root = tmp_path / "att"
    for subject in SUBJECTS:
        shutil.copytree(att_root / subject, root / subject)
    return root


def test_pretrained_starts_at_extracting_and_takes_only_mining_settings(db):
    from tests.factories import DatasetFactory

    assert first_stage("pretrained") == "extracting"
    with pytest.raises(ValueError, match="only mining"):
        round_start(dataset=DatasetFactory(), method="pretrained", config={"epochs": 3}, enqueue=False)


@pytest.mark.slow
def test_a_pretrained_round_extracts_resumes_after_a_killed_worker_and_publishes(
        transactional_db, att_small, settings, tmp_path, monkeypatch):
    import ml.pretrained

    settings.RUNS_ROOT = tmp_path / "runs"
    # Small batches, so that a worker dies after a saved batch and before the end.
    monkeypatch.setattr(ml.pretrained, "extract_pretrained",
                        functools.partial(ml.pretrained.extract_pretrained, batch_size=8))
    dataset_import(path=att_small, name="att", fmt="folder")
    round_ = round_start(dataset=Dataset.objects.get(name="att"), method="pretrained", enqueue=False)

    class Killed(BaseException):
        pass

    def die_after_two_batches(progress):
        if progress.get("stage") == "extracting" and (progress.get("step") or 0) >= 16:
            raise Killed

    with pytest.raises(Killed):
        round_pipeline.execute_round(round_id=round_.pk, worker="first", on_progress=die_after_two_batches)
    round_.refresh_from_db()
    assert round_.status == "extracting"
    Round.objects.filter(pk=round_.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    steps = []
    outcome = round_pipeline.execute_round(round_id=round_.pk, worker="second",
                                         on_progress=lambda p: steps.append(p.get("step")))

    assert outcome == "published"
    round_.refresh_from_db()
    assert round_.status == "published" and round_.progress["attempt"] == 2
    done = [s for s in steps if s]
    # The second worker went on from the two saved batches (16 is the first's last report).
    assert 8 not in done and [s for s in done if s != 16][0] == 24 and done[-1] == 40
    assert round_.progress["faces"] == 40 and round_.progress["unreadable"] == 0
    assert "dlib" in round_.progress["judged_by"]["model"]
    boxes = round_.progress["face_boxes"]
    assert boxes["detected"] + boxes["whole_image"] == 40
    embeddings = np.load(settings.RUNS_ROOT / f"round-{round_.pk}" / "embeddings" / "embeddings.npy")
    assert embeddings.shape == (40, 128) and np.isfinite(embeddings).all()
    assert Flag.objects.filter(round=round_).count() == round_.progress["flags"]
    page_note = json.dumps(round_.progress["judged_by"])
    assert "no GPU" in page_note or "CUDA" not in page_note


def test_the_round_page_says_which_model_judged_and_what_the_file_missed(client, staff):
    from tests.factories import DatasetFactory

    round_ = Round.objects.create(
        dataset=DatasetFactory(), number=1, method="pretrained", status="published",
        progress={"judged_by": round_model_note("pretrained", {}, cuda=False),
                  "face_boxes": {"detected": 7, "whole_image": 2},
                  "embeddings_file": {"matched": 5, "missing": 1, "missing_examples": ["a/1.jpg"],
                                      "extra": 2, "extra_examples": ["c/9.jpg"], "repeated": 0}})
    client.force_login(staff)
    page = client.get(f"/rounds/{round_.pk}/").content.decode()
    assert "Judged by <strong>dlib ResNet face descriptor (pretrained, 128-d)</strong>: this host has no GPU" in page
    assert "detector: 7" in page and "whole image taken as the face (aligned crops, or no face found): 2" in page
    assert "1 faces have no row and were left unjudged" in page and "a/1.jpg" in page and "c/9.jpg" in page
