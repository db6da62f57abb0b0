"""Verification and noise-detection metrics against hand-computed answers."""
import math

import numpy as np
import pytest

from ml.evaluate import (
    average_ranks,
    best_accuracy_threshold,
    load_eval_pairs,
    noise_detection,
    relabel_accuracy,
    roc_auc,
    tar_at_far,
    verification,
)


def _pairs_with_cosines(cosines):
    """Unit 2-d vectors a, b with cos(a_i, b_i) = cosines[i] exactly (up to float rounding)."""
    angles = np.arccos(np.asarray(cosines, dtype=np.float64))
    a = np.tile([1.0, 0.0], (len(angles), 1))
    b = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return a, b


# -- ranks and AUC -----------------------------------------------------------------------------

def test_average_ranks_share_ties():
    assert average_ranks([30, 10, 20, 20]).tolist() == [4.0, 1.0, 2.5, 2.5]


def test_auc_by_hand_with_a_tie():
    # positives 0.9, 0.8; negatives 0.8, 0.3: pairs won 1 + 1 + 0.5 (tie) + 1 = 3.5 of 4
    assert roc_auc([0.9, 0.8, 0.8, 0.3], [1, 0, 1, 0]) == pytest.approx(0.875)
    assert roc_auc([0.1, 0.2, 0.3], [0, 0, 1]) == 1.0
    assert roc_auc([0.1, 0.2, 0.3], [1, 0, 0]) == 0.0
    assert roc_auc([0.5] * 4, [1, 0, 1, 0]) == 0.5
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))


# -- verification ------------------------------------------------------------------------------

def test_perfectly_separable_pairs():
    rng = np.random.default_rng(0)
    same = np.arange(200) % 2 == 0
    cosines = np.where(same, rng.uniform(0.6, 0.9, 200), rng.uniform(-0.2, 0.3, 200))
    a, b = _pairs_with_cosines(cosines)
    result = verification(a, b, same, folds=np.arange(200) % 10)
    assert result["accuracy"] == 1.0 and result["accuracy_std"] == 0.0
    assert result["auc"] == 1.0
    assert result["tar_at_far_1e-2"]["tar"] == 1.0 and result["tar_at_far_1e-3"]["tar"] == 1.0
    assert all(0.3 < t < 0.6 for t in result["fold_thresholds"])
    assert result["pairs"] == 200 and result["same_pairs"] == 100


def test_threshold_comes_from_the_other_folds():
    # fold 0: same 0.9, 0.66; different 0.4, 0.1  -> its own best cut (0.53) would score 1.0
    # fold 1: same 0.8, 0.7;  different 0.6, 0.2  -> its own best cut (0.65) would score 1.0
    cosines = [0.9, 0.66, 0.4, 0.1, 0.8, 0.7, 0.6, 0.2]
    same = [1, 1, 0, 0, 1, 1, 0, 0]
    folds = [0, 0, 0, 0, 1, 1, 1, 1]
    a, b = _pairs_with_cosines(cosines)
    result = verification(a, b, same, folds)
    # fold 0 judged at fold 1's 0.65: 0.66 is still "same" -> 4/4
    # fold 1 judged at fold 0's 0.53: 0.6 is called "same" -> 3/4
    assert result["fold_thresholds"] == pytest.approx([0.65, 0.53])
    assert result["fold_accuracies"] == pytest.approx([1.0, 0.75])
    assert result["accuracy"] == pytest.approx(0.875)
    assert result["accuracy_std"] == pytest.approx(0.125)


def test_best_threshold_does_not_split_ties():
    threshold, accuracy = best_accuracy_threshold([0.5, 0.5, 0.2], [1, 0, 0])
    assert accuracy == pytest.approx(2 / 3)
    assert threshold == pytest.approx(0.5)  # nothing above: the tied pair cannot be cut


