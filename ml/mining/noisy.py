"""Noisy (closed-set and open-set) and hard faces.

Angles come from one of two geometries per face:
- head: theta_y, theta_1, j* of stats.npz (the eval pass with the final classifier weights), for
  faces that were trained on under the label they still carry;
- embedding: angles to identities' prototype centres (the normalised mean of their reference
  faces), for every other face and in "bring your own model" mode (no stats at all).
Both are banded by the RobustFace rule on the nearest other identity j*: noisy when
θ_1 < θ_y − |m1|, hard when θ_y − |m1| ≤ θ_1 < θ_y + m.

Decision order for a face (each face gets at most one of noisy / hard):
1. open-set noisy (remove): farther than the open-set angle from its own prototype centre *and*
   from every other identity's: it belongs to no identity. Checked first because a relabel is
   only worth suggesting when the face does belong to the other identity.
2. closed-set noisy (relabel to j*): in the noisy band, confirmed by the prototypes: its mean
   cosine to j*'s reference faces beats the mean cosine to its own (itself left out).
3. hard (keep, for confirmation): in the hard band, or in the noisy band without the prototypes'
   confirmation.
The nearest other identity in the embedding geometry: exact cosines to a few candidates, the
labels of the face's nearest faces (the neighbour graph) and its nearest centres by approximate
k-NN. Faces about to be called open-set are re-checked against every centre exhaustively: in
high dimensions approximate search misses a fair share of true neighbours (measured on random
512-d centres: IVF cells and HNSW alike), and those faces are few.
Faces whose (label, j*) pair was flagged as a duplicate identity get neither: the merge explains
them. Scores are degrees beyond the decision boundary, so open- and closed-set scores compare.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.mining import calibrate
from ml.mining.candidate import HARD, NOISY, FlagCandidate
from ml.mining.config import MiningConfig
from ml.mining.prototypes import Identities, row_dot
from ml.mining.neighbours import FaceNeighbours
from ml.mining.search import SearchPlan, batches, knn, plan_search, unit_rows
from ml.train.stats import DEFAULT_M1, DEFAULT_MARGIN

HEAD, EMBEDDING = "head", "embedding"


@dataclass(frozen=True)
class Margins:
    m: float   # radians
    m1: float  # |m1|, radians
    source: str

    @property
    def m_deg(self) -> float:
        return float(np.degrees(self.m))

    @property
    def m1_deg(self) -> float:
        return float(np.degrees(self.m1))


def resolve_margins(stats: dict | None, config: MiningConfig) -> Margins:
    m, m1, source = DEFAULT_MARGIN, DEFAULT_M1, "default"
    if stats is not None and "margins" in stats:
        m, m1 = (float(v) for v in np.asarray(stats["margins"]).ravel()[:2])
        source = "stats"
    if config.margin is not None or config.margin_m1 is not None:
        source = "config"
    m = config.margin if config.margin is not None else m
    m1 = config.margin_m1 if config.margin_m1 is not None else m1
    return Margins(float(m), abs(float(m1)), source)


def _stat(stats: dict, name: str, size: int) -> np.ndarray | None:
    """The eval-pass field, else the last training epoch's."""
    for key in (name, f"train_{name}"):
        if key in stats:
            values = np.asarray(stats[key])
            if len(values) != size:
                raise ValueError(f"stats[{key!r}] has {len(values)} rows, the labels {size}")
            return values
    return None


def head_angles(stats: dict | None, labels: np.ndarray, rows: np.ndarray):
    """(theta_y°, theta_1°, j*, valid) over rows; valid where the stats are complete and were
    taken under the face's current label (a relabelled face's old angles say nothing)."""
    n = len(rows)
    empty = (np.full(n, np.nan), np.full(n, np.nan), np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool))
    if stats is None:
        return empty
    size = len(labels)
    theta_y, theta_1, j_star = (_stat(stats, k, size) for k in ("theta_y", "theta_1", "j_star"))
    if theta_y is None or theta_1 is None or j_star is None:
        return empty
    ty = np.degrees(theta_y[rows].astype(np.float64))
    t1 = np.degrees(theta_1[rows].astype(np.float64))
    js = j_star[rows].astype(np.int64)
    valid = np.isfinite(ty) & np.isfinite(t1) & (js >= 0) & (js != labels[rows])
    trained_label = _stat(stats, "label", size)
    if trained_label is not None:
        valid &= trained_label[rows] == labels[rows]
    return ty, t1, js, valid


