"""What a round's page charts, computed once at mining time from the data mining had.

round_summary() returns a small JSON-safe dict (plain lists, ints, rounded floats, no NaN):
- "angles": a deterministic sample (at most max_points) of (theta_y, theta_1) in degrees with
  each point's band (0 easy, 1 hard, 2 noisy by the RobustFace rule), the band counts over
  every face that has angles, the margins in degrees and where the angles came from:
    "head": the trained head's per-sample statistics (stats.npz, eval pass first);
    "embedding": with no statistics ("bring your own model"), angles of the sampled faces to
    their own identity's mean centre and to the nearest other centre; counts then describe
    the sample only ("counted": "sample").
  The sample keeps every band visible: each band first gets up to an equal share of the
  points, what is left goes to the bands that have more.
- "norms": a histogram (bins bins) of the feature norms between the 0.5th and 99.5th
  percentile, with how many fell below/above that range, the median and, when mining
  flagged low norms, their threshold.
- "flags": mining's candidates per kind (the review app replaces these by what it publishes).

numpy (and torch inside ml.centres for the identity centres): the review app calls it, and ml
never imports Django.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from ml.centres import identity_centres, unit_rows
from ml.evidence import evidence_json

EASY, HARD, NOISY = 0, 1, 2
BANDS = ("easy", "hard", "noisy")
DEFAULT_MARGIN, DEFAULT_M1 = 0.5, 0.15  # radians, as ml.train.stats bands without a head margin
MAX_POINTS, BINS = 5000, 40
_ROWS_PER_BATCH = 32_768
_CENTRE_BATCH = 512


def _clean(value: float, digits: int = 3):
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _field(stats: dict | None, name: str, size: int) -> np.ndarray | None:
    """The eval-pass field, else the last training epoch's, when it covers every face."""
    if stats is None:
        return None
    for key in (name, f"train_{name}"):
        if key in stats and len(np.asarray(stats[key])) == size:
            return np.asarray(stats[key])
    return None


def margins_of(stats: dict | None, margin: float | None = None, margin_m1: float | None = None) -> tuple[float, float]:
    """(m, |m1|) in radians: explicit values, else the run's, else the defaults."""
    m, m1 = DEFAULT_MARGIN, DEFAULT_M1
    if stats is not None and "margins" in stats:
        m, m1 = (float(v) for v in np.asarray(stats["margins"]).ravel()[:2])
    m = float(margin) if margin is not None else m
    m1 = float(margin_m1) if margin_m1 is not None else m1
    return m, abs(m1)


def bands_of(theta_y_deg: np.ndarray, theta_1_deg: np.ndarray, m: float, m1: float) -> np.ndarray:
    """The RobustFace band per face: easy when theta_1 >= theta_y + m, noisy when
    theta_1 < theta_y - |m1|, hard between (angles in degrees, margins in radians)."""
    m_deg, m1_deg = math.degrees(m), math.degrees(m1)
    bands = np.full(len(theta_y_deg), HARD, dtype=np.int8)
    bands[theta_1_deg >= theta_y_deg + m_deg] = EASY
    bands[theta_1_deg < theta_y_deg - m1_deg] = NOISY
    return bands


def stratified_sample(bands: np.ndarray, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted positions into `bands`, at most max_points, every band represented: each band
    first gets up to an equal share, the rest of the budget goes to the larger bands in
    proportion. The same input always gives the same sample."""
    bands = np.asarray(bands)
    if len(bands) <= max_points:
        return np.arange(len(bands))
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(bands == b) for b in range(len(BANDS))]
    share = max_points // len(BANDS)
    take = [min(len(m), share) for m in members]
    left = max_points - sum(take)
    spare = np.array([len(m) - t for m, t in zip(members, take)], dtype=np.float64)
    if left > 0 and spare.sum() > 0:
        extra = np.floor(left * spare / spare.sum()).astype(int)
        take = [t + int(e) for t, e in zip(take, extra)]
    chosen = [rng.choice(m, size=t, replace=False) for m, t in zip(members, take) if t > 0]
    return np.sort(np.concatenate(chosen)) if chosen else np.arange(0)


def embedding_angles(embeddings: np.ndarray, labels: np.ndarray, rows: np.ndarray,
                     sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(theta_y, theta_1) in degrees of the `sample` rows to their own class centre and the
    nearest other one; centres from every row in `rows`."""
    count = int(labels[rows].max()) + 1
    centres = identity_centres(embeddings, labels, rows, count, batch_size=_ROWS_PER_BATCH).centres
    present = np.bincount(labels[rows], minlength=count) > 0
    theta_y = np.empty(len(sample))
    theta_1 = np.empty(len(sample))
    for start in range(0, len(sample), _CENTRE_BATCH):
        part = sample[start:start + _CENTRE_BATCH]
        cos = unit_rows(embeddings, part) @ centres.T
        cos[:, ~present] = -np.inf
        own = labels[part]
        theta_y[start:start + len(part)] = cos[np.arange(len(part)), own]
        cos[np.arange(len(part)), own] = -np.inf
        theta_1[start:start + len(part)] = cos.max(axis=1) if count > 1 else np.nan
    to_deg = lambda c: np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))  # noqa: E731
    return to_deg(theta_y), to_deg(theta_1)


