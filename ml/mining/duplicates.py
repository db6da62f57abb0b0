"""Duplicate identities (one person under two ids) and near-duplicate images.

Duplicate identities: candidate pairs come from two places, never from all pairs: a k-NN
self-join of the identity centres (unit mean embeddings), and the identity pairs that the face
neighbour graph links (a face whose nearest faces carry another label). Each candidate's centre
cosine is then computed exactly. The threshold is an outlier bound on every identity's top-1
candidate cosine, since most identities' nearest other centre is simply another person. The
survivor of a merge is the larger identity (the lower id on a tie).
Near duplicates: neighbour-graph edges with cosine close to 1, within or across identities (a
burst of more than k copies still has every face flagged with k of them).
"""
from __future__ import annotations

import numpy as np

from ml.mining import calibrate
from ml.mining.candidate import DUPLICATE_IDENTITY, NEAR_DUPLICATE, FlagCandidate
from ml.mining.config import MiningConfig
from ml.mining.neighbours import FaceNeighbours, drop_self
from ml.mining.prototypes import Identities
from ml.mining.search import batches, knn, plan_search


def unique_pairs(a: np.ndarray, b: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct unordered pairs (low, high) with low != high, from ids below `size`."""
    keep = (a >= 0) & (b >= 0) & (a != b)
    low, high = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    keys = np.unique(low.astype(np.int64) * size + high)
    return keys // size, keys % size


def centre_cosines(centres: np.ndarray, a: np.ndarray, b: np.ndarray, batch_size: int) -> np.ndarray:
    out = np.empty(len(a), dtype=np.float32)
    for part in batches(len(a), batch_size):
        out[part] = np.einsum("ij,ij->i", centres[a[part]], centres[b[part]])
    return out


def candidate_identity_pairs(identities: Identities, neighbours: FaceNeighbours | None, labels: np.ndarray,
                             config: MiningConfig) -> tuple[np.ndarray, np.ndarray, str]:
    present = np.flatnonzero(identities.sizes > 0)
    k = config.duplicate_neighbours + 1
    plan = plan_search(len(present), len(present), config.duplicate_probes, config.exact_search_max_pairs)
    sims, positions = knn(identities.centres, present, identities.centres, present, k, plan,
                          batch_size=config.batch_size, seed=config.seed)
    _, positions = drop_self(sims, positions, k - 1)
    found = positions >= 0
    a = [np.repeat(present, positions.shape[1])[found.ravel()]]
    b = [present[positions[found]]]
    search = f"centres: {plan.describe()}"
    if neighbours is not None:
        a.append(np.repeat(labels[neighbours.rows], neighbours.positions.shape[1]))
        b.append(neighbours.labels(labels).ravel())
        search += "; plus identity pairs linked by the face neighbour graph"
    low, high = unique_pairs(np.concatenate(a), np.concatenate(b), identities.count)
    return low, high, search


def find_duplicate_identities(identities: Identities, neighbours: FaceNeighbours | None, labels: np.ndarray,
                              config: MiningConfig):
    """((a, b, cosine) arrays over class ids with a < b, threshold, search description)."""
    if int((identities.sizes > 0).sum()) < 2:
        empty = np.empty(0, dtype=np.int64)
        return (empty, empty, np.empty(0)), calibrate.duplicate_cosine([], config.duplicate_cosine, 0, 1), "none"
    a, b, search = candidate_identity_pairs(identities, neighbours, labels, config)
    cos = centre_cosines(identities.centres, a, b, config.batch_size)
    top1 = np.full(identities.count, -np.inf)
    np.maximum.at(top1, a, cos)
    np.maximum.at(top1, b, cos)
    threshold = calibrate.duplicate_cosine(top1[np.isfinite(top1)], config.duplicate_cosine, config.duplicate_k,
                                           config.duplicate_min_cosine)
    keep = cos >= threshold.value
    return (a[keep], b[keep], cos[keep]), threshold, search


def duplicate_identity_flags(pairs, threshold, search: str, identities: Identities) -> list[FlagCandidate]:
    record = threshold.as_dict()
    flags = []
    for a, b, cos in zip(*(np.asarray(x).tolist() for x in pairs)):
        size_a, size_b = int(identities.sizes[a]), int(identities.sizes[b])
        survivor = a if size_a >= size_b else b
        evidence = {"cosine": round(cos, 4), "size": size_a, "other_size": size_b,
                    "reference_faces": {"label": identities.references(a), "other_label": identities.references(b)},
                    "centre": "normalised mean embedding", "thresholds": {"duplicate_cosine": record},
                    "search": search}
        flags.append(FlagCandidate(DUPLICATE_IDENTITY, float(cos), None, None, int(a), int(b), "merge", int(survivor),
                                   evidence))
    return flags


def mine_duplicate_identities(identities: Identities, neighbours: FaceNeighbours | None, labels: np.ndarray,
                              config: MiningConfig):
    """(flags, set of (a, b) class-id pairs with a < b)."""
    pairs, threshold, search = find_duplicate_identities(identities, neighbours, labels, config)
    flags = duplicate_identity_flags(pairs, threshold, search, identities)
    return flags, set(zip(pairs[0].tolist(), pairs[1].tolist()))


def mine_near_duplicates(neighbours: FaceNeighbours, labels: np.ndarray, config: MiningConfig) -> list[FlagCandidate]:
    if len(neighbours.rows) < 2:
        return []
    top1 = neighbours.sims[:, 0]
    threshold = calibrate.near_duplicate_cosine(top1[np.isfinite(top1)], config.near_duplicate_cosine,
                                                config.near_duplicate_k, config.near_duplicate_bounds)
    close = (neighbours.sims >= threshold.value) & (neighbours.positions >= 0)
    query, column = np.nonzero(close)
    other = neighbours.positions[query, column]
    cos = neighbours.sims[query, column]
    low, high = np.minimum(query, other), np.maximum(query, other)
    _, first = np.unique(low * len(neighbours.rows) + high, return_index=True)
    record = threshold.as_dict()
    rows = neighbours.rows
    flags = []
    for i, j, c in zip(rows[low[first]].tolist(), rows[high[first]].tolist(), cos[first].tolist()):
        label_i, label_j = int(labels[i]), int(labels[j])
        evidence = {"cosine": round(c, 5), "same_identity": label_i == label_j, "remove": "other_index",
                    "thresholds": {"near_duplicate_cosine": record}, "search": neighbours.search}
        flags.append(FlagCandidate(NEAR_DUPLICATE, float(c), i, j, label_i, label_j, "remove", None, evidence))
    return flags