def angles_deg(cos: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(cos.astype(np.float64), -1.0, 1.0)))


def prototype_centres(identities: Identities) -> tuple[np.ndarray, np.ndarray]:
    """(class ids with prototypes, their unit prototype centres)."""
    present = np.flatnonzero(identities.members[:, 0] >= 0)
    return present, identities.prototype_mean[present] / np.maximum(identities.prototype_norm[present],
                                                                    1e-12)[:, None]


def candidate_identities(embeddings: np.ndarray, rows: np.ndarray, positions: np.ndarray, identities: Identities,
                         neighbours: FaceNeighbours, labels: np.ndarray, config: MiningConfig):
    """(m, c) class ids that the faces at `positions` (into neighbours.rows) may belong to: the
    labels of their nearest faces, and their nearest prototype centres by a k-NN over centres."""
    present, centres = prototype_centres(identities)
    plan = plan_search(len(present), len(rows), config.centre_probes, config.exact_search_max_pairs)
    _, found = knn(centres, np.arange(len(present)), embeddings, rows, 2, plan, batch_size=config.batch_size,
                   seed=config.seed)
    by_centre = np.where(found >= 0, present[np.maximum(found, 0)], -1)
    by_face = neighbours.labels(labels)[positions]
    return np.hstack([by_face, by_centre]), plan.describe()