def _angles(*, labels, stats, embeddings, rows, margins, max_points, seed) -> dict | None:
    size = len(labels)
    theta_y, theta_1 = _field(stats, "theta_y", size), _field(stats, "theta_1", size)
    valid = np.zeros(len(rows), dtype=bool)
    if theta_y is not None and theta_1 is not None:
        ty = np.degrees(theta_y[rows].astype(np.float64))
        t1 = np.degrees(theta_1[rows].astype(np.float64))
        valid = np.isfinite(ty) & np.isfinite(t1)
    if valid.any():  # the head's angles; without any, the embeddings' below
        ty, t1 = ty[valid], t1[valid]
        band = _field(stats, "band", size)
        bands = band[rows][valid].astype(np.int8) if band is not None else bands_of(ty, t1, *margins)
        bands = np.where((bands >= 0) & (bands <= 2), bands, bands_of(ty, t1, *margins)).astype(np.int8)
        pick = stratified_sample(bands, max_points, seed)
        source, counted = "head", "all"
        ty, t1, point_bands, counted_bands = ty[pick], t1[pick], bands[pick], bands
    elif embeddings is not None and len(rows) and int(labels[rows].max()) >= 1:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(rows, size=min(max_points, len(rows)), replace=False))
        ty, t1 = embedding_angles(embeddings, labels, rows, pick)
        keep = np.isfinite(ty) & np.isfinite(t1)
        ty, t1 = ty[keep], t1[keep]
        point_bands = bands_of(ty, t1, *margins)
        source, counted, counted_bands = "embedding", "sample", point_bands
    else:
        return None
    counts = np.bincount(counted_bands.astype(np.int64), minlength=3)[:3]
    return {
        "source": source,
        "counted": counted,
        "theta_y": [_clean(v, 2) for v in ty],
        "theta_1": [_clean(v, 2) for v in t1],
        "band": [int(b) for b in point_bands],
        "counts": {name: int(counts[i]) for i, name in enumerate(BANDS)},
        "margin_deg": _clean(math.degrees(margins[0]), 3),
        "margin_m1_deg": _clean(math.degrees(margins[1]), 3),
    }


def norm_values(norms: np.ndarray | None, stats: dict | None, size: int) -> tuple[np.ndarray | None, str]:
    """The norms mining judged low norm by: norms.npy's, else the stats' (eval pass, then training)."""
    if norms is not None and len(norms) == size:
        return np.asarray(norms, dtype=np.float64), "norms"
    for key in ("norm", "train_norm"):
        if stats is not None and key in stats and len(stats[key]) == size:
            return np.asarray(stats[key], dtype=np.float64), f"stats.{key}"
    return None, "none"


def norm_histogram(values: np.ndarray, bins: int = BINS, threshold: float | None = None) -> dict | None:
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) == 0:
        return None
    low, high = np.percentile(values, [0.5, 99.5])
    if threshold is not None and math.isfinite(threshold) and threshold > 0:
        low = min(low, threshold)  # the threshold line stays on the chart
    if high <= low:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    return {
        "edges": [_clean(e, 4) for e in edges],
        "counts": [int(c) for c in counts],
        "below": int((values < low).sum()),
        "above": int((values > high).sum()),
        "median": _clean(np.median(values), 4),
        "threshold": _clean(threshold, 4) if threshold is not None else None,
        "faces": int(len(values)),
    }


def _low_norm_threshold(candidates: Iterable) -> float | None:
    for candidate in candidates:
        if getattr(candidate, "kind", None) == "low_norm":
            record = (evidence_json(candidate.evidence).get("thresholds") or {}).get("low_norm") or {}
            value = record.get("value")
            if isinstance(value, (int, float)) and math.isfinite(value):
                return float(value)
    return None


def round_summary(*, labels: np.ndarray, stats: dict | None = None, embeddings: np.ndarray | None = None,
                  norms: np.ndarray | None = None, active: np.ndarray | None = None, candidates: Iterable = (),
                  margin: float | None = None, margin_m1: float | None = None,
                  max_points: int = MAX_POINTS, bins: int = BINS, seed: int = 0) -> dict:
    """The chart data of one round (see the module doc). `labels` and `active` are over dataset
    indices like mine()'s; candidates are mine()'s FlagCandidates (kind, evidence)."""
    labels = np.asarray(labels).astype(np.int64)
    keep = labels >= 0
    if active is not None:
        keep &= np.asarray(active, dtype=bool)
    rows = np.flatnonzero(keep)
    candidates = list(candidates)
    margins = margins_of(stats, margin, margin_m1)
    flags: dict[str, int] = {}
    for candidate in candidates:
        flags[str(candidate.kind)] = flags.get(str(candidate.kind), 0) + 1
    values, norm_source = norm_values(norms, stats, len(labels))
    histogram = None
    if values is not None:
        histogram = norm_histogram(values[rows], bins, _low_norm_threshold(candidates))
        if histogram is not None:
            histogram["source"] = norm_source
    return {
        "version": 1,
        "faces": int(len(rows)),
        "angles": _angles(labels=labels, stats=stats, embeddings=embeddings, rows=rows, margins=margins,
                          max_points=max_points, seed=seed),
        "norms": histogram,
        "flags": flags,
    }
