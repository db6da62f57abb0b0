"""Thresholds from a run's own distributions, with a record of how each was set.

The rule throughout is a robust outlier bound: median ± k·σ, σ = 1.4826·MAD (the standard
deviation for Gaussian data, yet barely moved by the 5-20% of noise a dataset may hold). Where
the MAD is 0 (many equal values) the IQR stands in, then the standard deviation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

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
    details: dict | None = None  # further fitted numbers (already JSON-clean)

    def as_dict(self) -> dict:
        out = {"name": self.name, "value": _clean(self.value), "rule": self.rule, "median": _clean(self.median),
               "sigma": _clean(self.sigma), "k": self.k, "samples": self.samples}
        if self.details:
            out.update(self.details)
        return out


def _clean(x):
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


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


# The quantiles the duplicate null is fitted on: duplicates only ever raise an identity's best
# score, so the lower part of the distribution is the null's even when many identities have a
# twin (two sources with many shared people: a third of the identities in bench/sources.py).
NULL_QUANTILES = (0.1, 0.3)


def lower_tail_location_scale(values, quantiles: tuple[float, float] = NULL_QUANTILES) -> tuple[float, float, int]:
    """(mean, sigma, n) of the normal through two lower quantiles of the values; the robust
    median and MAD where those coincide."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 3:
        return robust_location_scale(values)
    low, high = np.quantile(values, quantiles)
    z_low, z_high = (NormalDist().inv_cdf(q) for q in quantiles)
    sigma = float(high - low) / (z_high - z_low)
    if sigma <= 0:
        return robust_location_scale(values)
    return float(high) - z_high * sigma, sigma, int(values.size)


def duplicate_score(top1_scores, configured: float | None, expected_false: float, tests: int) -> Threshold:
    """The bound on the best-candidate score of an identity pair. Most identities' best candidate
    is simply another person: a normal fitted to the lower part of every identity's best score
    (lower_tail_location_scale) is the null, and the bound sits where about `expected_false` of
    the `tests` pairs put to it (the mutual ones) would pass by chance: mean + z*sigma,
    z = Phi^-1(1 - expected_false / tests). It tightens as a dataset grows (z 1.8 for 50 tests,
    3.5 for 20,000). A fit on all the scores (median, MAD) put the bound above all 30 planted
    pairs of bench/sources.py, where a third of the identities have a twin."""
    if configured is not None:
        return fixed("duplicate_score", configured)
    mean, sigma, n = lower_tail_location_scale(top1_scores)
    if n == 0 or tests <= 0:
        return Threshold("duplicate_score", math.inf, "no data", samples=n)
    z = NormalDist().inv_cdf(1.0 - expected_false / tests) if tests > expected_false else 0.0
    return Threshold("duplicate_score", mean + z * sigma,
                     "mean + z*sigma of a normal through the 10th and 30th percentiles of every identity's best "
                     "score, z = Phi^-1(1 - expected_false / tests)",
                     mean, sigma, round(z, 4), n, {"expected_false": expected_false, "tests": int(tests)})


def noise_margin(margins_deg, configured_m1: float | None, k: float) -> Threshold:
    """The margin (angle to the own centre minus angle to the nearest other, degrees) beyond
    which a face is noisy: the RobustFace rule theta_1 < theta_y - |m1| with |m1| read off this
    run's margin distribution as a robust upper outlier bound (median + k*sigma), or a fixed |m1|."""
    if configured_m1 is not None:
        return fixed("noise_margin_deg", math.degrees(abs(configured_m1)))
    # |m1| >= 0: a face is never noisy while it is nearer its own centre than any other.
    return upper_threshold("noise_margin_deg", margins_deg, k, low=0.0)


def crossing_angle(genuine_deg, impostor_deg, configured: float | None) -> Threshold:
    """The angle up to which a face belongs to an identity: where the run's genuine angles (faces
    to their own centre) and impostor angles (faces to the nearest other centre) are equally
    likely, each fitted by a robust normal (median, 1.4826*MAD). The run's own verification
    threshold against identity centres; a fixed angle (75 in the Sub-center ArcFace recipe)
    replaces it."""
    if configured is not None:
        return fixed("open_set_angle_deg", configured)
    mu_g, sd_g, n_g = robust_location_scale(genuine_deg)
    mu_i, sd_i, n_i = robust_location_scale(impostor_deg)
    if n_g == 0 or n_i == 0 or not (sd_g > 0 and sd_i > 0):
        return Threshold("open_set_angle_deg", math.inf, "no data", samples=0)
    value = _equal_density(mu_g, sd_g, mu_i, sd_i)
    return Threshold("open_set_angle_deg", value,
                     "equal density of normal(genuine: face to own centre) and normal(impostor: face to nearest "
                     "other centre), robust fits", mu_g, sd_g, None, n_g,
                     {"impostor_median": _clean(mu_i), "impostor_sigma": _clean(sd_i), "impostor_samples": n_i})


def _equal_density(mu_g: float, sd_g: float, mu_i: float, sd_i: float) -> float:
    """The point between the two means where N(mu_g, sd_g) and N(mu_i, sd_i) have equal density
    (the midpoint where the means coincide or no root lies between them)."""
    low, high = min(mu_g, mu_i), max(mu_g, mu_i)
    # log N_g(x) = log N_i(x)  <=>  a x^2 + b x + c = 0
    a = 1.0 / sd_i ** 2 - 1.0 / sd_g ** 2
    b = 2.0 * (mu_g / sd_g ** 2 - mu_i / sd_i ** 2)
    c = mu_i ** 2 / sd_i ** 2 - mu_g ** 2 / sd_g ** 2 + 2.0 * math.log(sd_i / sd_g)
    if abs(a) < 1e-12:
        roots = [-c / b] if b != 0 else []
    else:
        disc = b * b - 4 * a * c
        roots = [] if disc < 0 else [(-b + s * math.sqrt(disc)) / (2 * a) for s in (1.0, -1.0)]
    inside = [r for r in roots if low <= r <= high]
    return float(inside[0]) if inside else (low + high) / 2.0
