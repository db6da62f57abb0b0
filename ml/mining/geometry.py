"""Any model's geometry: centre the embeddings before taking cosines.

Cosines between raw embeddings assume features spread around the origin. Trained margin heads
give roughly that, but not every model does: dlib's 128-d descriptor puts almost every pair of
faces above cosine 0.97 (its mean unit vector has a norm near 0.9), so angles to centres, the
neighbour graph and every bound calibrated on them lose their resolution. Subtracting the mean of
the unit embeddings and normalising again removes the shared direction; on a zero-mean model it
changes next to nothing (the mean's norm is then small), so it is always done, and the mean's
norm is recorded with the flags.
"""
from __future__ import annotations

import numpy as np

from ml.mining.search import batches, unit_rows


def centred_unit_embeddings(embeddings: np.ndarray, rows: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """(matrix of the same shape: rows centred on the mean of their unit vectors and unit
    normalised, other rows zero; the mean's norm). float16 when the input is, to keep a million
    rows in the memory the input needed; unit_rows re-normalises on reading."""
    mean = np.zeros(embeddings.shape[1], dtype=np.float64)
    for part in batches(len(rows), batch_size):
        mean += unit_rows(embeddings, rows[part]).sum(axis=0, dtype=np.float64)
    mean = (mean / max(len(rows), 1)).astype(np.float32)
    dtype = np.float16 if embeddings.dtype == np.float16 else np.float32
    out = np.zeros(embeddings.shape, dtype=dtype)
    for part in batches(len(rows), batch_size):
        chunk = rows[part]
        out[chunk] = unit_rows(unit_rows(embeddings, chunk) - mean).astype(dtype)
    return out, float(np.linalg.norm(mean))