def nearest_other_identity(embeddings: np.ndarray, rows: np.ndarray, positions: np.ndarray, labels: np.ndarray,
                           identities: Identities, neighbours: FaceNeighbours,
                           config: MiningConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """(angle° to the nearest other prototype centre among the candidates, that identity or -1,
    search used) per row. Exact cosines, computed for the few candidates only."""
    if len(rows) == 0:
        return np.empty(0), np.empty(0, dtype=np.int64), "none"
    candidates, search = candidate_identities(embeddings, rows, positions, identities, neighbours, labels, config)
    usable = identities.has_prototypes(candidates) & (candidates != labels[rows][:, None])
    safe = np.where(usable, candidates, 0)
    norms = identities.prototype_norm
    cos = np.full(candidates.shape, -np.inf)
    step = max(1, config.batch_size // candidates.shape[1])
    for part in batches(len(rows), step):
        x = unit_rows(embeddings, rows[part])
        cos[part] = np.einsum("id,icd->ic", x, identities.prototype_mean[safe[part]]) / np.maximum(norms[safe[part]],
                                                                                                  1e-12)
    cos[~usable] = -np.inf
    best = cos.argmax(axis=1)
    j_star = np.where(usable.any(axis=1), np.take_along_axis(candidates, best[:, None], 1)[:, 0], -1)
    best_cos = np.where(j_star >= 0, cos[np.arange(len(rows)), best], -1.0)
    return angles_deg(best_cos), j_star, f"candidates: face neighbours ({neighbours.search}) + centres ({search})"


def exact_nearest_other(embeddings: np.ndarray, rows: np.ndarray, labels: np.ndarray,
                        identities: Identities, config: MiningConfig) -> tuple[np.ndarray, np.ndarray]:
    """(angle°, identity) of the nearest other prototype centre by exhaustive search: for the few
    faces about to be called open-set, whose approximate candidates found nothing near."""
    present, centres = prototype_centres(identities)
    if len(rows) == 0 or len(present) == 0:
        return np.full(len(rows), 180.0), np.full(len(rows), -1, dtype=np.int64)
    sims, found = knn(centres, np.arange(len(present)), embeddings, rows, 2, SearchPlan(exact=True),
                      batch_size=config.batch_size)
    classes = np.where(found >= 0, present[np.maximum(found, 0)], -1)
    if classes.shape[1] < 2:  # a single identity: nothing else to be near
        classes = np.hstack([classes, np.full_like(classes, -1)])
        sims = np.hstack([sims, np.full_like(sims, -np.inf)])
    first_is_other = classes[:, 0] != labels[rows]
    j_star = np.where(first_is_other, classes[:, 0], classes[:, 1])
    cos = np.where(j_star >= 0, np.where(first_is_other, sims[:, 0], sims[:, 1]), -1.0)
    return angles_deg(cos), j_star


def mean_prototype_cosine(embeddings: np.ndarray, rows: np.ndarray, classes: np.ndarray,
                          identities: Identities, batch_size: int) -> np.ndarray:
    """Mean cosine of each face to the reference faces of `classes`, the face itself left out
    when it is one of them; NaN where no other reference face exists."""
    safe = np.where(identities.has_prototypes(classes), classes, 0)
    count = (identities.members[safe] >= 0).sum(axis=1)
    is_member = (identities.members[safe] == rows[:, None]).any(axis=1)
    total = row_dot(embeddings, rows, identities.prototype_mean, safe, batch_size).astype(np.float64) * count
    others = count - is_member
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (total - is_member) / others
    return np.where(identities.has_prototypes(classes) & (others > 0), mean, np.nan)


def _r(x: float, digits: int = 3) -> float | None:
    return None if not np.isfinite(x) else round(float(x), digits)


@dataclass
class FaceAngles:
    """Per eligible face (arrays over rows), angles in degrees."""

    own_angle: np.ndarray     # to the own identity's prototype centre (the dominant-centre stand-in)
    other_angle: np.ndarray   # to the nearest other prototype centre (NaN where not searched)
    other_j: np.ndarray       # that identity
    theta_y: np.ndarray       # banding geometry: head where valid, else embedding
    theta_1: np.ndarray
    j_star: np.ndarray
    from_head: np.ndarray
    open_threshold: calibrate.Threshold
    search: str


def face_angles(embeddings: np.ndarray, labels: np.ndarray, rows: np.ndarray, identities: Identities,
                neighbours: FaceNeighbours, stats: dict | None, config: MiningConfig) -> FaceAngles:
    own = labels[rows].astype(np.int64)
    own_cos = row_dot(embeddings, rows, identities.prototype_mean, own, config.batch_size)
    own_angle = angles_deg(own_cos / np.maximum(identities.prototype_norm[own], 1e-12))
    threshold = calibrate.open_set_angle(own_angle, config.open_set_angle, config.open_set_k, config.open_set_min_gap)
    far = own_angle > threshold.value

    head_ty, head_t1, head_j, from_head = head_angles(stats, labels, rows)
    # Embedding geometry is needed where the head's is missing, and for open-set candidates.
    searched = ~from_head | far
    other_angle = np.full(len(rows), np.nan)
    other_j = np.full(len(rows), -1, dtype=np.int64)
    other_angle[searched], other_j[searched], search = nearest_other_identity(
        embeddings, rows[searched], np.flatnonzero(searched), labels, identities, neighbours, config)
    # An open-set call says "near no identity at all": confirm it against every centre.
    recheck = far & (other_angle > threshold.value)
    other_angle[recheck], other_j[recheck] = exact_nearest_other(embeddings, rows[recheck], labels, identities,
                                                                 config)
    return FaceAngles(own_angle, other_angle, other_j, np.where(from_head, head_ty, own_angle),
                      np.where(from_head, head_t1, other_angle), np.where(from_head, head_j, other_j),
                      from_head, threshold, search)


def mine_noisy(embeddings: np.ndarray, labels: np.ndarray, rows: np.ndarray, identities: Identities,
               neighbours: FaceNeighbours, stats: dict | None, config: MiningConfig,
               duplicate_pairs: set[tuple[int, int]] = frozenset()) -> list[FlagCandidate]:
    """Noisy and hard flags over the eligible `rows` (dataset indices)."""
    margins = resolve_margins(stats, config)
    own = labels[rows].astype(np.int64)
    angles = face_angles(embeddings, labels, rows, identities, neighbours, stats, config)
    tau = angles.open_threshold.value
    theta_y, theta_1, j_star = angles.theta_y, angles.theta_1, angles.j_star

    open_set = (angles.own_angle > tau) & (angles.other_angle > tau)
    band_noisy = (theta_1 < theta_y - margins.m1_deg) & (j_star >= 0)
    band_hard = ~band_noisy & (theta_1 < theta_y + margins.m_deg) & (j_star >= 0)
    duplicate = np.zeros(len(rows), dtype=bool)
    if duplicate_pairs:
        keys = np.minimum(own, j_star) * identities.count + np.maximum(own, j_star)
        duplicate = np.isin(keys, [a * identities.count + b for a, b in duplicate_pairs])
    banded = (band_noisy | band_hard) & ~open_set & ~duplicate

    cos_own = np.full(len(rows), np.nan)
    cos_other = np.full(len(rows), np.nan)
    sel = np.flatnonzero(banded)
    cos_own[sel] = mean_prototype_cosine(embeddings, rows[sel], own[sel], identities, config.batch_size)
    cos_other[sel] = mean_prototype_cosine(embeddings, rows[sel], j_star[sel], identities, config.batch_size)
    # No reference face of its own besides itself: nothing contradicts the band.
    confirmed = band_noisy & identities.has_prototypes(j_star) & (cos_other > np.nan_to_num(cos_own, nan=-np.inf))
    closed_set = banded & confirmed
    hard = banded & ~closed_set

    thresholds = {"margin_deg": _r(margins.m_deg), "m1_deg": _r(margins.m1_deg), "margin_source": margins.source,
                  "open_set_angle_deg": angles.open_threshold.as_dict()}

    def references(i: int, j: int) -> dict:
        return {"own": identities.references(int(own[i])), "nearest": identities.references(j)}

    def banded_evidence(i: int) -> dict:
        j = int(j_star[i])
        return {
            "geometry": HEAD if angles.from_head[i] else EMBEDDING,
            "theta_y_deg": _r(theta_y[i]), "theta_1_deg": _r(theta_1[i]), "nearest_identity": j if j >= 0 else None,
            "angle_own_prototype_centre_deg": _r(angles.own_angle[i]),
            "cos_own_prototypes": _r(cos_own[i], 4), "cos_nearest_prototypes": _r(cos_other[i], 4),
            "reference_faces": references(i, j), "thresholds": thresholds, "search": angles.search,
        }

    flags: list[FlagCandidate] = []
    for i in np.flatnonzero(open_set):
        j = int(angles.other_j[i])
        evidence = {
            "reason": "open_set", "angle_own_prototype_centre_deg": _r(angles.own_angle[i]),
            "angle_nearest_other_centre_deg": _r(angles.other_angle[i]), "nearest_identity": j if j >= 0 else None,
            "reference_faces": references(i, j), "thresholds": thresholds,
            "search": "exhaustive over all prototype centres",
            "score_rule": "min(angle to own, angle to nearest other centre) - open_set_angle (degrees)",
        }
        score = min(angles.own_angle[i], angles.other_angle[i]) - tau
        flags.append(FlagCandidate(NOISY, float(score), int(rows[i]), None, int(own[i]), None, "remove", None,
                                   evidence))
    for i in np.flatnonzero(closed_set):
        evidence = {"reason": "closed_set", "band": "noisy", **banded_evidence(i),
                    "score_rule": "theta_y - theta_1 - |m1| (degrees)"}
        flags.append(FlagCandidate(NOISY, float(theta_y[i] - theta_1[i] - margins.m1_deg), int(rows[i]), None,
                                   int(own[i]), None, "relabel", int(j_star[i]), evidence))
    for i in np.flatnonzero(hard):
        evidence = {"reason": "noisy_band_unconfirmed" if band_noisy[i] else "margin_band",
                    "band": "noisy" if band_noisy[i] else "hard", **banded_evidence(i),
                    "score_rule": "theta_y + m - theta_1 (degrees)"}
        flags.append(FlagCandidate(HARD, float(theta_y[i] + margins.m_deg - theta_1[i]), int(rows[i]), None,
                                   int(own[i]), None, "keep", None, evidence))
    return flags
