"""Unit rows and identity centres: the one definition that mining, the round's charts and the
app's relabel search all use.

A centre is the normalised mean of an identity's unit embeddings. Scattered noise (faces of
many other people) barely turns it, so it is what duplicate identities are compared by, what a
face's angle to its identity is measured against, and what the relabel search ranks by.
numpy at import; torch only inside identity_centres (the web process imports this module to
read a query row, and must not pay for torch).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def unit_rows(matrix: np.ndarray, rows: np.ndarray | slice | None = None) -> np.ndarray:
    """The chosen rows as float32 unit vectors (float16 storage drifts from unit length); an
    all-zero row (an unreadable image) stays zero."""
    x = np.asarray(matrix if rows is None else matrix[rows], dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class Centres:
    """Per class id 0..count-1 (a class with no row: size 0, zero centre)."""

    sizes: np.ndarray       # (C,) rows counted
    centres: np.ndarray     # (C, D) float32 unit mean embeddings
    sum_norm: np.ndarray    # (C,) |sum of the rows' unit embeddings|: centre * sum_norm is the sum


def identity_centres(embeddings: np.ndarray, labels: np.ndarray, rows: np.ndarray, count: int, *,
                     batch_size: int = 32_768) -> Centres:
    """Centres of the classes 0..count-1 over the dataset indices `rows`, read in batches of
    rows: a memory-mapped million float16 rows never become one float32 copy. One pass over
    the rows (seconds per million)."""
    import torch

    rows = np.asarray(rows)
    labels = np.asarray(labels)
    sums = torch.zeros((count, embeddings.shape[1]), dtype=torch.float32)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        sums.index_add_(0, torch.from_numpy(labels[chunk].astype(np.int64)),
                        torch.from_numpy(unit_rows(embeddings, chunk)))
    sizes = np.bincount(labels[rows], minlength=count)
    centres = torch.nn.functional.normalize(sums, dim=1).numpy()
    return Centres(sizes, centres, sums.norm(dim=1).numpy().astype(np.float64))


def finite_rows(embeddings: np.ndarray, rows: np.ndarray, batch_size: int = 65_536) -> np.ndarray:
    """Per entry of rows: that row exists (>= 0) and is finite. In batches: the matrix may be far
    larger than memory."""
    rows = np.asarray(rows)
    finite = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), batch_size):
        part = rows[start:start + batch_size]
        present = part >= 0
        finite[start:start + batch_size][present] = np.isfinite(np.asarray(embeddings[part[present]])).all(axis=1)
    return finite
