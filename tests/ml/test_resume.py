"""Exact resume: a run killed (or stopped) and resumed ends with the same weights, bit for bit,
as an unbroken run on the CPU, and its statistics match too."""
import json

import numpy as np
import pytest
import torch

from ml.data.dataset import FaceDataset
from ml.data.transforms import build_transform
from ml.train import checkpoint as ckpt
from ml.train.trainer import train
from tests.ml.test_trainer import TINY_BACKBONE, make_faces, one_thread, tiny_config  # noqa: F401 (autouse fixture)


class Killed(Exception):
    pass


def kill_after(step: int):
    def progress(report: dict) -> None:
        if report["stage"] == "train" and report["step"] == step:
            raise Killed(step)
    return progress


def final_networks(run_dir):
    return ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir))["networks"]


def assert_same_weights(run_a, run_b):
    nets_a, nets_b = final_networks(run_a), final_networks(run_b)
    assert len(nets_a) == len(nets_b)
    for net_a, net_b in zip(nets_a, nets_b):
        for part in ("backbone", "head"):
            assert net_a[part].keys() == net_b[part].keys()
            for name, tensor in net_a[part].items():
                assert torch.equal(tensor, net_b[part][name]), f"{part}.{name} differs"


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return make_faces(tmp_path_factory.mktemp("faces"))


# 24 faces, batch 8: 3 steps per epoch, 6 in all; checkpoints every 2 steps.
CASES = {
    # killed at step 5 (mid epoch 2): resumes from step 4, redoes step 5
    "sgd-arcface-poly": dict(kill=5, changes={}),
    # killed at step 3 (end of epoch 1): resumes from step 2, mid epoch 1
    "adamw-robustface-cosine": dict(kill=3, changes=dict(optimizer="adamw", lr=0.002, head="robustface",
                                                         head_kwargs={"s": 16.0}, schedule="cosine")),
    # dropout draws from torch's global RNG: only restoring its state from the checkpoint keeps it exact
    "sgd-dropout": dict(kill=5, changes=dict(backbone_kwargs={**TINY_BACKBONE, "dropout": 0.3})),
    "comining": dict(kill=4, changes=dict(method="comining", comining={"r_max": 0.25, "ramp": 1.0})),
    # self-learning from epoch 2: the resumed run must reuse the saved corrected labels
    "selflearn": dict(kill=5, changes=dict(selflearn={"enabled": True, "start_epoch": 1, "prototypes": 2})),
}


@pytest.mark.parametrize("case", CASES)
def test_killed_and_resumed_run_matches_unbroken_run(faces, tmp_path, case):
    kill, changes = CASES[case]["kill"], CASES[case]["changes"]
    train(tiny_config(faces, **changes), tmp_path / "unbroken")

    with pytest.raises(Killed):
        train(tiny_config(faces, **changes), tmp_path / "broken", progress=kill_after(kill))
    resumed_from = ckpt.latest_checkpoint(tmp_path / "broken")
    assert ckpt.load_checkpoint(resumed_from)["global_step"] == kill - kill % 2
    reports = []
    result = train(tiny_config(faces, **changes), tmp_path / "broken", resume=True, progress=reports.append)
    assert result.global_step == 6 and not result.interrupted
    # It continued from the checkpoint rather than starting over.
    assert [r["step"] for r in reports if r["stage"] == "train"][0] == kill - kill % 2 + 1

    assert_same_weights(tmp_path / "unbroken", tmp_path / "broken")
    stats_a, stats_b = np.load(tmp_path / "unbroken" / "stats.npz"), np.load(tmp_path / "broken" / "stats.npz")
    for key in ("theta_y", "train_theta_y", "train_band", "train_agreement"):
        np.testing.assert_array_equal(stats_a[key], stats_b[key])
    # The redone steps' report lines replace those of the killed run.
    steps = [json.loads(line)["step"] for line in (tmp_path / "broken" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_stop_and_resume_with_data_loader_workers(faces, tmp_path):
    """Flips are drawn per (seed, epoch, index) outside the workers, so a run resumed with a
    worker process ends exactly like an unbroken one without."""
    train(tiny_config(faces, stats_pass=False), tmp_path / "unbroken")
    stopped = train(tiny_config(faces, stop_at_step=1, stats_pass=False), tmp_path / "broken")
    assert stopped.interrupted and stopped.global_step == 1 and stopped.stats_path is None
    assert json.loads((tmp_path / "broken" / "metrics.json").read_text())["completed"] is False
    train(tiny_config(faces, num_workers=1, stats_pass=False), tmp_path / "broken", resume=True)
    assert_same_weights(tmp_path / "unbroken", tmp_path / "broken")


class CountingFaces(FaceDataset):
    loads = 0

    def __getitem__(self, index):
        CountingFaces.loads += 1
        return super().__getitem__(index)


def test_resume_skips_done_batches_without_loading_them(faces, tmp_path):
    config = tiny_config(faces, stats_pass=False)
    dataset = CountingFaces.from_folder(faces, transform=build_transform(config.data.transform))
    train(tiny_config(faces, stop_at_step=4, stats_pass=False), tmp_path / "run", dataset=dataset)
    CountingFaces.loads = 0
    train(config, tmp_path / "run", dataset=dataset, resume=True)
    assert CountingFaces.loads == 2 * 8  # steps 5 and 6 only


def test_resume_detects_a_different_step_layout(faces, tmp_path):
    train(tiny_config(faces, stop_at_step=2, stats_pass=False), tmp_path / "run")
    with pytest.raises(ValueError, match="steps per epoch"):
        train(tiny_config(faces, batch_size=4, stats_pass=False), tmp_path / "run", resume=True)


def test_a_different_seed_gives_different_weights(faces, tmp_path):
    """The equality above is not trivial: another seed (order, flips, init) changes the result."""
    train(tiny_config(faces, epochs=1, stats_pass=False), tmp_path / "a")
    train(tiny_config(faces, epochs=1, stats_pass=False, seed=1), tmp_path / "b")
    with pytest.raises(AssertionError):
        assert_same_weights(tmp_path / "a", tmp_path / "b")
