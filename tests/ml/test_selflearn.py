"""Deep Self-Learning: density, separation and prototypes on a hand-made similarity matrix,
label correction of a planted mislabel, the loss, and a short run."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ml.train.selflearn import (
    corrected_labels,
    density,
    density_threshold,
    find_prototypes,
    read_prototypes,
    select_prototypes,
    self_learning_loss,
    separation,
)
from ml.train.trainer import train
from tests.ml.test_trainer import make_faces, one_thread, tiny_config  # noqa: F401 (autouse fixture)

# Faces 0-2 a tight group, 3 loosely attached, 4 an outlier.
S = torch.tensor([
    [1.0, 0.9, 0.9, 0.5, 0.1],
    [0.9, 1.0, 0.8, 0.4, 0.1],
    [0.9, 0.8, 1.0, 0.3, 0.2],
    [0.5, 0.4, 0.3, 1.0, 0.0],
    [0.1, 0.1, 0.2, 0.0, 1.0],
])


def test_density_threshold_is_the_top_40_percent_value():
    # 20 off-diagonal values, descending: .9 x4, .8 x2, .5 x2, ... -> the 8th is 0.5.
    assert density_threshold(S, 0.4).item() == pytest.approx(0.5)


def test_density_counts_neighbours_above_and_below_the_threshold():
    assert density(S, 0.4).tolist() == [1, 0, 0, -3, -4]


def test_separation_is_the_similarity_to_the_nearest_denser_face():
    rho = density(S, 0.4)
    # 0 is the densest: its smallest similarity; the others: their largest to a denser face.
    assert separation(S, rho).tolist() == pytest.approx([0.1, 0.9, 0.9, 0.5, 0.2])


def test_prototypes_are_the_densest_faces_below_eta_max():
    assert select_prototypes(S, p=3, eta_max=0.95).tolist() == [0, 1, 2]
    # Faces 1 and 2 are too close to the denser face 0 (η = 0.9) once eta_max is 0.85.
    assert select_prototypes(S, p=3, eta_max=0.85).tolist() == [0, 3, 4]
    assert select_prototypes(S, p=1).tolist() == [0]


def test_a_lone_face_is_its_own_prototype():
    assert select_prototypes(torch.ones(1, 1), p=3).tolist() == [0]


def _clustered_features(seed=0, per_class=10, classes=3, dim=8):
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=generator), dim=1) * 4
    labels = np.repeat(np.arange(classes), per_class)
    features = centres[torch.from_numpy(labels)] + 0.5 * torch.randn(len(labels), dim, generator=generator)
    return features, labels


def test_corrected_labels_fix_a_planted_mislabel():
    features, true_labels = _clustered_features()
    given = true_labels.copy()
    given[3] = 1  # a face of identity 0 filed under identity 1
    indices = np.arange(100, 100 + len(given))  # dataset indices differ from row numbers
    prototypes = find_prototypes(features, given, indices, 3, samples_per_identity=64, p=2)
    y_hat = corrected_labels(features, prototypes)
    assert y_hat[3].item() == 0
    assert np.array_equal(y_hat.numpy(), true_labels)
    # The mislabelled face, an outlier of identity 1, is no prototype of it.
    assert 103 not in prototypes.as_dict()[1]
    for c, members in prototypes.as_dict().items():
        assert len(members) == 2 and all(given[i - 100] == c for i in members)


def test_identities_are_subsampled_to_m_faces():
    features, labels = _clustered_features(per_class=20)
    rng = np.random.default_rng(0)
    prototypes = find_prototypes(features, labels, np.arange(60), 3, samples_per_identity=5, p=3, rng=rng)
    assert prototypes.members.shape == (3, 3)
    again = find_prototypes(features, labels, np.arange(60), 3, samples_per_identity=5, p=3,
                            rng=np.random.default_rng(0))
    assert torch.equal(prototypes.members, again.members)


def test_identity_without_faces_is_never_predicted():
    features, labels = _clustered_features()
    prototypes = find_prototypes(features, labels, np.arange(30), 4)  # class 3 has no faces
    assert prototypes.members[3].tolist() == [-1, -1, -1]
    assert (corrected_labels(features, prototypes) != 3).all()


def test_self_learning_loss_mixes_the_two_cross_entropies():
    logits_y, logits_hat = torch.randn(4, 5), torch.randn(4, 5)
    y, y_hat = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 4, 2, 1])
    ce_y = F.cross_entropy(logits_y, y, reduction="none")
    ce_hat = F.cross_entropy(logits_hat, y_hat, reduction="none")
    assert torch.allclose(self_learning_loss(logits_y, logits_hat, y, y_hat, 0.0), ce_y)
    assert torch.allclose(self_learning_loss(logits_y, logits_hat, y, y_hat, 0.5), 0.5 * ce_y + 0.5 * ce_hat)


def test_self_learning_run_writes_prototypes(tmp_path):
    faces = make_faces(tmp_path / "faces")
    seen = []
    config = tiny_config(faces, selflearn={"enabled": True, "start_epoch": 1, "prototypes": 2})
    result = train(config, tmp_path / "run", progress=seen.append)
    assert [r["stage"] for r in seen].count("selflearn") >= 1
    # The first phase (epoch 1) trains on the given labels only.
    assert seen.index(next(r for r in seen if r["stage"] == "selflearn")) == 3
    payload = json.loads((tmp_path / "run" / "prototypes.json").read_text())
    assert read_prototypes(tmp_path / "run") == {int(c): m for c, m in payload["prototypes"].items()}
    assert payload["epoch"] == 2 and payload["class_names"] == [f"person_{i:03d}" for i in range(4)]
    stats = np.load(result.stats_path)
    for c, members in payload["prototypes"].items():
        assert 1 <= len(members) <= 2 and all(stats["label"][i] == int(c) for i in members)
    assert ((stats["corrected_label"] >= 0) & (stats["corrected_label"] < 4)).all()
