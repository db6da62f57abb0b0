"""Process group set-up and the data order: one seeded order per epoch, sharded across ranks.

The order of epoch e is a permutation drawn from numpy's generator seeded with (seed, e), so it is
the same on every rank and in every resumed run, and does not depend on torch's global RNG. Like
torch's DistributedSampler, the permutation is padded (by wrapping around) to a multiple of the
world size and rank r takes positions r, r + W, r + 2W, ...

Horizontal flips are drawn the same way, one flag per dataset position from (seed, e), and travel
with the position through the sampler, so they do not depend on DataLoader workers either: a run
resumed with any num_workers sees the same flipped images as an unbroken one.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from ml.data.dataset import FaceItem

# Stream ids keep the order and the flips independent draws of the same (seed, epoch).
_ORDER_STREAM, _FLIP_STREAM = 0, 1


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return torch.device("cuda", local_rank)


def init_distributed(device_preference: str = "auto") -> DistContext:
    """A process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)
    when WORLD_SIZE > 1: NCCL on CUDA, gloo on the CPU. Without it, a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if world_size <= 1:
        return DistContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def all_sum_ints(ctx: DistContext, values: Sequence[int]) -> list[int]:
    """Element-wise sums over ranks, in one collective."""
    if not ctx.distributed:
        return [int(v) for v in values]
    tensor = torch.tensor(list(values), dtype=torch.long, device=ctx.device)
    dist.all_reduce(tensor)
    return [int(v) for v in tensor.tolist()]


def broadcast_from_main(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's tensor on every rank (same shape and dtype expected everywhere)."""
    if not ctx.distributed:
        return tensor
    moved = tensor.to(ctx.device)
    dist.broadcast(moved, src=0)
    return moved.to(tensor.device)


def gather_rows(ctx: DistContext, rows: torch.Tensor, values: torch.Tensor, total: int) -> torch.Tensor:
    """Assemble a (total, ...) tensor from each rank's (row numbers, values); rows nobody had stay 0.

    Ranks may hold different numbers of rows, so each pads to the largest count first."""
    out = torch.zeros((total, *values.shape[1:]), dtype=values.dtype)
    if not ctx.distributed:
        out[rows] = values.cpu()
        return out
    count = torch.tensor([len(rows)], device=ctx.device)
    counts = [torch.zeros_like(count) for _ in range(ctx.world_size)]
    dist.all_gather(counts, count)
    width = int(max(c.item() for c in counts))
    padded_rows = torch.full((width,), -1, dtype=torch.long, device=ctx.device)
    padded_rows[: len(rows)] = rows.to(ctx.device)
    padded_values = torch.zeros((width, *values.shape[1:]), dtype=values.dtype, device=ctx.device)
    padded_values[: len(rows)] = values.to(ctx.device)
    all_rows = [torch.empty_like(padded_rows) for _ in range(ctx.world_size)]
    all_values = [torch.empty_like(padded_values) for _ in range(ctx.world_size)]
    dist.all_gather(all_rows, padded_rows)
    dist.all_gather(all_values, padded_values)
    for r, v in zip(all_rows, all_values):
        keep = r >= 0
        out[r[keep].cpu()] = v[keep].cpu()
    return out


# -- data order -----------------------------------------------------------------------------------

def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of positions 0..n-1 for this epoch: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch, _ORDER_STREAM]).permutation(n)


def flip_flags(n: int, seed: int, epoch: int) -> np.ndarray:
    """Whether position i is flipped in this epoch: a pure function of (seed, epoch, i)."""
    return np.random.default_rng([seed, epoch, _FLIP_STREAM]).random(n) < 0.5


def shard(order: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank's share of an order padded by wrap-around to a multiple of world_size."""
    per_rank = math.ceil(len(order) / world_size)
    padded = np.resize(order, per_rank * world_size)  # np.resize repeats from the start
    return padded[rank::world_size]


def steps_per_epoch(n: int, batch_size: int, world_size: int, drop_last: bool) -> int:
    per_rank = math.ceil(n / world_size)
    steps = per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
    # A set smaller than one batch still trains, on its one short batch.
    return max(steps, 1)


class EpochBatchSampler(Sampler):
    """Batches of (position, flip) keys for one rank and one epoch, starting at `start_batch`:
    the batches a resumed run has already done are skipped without loading their images."""

    def __init__(self, n: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                 drop_last: bool = True, flip: bool = False, start_batch: int = 0) -> None:
        self.positions = shard(epoch_order(n, seed, epoch), rank, world_size)
        self.flips = flip_flags(n, seed, epoch) if flip else np.zeros(n, dtype=bool)
        self.batch_size = batch_size
        self.steps = steps_per_epoch(n, batch_size, world_size, drop_last)
        self.start_batch = start_batch

    def __len__(self) -> int:
        return max(self.steps - self.start_batch, 0)

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        for b in range(self.start_batch, self.steps):
            chunk = self.positions[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(int(p), bool(self.flips[p])) for p in chunk]


class FlipKeyed(Dataset):
    """dataset[(position, flip)]: the item at position, its image flipped left-right when asked.
    The wrapped dataset must not flip by itself (build its transform with train=False)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, bool] | int) -> FaceItem:
        position, flip = key if isinstance(key, tuple) else (key, False)
        image, label, index = self.dataset[position]
        if image is not None and flip:
            image = torch.flip(image, dims=(-1,))
        return FaceItem(image, label, index)


def positions_for_rank(n: int, ctx: DistContext) -> Sequence[int]:
    """Every rank's share of 0..n-1 in order, without padding (for passes over the whole set)."""
    return range(ctx.rank, n, ctx.world_size)
