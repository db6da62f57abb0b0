"""One shared backbone, one classification head per source (ml/train/multihead.py)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ml.data.dataset import FaceDataset
from ml.data.label_overrides import TrainingSubset, apply_overrides
from ml.data.transforms import build_transform
from ml.heads.factory import HEAD_NAMES, build_head
from ml.train import checkpoint as ckpt
from ml.train.multihead import MultiSourceHead, plan_heads
from ml.train.stats import load_stats
from ml.train.trainer import load_trained_network, train
from tests.ml.test_resume import Killed, assert_same_weights, kill_after
from tests.ml.test_trainer import make_faces, one_thread, tiny_config  # noqa: F401 (autouse fixture)


# -- which head each class trains in --------------------------------------------------------------

def test_no_sources_or_one_source_is_a_single_head():
    labels = np.array([0, 0, 1, 1, 2])
    assert plan_heads(labels, None, 3) is None
    assert plan_heads(labels, np.full(5, 4), 3) is None


def test_each_class_follows_its_majority_source():
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 3, 3, 4])
    # class 2 is a merge: two faces from source 5, one from source 9; class 5 has no sample.
    sources = np.array([5, 5, 5, 5, 5, 5, 9, 9, 9, 9])
    heads = plan_heads(labels, sources, 6)
    np.testing.assert_array_equal(heads, [0, 0, 0, 1, 1, 0])


def test_a_source_with_one_class_joins_the_largest_head():
    labels = np.array([0, 1, 2, 3, 4, 5])
    sources = np.array([0, 0, 0, 1, 1, 2])  # source 2 holds one class: no softmax of its own
    np.testing.assert_array_equal(plan_heads(labels, sources, 6), [0, 0, 0, 1, 1, 0])
    # Only one source with two classes left: a single head.
    assert plan_heads(np.array([0, 1, 2]), np.array([0, 0, 1]), 3) is None


def test_sources_must_cover_every_sample():
    with pytest.raises(ValueError):
        plan_heads(np.array([0, 1]), np.array([0]), 2)
    with pytest.raises(ValueError):
        plan_heads(np.array([0, 1]), np.array([0, -1]), 2)


# -- the head -------------------------------------------------------------------------------------

def two_heads(kind="arcface", seed=0):
    torch.manual_seed(seed)
    class_head = np.array([0, 1, 0, 1, 1])  # classes 0, 2 in head 0; 1, 3, 4 in head 1
    heads = [build_head(kind, 8, 2, s=16.0), build_head(kind, 8, 3, s=16.0)]
    return MultiSourceHead(heads, class_head), heads


def test_logits_are_each_samples_own_head_and_minus_infinity_elsewhere():
    head, parts = two_heads()
    x = torch.randn(4, 8)
    labels = torch.tensor([0, 1, 2, 4])
    logits = head(x, labels)
    assert logits.shape == (4, 5)
    own_0 = parts[0](x[[0, 2]], torch.tensor([0, 1]))
    own_1 = parts[1](x[[1, 3]], torch.tensor([0, 2]))
    torch.testing.assert_close(logits[[0, 2]][:, [0, 2]], own_0)
    torch.testing.assert_close(logits[[1, 3]][:, [1, 3, 4]], own_1)
    assert torch.isinf(logits[[0, 2]][:, [1, 3, 4]]).all() and torch.isinf(logits[[1, 3]][:, [0, 2]]).all()
    # The global cross-entropy is each sample's cross-entropy over its own head.
    expected = torch.cat([F.cross_entropy(own_0, torch.tensor([0, 1]), reduction="none"),
                          F.cross_entropy(own_1, torch.tensor([0, 2]), reduction="none")])
    got = F.cross_entropy(logits, labels, reduction="none")[[0, 2, 1, 3]]
    torch.testing.assert_close(got, expected)


def test_a_source_never_pushes_against_the_other_sources_classes():
    """The point of a head per source: a face of source 0 has no gradient on source 1's centres,
    and its loss does not change wherever those centres lie."""
    head, parts = two_heads()
    x = torch.randn(3, 8, requires_grad=True)
    labels = torch.tensor([0, 2, 0])
    loss = F.cross_entropy(head(x, labels), labels)
    loss.backward()
    assert parts[1].weight.grad is None
    assert torch.isfinite(x.grad).all() and parts[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        parts[1].weight.normal_()
    torch.testing.assert_close(F.cross_entropy(head(x, labels), labels), loss.detach())


def test_statistics_name_global_classes_of_the_same_head():
    head, _ = two_heads()
    x = torch.randn(6, 8)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])
    head(x, labels)
    j_star = head.last_stats["j_star"]
    class_head = head.class_head
    assert (class_head[j_star] == class_head[labels]).all() and (j_star != labels).all()
    assert head.last_stats["theta_y"].shape == (6,) and torch.isfinite(head.last_stats["theta_1"]).all()


@pytest.mark.parametrize("kind", HEAD_NAMES)
def test_every_head_type_trains_per_source(kind):
    head, parts = two_heads(kind)
    x = torch.randn(6, 8, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])
    logits = head(x, labels)
    F.cross_entropy(logits, labels).backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.weight.grad).all() and p.weight.grad.abs().sum() > 0 for p in parts)


def test_robustface_heads_give_bands_and_their_margins():
    head, _ = two_heads("robustface")
    head(torch.randn(5, 8), torch.tensor([0, 1, 2, 3, 4]))
    assert head.last_stats["band"].shape == (5,)
    assert head.m == 0.5 and float(head.m1_abs) == pytest.approx(0.15)


# -- training -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return make_faces(tmp_path_factory.mktemp("faces"))


def with_sources(folder, sources_of_class):
    """The folder as tiny_config reads it, each class's faces under the given source."""
    dataset = FaceDataset.from_folder(folder)
    transform = build_transform(tiny_config(folder).data.transform, train=False)
    return FaceDataset(dataset.samples, root=dataset.root, class_names=dataset.class_names, transform=transform,
                       sources=[sources_of_class[s.label] for s in dataset.samples])


