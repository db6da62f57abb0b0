"""Duplicate identities (one person under two ids) and near-duplicate images.

Duplicate identities. Candidate pairs come from two places, never from all pairs: a faiss k-NN
self-join of the identity centres (unit mean embeddings), and the identity pairs that the face
neighbour graph links (a face whose nearest faces carry another label). Each candidate pair
(a, b) is scored by its cross margin
    s(a, b) = 1/2 [ mean_{f in a} (cos(f, c_b) - cos(f, c_a without f)) + the same from b's side ],
how much nearer its faces are to their own centre than to the other's (0: the other centre is as
near as their own, as for two halves of one person). It needs no pass over the faces per pair:
mean_{f in a} cos(f, c_b) = r_a cos(c_a, c_b), r_a = |sum of a's unit faces| / n_a, and the
leave-one-out own cosines are averaged per identity once. Unlike the raw centre cosine it
corrects for how tight each identity is (a tight small identity's centre is near anything of its
kind), and it is the geometry training cannot hide: the classifier pushes the two halves' weights
apart, their faces stay near both. A pair is accepted when a and b are each other's best
candidate (mutual) and s is a robust upper outlier of every identity's best score (calibrate.
duplicate_score: the bound where about config.duplicate_expected_false of the mutual pairs would
pass by chance). The survivor of a merge is the larger identity (the lower id on a tie).
Near-duplicate images are not found here: a copy is decided on its pixels (ml.mining.copies).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ml.evidence import DuplicateIdentityEvidence
from ml.mining import calibrate
from ml.mining.candidate import DUPLICATE_IDENTITY, FlagCandidate
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
    search = f"centres: faiss {plan.describe()}"
    if neighbours is not None:
        a.append(np.repeat(labels[neighbours.rows], neighbours.positions.shape[1]))
        b.append(neighbours.labels(labels).ravel())
        search += "; plus identity pairs linked by the face neighbour graph"
    low, high = unique_pairs(np.concatenate(a), np.concatenate(b), identities.count)
    return low, high, search


def mean_own_cosine(own_cos: np.ndarray, labels: np.ndarray, rows: np.ndarray, count: int) -> np.ndarray:
    """Per identity, the mean leave-one-out cosine of its faces to its centre (NaN: fewer than 2)."""
    finite = np.isfinite(own_cos)
    sums = np.bincount(labels[rows][finite], weights=own_cos[finite], minlength=count)
    counts = np.bincount(labels[rows][finite], minlength=count)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def cross_margins(identities: Identities, own_mean: np.ndarray, a: np.ndarray, b: np.ndarray,
                  cos: np.ndarray) -> np.ndarray:
    """s(a, b) of the module doc, NaN where either side has no leave-one-out cosine."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = identities.sum_norm / np.maximum(identities.sizes, 1)
    return 0.5 * ((r[a] * cos - own_mean[a]) + (r[b] * cos - own_mean[b]))


def best_per_identity(a: np.ndarray, b: np.ndarray, score: np.ndarray, count: int) -> np.ndarray:
    """Per identity, the position (into a, b) of its best-scoring candidate pair; -1 where none."""
    ends = np.concatenate([a, b])
    values = np.concatenate([score, score])
    positions = np.concatenate([np.arange(len(a)), np.arange(len(a))])
    usable = np.isfinite(values)
    order = np.lexsort((-values[usable], ends[usable]))  # by identity, best first
    ends, positions = ends[usable][order], positions[usable][order]
    first = np.ones(len(ends), dtype=bool)
    first[1:] = ends[1:] != ends[:-1]
    best = np.full(count, -1, dtype=np.int64)
    best[ends[first]] = positions[first]
    return best


def select_pairs(a: np.ndarray, b: np.ndarray, score: np.ndarray, cos: np.ndarray, count: int,
                 config: MiningConfig):
    """((a, b, score, cosine) of the accepted pairs, threshold): mutual best candidates whose score
    clears the bound calibrated on every identity's best score."""
    best = best_per_identity(a, b, score, count)
    has = best >= 0
    mutual = (best[a] >= 0) & (best[a] == best[b]) & (best[a] == np.arange(len(a)))
    threshold = calibrate.duplicate_score(score[best[has]], config.duplicate_score, config.duplicate_expected_false,
                                          int(mutual.sum()))
    keep = mutual & (score >= threshold.value)
    return (a[keep], b[keep], score[keep], cos[keep]), threshold


