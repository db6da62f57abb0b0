"""Data-parallel training on the CPU: two gloo processes set up exactly as torchrun would."""
import os
import socket
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from ml.train import checkpoint as ckpt
from ml.train.distributed import init_distributed, shutdown_distributed
from ml.train.selflearn import read_prototypes
from ml.train.trainer import Trainer
from tests.ml.test_trainer import make_faces, tiny_config

WORLD_SIZE = 2
VARIANTS = {
    "single": {},
    "comining": {"method": "comining"},
    # self-learning from the first epoch: features gathered from both ranks, labels from rank 0
    "selflearn": {"selflearn": {"enabled": True, "start_epoch": 0, "prototypes": 2}},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, faces: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    try:
        for name, changes in VARIANTS.items():
            # 24 faces, 4 per rank per step: 3 steps; checkpoints at step 2 and at the end.
            config = tiny_config(faces, epochs=1, batch_size=4, **changes)
            trainer = Trainer(config, os.path.join(out, name), ctx=ctx)
            trainer.run()
            weights = [{k: v.clone() for k, v in net.state_dict().items()} for net in trainer.nets]
            torch.save(weights, os.path.join(out, f"{name}-rank{rank}.pt"))
    finally:
        shutdown_distributed()


@pytest.mark.slow
def test_two_processes_end_with_identical_weights(tmp_path):
    faces = make_faces(tmp_path / "faces")
    context = mp.spawn(_worker, args=(_free_port(), str(faces), str(tmp_path)), nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("DDP workers did not finish in time")

    for method in VARIANTS:
        rank0 = torch.load(tmp_path / f"{method}-rank0.pt")
        rank1 = torch.load(tmp_path / f"{method}-rank1.pt")
        for net0, net1 in zip(rank0, rank1):
            for name, tensor in net0.items():
                assert torch.equal(tensor, net1[name]), f"{method}: {name} differs between ranks"
        run = tmp_path / method
        assert [p.name for p in ckpt.list_checkpoints(run)] == [ckpt.checkpoint_name(2), ckpt.checkpoint_name(3)]
        saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
        assert saved["world_size"] == 2 and saved["global_step"] == 3
        for name, tensor in saved["networks"][0]["backbone"].items():
            assert torch.equal(tensor, rank0[0][f"backbone.{name}"])
        # Every rank's share of the statistics reached rank 0's file.
        stats = np.load(run / "stats.npz")
        assert stats["evaluated"].all() and stats["train_seen"].all()
        assert np.isfinite(stats["theta_y"]).all()
        if method == "comining":
            assert set(np.unique(stats["train_agreement"])) <= {0, 1, 2}
        if method == "selflearn":
            assert (stats["corrected_label"] >= 0).all()  # every face's feature reached rank 0
            assert len(read_prototypes(run)) == 4
        # Only rank 0 writes: one line per step.
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
