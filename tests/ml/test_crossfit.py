"""Cross-fitted judging (ml.crossfit): fold assignment, training per fold, held-out mining."""
import json

import numpy as np
import pytest
import torch

from ml.crossfit import (FOLDS_FILE, FoldOutputs, assign_folds, embed_folds, fold_dir, fold_training_data,
                         load_or_assign_folds, mine_cross_fitted, train_folds)
from ml.data.dataset import FaceDataset
from ml.data.transforms import build_transform
from ml.mining import MiningConfig
from tests.ml.test_trainer import make_faces, tiny_config


def test_folds_are_stratified_by_identity_and_deterministic():
    labels = np.repeat(np.arange(5), [2, 3, 7, 10, 1])
    labels = np.concatenate([labels, [-1]])
    folds = assign_folds(labels, 2, seed=3)
    assert folds[-1] == -1
    for c in range(5):
        members = folds[labels == c]
        counts = np.bincount(members, minlength=2)
        assert counts.max() - counts.min() <= 1, (c, counts)
    assert np.array_equal(folds, assign_folds(labels, 2, seed=3))
    assert not np.array_equal(assign_folds(np.repeat(np.arange(50), 4), 2, seed=3),
                              assign_folds(np.repeat(np.arange(50), 4), 2, seed=4))


def test_one_fold_is_refused():
    with pytest.raises(ValueError, match="at least 2 folds"):
        assign_folds(np.zeros(4, dtype=int), 1, seed=0)


def test_a_saved_assignment_is_kept_on_resume(tmp_path):
    labels = np.repeat(np.arange(10), 4)
    first = load_or_assign_folds(tmp_path, labels, 2, seed=0)
    (tmp_path / FOLDS_FILE).unlink()
    np.save(tmp_path / FOLDS_FILE, 1 - first)  # a different, valid assignment saved earlier
    assert np.array_equal(load_or_assign_folds(tmp_path, labels, 2, seed=0), 1 - first)


def test_a_fold_model_trains_on_the_other_folds_only():
    class Items:
        labels = np.array([0, 0, 1, 1, 2, 2])
        sources = np.array([0, 0, 0, 1, 1, 1])

        def __len__(self):
            return 6

        def __getitem__(self, i):
            return ("image", int(self.labels[i]), i)

    folds = np.array([0, 1, 1, 0, 0, 1])
    data = fold_training_data(Items(), Items.labels, folds, 0, num_classes=3)
    assert data.indices.tolist() == [1, 2, 5]
    assert data.labels.tolist() == [0, 1, 2]
    assert data.num_classes == 3 and data.dataset_size == 6
    assert data.sources.tolist() == [0, 0, 1]  # several sources keep one head each per fold too
    assert [data.dataset[p][2] for p in range(3)] == [1, 2, 5]  # items keep their dataset index


def test_no_face_is_judged_by_the_model_that_trained_on_it(tmp_path):
    torch.set_num_threads(1)
    images = make_faces(tmp_path / "faces", identities=4, images=8)
    config = tiny_config(images, epochs=1)
    dataset = FaceDataset.from_folder(images, transform=build_transform(config.data.transform, train=False))
    labels = np.asarray(dataset.labels)
    run = tmp_path / "run"
    seen = []
    assignment = train_folds(config, dataset, labels, run, progress=lambda stage, fold, r: seen.append(fold))
    assert sorted(set(seen)) == [0, 1]
    outputs = embed_folds(config, dataset, run, assignment)
    for fold, out in enumerate(outputs):
        # The faces a model judges are exactly those it never trained on.
        trained = json.loads((fold_dir(run, fold) / "metrics.json").read_text())["images"]
        assert trained == int((assignment != fold).sum())
        assert np.array_equal(out.judged, assignment == fold)
        assert out.embeddings.shape[0] == len(labels)
    # Every face is judged once: a per-face flag's face was held out from the model that raised it.
    config_all = MiningConfig(low_norm_threshold=1e9, kinds=("low_norm",))  # a bound that takes every face
    flags = mine_cross_fitted(outputs, labels, config=config_all)
    faces = [f.index for f in flags]
    assert len(faces) == len(set(faces)) == len(labels)
    for flag in flags:
        fold = int(flag.evidence.judged_by.split()[1])
        assert assignment[flag.index] == fold


def test_each_fold_space_holds_and_flags_its_held_out_faces_alone():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:4] * 3
    labels = np.repeat(np.arange(4), 20)
    embeddings = (centres[labels] + rng.normal(0, 0.4, (80, 8))).astype(np.float32)
    wrong = np.array([2, 3, 46, 47])
    labels_noisy = labels.copy()
    labels_noisy[wrong] = (labels[wrong] + 1) % 4
    assignment = np.arange(80) % 2
    outputs = [FoldOutputs(f, embeddings, np.linalg.norm(embeddings, axis=1), np.ones(80, dtype=bool),
                           assignment == f) for f in (0, 1)]
    flags = mine_cross_fitted(outputs, labels_noisy, config=MiningConfig(kinds=("noisy", "hard", "low_norm")))
    for flag in flags:
        assert assignment[flag.index] == int(flag.evidence.judged_by.split()[1])
    noisy = {f.index for f in flags if f.kind == "noisy"}
    assert set(wrong.tolist()) <= noisy  # the wrongly labelled faces of both folds, each by its own fold