def test_two_sources_train_two_heads_and_every_tool_reads_the_run(faces, tmp_path):
    data = with_sources(faces, [0, 0, 1, 1])
    result = train(tiny_config(faces), tmp_path / "run", dataset=data)
    state = ckpt.load_checkpoint(result.checkpoint)
    np.testing.assert_array_equal(state["class_head"].numpy(), [0, 0, 1, 1])
    assert {k.split(".")[1] for k in state["networks"][0]["head"]} == {"0", "1"}

    stats = load_stats(tmp_path / "run")
    np.testing.assert_array_equal(stats["class_head"], [0, 0, 1, 1])
    source = data.sources  # classes 0,1 are source 0 and 2,3 source 1: head == source here
    assert (stats["j_star"] >= 0).all() and (stats["j_star"] != stats["label"]).all()
    np.testing.assert_array_equal(stats["class_head"][stats["j_star"]], source)
    assert np.isfinite(stats["loss"]).all() and np.isfinite(stats["train_loss"]).all()

    backbone, head, _ = load_trained_network(tmp_path / "run")
    assert isinstance(head, MultiSourceHead)
    assert backbone(torch.zeros(2, 3, 32, 32)).shape[0] == 2


def test_one_source_trains_bit_identically_to_no_sources(faces, tmp_path):
    train(tiny_config(faces), tmp_path / "plain")
    train(tiny_config(faces), tmp_path / "one", dataset=with_sources(faces, [3, 3, 3, 3]))
    assert_same_weights(tmp_path / "plain", tmp_path / "one")
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "one"))["class_head"] is None


def test_a_head_per_source_trains_differently_from_one_softmax(faces, tmp_path):
    train(tiny_config(faces), tmp_path / "plain")
    train(tiny_config(faces), tmp_path / "two", dataset=with_sources(faces, [0, 1, 0, 1]))
    plain = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "plain"))["networks"][0]["backbone"]
    two = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "two"))["networks"][0]["backbone"]
    assert any(not torch.equal(plain[k], two[k]) for k in plain if plain[k].is_floating_point())


@pytest.mark.parametrize("changes", [{}, {"method": "comining", "comining": {"r_max": 0.25, "ramp": 1.0}},
                                     {"selflearn": {"enabled": True, "start_epoch": 1, "prototypes": 2}}],
                         ids=["arcface", "comining", "selflearn"])
def test_killed_and_resumed_two_head_run_matches_unbroken_run(faces, tmp_path, changes):
    sources = [0, 1, 1, 0]
    train(tiny_config(faces, **changes), tmp_path / "unbroken", dataset=with_sources(faces, sources))
    with pytest.raises(Killed):
        train(tiny_config(faces, **changes), tmp_path / "broken", dataset=with_sources(faces, sources),
              progress=kill_after(5))
    train(tiny_config(faces, **changes), tmp_path / "broken", dataset=with_sources(faces, sources), resume=True)
    assert_same_weights(tmp_path / "unbroken", tmp_path / "broken")
    a, b = load_stats(tmp_path / "unbroken"), load_stats(tmp_path / "broken")
    np.testing.assert_array_equal(a["j_star"], b["j_star"])


def test_resume_refuses_data_whose_sources_changed(faces, tmp_path):
    with pytest.raises(Killed):
        train(tiny_config(faces), tmp_path / "run", dataset=with_sources(faces, [0, 0, 1, 1]),
              progress=kill_after(3))
    with pytest.raises(ValueError, match="sources"):
        train(tiny_config(faces), tmp_path / "run", dataset=with_sources(faces, [0, 1, 0, 1]), resume=True)
    with pytest.raises(ValueError, match="sources"):
        train(tiny_config(faces), tmp_path / "run", resume=True)


def test_sources_follow_a_label_selection(faces):
    data = with_sources(faces, [0, 0, 1, 1])
    removed = {i: -1 for i in range(len(data)) if data.samples[i].label == 0}
    subset = TrainingSubset(data, apply_overrides(data.labels, removed, data.num_classes))
    np.testing.assert_array_equal(subset.sources, data.sources[subset.indices])
    assert set(subset.sources.tolist()) == {0, 1}


# -- data-parallel --------------------------------------------------------------------------------

def _ddp_worker(rank: int, port: int, faces: str, out: str) -> None:
    import os

    from ml.train.distributed import init_distributed, shutdown_distributed
    from ml.train.trainer import Trainer

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    try:
        # Two faces per rank per step: a rank's batch often holds one source only, so the other
        # head gets no gradient there, which DDP must accept.
        config = tiny_config(faces, epochs=1, batch_size=2)
        trainer = Trainer(config, os.path.join(out, "run"), data=with_sources(faces, [0, 0, 1, 1]), ctx=ctx)
        trainer.run()
        torch.save({k: v.clone() for k, v in trainer.nets[0].state_dict().items()}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        shutdown_distributed()


@pytest.mark.slow
def test_two_processes_with_a_head_per_source_end_with_identical_weights(faces, tmp_path):
    import torch.multiprocessing as mp

    from tests.ml.test_ddp import _free_port

    mp.spawn(_ddp_worker, args=(_free_port(), str(faces), str(tmp_path)), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert any(k.startswith("head.heads.1.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run"))["class_head"].tolist() == [0, 0, 1, 1]
