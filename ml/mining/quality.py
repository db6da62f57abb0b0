"""Low quality (the low_norm kind): non-faces, blank images and unrecognisable blur.

Three signals, each judged against this run's own distribution; a face is flagged when any of
them is an outlier, and the evidence names which:
- feature norm: non-faces and blur embed with a small ‖z‖ under a margin-trained model; robust
  z-score of log ‖z‖ below -low_norm_k (calibrate.low_norm). Whether low norm means low quality
  depends on the model (AdaFace notes the link reversed on some; dlib's descriptor has no such
  link), so it is one signal among three;
- image sharpness (ml.mining.copies.image_sharpness, from the image itself, no model): robust
  z-score of its log below -low_norm_k. Blank images, heavy blur and tiny crops blown up lie far
  below faces (1.3-2 against 21 at the faces' 0.5th percentile on LFW);
- no face found: where the extractor ran a face detector (the pretrained method's dlib HOG
  detector) and it found a face in at least FACE_FOUND_INFORMATIVE of the images. On such a set
  the rare image without a face is a non-face or a face too poor to see; where the detector
  misses many (tightly aligned crops, unusual images), a miss says nothing about one image.
Norm 0 marks an unreadable image (ml.embed writes zero rows): not flagged here.
"""
from __future__ import annotations

import numpy as np

from ml.evidence import LowNormEvidence
from ml.mining import calibrate
from ml.mining.candidate import LOW_NORM, FlagCandidate
from ml.mining.config import MiningConfig

FACE_FOUND_INFORMATIVE = 0.9


def face_norms(norms: np.ndarray | None, stats: dict | None, size: int) -> tuple[np.ndarray | None, str]:
    """The norms to judge by: norms.npy's (the original image's raw embedding), else the stats
    eval pass's, else the last training epoch's."""
    if norms is not None:
        source, values = "norms", np.asarray(norms)
    elif stats is not None and "norm" in stats:
        source, values = "stats.norm", np.asarray(stats["norm"])
    elif stats is not None and "train_norm" in stats:
        source, values = "stats.train_norm", np.asarray(stats["train_norm"])
    else:
        return None, "none"
    if len(values) != size:
        raise ValueError(f"{source} has {len(values)} rows, the labels {size}")
    return values.astype(np.float64), source


def low_outliers(values: np.ndarray, k: float, configured: float | None = None):
    """(robust z-score of -log(value) per entry, NaN where unusable; the threshold record):
    entries with value below the threshold have z above k."""
    values = np.asarray(values, dtype=np.float64)
    usable = np.isfinite(values) & (values > 0)
    threshold = calibrate.low_norm(values[usable], configured, k)
    median_log, sigma_log, _ = calibrate.robust_location_scale(np.log(values[usable]))
    z = np.full(len(values), np.nan)
    if sigma_log > 0:
        z[usable] = (median_log - np.log(values[usable])) / sigma_log
    below = usable & (values < threshold.value)
    return z, below, threshold


def mine_low_norm(norms: np.ndarray | None, stats: dict | None, labels: np.ndarray, rows: np.ndarray,
                  config: MiningConfig, sharpness: np.ndarray | None = None,
                  face_found: np.ndarray | None = None) -> list[FlagCandidate]:
    """Low-quality flags over `rows`. sharpness: per dataset index (ml.mining.copies fingerprints);
    face_found: per dataset index, whether the extractor's face detector found a face."""
    if len(rows) == 0:
        return []
    signals: dict[str, tuple] = {}
    values, source = face_norms(norms, stats, len(labels))
    if values is not None:
        signals["norm"] = low_outliers(values[rows], config.low_norm_k, config.low_norm_threshold)
    if sharpness is not None:
        signals["sharpness"] = low_outliers(np.asarray(sharpness)[rows], config.low_norm_k)
    missing = np.zeros(len(rows), dtype=bool)
    found_share = None
    if face_found is not None:
        found = np.asarray(face_found, dtype=bool)[rows]
        found_share = float(found.mean())
        if found_share >= FACE_FOUND_INFORMATIVE:
            missing = ~found
    flagged = missing.copy()
    for _, below, _ in signals.values():
        flagged |= below
    flags = []
    for i in np.flatnonzero(flagged):
        reasons, measured, thresholds, score = [], {}, {}, 0.0
        for name, (z, below, threshold) in signals.items():
            if np.isfinite(z[i]):
                measured[f"{name}_z"] = round(float(-z[i]), 3)
                if below[i]:
                    reasons.append(f"low {name}")
                    score = max(score, float(z[i]))
            thresholds["low_norm" if name == "norm" else name] = threshold.as_dict()
        if values is not None:
            measured.update(norm=round(float(values[rows[i]]), 4), norm_source=source)
            median = signals["norm"][2].median
            if median is not None and np.isfinite(median):
                measured["median_norm"] = round(float(median), 4)
        if sharpness is not None:
            measured["sharpness"] = round(float(sharpness[rows[i]]), 3)
        if missing[i]:
            reasons.append("no face found")
            measured["face_found_share"] = round(found_share, 4)
            score = max(score, config.low_norm_k)
        evidence = LowNormEvidence(**measured, reasons=reasons, thresholds=thresholds,
                                   score_rule="the largest robust z-score of -log(value) among the signals below "
                                              "their bound; low_norm_k when only no face was found")
        flags.append(FlagCandidate(kind=LOW_NORM, score=score, index=int(rows[i]), label=int(labels[rows[i]]),
                                   suggestion="remove", evidence=evidence))
    return flags
