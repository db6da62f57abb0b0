"""Low feature norm: non-faces and unrecognisable blur embed with a small ‖z‖.

The threshold comes from this run's norm distribution (robust z-score of log ‖z‖; see
calibrate.low_norm). Whether low norm means low quality depends on the model (AdaFace notes the
link reversed on some), so the evidence carries the numbers for the reviewer to judge.
Norm 0 marks an unreadable image (ml.embed writes zero rows): not flagged here.
"""
from __future__ import annotations

import numpy as np

from ml.mining import calibrate
from ml.mining.candidate import LOW_NORM, FlagCandidate
from ml.mining.config import MiningConfig


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


def mine_low_norm(norms: np.ndarray | None, stats: dict | None, labels: np.ndarray, rows: np.ndarray,
                  config: MiningConfig) -> list[FlagCandidate]:
    values, source = face_norms(norms, stats, len(labels))
    if values is None or len(rows) == 0:
        return []
    norm = values[rows]
    usable = np.isfinite(norm) & (norm > 0)
    threshold = calibrate.low_norm(norm[usable], config.low_norm_threshold, config.low_norm_k)
    record = threshold.as_dict()
    median_log, sigma_log, _ = calibrate.robust_location_scale(np.log(norm[usable]))
    flagged = np.flatnonzero(usable & (norm < threshold.value))
    flags = []
    for i in flagged:
        z = (median_log - np.log(norm[i])) / sigma_log if sigma_log > 0 else 0.0
        evidence = {"norm": round(float(norm[i]), 4), "median_norm": round(float(np.exp(median_log)), 4),
                    "log_norm_z": round(float(-z), 3), "norm_source": source,
                    "thresholds": {"low_norm": record}, "score_rule": "robust z-score of -log(norm)"}
        flags.append(FlagCandidate(LOW_NORM, float(z), int(rows[i]), None, int(labels[rows[i]]), None, "remove",
                                   None, evidence))
    return flags