def _no_pairs(config: MiningConfig):
    empty = np.empty(0, dtype=np.int64)
    return (empty, empty, np.empty(0), np.empty(0)), calibrate.duplicate_score(
        [], config.duplicate_score, config.duplicate_expected_false, 0), "none"


@dataclass
class DuplicateView:
    """One model's view of the identities for pooling (cross-fitted rounds): its centres and
    neighbour graph, and per identity the mean leave-one-out own cosine of the faces it judges."""

    identities: Identities
    neighbours: FaceNeighbours | None
    own_mean: np.ndarray


def pooled_duplicate_identities(views: list[DuplicateView], labels: np.ndarray, config: MiningConfig):
    """(flags, set of (a, b) pairs) from several models' views of the same identities: candidate
    pairs from every view, each pair's cross margin averaged over the views, then one selection
    (mutual best, calibrated bound) on the averages. Each view judges only the faces its model
    never trained on, so each margin is honest but noisy (fewer faces); averaging the views
    steadies it, where a union of per-view decisions would add up their false pairs."""
    count = max(v.identities.count for v in views)
    if int((views[0].identities.sizes > 0).sum()) < 2:
        return [], set()
    found = [candidate_identity_pairs(v.identities, v.neighbours, labels, config) for v in views]
    a, b = unique_pairs(np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found]), count)
    scores, cosines = [], []
    for view in views:
        cos = centre_cosines(view.identities.centres, a, b, config.batch_size).astype(np.float64)
        scores.append(cross_margins(view.identities, view.own_mean, a, b, cos))
        cosines.append(cos)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a pair no view can score: NaN, never accepted
        score = np.nanmean(np.vstack(scores), axis=0)
        own_mean = np.nanmean(np.vstack([v.own_mean for v in views]), axis=0)
    cos = np.mean(np.vstack(cosines), axis=0)
    pairs, threshold = select_pairs(a, b, score, cos, count, config)
    search = found[0][2] + (f"; cross margins averaged over {len(views)} cross-fitted models" if len(views) > 1 else "")
    flags = duplicate_identity_flags(pairs, threshold, search, views[0].identities, own_mean)
    return flags, set(zip(pairs[0].tolist(), pairs[1].tolist()))


def duplicate_identity_flags(pairs, threshold, search: str, identities: Identities,
                             own_mean: np.ndarray) -> list[FlagCandidate]:
    record = threshold.as_dict()
    # Shown to reviewers: >= 0, higher = more surely one person. The cross margin itself is
    # negative for most pairs, so the score is its distance above the null's median in sigmas.
    centre = threshold.median if threshold.median is not None and np.isfinite(threshold.median) else 0.0
    spread = threshold.sigma if threshold.sigma and np.isfinite(threshold.sigma) and threshold.sigma > 0 else 1.0
    flags = []
    for a, b, score, cos in zip(*(np.asarray(x).tolist() for x in pairs)):
        size_a, size_b = int(identities.sizes[a]), int(identities.sizes[b])
        survivor = a if size_a >= size_b else b
        evidence = DuplicateIdentityEvidence(
            cross_margin=round(score, 4), cosine=round(cos, 4), size=size_a, other_size=size_b,
            mean_own_cosine=round(float(own_mean[a]), 4), other_mean_own_cosine=round(float(own_mean[b]), 4),
            mutual=True, reference_faces={"label": identities.references(a), "other_label": identities.references(b)},
            centre="normalised mean embedding", thresholds={"duplicate_score": record},
            score_rule="(cross margin - null median) / null sigma; cross margin: mean cosine of each side's faces "
                       "to the other centre minus to their own (leave-one-out), averaged over both sides",
            search=search)
        flags.append(FlagCandidate(kind=DUPLICATE_IDENTITY, score=max(0.0, (score - centre) / spread),
                                   label=int(a), other_label=int(b), suggestion="merge", target_label=int(survivor),
                                   evidence=evidence))
    return flags
