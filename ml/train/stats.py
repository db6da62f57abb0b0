"""Per-sample statistics: what the review app ranks faces by.

Two sources, both indexed by *dataset* index (rows of samples that were not trained on, or whose
image could not be read, hold NaN for floats and -1 for integers):
- the last training epoch (keys prefixed `train_`): angles, band, loss and feature norm as the
  network saw each face in training mode, with augmentation; Co-Mining's agreement signal;
- a separate pass after training (unprefixed keys): eval mode, no augmentation, the same values
  with the final weights. This is the cleaner signal and the one to flag by.

Bands follow the RobustFace rule with the head's margins, on the nearest other identity j*:
easy (0) θ_1 ≥ θ_y + m; hard (1) θ_y − |m1| ≤ θ_1 < θ_y + m; noisy (2) θ_1 < θ_y − |m1|.
A RobustFace head reports its own bands (with its current |m1|); other heads are banded here with
their angular margin m (0.5 when the head has none, e.g. CosFace) and |m1| = 0.15.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ml.data.dataset import collate_faces
from ml.io.atomic import atomic_open
from ml.heads.robustface import EASY, HARD, NOISY
from ml.train.distributed import DistContext, gather_rows

STATS_FILE = "stats.npz"
BAND_NAMES = np.array(["easy", "hard", "noisy"])
DEFAULT_MARGIN, DEFAULT_M1 = 0.5, 0.15

# name -> (dtype, empty value). Floats are stored as float32, the rest as small integers.
FIELDS = {
    "theta_y": (np.float32, np.nan),
    "theta_1": (np.float32, np.nan),
    "j_star": (np.int64, -1),
    "band": (np.int8, -1),
    "loss": (np.float32, np.nan),
    "norm": (np.float32, np.nan),
}
TRAIN_FIELDS = {**FIELDS, "agreement": (np.int8, -1)}


def band_margins(head: nn.Module) -> tuple[float, float]:
    """(m, |m1|) for the band rule, read from the head."""
    m = None
    for name in ("m", "m2"):
        value = getattr(head, name, None)
        if isinstance(value, (int, float)) and value > 0:
            m = float(value)
            break
    m1 = getattr(head, "m1_abs", None)
    m1 = float(m1) if m1 is not None else DEFAULT_M1
    return (m if m is not None else DEFAULT_MARGIN), abs(m1)


def bands_from_angles(theta_y: torch.Tensor, theta_1: torch.Tensor, m: float, m1: float) -> torch.Tensor:
    bands = torch.full_like(theta_y, HARD, dtype=torch.long)
    bands[theta_1 >= theta_y + m] = EASY
    bands[theta_1 < theta_y - m1] = NOISY
    return bands


def batch_stats(head: nn.Module, embeddings: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor,
                head_stats: dict) -> dict[str, torch.Tensor]:
    """Per-sample values of one batch, from the head's `last_stats` of that forward."""
    theta_y, theta_1 = head_stats["theta_y"], head_stats["theta_1"]
    band = head_stats.get("band")
    if band is None:
        band = bands_from_angles(theta_y, theta_1, *band_margins(head))
    return {
        "theta_y": theta_y,
        "theta_1": theta_1,
        "j_star": head_stats["j_star"],
        "band": band,
        "loss": F.cross_entropy(logits.detach().float(), labels, reduction="none"),
        "norm": embeddings.detach().float().norm(dim=1),
    }


