"""ml.mining.summary: the chart data a round stores when it publishes."""
import json
import math
from types import SimpleNamespace

import numpy as np

from ml.centres import identity_centres
from ml.mining.summary import (
    EASY, HARD, NOISY, bands_of, norm_histogram, round_summary, stratified_sample,
)


def _stats(n: int, rng) -> dict:
    theta_y = rng.uniform(0.3, 1.2, n).astype(np.float32)
    theta_1 = (theta_y + rng.normal(0.6, 0.4, n)).astype(np.float32)
    theta_y[:3] = np.nan  # not evaluated
    return {"theta_y": theta_y, "theta_1": theta_1, "norm": rng.uniform(5, 30, n).astype(np.float32),
            "margins": np.array([0.5, 0.15], dtype=np.float32)}


def test_band_rule_matches_robustface():
    ty = np.array([40.0, 40.0, 40.0, 40.0])
    t1 = np.array([70.0, 60.0, 35.0, 20.0])  # m = 28.6°, |m1| = 8.6°
    assert bands_of(ty, t1, 0.5, 0.15).tolist() == [EASY, HARD, HARD, NOISY]


def test_sample_is_deterministic_bounded_and_keeps_rare_bands():
    bands = np.zeros(100_000, dtype=np.int8)
    bands[:50] = NOISY
    bands[50:2000] = HARD
    first, second = stratified_sample(bands, 5000, seed=0), stratified_sample(bands, 5000, seed=0)
    assert np.array_equal(first, second)
    assert len(first) <= 5000 and len(np.unique(first)) == len(first)
    assert (bands[first] == NOISY).sum() == 50  # every one of the rare band
    assert (bands[first] == HARD).sum() >= 5000 // 3  # at least an equal share
    assert stratified_sample(bands[:10], 5000).tolist() == list(range(10))


def test_summary_from_head_statistics_is_json_safe_and_counts_every_face():
    rng = np.random.default_rng(1)
    n = 12_000
    labels = rng.integers(0, 50, n)
    active = np.ones(n, dtype=bool)
    active[10:20] = False
    candidates = [SimpleNamespace(kind="noisy", evidence={}), SimpleNamespace(kind="noisy", evidence={}),
                  SimpleNamespace(kind="low_norm", evidence={"thresholds": {"low_norm": {"value": 6.5}}})]
    summary = round_summary(labels=labels, stats=_stats(n, rng), active=active, candidates=candidates)

    json.dumps(summary, allow_nan=False)  # stored in a jsonb column: no NaN anywhere
    angles = summary["angles"]
    assert angles["source"] == "head" and angles["counted"] == "all"
    assert sum(angles["counts"].values()) == n - 10 - 3  # inactive and unevaluated left out
    assert len(angles["theta_y"]) == len(angles["theta_1"]) == len(angles["band"]) <= 5000
    assert round(angles["margin_deg"], 1) == round(math.degrees(0.5), 1)
    norms = summary["norms"]
    assert len(norms["counts"]) == 40 and len(norms["edges"]) == 41
    assert sum(norms["counts"]) + norms["below"] + norms["above"] == n - 10
    assert norms["threshold"] == 6.5 and norms["edges"][0] <= 6.5
    assert summary["flags"] == {"noisy": 2, "low_norm": 1}
    assert round_summary(labels=labels, stats=_stats(n, np.random.default_rng(1)), active=active) == \
        round_summary(labels=labels, stats=_stats(n, np.random.default_rng(1)), active=active)


def test_summary_from_embeddings_alone_finds_the_mislabelled_face_noisy():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 32))
    labels = np.repeat(np.arange(4), 30)
    rows = centres[labels] + 0.1 * rng.normal(size=(120, 32))
    rows[0] = centres[3] + 0.05 * rng.normal(size=32)  # labelled 0, looks like 3
    summary = round_summary(labels=labels, embeddings=rows.astype(np.float32))

    angles = summary["angles"]
    assert angles["source"] == "embedding" and angles["counted"] == "sample"
    assert len(angles["band"]) == 120
    assert angles["band"][0] == NOISY and angles["band"].count(NOISY) == 1
    assert angles["theta_y"][1] < angles["theta_1"][1]  # a clean face is nearer its own centre
    assert summary["norms"] is None  # no norms without statistics or norms.npy


def test_centres_are_unit_means_per_class():
    x = np.array([[1, 0], [0, 1], [2, 0]], dtype=np.float32)
    centres = identity_centres(x, np.array([0, 0, 1]), np.arange(3), 2).centres
    assert np.allclose(centres, [[np.sqrt(.5), np.sqrt(.5)], [1, 0]], atol=1e-6)


def test_histogram_of_constant_norms_and_of_nothing():
    flat = norm_histogram(np.full(10, 3.0))
    assert sum(flat["counts"]) == 10 and flat["edges"][0] < 3.0 < flat["edges"][-1]
    assert norm_histogram(np.array([np.nan, 0.0])) is None


def test_head_statistics_without_any_angle_fall_back_to_the_embeddings():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 10)
    stats = {"theta_y": np.full(30, np.nan, dtype=np.float32), "theta_1": np.full(30, np.nan, dtype=np.float32)}
    summary = round_summary(labels=labels, stats=stats, embeddings=rng.normal(size=(30, 8)).astype(np.float32))
    assert summary["angles"]["source"] == "embedding" and len(summary["angles"]["band"]) == 30
    assert round_summary(labels=labels, stats=stats)["angles"] is None
