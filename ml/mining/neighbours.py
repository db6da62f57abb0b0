"""The face neighbour graph: every eligible face's k nearest other faces, computed once and
shared by the miners. Faces cluster by identity, so the labels of a face's neighbours name the
identities it really sits near (candidates for j* and for duplicate identities), and the
nearest cosines find near-duplicate images."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.mining.config import MiningConfig
from ml.mining.search import knn, plan_search


@dataclass
class FaceNeighbours:
    rows: np.ndarray       # (n,) dataset indices of the faces, in the order of the arrays below
    sims: np.ndarray       # (n, k) float32 cosines, best first, the face itself left out
    positions: np.ndarray  # (n, k) int64 positions into rows; -1 (cosine -inf) where none
    search: str

    def labels(self, labels: np.ndarray) -> np.ndarray:
        """(n, k) class ids of the neighbours, -1 where none."""
        found = self.positions >= 0
        return np.where(found, labels[self.rows[np.where(found, self.positions, 0)]], -1)


def drop_self(sims: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own position (row i is position i) and keep k columns. A face is not
    always its own first hit: an exact copy ties with it."""
    is_self = positions == np.arange(len(positions))[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    sims = np.take_along_axis(sims, order, axis=1)
    positions = np.take_along_axis(positions, order, axis=1)
    return sims, positions


def face_neighbours(embeddings: np.ndarray, rows: np.ndarray, config: MiningConfig) -> FaceNeighbours:
    k = config.face_neighbours
    plan = plan_search(len(rows), len(rows), config.face_probes, config.exact_search_max_pairs)
    sims, positions = knn(embeddings, rows, embeddings, rows, k + 1, plan, batch_size=config.batch_size,
                          seed=config.seed)
    sims, positions = drop_self(sims, positions, k)
    if sims.shape[1] < k:  # fewer faces than k + 1
        pad = k - sims.shape[1]
        sims = np.hstack([sims, np.full((len(rows), pad), -np.inf, dtype=np.float32)])
        positions = np.hstack([positions, np.full((len(rows), pad), -1, dtype=np.int64)])
    return FaceNeighbours(rows, sims, positions, plan.describe())