class SampleRecorder:
    """Arrays over the dataset, filled batch by batch (a later value overwrites an earlier one)."""

    def __init__(self, size: int, fields: dict = TRAIN_FIELDS) -> None:
        self.fields = fields
        self.arrays = {name: np.full(size, empty, dtype=dtype) for name, (dtype, empty) in fields.items()}
        self.seen = np.zeros(size, dtype=bool)

    def record(self, indices: torch.Tensor | np.ndarray, values: dict[str, torch.Tensor]) -> None:
        rows = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64)
        for name, value in values.items():
            if name in self.arrays:
                self.arrays[name][rows] = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        self.seen[rows] = True

    def gather(self, ctx: DistContext) -> None:
        """Merge every rank's records into every rank's arrays (collective)."""
        if not ctx.distributed:
            return
        rows = torch.from_numpy(np.flatnonzero(self.seen))
        columns = torch.from_numpy(np.stack([self.arrays[n][rows.numpy()].astype(np.float64) for n in self.fields], 1)
                                   if len(rows) else np.zeros((0, len(self.fields))))
        seen = gather_rows(ctx, rows, torch.ones(len(rows), dtype=torch.float64), len(self.seen)).numpy() > 0
        merged = gather_rows(ctx, rows, columns, len(self.seen)).numpy()
        for k, (name, (dtype, _)) in enumerate(self.fields.items()):
            self.arrays[name][seen] = merged[seen, k].astype(dtype)
        self.seen |= seen

    def state_dict(self) -> dict:
        return {"seen": torch.from_numpy(self.seen.copy()),
                **{name: torch.from_numpy(a.copy()) for name, a in self.arrays.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.seen = state["seen"].numpy().copy()
        for name in self.arrays:
            self.arrays[name] = state[name].numpy().copy()


def eval_loader(dataset: Dataset, positions: Iterable[int], batch_size: int, num_workers: int,
                pin_memory: bool = False) -> DataLoader:
    """Unshuffled batches over the given positions; a private generator keeps torch's global RNG
    untouched (a DataLoader otherwise draws its worker seed from it)."""
    positions = list(positions)
    batches = [positions[i:i + batch_size] for i in range(0, len(positions), batch_size)]
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate_faces,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(0))


@contextlib.contextmanager
def eval_mode(*modules: nn.Module):
    """Eval mode inside the block, each module's own mode restored after it."""
    before = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, before):
            m.train(mode)


@torch.no_grad()
def evaluate_samples(
    backbone: nn.Module,
    head: nn.Module,
    dataset: Dataset,
    positions: Iterable[int],
    size: int,
    *,
    ctx: DistContext,
    batch_size: int = 256,
    num_workers: int = 0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[SampleRecorder, int]:
    """The eval-mode pass over this rank's positions, merged across ranks.

    Returns (recorder over `size` dataset indices, number of unreadable images across ranks)."""
    recorder = SampleRecorder(size, FIELDS)
    unreadable = 0
    loader = eval_loader(dataset, positions, batch_size, num_workers, ctx.device.type == "cuda")
    done, total = 0, len(loader)
    with eval_mode(backbone, head):
        for batch in loader:
            unreadable += len(batch.skipped)
            if len(batch.labels):
                labels = batch.labels.to(ctx.device)
                with autocast():
                    embeddings = backbone(batch.images.to(ctx.device, non_blocking=True))
                logits = head(embeddings.float(), labels)
                recorder.record(batch.indices, batch_stats(head, embeddings, labels, logits, head.last_stats))
            done += 1
            if progress is not None:
                progress(done, total)
    recorder.gather(ctx)
    return recorder, unreadable


def save_stats(path: str | Path, evaluated: SampleRecorder | None, trained: SampleRecorder | None,
               labels: np.ndarray, margins: tuple[float, float], extra: dict | None = None) -> Path:
    """stats.npz: evaluated fields unprefixed, last-epoch fields as train_<name>, `label` (the
    training label per dataset index, -1 if not trained on), `band_names`, `margins` (m, |m1|)."""
    arrays: dict[str, np.ndarray] = {"label": np.asarray(labels, dtype=np.int64), "band_names": BAND_NAMES,
                                     "margins": np.asarray(margins, dtype=np.float32)}
    if evaluated is not None:
        arrays.update(evaluated.arrays)
        arrays["evaluated"] = evaluated.seen
    if trained is not None:
        arrays.update({f"train_{name}": a for name, a in trained.arrays.items()})
        arrays["train_seen"] = trained.seen
    arrays.update(extra or {})
    path = Path(path)
    with atomic_open(path) as fh:
        np.savez(fh, **arrays)
    return path


def load_stats(path: str | Path) -> dict[str, np.ndarray]:
    """A run's statistics (the run folder or its stats.npz) as a dict of arrays."""
    path = Path(path)
    if path.is_dir():
        path = path / STATS_FILE
    with np.load(path) as data:
        return {name: data[name] for name in data.files}
