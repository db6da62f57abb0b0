"""Per-identity geometry from embeddings alone: sizes, centres and reference faces.

- centre: the normalised mean embedding of an identity's faces (ml.centres, the one definition).
- prototypes: Deep Self-Learning's densest faces (ml.train.selflearn.find_prototypes), the
  reference faces shown to a reviewer. Their normalised mean stands in for the dominant
  sub-centre when there is no head; x · (their plain mean) is the mean cosine of x to them.
Everything is built in bounded batches of faces, so a million float16 rows never become a
float32 copy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ml.centres import identity_centres, unit_rows
from ml.mining.search import batches, one_torch_thread
from ml.train.selflearn import find_prototypes


@dataclass
class Identities:
    """Arrays over class ids 0..count-1 (identities with no eligible face: size 0, zero rows)."""

    sizes: np.ndarray             # (C,) eligible faces
    centres: np.ndarray           # (C, D) float32, unit mean embeddings
    sum_norm: np.ndarray          # (C,) |sum of the faces' unit embeddings|: centre * sum_norm is the sum
    members: np.ndarray           # (C, p) int64 dataset indices of the prototypes, -1 padded
    prototype_mean: np.ndarray    # (C, D) float32, plain mean of the prototypes' unit embeddings

    @property
    def count(self) -> int:
        return len(self.sizes)

    def has_prototypes(self, classes: np.ndarray) -> np.ndarray:
        classes = np.asarray(classes)
        inside = (classes >= 0) & (classes < self.count)
        return inside & (self.members[np.where(inside, classes, 0), 0] >= 0)

    def references(self, c: int) -> list[int]:
        if not 0 <= c < self.count:
            return []
        return [int(i) for i in self.members[c] if i >= 0]


def identity_prototypes(embeddings: np.ndarray, labels: np.ndarray, rows: np.ndarray, count: int, *,
                        p: int, samples_per_identity: int, seed: int, batch_size: int) -> np.ndarray:
    """(count, p) prototype dataset indices, found identity by identity in batches of faces."""
    members = np.full((count, p), -1, dtype=np.int64)
    order = rows[np.argsort(labels[rows], kind="stable")]
    bounds = np.searchsorted(labels[order], np.arange(count + 1))
    rng = np.random.default_rng(seed)
    with one_torch_thread():
        _fill_members(embeddings, labels, order, bounds, members, p, samples_per_identity, rng, batch_size)
    return members


def _fill_members(embeddings, labels, order, bounds, members, p, samples_per_identity, rng, batch_size) -> None:
    count, first = len(members), 0
    while first < count:
        # As many whole identities as fit in a batch of faces (always at least one).
        last = max(first + 1, int(np.searchsorted(bounds, bounds[first] + batch_size, side="right")) - 1)
        last = min(last, count)
        chunk = order[bounds[first]:bounds[last]]
        if len(chunk):
            found = find_prototypes(torch.from_numpy(unit_rows(embeddings, chunk)), labels[chunk] - first,
                                    chunk, last - first, samples_per_identity=samples_per_identity, p=p, rng=rng)
            members[first:last] = found.members.numpy()
        first = last


def prototype_means(embeddings: np.ndarray, members: np.ndarray, batch_size: int) -> np.ndarray:
    count, p = members.shape
    out = np.zeros((count, embeddings.shape[1]), dtype=np.float32)
    for part in batches(count, max(1, batch_size // max(p, 1))):
        block = members[part]
        valid = block >= 0
        vectors = unit_rows(embeddings, np.where(valid, block, 0).ravel()).reshape(*block.shape, -1)
        vectors *= valid[..., None]
        out[part] = vectors.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)[:, None]
    return out


def build_identities(embeddings: np.ndarray, labels: np.ndarray, rows: np.ndarray, *, p: int = 3,
                     samples_per_identity: int = 64, seed: int = 0, batch_size: int = 32_768) -> Identities:
    count = int(labels[rows].max()) + 1 if len(rows) else 0
    found = identity_centres(embeddings, labels, rows, count, batch_size=batch_size)
    sizes, centres, sum_norm = found.sizes, found.centres, found.sum_norm
    members = identity_prototypes(embeddings, labels, rows, count, p=p, samples_per_identity=samples_per_identity,
                                  seed=seed, batch_size=batch_size)
    return Identities(sizes, centres, sum_norm, members, prototype_means(embeddings, members, batch_size))


def own_centre_cosine(embeddings: np.ndarray, labels: np.ndarray, rows: np.ndarray, identities: Identities,
                      batch_size: int) -> np.ndarray:
    """Cosine of each face to its own identity's centre with the face itself left out (the
    normalised sum of the other faces' unit embeddings): a face must not vote for itself, which
    matters most in small identities. NaN for an identity's only face."""
    return leave_one_out_cosine(embeddings, labels, rows, identities.sizes, identities.centres, identities.sum_norm,
                                batch_size)


def leave_one_out_cosine(embeddings: np.ndarray, labels: np.ndarray, rows: np.ndarray, sizes: np.ndarray,
                         centres: np.ndarray, sum_norm: np.ndarray, batch_size: int) -> np.ndarray:
    """own_centre_cosine from ml.centres.identity_centres' (sizes, centres, sum norms), the faces at `rows`
    among those the centres were made of."""
    own = labels[rows].astype(np.int64)
    dot = row_dot(embeddings, rows, centres, own, batch_size).astype(np.float64) * sum_norm[own]
    rest = np.sqrt(np.maximum(sum_norm[own] ** 2 - 2.0 * dot + 1.0, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (dot - 1.0) / rest
    return np.where((sizes[own] > 1) & (rest > 1e-6), np.clip(cos, -1.0, 1.0), np.nan)


def row_dot(embeddings: np.ndarray, rows: np.ndarray, vectors: np.ndarray, classes: np.ndarray,
            batch_size: int) -> np.ndarray:
    """unit(embeddings[rows[i]]) · vectors[classes[i]] for each i, in batches."""
    out = np.empty(len(rows), dtype=np.float32)
    for part in batches(len(rows), batch_size):
        out[part] = np.einsum("ij,ij->i", unit_rows(embeddings, rows[part]), vectors[classes[part]])
    return out
