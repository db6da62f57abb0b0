"""Noisy (closed-set and open-set) and hard faces.

Geometry: embeddings only, against identity centres (normalised mean embeddings; a face's own
centre leaves the face out). The head's angles of stats.npz (θ_y, θ_1, j*) go into the evidence
where they were taken under the face's current label, but decide nothing: measured on the LFW
noise benchmark the embedding angles separate noise better (ROC-AUC 0.989 against 0.984), they
exist for every face (relabelled ones and "bring your own model" included) and they do not
depend on classifier weights that training pushed apart.

Per face: θ_own (angle to its own centre), θ_other (to the nearest other centre, identity j*),
margin Δ = θ_own − θ_other. Two thresholds, both read off this run's distributions and recorded
in every flag's evidence:
- τ (noise_margin_deg): the RobustFace band θ_1 < θ_y − |m1| with |m1| calibrated: a robust
  upper outlier bound, median + k·σ, of every face's Δ (config.noise_k; config.margin_m1 fixes it);
- c (open_set_angle_deg): the angle up to which a face belongs to an identity: where genuine
  angles (θ_own of the faces not beyond τ) and impostor angles (their θ_other) are equally
  likely (calibrate.crossing_angle; config.open_set_angle fixes it, 75 in Sub-center ArcFace).
Decisions (each face gets at most one of noisy / hard):
1. open-set noisy (remove): Δ > τ and θ_other ≥ c (θ_own > c follows): it belongs to no
   identity. θ_other is then confirmed against every centre exhaustively (approximate search
   misses a share of true neighbours in high dimensions, and these faces are few), and against
   the face's nearest faces: if j* is the plurality label (two votes at least) of those within c,
   the face belongs to j* after all (a kNN classifier's answer: a pose or age cluster of j*'s
   person far from j*'s centre).
2. closed-set noisy (relabel to j*): Δ > τ, belonging to j* (θ_other < c, or by its nearest
   faces as above), and the prototypes confirm: its mean cosine to j*'s reference faces beats
   the mean cosine to its own (itself left out).
3. hard (keep, for confirmation): Δ > τ without the prototypes' confirmation, or the margin
   band lower < Δ ≤ τ (lower 0: nearer another identity's centre than its own; −m where
   config.margin is set).
The nearest other identity: exact cosines to a few candidates, the labels of the face's nearest
faces (the neighbour graph) and its nearest centres by approximate k-NN.
Faces whose (label, j*) pair was flagged as a duplicate identity get neither: the merge explains
them. Scores are degrees beyond the decision boundary.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.evidence import HardEvidence, HeadAngles, NeighbourVotes, NoisyEvidence
from ml.mining import calibrate
from ml.mining.candidate import HARD, NOISY, FlagCandidate
from ml.mining.config import MiningConfig
from ml.mining.neighbours import FaceNeighbours
from ml.mining.prototypes import Identities, own_centre_cosine, row_dot
from ml.mining.search import SearchPlan, batches, knn, plan_search, unit_rows

HEAD, EMBEDDING = "head", "embedding"


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


def present_centres(identities: Identities) -> tuple[np.ndarray, np.ndarray]:
    """(class ids with faces, their unit centres)."""
    present = np.flatnonzero(identities.sizes > 0)
    return present, identities.centres[present]


def candidate_identities(embeddings: np.ndarray, rows: np.ndarray, positions: np.ndarray, identities: Identities,
                         neighbours: FaceNeighbours, labels: np.ndarray, config: MiningConfig):
    """(m, c) class ids that the faces at `positions` (into neighbours.rows) may belong to: the
    labels of their nearest faces, and their nearest centres by a k-NN over centres."""
    present, centres = present_centres(identities)
    plan = plan_search(len(present), len(rows), config.centre_probes, config.exact_search_max_pairs)
    _, found = knn(centres, np.arange(len(present)), embeddings, rows, 2, plan, batch_size=config.batch_size,
                   seed=config.seed)
    by_centre = np.where(found >= 0, present[np.maximum(found, 0)], -1)
    by_face = neighbours.labels(labels)[positions]
    return np.hstack([by_face, by_centre]), plan.describe()


def nearest_other_identity(embeddings: np.ndarray, rows: np.ndarray, positions: np.ndarray, labels: np.ndarray,
                           identities: Identities, neighbours: FaceNeighbours,
                           config: MiningConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """(angle° to the nearest other centre among the candidates, that identity or -1, search
    used) per row. Exact cosines, computed for the few candidates only."""
    if len(rows) == 0:
        return np.empty(0), np.empty(0, dtype=np.int64), "none"
    candidates, search = candidate_identities(embeddings, rows, positions, identities, neighbours, labels, config)
    inside = (candidates >= 0) & (candidates < identities.count)
    usable = inside & (identities.sizes[np.where(inside, candidates, 0)] > 0) & (candidates != labels[rows][:, None])
    safe = np.where(usable, candidates, 0)
    cos = np.full(candidates.shape, -np.inf)
    step = max(1, config.batch_size // candidates.shape[1])
    for part in batches(len(rows), step):
        x = unit_rows(embeddings, rows[part])
        cos[part] = np.einsum("id,icd->ic", x, identities.centres[safe[part]])
    cos[~usable] = -np.inf
    best = cos.argmax(axis=1)
    j_star = np.where(usable.any(axis=1), np.take_along_axis(candidates, best[:, None], 1)[:, 0], -1)
    best_cos = np.where(j_star >= 0, cos[np.arange(len(rows)), best], -1.0)
    return angles_deg(best_cos), j_star, f"candidates: face neighbours ({neighbours.search}) + centres ({search})"


def exact_nearest_other(embeddings: np.ndarray, rows: np.ndarray, labels: np.ndarray,
                        identities: Identities, config: MiningConfig) -> tuple[np.ndarray, np.ndarray]:
    """(angle°, identity) of the nearest other centre by exhaustive search: for the few faces
    about to be called open-set, whose approximate candidates found nothing near."""
    present, centres = present_centres(identities)
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


def neighbour_votes(neighbour_labels: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(votes for classes[i] among row i's neighbour labels, the most votes any other label has)."""
    valid = neighbour_labels >= 0
    votes = ((neighbour_labels == classes[:, None]) & valid).sum(axis=1)
    same = (neighbour_labels[:, :, None] == neighbour_labels[:, None, :]) & valid[:, :, None]
    counts = np.where(valid & (neighbour_labels != classes[:, None]), same.sum(axis=2), 0)
    return votes, counts.max(axis=1, initial=0)


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

    own_angle: np.ndarray     # to the own identity's centre, the face left out (NaN: a lone face)
    other_angle: np.ndarray   # to the nearest other centre
    other_j: np.ndarray       # that identity (-1 where none)
    search: str


