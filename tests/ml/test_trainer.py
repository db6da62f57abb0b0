"""The single-network trainer: config, schedule, data order, run folder, statistics, checkpoints.

The helpers at the top (a tiny face folder, a tiny config) are shared with the other training tests.
"""
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.sample import make_sample
from ml.train import checkpoint as ckpt
from ml.train.config import TrainConfig, apply_overrides, load_config, parse_value
from ml.train.distributed import EpochBatchSampler, epoch_order, flip_flags, shard, steps_per_epoch
from ml.train.schedule import StepSchedule, learning_rate
from ml.train.stats import bands_from_angles, load_stats
from ml.train.trainer import load_trained_network, train

# A model of a few thousand parameters on 32x32 inputs: a training step takes milliseconds.
TINY_BACKBONE = {"widths": (8, 16, 32, 64), "embedding_dim": 32}


def make_faces(folder: Path, identities: int = 4, images: int = 6) -> Path:
    """A folder of synthetic faces, <identity>/<n>.jpg; returns the images folder."""
    make_sample(folder, identities=identities, images=images, outsiders=0, seed=0)
    return folder / "images"


def tiny_config(data_path, **changes) -> TrainConfig:
    values = {
        "backbone": "cpu_small", "backbone_kwargs": TINY_BACKBONE,
        "head": "arcface", "head_kwargs": {"s": 16.0},
        "data": {"kind": "folder", "path": str(data_path), "transform": {"crop": None, "size": 32, "flip": True}},
        "lr": 0.05, "warmup_steps": 2, "epochs": 2, "batch_size": 8, "checkpoint_every": 2,
        "log_every": 1, "num_workers": 0, "device": "cpu", "stats_batch_size": 32,
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return TrainConfig.from_dict({**TrainConfig().to_dict(), **values})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions run fastest on one thread, and far more steadily on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    return make_faces(tmp_path_factory.mktemp("faces"))


# -- config ---------------------------------------------------------------------------------------

def test_config_file_with_dotted_overrides(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text("config = dict(epochs=3, comining={'r_max': 0.1}, data={'transform': {'size': 48}})\n")
    config = load_config(path, ["comining.r_max=0.3", "lr=0.02", "data.path=/some where/x", "amp=True"])
    assert config.epochs == 3
    assert config.comining.r_max == 0.3 and config.comining.clean_weight == 2.0
    assert config.lr == 0.02 and config.amp is True
    assert config.data.path == "/some where/x"
    # A section set partly in the file keeps its other defaults.
    assert config.data.transform == {"crop": None, "size": 48, "flip": True}


def test_config_rejects_unknown_keys_and_bad_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(None, ["lerning_rate=0.1"])
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(None, ["comining.rmax=0.1"])
    with pytest.raises(ValueError, match="optimizer"):
        load_config(None, ["optimizer=rmsprop"])
    with pytest.raises(ValueError, match="not key=value"):
        apply_overrides({}, ["epochs"])


def test_config_file_may_define_a_trainconfig(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text("from ml.train.config import TrainConfig\nconfig = TrainConfig(epochs=7, head='cosface')\n")
    config = load_config(path)
    assert (config.epochs, config.head) == (7, "cosface")


def test_parse_value_reads_literals_and_leaves_text():
    assert parse_value("0.5") == 0.5 and parse_value("None") is None and parse_value("[1, 2]") == [1, 2]
    assert parse_value("ml/configs/x.py") == "ml/configs/x.py"


def test_shipped_configs_load():
    for name in ("cpu_small", "iresnet50", "comining_cpu"):
        config = load_config(Path("ml/configs") / f"{name}.py")
        assert config.epochs >= 1
    assert load_config("ml/configs/comining_cpu.py").method == "comining"


# -- schedule -------------------------------------------------------------------------------------

def test_learning_rate_warmup_then_poly_and_cosine():
    curve = {"base_lr": 0.1, "total_steps": 110, "warmup_steps": 10}
    assert learning_rate(0, **curve) == pytest.approx(0.01)
    assert learning_rate(9, **curve) == pytest.approx(0.1)
    assert learning_rate(10, **curve) == pytest.approx(0.1)
    assert learning_rate(60, **curve, kind="poly", power=2.0) == pytest.approx(0.1 * 0.25)
    assert learning_rate(60, **curve, kind="cosine") == pytest.approx(0.05)
    assert learning_rate(110, **curve, kind="cosine", min_lr=0.001) == pytest.approx(0.001)
    rates = [learning_rate(s, **curve) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_step_schedule_state_is_its_step():
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(params, lr=1.0)
    schedule = StepSchedule(optimizer, base_lr=0.1, total_steps=20, warmup_steps=4)
    for _ in range(7):
        schedule.step()
    other = StepSchedule(torch.optim.SGD(params, lr=1.0), base_lr=0.1, total_steps=20, warmup_steps=4)
    other.load_state_dict(schedule.state_dict())
    assert other.optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == learning_rate(
        7, base_lr=0.1, total_steps=20, warmup_steps=4)


# -- data order -----------------------------------------------------------------------------------

def test_epoch_order_is_a_function_of_seed_and_epoch():
    assert np.array_equal(epoch_order(50, 3, 1), epoch_order(50, 3, 1))
    assert not np.array_equal(epoch_order(50, 3, 1), epoch_order(50, 3, 2))
    assert not np.array_equal(epoch_order(50, 3, 1), epoch_order(50, 4, 1))
    assert sorted(epoch_order(50, 3, 1)) == list(range(50))
    assert np.array_equal(flip_flags(50, 3, 1), flip_flags(50, 3, 1))
    assert 10 < flip_flags(50, 3, 1).sum() < 40


def test_shards_cover_the_order_and_have_equal_length():
    order = epoch_order(11, 0, 0)
    parts = [shard(order, r, 3) for r in range(3)]
    assert {len(p) for p in parts} == {4}
    assert set(np.concatenate(parts)) == set(range(11))


def test_sampler_resumes_by_skipping_batches():
    full = list(EpochBatchSampler(20, 4, seed=1, epoch=2, flip=True))
    rest = list(EpochBatchSampler(20, 4, seed=1, epoch=2, flip=True, start_batch=3))
    assert len(full) == steps_per_epoch(20, 4, 1, True) == 5
    assert rest == full[3:]
    flips = flip_flags(20, 1, 2)
    assert all(flip == flips[position] for batch in full for position, flip in batch)


def test_steps_per_epoch_drop_last_and_tiny_sets():
    assert steps_per_epoch(10, 4, 1, True) == 2
    assert steps_per_epoch(10, 4, 1, False) == 3
    assert steps_per_epoch(10, 4, 2, True) == 1
    assert steps_per_epoch(3, 8, 1, True) == 1  # smaller than a batch: one short batch


# -- checkpoints ----------------------------------------------------------------------------------

def test_save_atomic_and_latest(tmp_path):
    for step in (5, 20, 10):
        ckpt.save_checkpoint({"step": step}, tmp_path, step, keep=2)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == [ckpt.checkpoint_name(10), ckpt.checkpoint_name(20)]
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))["step"] == 20
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ckpt.save_atomic({"rng": ckpt.capture_rng_state()}, tmp_path / "r.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.restore_rng_state(ckpt.load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])


# -- statistics rule ------------------------------------------------------------------------------

def test_bands_follow_the_robustface_rule():
    theta_y = torch.tensor([1.0, 1.0, 1.0, 1.0])
    theta_1 = torch.tensor([1.6, 1.2, 0.9, 0.7])
    assert bands_from_angles(theta_y, theta_1, m=0.5, m1=0.15).tolist() == [0, 1, 1, 2]


# -- a whole run ----------------------------------------------------------------------------------

def test_run_writes_its_folder(faces, tmp_path):
    seen = []
    result = train(tiny_config(faces, keep_checkpoints=1), tmp_path / "run", progress=seen.append)
    run = tmp_path / "run"
    assert result.global_step == result.metrics["total_steps"] == 6 and not result.interrupted
    assert json.loads((run / "config.json").read_text())["batch_size"] == 8
    assert [p.name for p in ckpt.list_checkpoints(run)] == [ckpt.checkpoint_name(6)]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert json.loads((run / "metrics.json").read_text())["completed"] is True
    assert "step 6/6" in (run / "train.log").read_text()

    train_reports = [r for r in seen if r["stage"] == "train"]
    assert {"stage", "step", "total", "epoch", "loss", "samples_per_s", "eta_s"} <= set(train_reports[0])
    assert [r["epoch"] for r in train_reports] == [1, 1, 1, 2, 2, 2]
    assert all(math.isfinite(r["loss"]) for r in train_reports)
    assert train_reports[-1]["eta_s"] == 0
    assert any(r["stage"] == "stats" for r in seen)

    stats = load_stats(run)
    assert len(stats["theta_y"]) == 24
    assert stats["evaluated"].all() and stats["train_seen"].all()
    assert np.isfinite(stats["loss"]).all() and (stats["norm"] > 0).all()
    assert set(np.unique(stats["band"])) <= {0, 1, 2}
    assert ((stats["j_star"] >= 0) & (stats["j_star"] != stats["label"])).all()
    assert (stats["train_agreement"] == -1).all()  # no Co-Mining here

    backbone, head, config = load_trained_network(run)
    assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, 32) and head.num_classes == 4
    assert config.batch_size == 8


def test_refuses_to_overwrite_a_run_without_resume(faces, tmp_path):
    train(tiny_config(faces, epochs=1, stats_pass=False), tmp_path / "run")
    with pytest.raises(FileExistsError):
        train(tiny_config(faces, epochs=1, stats_pass=False), tmp_path / "run")


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    root = make_faces(tmp_path / "data")
    broken = sorted((root / "person_001").iterdir())[2]
    broken.write_bytes(b"not a jpeg")
    result = train(tiny_config(root, epochs=1), tmp_path / "run")
    assert result.metrics["skipped_images"] == 1
    assert result.metrics["unreadable_images"] == 1
    stats = np.load(tmp_path / "run" / "stats.npz")
    index = 6 + 2  # person_001's third image, in the folder's sorted order
    assert np.isnan(stats["theta_y"][index]) and stats["band"][index] == -1 and not stats["evaluated"][index]
    assert np.isfinite(np.delete(stats["theta_y"], index)).all()


def test_label_overrides_remove_and_relabel(faces, tmp_path):
    overrides = tmp_path / "labels.tsv"
    overrides.write_text("0\t-1\n7\t3\n")
    result = train(tiny_config(faces, epochs=1, data={"labels": str(overrides)}), tmp_path / "run")
    stats = np.load(tmp_path / "run" / "stats.npz")
    assert result.metrics["images"] == 23
    assert stats["label"][0] == -1 and not stats["evaluated"][0] and not stats["train_seen"][0]
    assert stats["label"][7] == 3 and stats["evaluated"][7]


@pytest.mark.parametrize("head", ["cosface", "subcenter", "curricular", "adaface", "robustface"])
def test_every_head_trains_and_gives_statistics(faces, tmp_path, head):
    result = train(tiny_config(faces, epochs=1, head=head), tmp_path / "run")
    stats = np.load(result.stats_path)
    assert np.isfinite(stats["theta_y"]).all() and np.isfinite(stats["train_loss"]).all()
    assert set(np.unique(stats["band"])) <= {0, 1, 2}


class PartlyUnreadable(torch.utils.data.Dataset):
    """Eight random 32x32 'faces' of two identities; the positions in `unreadable` give None."""

    def __init__(self, unreadable):
        self.images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        self.labels = np.arange(8) % 2
        self.unreadable = set(int(i) for i in unreadable)

    def __len__(self):
        return 8

    def __getitem__(self, index):
        image = None if index in self.unreadable else self.images[index]
        return image, int(self.labels[index]), index


def test_a_batch_with_nothing_readable_is_skipped(tmp_path):
    first_batch = shard(epoch_order(8, 0, 0), 0, 1)[:4]
    config = tiny_config("unused", epochs=1, batch_size=4)
    result = train(config, tmp_path / "run", dataset=PartlyUnreadable(first_batch))
    assert result.global_step == 2 and result.metrics["skipped_images"] == 4
    stats = np.load(result.stats_path)
    assert stats["evaluated"].sum() == 4 and not stats["evaluated"][first_batch].any()
    weights = torch.load(result.checkpoint)["networks"][0]["backbone"]
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_stop_at_step_already_reached_does_nothing(faces, tmp_path):
    train(tiny_config(faces, stop_at_step=2, stats_pass=False), tmp_path / "run")
    again = train(tiny_config(faces, stop_at_step=2, stats_pass=False), tmp_path / "run", resume=True)
    assert again.interrupted and again.global_step == 2
