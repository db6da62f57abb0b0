"""Row access to (possibly memory-mapped, float16) embedding matrices and cosine k-NN search.

Small problems (base x queries up to `exact_max_pairs`) use an exact faiss IndexFlatIP. Beyond,
an inverted-file search done as a join: faiss k-means cuts the base into cells, a faiss flat
quantizer gives every base vector its cell and every query its `probes` nearest cells, and each
cell is searched as one matrix product of its queries against its members. That is IVF search
turned inside out: per-query IVF scans re-read a few thousand base vectors for every query and
are bound by memory bandwidth (about 4 minutes for a million faces on two cores), while the
per-cell products run at BLAS speed and read each vector once per probe.
faiss objects are cloned to every GPU when faiss has any, so one code path serves both.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import faiss
import numpy as np
import torch

from ml.centres import unit_rows  # noqa: F401 (mining reads rows through it)

MAX_EXACT_BASE = 262_144      # a float32 copy of at most ~0.5 GB at 512-d
BLOCK_ELEMENTS = 1 << 24      # cosine block size (64 MB of float32) inside a cell


def batches(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def row_norms(matrix: np.ndarray, batch_size: int) -> np.ndarray:
    out = np.empty(len(matrix), dtype=np.float32)
    for part in batches(len(matrix), batch_size):
        out[part] = np.linalg.norm(np.asarray(matrix[part], dtype=np.float32), axis=1)
    return out


@contextlib.contextmanager
def one_torch_thread():
    """Many small torch products and per-identity ops: on a shared two-core machine spreading
    each over threads costs more than it gains (2-40x slower, measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def on_gpus(index: faiss.Index) -> faiss.Index:
    return faiss.index_cpu_to_all_gpus(index) if faiss.get_num_gpus() > 0 else index


@dataclass(frozen=True)
class SearchPlan:
    exact: bool
    cells: int = 0
    probes: int = 0
    kmeans_iterations: int = 0

    def describe(self) -> str:
        if self.exact:
            return "exact (faiss IndexFlatIP)"
        return f"cell join: {self.cells} k-means cells, {self.probes} probes per query"


def plan_search(n_base: int, n_queries: int, probes: int, exact_max_pairs: float,
                kmeans_iterations: int = 5) -> SearchPlan:
    # 2*sqrt(n) cells balance the quantizer's cost (queries x cells) against the joins'
    # (queries x probes x cell size); at least 8 members per cell on average.
    cells = min(int(2 * math.sqrt(n_base)), n_base // 8)
    small = float(n_base) * n_queries <= exact_max_pairs and n_base <= MAX_EXACT_BASE
    if small or cells < 4:
        return SearchPlan(True)
    return SearchPlan(False, cells, max(1, min(probes, cells)), kmeans_iterations)


def knn(base: np.ndarray, base_rows: np.ndarray, queries: np.ndarray, query_rows: np.ndarray, k: int,
        plan: SearchPlan, *, batch_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine k nearest neighbours of unit_rows(queries, query_rows) among unit_rows(base, base_rows).

    Returns (cosines float32, positions into base_rows int64), each len(query_rows) x k, best
    first; position -1 (cosine -inf) where fewer than k were found."""
    k = max(1, min(k, len(base_rows)))
    if len(query_rows) == 0 or len(base_rows) == 0:
        return np.empty((len(query_rows), k), np.float32), np.full((len(query_rows), k), -1, np.int64)
    if plan.exact:
        return _exact_knn(base, base_rows, queries, query_rows, k, batch_size)
    return _cell_join_knn(base, base_rows, queries, query_rows, k, plan, batch_size, seed)


def _exact_knn(base, base_rows, queries, query_rows, k, batch_size):
    index = faiss.IndexFlatIP(base.shape[1])
    for part in batches(len(base_rows), batch_size):
        index.add(unit_rows(base, base_rows[part]))
    index = on_gpus(index)
    sims = np.empty((len(query_rows), k), dtype=np.float32)
    positions = np.empty((len(query_rows), k), dtype=np.int64)
    for part in batches(len(query_rows), batch_size):
        sims[part], positions[part] = index.search(unit_rows(queries, query_rows[part]), k)
    sims[positions < 0] = -np.inf
    return sims, positions


def _assign(quantizer: faiss.Index, matrix, rows, probes: int, batch_size: int) -> np.ndarray:
    cells = np.empty((len(rows), probes), dtype=np.int64)
    for part in batches(len(rows), batch_size):
        cells[part] = quantizer.search(unit_rows(matrix, rows[part]), probes)[1]
    return cells


def _cell_join_knn(base, base_rows, queries, query_rows, k, plan, batch_size, seed):
    dim = base.shape[1]
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(base_rows), min(len(base_rows), plan.cells * 32), replace=False))
    kmeans = faiss.Kmeans(dim, plan.cells, niter=plan.kmeans_iterations, spherical=True, seed=seed,
                          gpu=faiss.get_num_gpus() > 0, verbose=False, min_points_per_centroid=8)
    kmeans.train(unit_rows(base, base_rows[sample]))
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(kmeans.centroids)
    quantizer = on_gpus(quantizer)

    self_join = queries is base and np.array_equal(query_rows, base_rows)
    query_cells = _assign(quantizer, queries, query_rows, plan.probes, batch_size)
    base_cell = query_cells[:, 0] if self_join else _assign(quantizer, base, base_rows, 1, batch_size)[:, 0]

    base_order = np.argsort(base_cell, kind="stable")
    base_bounds = np.searchsorted(base_cell[base_order], np.arange(plan.cells + 1))
    # (query, probe) slots grouped by the cell they probe.
    slot_cell = query_cells.ravel()
    slot_order = np.argsort(slot_cell, kind="stable")
    slot_bounds = np.searchsorted(slot_cell[slot_order], np.arange(plan.cells + 1))

    slot_sims = np.full((len(slot_cell), k), -np.inf, dtype=np.float32)
    slot_positions = np.full((len(slot_cell), k), -1, dtype=np.int64)
    with one_torch_thread():
        _join_cells(queries, query_rows, base, base_rows, k, plan, base_order, base_bounds, slot_order, slot_bounds,
                    slot_sims, slot_positions)
    return _merge_probes(slot_sims.reshape(len(query_rows), -1), slot_positions.reshape(len(query_rows), -1), k)


def _join_cells(queries, query_rows, base, base_rows, k, plan, base_order, base_bounds, slot_order, slot_bounds,
                slot_sims, slot_positions) -> None:
    for cell in range(plan.cells):
        members = base_order[base_bounds[cell]:base_bounds[cell + 1]]
        slots = slot_order[slot_bounds[cell]:slot_bounds[cell + 1]]
        if len(members) == 0 or len(slots) == 0:
            continue
        sims, positions = _block_topk(queries, query_rows[slots // plan.probes], base, base_rows, members, k)
        slot_sims[slots], slot_positions[slots] = sims, positions


def _block_topk(queries, query_rows, base, base_rows, members, k):
    """Top-k of each query among `members` (positions into base_rows), in bounded blocks."""
    sims = np.full((len(query_rows), k), -np.inf, dtype=np.float32)
    positions = np.full((len(query_rows), k), -1, dtype=np.int64)
    member_block = max(1, min(len(members), BLOCK_ELEMENTS // 1024))
    for m_part in batches(len(members), member_block):
        block_members = members[m_part]
        vectors = torch.from_numpy(unit_rows(base, base_rows[block_members]))
        query_block = max(1, BLOCK_ELEMENTS // len(block_members))
        for q_part in batches(len(query_rows), query_block):
            scores = torch.from_numpy(unit_rows(queries, query_rows[q_part])) @ vectors.T
            top = torch.topk(scores, min(k, len(block_members)), dim=1)
            found_sims = top.values.numpy()
            found_positions = block_members[top.indices.numpy()]
            merged = _merge_probes(np.hstack([sims[q_part], found_sims]),
                                   np.hstack([positions[q_part], found_positions]), k)
            sims[q_part], positions[q_part] = merged
    return sims, positions


def _merge_probes(sims: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k per row of candidate (cosine, position) lists. Cells are disjoint and so are the
    member blocks within a cell, so no base vector is a candidate twice."""
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(positions, order, axis=1)
