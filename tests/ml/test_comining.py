"""Co-Mining's sample selection on hand-made losses, its r schedule, and a short run."""
import numpy as np
import pytest
import torch

from ml.train.comining import CLEAN_BOTH, DISAGREE, NOISY_BOTH, comining_losses, drop_rate, noisy_mask, select
from ml.train.trainer import train
from tests.ml.test_trainer import make_faces, one_thread, tiny_config  # noqa: F401 (autouse fixture)

# Ten samples; each network's two largest losses (r = 0.2) are its noisy set:
#   A: samples 0 and 1;  B: samples 0 and 2.
LOSSES_A = torch.tensor([9.0, 8.0, 1.0, 1.5, 0.5, 0.2, 0.3, 0.4, 0.6, 0.7])
LOSSES_B = torch.tensor([7.0, 0.1, 6.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])


def test_drop_rate_ramps_linearly_then_holds():
    assert drop_rate(0, 0.2, 4) == 0.0
    assert drop_rate(1, 0.2, 4) == pytest.approx(0.05)
    assert drop_rate(2, 0.2, 4) == pytest.approx(0.1)
    assert drop_rate(4, 0.2, 4) == pytest.approx(0.2)
    assert drop_rate(40, 0.2, 4) == pytest.approx(0.2)
    assert drop_rate(0, 0.2, 0) == 0.2  # no ramp


def test_noisy_mask_takes_the_largest_losses():
    assert noisy_mask(LOSSES_A, 0.2).nonzero().flatten().tolist() == [0, 1]
    assert noisy_mask(LOSSES_A, 0.0).sum() == 0
    assert noisy_mask(LOSSES_A, 0.35).nonzero().flatten().tolist() == [0, 1, 3]  # floor(3.5) = 3
    # Ties go to the earlier position.
    assert noisy_mask(torch.tensor([1.0, 2.0, 2.0, 2.0]), 0.5).nonzero().flatten().tolist() == [1, 2]


def test_selection_routes_each_sample():
    chosen = select(LOSSES_A, LOSSES_B, r=0.2, clean_weight=2.0)
    # 0: noisy for both -> dropped. 1: A doubts, B trusts -> only A learns it.
    # 2: B doubts, A trusts -> only B learns it. The rest: clean for both -> weight 2.
    assert chosen.weights_a.tolist() == [0, 1, 0, 2, 2, 2, 2, 2, 2, 2]
    assert chosen.weights_b.tolist() == [0, 0, 1, 2, 2, 2, 2, 2, 2, 2]
    assert chosen.agreement.tolist() == [NOISY_BOTH, DISAGREE, DISAGREE] + [CLEAN_BOTH] * 7


def test_losses_are_weighted_means():
    loss_a, loss_b, chosen = comining_losses(LOSSES_A, LOSSES_B, r=0.2, clean_weight=3.0)
    expected_a = (8.0 + 3.0 * LOSSES_A[3:].sum()) / (1 + 3.0 * 7)
    expected_b = (6.0 + 3.0 * LOSSES_B[3:].sum()) / (1 + 3.0 * 7)
    assert loss_a.item() == pytest.approx(expected_a.item())
    assert loss_b.item() == pytest.approx(expected_b.item())
    # With r = 0 every sample is clean for both and the loss is the plain mean.
    plain_a, _, _ = comining_losses(LOSSES_A, LOSSES_B, r=0.0, clean_weight=2.0)
    assert plain_a.item() == pytest.approx(LOSSES_A.mean().item())


def test_dropped_samples_get_no_gradient():
    losses_a = LOSSES_A.clone().requires_grad_()
    losses_b = LOSSES_B.clone().requires_grad_()
    loss_a, loss_b, _ = comining_losses(losses_a, losses_b, r=0.2, clean_weight=2.0)
    (loss_a + loss_b).backward()
    assert losses_a.grad[0] == 0 and losses_b.grad[0] == 0
    assert losses_a.grad[2] == 0 and losses_b.grad[2] > 0
    assert losses_a.grad[1] > 0 and losses_b.grad[1] == 0
    assert losses_a.grad[3] == pytest.approx(2 * losses_a.grad[1])


def test_comining_run_records_agreement(tmp_path):
    faces = make_faces(tmp_path / "faces")
    # r reaches 0.25 in the last epoch: 2 of each batch of 8 are each network's noisy set.
    config = tiny_config(faces, method="comining", epochs=2, comining={"r_max": 0.25, "ramp": 1.0})
    result = train(config, tmp_path / "run")
    stats = np.load(result.stats_path)
    agreement = stats["train_agreement"]
    assert stats["train_seen"].all() and set(np.unique(agreement)) <= {0, 1, 2}
    # Per batch of 8, each network calls 2 noisy, so 2 to 4 faces are not clean by both.
    assert 6 <= int((agreement > 0).sum()) <= 12
    assert (agreement == 0).sum() >= 12
    # Two networks, different initialisations.
    networks = torch.load(result.checkpoint)["networks"]
    assert len(networks) == 2
    assert not torch.equal(networks[0]["head"]["weight"], networks[1]["head"]["weight"])
