"""Checkpoints: atomic writes, finding the latest, and the random number generator states.

A checkpoint is a dict of tensors and plain Python values only, so it loads with
`torch.load(weights_only=True)`: no pickled code runs when a checkpoint from elsewhere is opened.
The numpy RNG state is therefore stored as a tensor plus plain fields.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from ml.io.atomic import atomic_open

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_name(global_step: int) -> str:
    return f"step_{global_step:09d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoints, oldest (lowest step) first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_atomic(state: dict, path: str | Path) -> Path:
    """torch.save through ml.io.atomic: a reader (or a resume after a crash mid-write) sees the
    old file or the new one, never half of one."""
    path = Path(path)
    with atomic_open(path) as fh:
        torch.save(state, fh)
    return path


def save_checkpoint(state: dict, run_dir: str | Path, global_step: int, keep: int = 2) -> Path:
    """Write the checkpoint for `global_step` and remove all but the newest `keep` (>= 1)."""
    path = save_atomic(state, Path(run_dir) / CHECKPOINT_DIR / checkpoint_name(global_step))
    for old in list_checkpoints(run_dir)[: -max(keep, 1)]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def capture_rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