def face_angles(embeddings: np.ndarray, labels: np.ndarray, rows: np.ndarray, identities: Identities,
                neighbours: FaceNeighbours, config: MiningConfig) -> FaceAngles:
    own_angle = angles_deg(own_centre_cosine(embeddings, labels, rows, identities, config.batch_size))
    other_angle, other_j, search = nearest_other_identity(embeddings, rows, np.arange(len(rows)), labels, identities,
                                                          neighbours, config)
    return FaceAngles(own_angle, other_angle, other_j, search)


def mine_noisy(embeddings: np.ndarray, labels: np.ndarray, rows: np.ndarray, identities: Identities,
               neighbours: FaceNeighbours, stats: dict | None, config: MiningConfig,
               duplicate_pairs: set[tuple[int, int]] = frozenset()) -> list[FlagCandidate]:
    """Noisy and hard flags over the eligible `rows` (dataset indices)."""
    own = labels[rows].astype(np.int64)
    angles = face_angles(embeddings, labels, rows, identities, neighbours, config)
    theta_own, theta_other, j_star = angles.own_angle, angles.other_angle, angles.other_j
    judged = np.isfinite(theta_own) & (j_star >= 0)
    margin = np.where(judged, theta_own - theta_other, np.nan)
    tau = calibrate.noise_margin(margin[judged], config.margin_m1, config.noise_k)
    beyond = judged & (margin > tau.value)
    settled = judged & ~beyond
    belong = calibrate.crossing_angle(theta_own[settled], theta_other[settled], config.open_set_angle)
    c = belong.value
    hard_low = -np.degrees(config.margin) if config.margin is not None else 0.0

    # An open-set call says "near no identity at all": confirm it against every centre.
    recheck = np.flatnonzero(beyond & (theta_other >= c))
    theta_other[recheck], j_star[recheck] = exact_nearest_other(embeddings, rows[recheck], labels, identities, config)
    margin = np.where(judged, theta_own - theta_other, np.nan)
    # ...and against its nearest faces: when j* is the plain plurality of the labels of those
    # within the belonging angle c (two votes at least), the face sits among j*'s faces though
    # far from their centre (a pose or age cluster of that person, say): a kNN classifier's
    # answer, it belongs to j*. Faces beyond c are no evidence: a face far from everything still
    # has nearest faces.
    votes = np.zeros(len(rows), dtype=np.int64)
    rival = np.zeros(len(rows), dtype=np.int64)
    near = neighbours.labels(labels)[recheck]
    near = np.where(angles_deg(np.nan_to_num(neighbours.sims[recheck], neginf=-1.0)) < c, near, -1)
    votes[recheck], rival[recheck] = neighbour_votes(near, j_star[recheck])
    by_faces = (votes >= 2) & (votes > rival)

    duplicate = np.zeros(len(rows), dtype=bool)
    if duplicate_pairs:
        keys = np.minimum(own, j_star) * identities.count + np.maximum(own, j_star)
        duplicate = np.isin(keys, [a * identities.count + b for a, b in duplicate_pairs])
    open_set = beyond & (theta_other >= c) & (theta_own > c) & ~by_faces & ~duplicate
    band_noisy = beyond & ~open_set & ~duplicate
    band_hard = judged & ~beyond & (margin > hard_low) & ~duplicate
    # The margin band alone holds about a quarter of the faces when the embedding is honest
    # (cross-fitted, ml.crossfit): 1,365 hard flags on LFW-158, 84% of them clean. A reviewer's
    # minute goes to the band's faces whose nearest faces agree they sit with j*: the plurality
    # of their neighbours' labels (two votes at least) is j*, not their own identity.
    inside = np.flatnonzero(band_hard)
    band_votes, band_rival = neighbour_votes(neighbours.labels(labels)[inside], j_star[inside])
    band_hard[inside] = (band_votes >= 2) & (band_votes > band_rival)
    votes[inside], rival[inside] = band_votes, band_rival  # shown in the evidence

    cos_own = np.full(len(rows), np.nan)
    cos_other = np.full(len(rows), np.nan)
    sel = np.flatnonzero(band_noisy | band_hard)
    cos_own[sel] = mean_prototype_cosine(embeddings, rows[sel], own[sel], identities, config.batch_size)
    cos_other[sel] = mean_prototype_cosine(embeddings, rows[sel], j_star[sel], identities, config.batch_size)
    # No reference face of its own besides itself: nothing contradicts the band.
    confirmed = identities.has_prototypes(j_star) & (cos_other > np.nan_to_num(cos_own, nan=-np.inf))
    closed_set = band_noisy & confirmed & ((theta_other < c) | by_faces)
    hard = (band_noisy | band_hard) & ~closed_set

    thresholds = {"noise_margin_deg": tau.as_dict(), "open_set_angle_deg": belong.as_dict(),
                  "hard_margin_low_deg": _r(hard_low),
                  "margin_source": "config" if config.margin is not None or config.margin_m1 is not None else "run"}
    head_ty, head_t1, head_j, from_head = head_angles(stats, labels, rows)

    def common(i: int) -> dict:
        j = int(j_star[i])
        out = dict(theta_y_deg=_r(theta_own[i]), theta_1_deg=_r(theta_other[i]), margin_deg=_r(margin[i]),
                   nearest_identity=j if j >= 0 else None, geometry=EMBEDDING,
                   centre="normalised mean embedding (own: the face left out)",
                   reference_faces={"own": identities.references(int(own[i])), "nearest": identities.references(j)},
                   thresholds=thresholds)
        if votes[i]:
            out["neighbour_votes"] = NeighbourVotes(nearest_identity=int(votes[i]), best_other_label=int(rival[i]),
                                                    neighbours=int(neighbours.positions.shape[1]))
        if from_head[i]:
            out["head"] = HeadAngles(theta_y_deg=_r(head_ty[i]), theta_1_deg=_r(head_t1[i]), j_star=int(head_j[i]))
        return out

    flags: list[FlagCandidate] = []
    for i in np.flatnonzero(open_set):
        evidence = NoisyEvidence(reason="open_set", **common(i), search="exhaustive over all identity centres",
                                 score_rule="min(angle to own, angle to nearest other centre) - open_set_angle "
                                            "(degrees)")
        score = min(theta_own[i], theta_other[i]) - c
        flags.append(FlagCandidate(kind=NOISY, score=float(score), index=int(rows[i]), label=int(own[i]),
                                   suggestion="remove", evidence=evidence))
    for i in np.flatnonzero(closed_set):
        evidence = NoisyEvidence(reason="closed_set", band="noisy", **common(i),
                                 cos_own_prototypes=_r(cos_own[i], 4), cos_nearest_prototypes=_r(cos_other[i], 4),
                                 search=angles.search, score_rule="theta_y - theta_1 - noise_margin (degrees)")
        flags.append(FlagCandidate(kind=NOISY, score=float(margin[i] - tau.value), index=int(rows[i]),
                                   label=int(own[i]), suggestion="relabel", target_label=int(j_star[i]),
                                   evidence=evidence))
    for i in np.flatnonzero(hard):
        evidence = HardEvidence(reason="noisy_band_unconfirmed" if band_noisy[i] else "margin_band",
                                band="noisy" if band_noisy[i] else "hard", **common(i),
                                cos_own_prototypes=_r(cos_own[i], 4), cos_nearest_prototypes=_r(cos_other[i], 4),
                                search=angles.search, score_rule="theta_y - theta_1 - hard_margin_low (degrees)")
        flags.append(FlagCandidate(kind=HARD, score=float(margin[i] - hard_low), index=int(rows[i]),
                                   label=int(own[i]), suggestion="keep", evidence=evidence))
    return flags
