"""Thresholds from a run's own distributions, with a record of how each was set.

The rule throughout is a robust outlier bound: median ± k·σ, σ = 1.4826·MAD (the standard
deviation for Gaussian data, yet barely moved by the 5-20% of noise a dataset may hold). Where
the MAD is 0 (many equal values) the IQR stands in, then the standard deviation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 1.4826
IQR_TO_SIGMA = 1.349


@dataclass(frozen=True)
class Threshold:
    name: str
    value: float
    rule: str
    median: float | None = None
    sigma: float | None = None
    k: float | None = None
    samples: int = 0

    def as_dict(self) -> dict:
        def clean(x):
            return None if x is None or not math.isfinite(x) else round(float(x), 6)
        return {"name": self.name, "value": clean(self.value), "rule": self.rule, "median": clean(self.median),
                "sigma": clean(self.sigma), "k": self.k, "samples": self.samples}


def fixed(name: str, value: float) -> Threshold:
    return Threshold(name, float(value), "fixed (configured)")


def robust_location_scale(values) -> tuple[float, float, int]:
    """(median, robust sigma, number of finite values); NaN median when there are none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan, 0
    median = float(np.median(values))
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(values - median)))
    if sigma == 0.0:
        q25, q75 = np.percentile(values, [25, 75])
        sigma = float(q75 - q25) / IQR_TO_SIGMA
    if sigma == 0.0:
        sigma = float(values.std())
    return median, sigma, int(values.size)


def upper_threshold(name: str, values, k: float, *, min_gap: float = 0.0,
                    low: float = -math.inf, high: float = math.inf) -> Threshold:
    """median + max(k·σ, min_gap), clipped into [low, high]; +inf without data (flags nothing)."""
    median, sigma, n = robust_location_scale(values)
    if n == 0:
        return Threshold(name, math.inf, "no data", samples=0)
    value = min(max(median + max(k * sigma, min_gap), low), high)
    rule = f"median + max({k}*sigma, {min_gap})"
    if math.isfinite(low) or math.isfinite(high):
        rule += f" clipped to [{low}, {high}]"
    return Threshold(name, value, rule, median, sigma, k, n)


def open_set_angle(angles_deg, configured: float | None, k: float, min_gap: float) -> Threshold:
    if configured is not None:
        return fixed("open_set_angle_deg", configured)
    return upper_threshold("open_set_angle_deg", angles_deg, k, min_gap=min_gap)


def low_norm(norms, configured: float | None, k: float) -> Threshold:
    """A norm below which faces are flagged: exp(median(log n) - k·σ(log n)). Logs because norms
    are positive and skewed; the record's median is a norm, its sigma a log-norm spread."""
    if configured is not None:
        return fixed("low_norm", configured)
    norms = np.asarray(norms, dtype=np.float64)
    logs = np.log(norms[np.isfinite(norms) & (norms > 0)])
    median, sigma, n = robust_location_scale(logs)
    if n == 0:
        return Threshold("low_norm", -math.inf, "no data", samples=0)
    return Threshold("low_norm", math.exp(median - k * sigma), "exp(median(log norm) - k*sigma(log norm))",
                     math.exp(median), sigma, k, n)


def duplicate_cosine(top1_cosines, configured: float | None, k: float, min_cosine: float) -> Threshold:
    if configured is not None:
        return fixed("duplicate_cosine", configured)
    return upper_threshold("duplicate_cosine", top1_cosines, k, low=min_cosine, high=1.0)


def near_duplicate_cosine(top1_cosines, configured: float | None, k: float,
                          bounds: tuple[float, float]) -> Threshold:
    if configured is not None:
        return fixed("near_duplicate_cosine", configured)
    return upper_threshold("near_duplicate_cosine", top1_cosines, k, low=bounds[0], high=bounds[1])
