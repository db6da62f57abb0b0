"""Batched, resumable embedding extraction.

Writes into out_dir:
- embeddings.npy: float16 N x D (.npy readable with np.load(mmap_mode="r")), L2-normalised.
  With flip=True a row is normalise(z(image) + z(flipped image)), the usual verification feature.
- norms.npy: float32 N, the norm of the un-normalised embedding z of the *original* image only.
  That is the feature-norm quality signal (low for non-faces and blur); the flip-sum's norm
  would mix in how well the two views agree, which is a different thing.
- progress.json: {"total", "dim", "done", "flip", "unreadable", "complete"}; rows below "done"
  are final. It is replaced atomically after every batch, once the arrays are flushed, so a
  killed extraction resumes at the first row not yet flushed.
- unreadable.json: the sorted row indices whose image could not be read, written at the end;
  those rows hold a zero embedding and norm 0.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ml.data.dataset import FaceItem, collate_faces
from ml.io.atomic import write_text_atomic
from ml.run_folder import (  # noqa: F401 (the names are ml.embed's too)
    EMBEDDINGS_FILE,
    NORMS_FILE,
    PROGRESS_FILE,
    UNREADABLE_FILE,
    ExtractionFolder,
)


@dataclass(frozen=True)
class EmbeddingResult:
    out_dir: Path
    embeddings_path: Path
    norms_path: Path
    unreadable_path: Path
    count: int
    dim: int
    unreadable: list[int]


def load_extraction(folder: str | os.PathLike, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings memory-mapped, norms, readable mask) of a finished extraction folder, in the
    layout above (the pretrained extractor writes the same)."""
    found = ExtractionFolder(Path(folder)).read(count)
    return found.embeddings, found.norms, found.readable


class _Rows(Dataset):
    """dataset[start:], each item carrying its row number (the dataset's own index field may be
    something else, e.g. a TrainingSubset reports indices of the dataset below it)."""

    def __init__(self, dataset: Dataset, start: int):
        self.dataset, self.start = dataset, start

    def __len__(self) -> int:
        return len(self.dataset) - self.start

    def __getitem__(self, position: int) -> FaceItem:
        item = self.dataset[self.start + position]
        return FaceItem(item[0], item[1], self.start + position)


def _write_json(path: Path, payload) -> None:
    write_text_atomic(path, json.dumps(payload))


def _read_progress(out_dir: Path, total: int, flip: bool) -> dict | None:
    """The saved progress when it belongs to this same extraction, else None (start over)."""
    try:
        state = json.loads((out_dir / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if state.get("total") != total or state.get("flip") != flip:
        return None
    if not (out_dir / EMBEDDINGS_FILE).exists() or not (out_dir / NORMS_FILE).exists():
        return None
    return state


def _model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _forward(model: nn.Module, images: torch.Tensor, flip: bool, device: torch.device):
    """(normalised embedding, norm of the original's raw embedding), both float32 on the CPU."""
    autocast = (
        torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else contextlib.nullcontext()
    )
    images = images.to(device, non_blocking=True)
    batch = torch.cat([images, torch.flip(images, dims=(3,))]) if flip else images
    with autocast:
        raw = model(batch)
    raw = raw.float()
    original = raw[: len(images)]
    combined = original + raw[len(images):] if flip else original
    norms = original.norm(dim=1)
    embeddings = combined / combined.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return embeddings.cpu().numpy(), norms.cpu().numpy()


def extract_embeddings(
    model: nn.Module,
    dataset: Dataset,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    flip: bool = True,
    num_workers: int = 0,
    resume: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> EmbeddingResult:
    """Embed every item of `dataset` (items (image, label, index), images possibly None).

    `device` None uses the model's own device; otherwise the model is moved there. The model is
    put in eval mode for the run and given back in the mode it came in. `progress(done, total)`
    is called after each batch is safely on disk; an exception it raises stops the run with
    that progress kept. resume=False, or saved progress from another dataset size or flip
    setting, starts over.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = len(dataset)
    if total == 0:
        raise ValueError("the dataset is empty")
    if device is None:
        device = _model_device(model)
    else:
        device = torch.device(device)
        model.to(device)

    state = _read_progress(out_dir, total, flip) if resume else None
    if state is None:
        state = {"total": total, "dim": None, "done": 0, "flip": flip, "unreadable": [], "complete": False}
    paths = {name: out_dir / name for name in (EMBEDDINGS_FILE, NORMS_FILE, UNREADABLE_FILE, PROGRESS_FILE)}

    if not state["complete"]:
        was_training = model.training
        model.eval()
        try:
            _run(model, dataset, state, paths, batch_size, device, flip, num_workers, progress)
        finally:
            model.train(was_training)
    paths[UNREADABLE_FILE].write_text(json.dumps(sorted(state["unreadable"])), encoding="utf-8")
    return EmbeddingResult(
        out_dir=out_dir,
        embeddings_path=paths[EMBEDDINGS_FILE],
        norms_path=paths[NORMS_FILE],
        unreadable_path=paths[UNREADABLE_FILE],
        count=total,
        dim=int(state["dim"]),
        unreadable=sorted(state["unreadable"]),
    )


def _run(model, dataset, state, paths, batch_size, device, flip, num_workers, progress) -> None:
    total = state["total"]
    loader = DataLoader(
        _Rows(dataset, state["done"]),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_faces,
        pin_memory=device.type == "cuda",
    )
    embeddings = norms = None
    if state["dim"] is not None:
        embeddings = np.load(paths[EMBEDDINGS_FILE], mmap_mode="r+")
        norms = np.load(paths[NORMS_FILE], mmap_mode="r+")
    # Unreadable rows met before the first readable batch: the width D is not known yet.
    pending_unreadable: list[int] = []
    with torch.inference_mode():
        for batch in loader:
            skipped = batch.skipped.tolist()
            rows = batch.indices.numpy()
            if len(rows):
                vectors, row_norms = _forward(model, batch.images, flip, device)
                if embeddings is None:
                    state["dim"] = int(vectors.shape[1])
                    embeddings = np.lib.format.open_memmap(
                        paths[EMBEDDINGS_FILE], mode="w+", dtype=np.float16, shape=(total, state["dim"])
                    )
                    norms = np.lib.format.open_memmap(paths[NORMS_FILE], mode="w+", dtype=np.float32, shape=(total,))
                elif vectors.shape[1] != embeddings.shape[1]:
                    raise ValueError(
                        f"the model gives {vectors.shape[1]}-d embeddings but {paths[EMBEDDINGS_FILE]} holds "
                        f"{embeddings.shape[1]}-d ones; pass resume=False to start over"
                    )
                embeddings[rows] = vectors.astype(np.float16)
                norms[rows] = row_norms
            state["done"] += len(rows) + len(skipped)
            if embeddings is None:
                pending_unreadable.extend(skipped)
                continue
            bad = pending_unreadable + skipped
            pending_unreadable = []
            if bad:
                embeddings[bad] = 0
                norms[bad] = 0
                state["unreadable"].extend(bad)
            embeddings.flush()
            norms.flush()
            state["complete"] = state["done"] >= total
            _write_json(paths[PROGRESS_FILE], state)
            if progress is not None:
                progress(state["done"], total)
    if embeddings is None:
        raise RuntimeError(f"none of the {total} images could be read; check the dataset root")
    del embeddings, norms