def test_tar_at_far_by_hand():
    impostor = np.arange(100) / 100  # 0.00 .. 0.99
    genuine = np.array([0.995, 0.985, 0.5])
    scores = np.r_[impostor, genuine]
    same = np.r_[np.zeros(100, bool), np.ones(3, bool)]
    at_1e2 = tar_at_far(scores, same, 1e-2)  # one impostor may pass: threshold 0.98
    assert at_1e2["threshold"] == pytest.approx(0.98)
    assert at_1e2["far"] == pytest.approx(0.01) and at_1e2["tar"] == pytest.approx(2 / 3)
    at_1e3 = tar_at_far(scores, same, 1e-3)  # none may pass: threshold 0.99
    assert at_1e3["threshold"] == pytest.approx(0.99)
    assert at_1e3["far"] == 0.0 and at_1e3["tar"] == pytest.approx(1 / 3)


def test_eval_pairs_loader_on_the_real_file(lfw_root):
    pairs = load_eval_pairs(lfw_root / "splits" / "eval_pairs.tsv")
    assert len(pairs.same) == 5274 and int(pairs.same.sum()) == 2404
    assert sorted(set(pairs.folds.tolist())) == list(range(10))
    assert len(set(pairs.paths)) == len(pairs.paths)
    assert max(pairs.index_a.max(), pairs.index_b.max()) == len(pairs.paths) - 1
    first = pairs.paths[pairs.index_a[0]], pairs.paths[pairs.index_b[0]]
    assert first == ("Abel_Pacheco/Abel_Pacheco_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0004.jpg")
    images = lfw_root / "images_deepfunneled"
    assert all((images / p).is_file() for p in pairs.paths)
    # same pairs share the identity folder, different pairs do not
    folders = np.array([p.split("/")[0] for p in pairs.paths])
    assert np.array_equal(folders[pairs.index_a] == folders[pairs.index_b], pairs.same)
    # one embedding per identity folder gives perfect verification
    identity = {name: i for i, name in enumerate(sorted(set(folders)))}
    embeddings = np.eye(len(identity))[[identity[f] for f in folders]]
    assert pairs.evaluate(embeddings)["accuracy"] == 1.0


def test_eval_pairs_loader_rejects_another_header(tmp_path):
    (tmp_path / "pairs.tsv").write_text("a\tb\tc\n")
    with pytest.raises(ValueError, match="header"):
        load_eval_pairs(tmp_path / "pairs.tsv")


# -- noise detection ---------------------------------------------------------------------------

def test_noise_detection_by_hand():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    noisy = [1, 0, 1, 1, 0, 0]
    result = noise_detection(scores, noisy)
    # F1 of flagging the top k: 2/4, 2/5, 4/6, 6/7, 6/8, 6/9 -> best at k=4, threshold 0.6
    assert result["best"]["threshold"] == 0.6
    assert result["precision"] == 0.75 and result["recall"] == 1.0
    assert result["f1"] == pytest.approx(6 / 7)
    assert result["at_threshold"] is None
    # positives 0.9, 0.7, 0.6 beat 3 + 2 + 2 of the 9 (positive, negative) pairs
    assert result["auc"] == pytest.approx(7 / 9)
    given = noise_detection(scores, noisy, threshold=0.75)  # flags 0.9 and 0.8
    assert given["threshold"] == 0.75
    assert given["precision"] == 0.5 and given["recall"] == pytest.approx(1 / 3)
    assert given["f1"] == pytest.approx(0.4)
    assert given["best"]["f1"] == pytest.approx(6 / 7)


def test_best_f1_keeps_tied_scores_together():
    result = noise_detection([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    assert result["threshold"] == 0.5 and result["flagged"] == 3
    assert result["precision"] == pytest.approx(2 / 3) and result["recall"] == 1.0
    assert result["f1"] == pytest.approx(0.8)


def test_noise_detection_without_noisy_samples_flags_nothing():
    result = noise_detection([0.3, 0.2], [0, 0])
    assert result["flagged"] == 0 and result["f1"] == 0.0 and math.isinf(result["threshold"])
    assert math.isnan(result["auc"])


def test_relabel_accuracy():
    assert relabel_accuracy([1, 2, 3, 4], [1, 0, 3, 9], [True, True, False, True]) == pytest.approx(1 / 3)
    assert relabel_accuracy([1, 2], [1, 2]) == 1.0
    assert math.isnan(relabel_accuracy([1], [1], [False]))
