"""ml.mining on synthetic clusters with planted problems: closed-set noise, open-set outliers,
low norms; stats ("head") and embedding-only modes; active masks; evidence; the CLI."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from ml.mining import FlagCandidate, MiningConfig, mine, read_flags
from ml.mining import calibrate
from ml.mining.__main__ import main as cli_main
from ml.mining.flags import eligible_rows


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_faces(seed=0, classes=40, per_class=25, dim=128, closed=20, open_set=10, low_norm=8, within=0.6):
    """Faces a·centre + sqrt(1 - a²)·noise (a² = within: pairwise cosine ~0.6 in an identity).
    closed: faces of another identity under a wrong label; open_set: random directions (people
    outside the label set); low_norm: tiny feature norms."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((classes, dim)))
    true = np.repeat(np.arange(classes), per_class)
    a = math.sqrt(within)
    x = a * centres[true] + math.sqrt(1 - within) * unit(rng.standard_normal((len(true), dim)))
    picks = rng.permutation(len(true))
    closed_idx = np.sort(picks[:closed])
    open_idx = np.sort(picks[closed:closed + open_set])
    low_idx = np.sort(picks[closed + open_set:closed + open_set + low_norm])
    labels = true.copy()
    labels[closed_idx] = (true[closed_idx] + rng.integers(1, classes, closed)) % classes
    x[open_idx] = rng.standard_normal((open_set, dim))
    norms = np.exp(rng.normal(math.log(20.0), 0.1, len(true))).astype(np.float32)
    norms[low_idx] = rng.uniform(2.0, 4.0, low_norm)
    return SimpleNamespace(embeddings=unit(x).astype(np.float16), labels=labels, true=true, centres=centres,
                           closed=closed_idx, open=open_idx, low=low_idx, norms=norms)


def head_stats(faces, labels=None):
    """stats.npz-like angles from a 'head' whose class centres are the true centres."""
    labels = faces.labels if labels is None else labels
    cos = faces.embeddings.astype(np.float64) @ faces.centres.T
    rows = np.arange(len(labels))
    cos_y = cos[rows, labels]
    others = cos.copy()
    others[rows, labels] = -np.inf
    j_star = others.argmax(axis=1)
    return {"theta_y": np.arccos(np.clip(cos_y, -1, 1)).astype(np.float32),
            "theta_1": np.arccos(np.clip(others[rows, j_star], -1, 1)).astype(np.float32),
            "j_star": j_star.astype(np.int64), "label": labels.astype(np.int64),
            "margins": np.array([0.5, 0.15], dtype=np.float32)}


def by_kind(flags, kind, suggestion=None):
    return [f for f in flags if f.kind == kind and (suggestion is None or f.suggestion == suggestion)]


@pytest.fixture(scope="module")
def faces():
    return make_faces()


@pytest.fixture(scope="module")
def embedding_only(faces):
    return mine(embeddings=faces.embeddings, labels=faces.labels, norms=faces.norms)


def test_closed_set_noise_is_relabelled_to_the_true_identity(faces, embedding_only):
    relabel = by_kind(embedding_only, "noisy", "relabel")
    flagged = {f.index for f in relabel}
    assert set(faces.closed.tolist()) <= flagged
    assert len(flagged - set(faces.closed.tolist())) <= 1
    for f in relabel:
        assert f.target_label == faces.true[f.index]
        assert f.label == faces.labels[f.index]
        assert f.evidence.theta_1_deg < f.evidence.theta_y_deg
        assert f.evidence.cos_nearest_prototypes > f.evidence.cos_own_prototypes
        assert f.evidence.nearest_identity == f.target_label


def test_open_set_outliers_are_suggested_for_removal(faces, embedding_only):
    remove = by_kind(embedding_only, "noisy", "remove")
    flagged = {f.index for f in remove}
    assert set(faces.open.tolist()) <= flagged
    assert len(flagged - set(faces.open.tolist())) <= 1
    for f in remove:
        threshold = f.evidence.thresholds["open_set_angle_deg"]["value"]
        assert f.evidence.theta_y_deg > threshold
        assert f.evidence.theta_1_deg > threshold
        assert f.target_label is None and f.score >= 0


def test_low_norm_faces_are_flagged_against_a_recorded_threshold(faces, embedding_only):
    low = by_kind(embedding_only, "low_norm")
    assert {f.index for f in low} == set(faces.low.tolist())
    threshold = low[0].evidence.thresholds["low_norm"]["value"]
    assert max(faces.norms[faces.low]) < threshold < np.delete(faces.norms, faces.low).min()
    assert all(f.suggestion == "remove" and f.score > 3.5 for f in low)


def test_a_face_gets_at_most_one_of_noisy_and_hard(embedding_only):
    faces_flagged = [f.index for f in embedding_only if f.kind in ("noisy", "hard")]
    assert len(faces_flagged) == len(set(faces_flagged))


def test_flags_are_sorted_by_kind_then_score(embedding_only):
    for kind in {f.kind for f in embedding_only}:
        scores = [f.score for f in by_kind(embedding_only, kind)]
        assert scores == sorted(scores, reverse=True)


def test_evidence_is_json_with_the_thresholds_used(embedding_only):
    assert {f.kind for f in embedding_only} >= {"noisy", "low_norm"}
    for f in embedding_only:
        payload = json.loads(f.to_json())
        assert payload["evidence"]["thresholds"]
        assert FlagCandidate.from_dict(payload) == f
        if f.kind in ("noisy", "hard"):
            assert payload["evidence"]["reference_faces"]["own"]


def test_inactive_and_unlabelled_faces_are_never_flagged(faces):
    active = np.ones(len(faces.labels), dtype=bool)
    active[faces.closed[:10]] = False
    active[faces.low[:4]] = False
    labels = faces.labels.copy()
    labels[faces.open[:5]] = -1
    flags = mine(embeddings=faces.embeddings, labels=labels, norms=faces.norms, active=active)
    excluded = set(np.flatnonzero(~active).tolist()) | set(faces.open[:5].tolist())
    touched = {f.index for f in flags} | {f.other_index for f in flags}
    assert not touched & excluded
    # The rest of the planted noise is still found.
    assert {f.index for f in by_kind(flags, "noisy", "relabel")} >= set(faces.closed[10:].tolist())


def test_unreadable_zero_rows_take_no_part(faces):
    embeddings = faces.embeddings.copy()
    embeddings[faces.open] = 0
    rows = eligible_rows(embeddings, faces.labels, None)
    assert not set(faces.open.tolist()) & set(rows.tolist())
    flags = mine(embeddings=embeddings, labels=faces.labels)
    assert not {f.index for f in flags} & set(faces.open.tolist())


def test_stats_mode_records_the_head_angles_beside_the_embedding_geometry(faces):
    stats = head_stats(faces)
    flags = mine(embeddings=faces.embeddings, labels=faces.labels, stats=stats)
    relabel = by_kind(flags, "noisy", "relabel")
    assert {f.index for f in relabel} >= set(faces.closed.tolist())
    f = next(f for f in relabel if f.index == faces.closed[0])
    assert f.evidence.geometry == "embedding"
    assert f.evidence.head.theta_y_deg == pytest.approx(math.degrees(stats["theta_y"][f.index]), abs=1e-3)
    assert f.evidence.head.j_star == stats["j_star"][f.index]
    margin = f.evidence.thresholds["noise_margin_deg"]
    assert margin["rule"].startswith("median") and margin["value"] >= 0
    assert f.evidence.margin_deg > margin["value"]
    # No low_norm flags without norms from either source.
    assert not by_kind(flags, "low_norm")


def test_a_configured_m1_fixes_the_noise_margin(faces):
    def relabelled(m1):
        flags = mine(embeddings=faces.embeddings, labels=faces.labels, config=MiningConfig(kinds=("noisy",),
                                                                                           margin_m1=m1))
        return by_kind(flags, "noisy", "relabel")

    loose, strict = relabelled(0.1), relabelled(1.5)  # 5.7 and 85.9 degrees
    assert {f.index for f in loose} >= set(faces.closed.tolist())
    record = loose[0].evidence.thresholds["noise_margin_deg"]
    assert record["rule"].startswith("fixed") and record["value"] == pytest.approx(math.degrees(0.1))
    assert len(strict) < len(loose)


def test_stats_taken_under_an_old_label_are_not_used(faces):
    stats = head_stats(faces)
    # After training, a reviewer moved this (clean) face to another identity; the head's
    # angles belong to its old label, so the embedding geometry must judge it.
    face = int(np.setdiff1d(np.arange(len(faces.labels)), np.r_[faces.closed, faces.open])[0])
    labels = faces.labels.copy()
    labels[face] = (faces.true[face] + 1) % faces.centres.shape[0]
    flags = mine(embeddings=faces.embeddings, labels=labels, stats=stats, config=MiningConfig(kinds=("noisy",)))
    flag = next(f for f in flags if f.index == face)
    assert flag.evidence.geometry == "embedding"
    assert flag.suggestion == "relabel" and flag.target_label == faces.true[face]


def test_noisy_band_without_prototype_support_and_the_margin_band_are_hard(faces, monkeypatch):
    from ml.mining import noisy

    clean = np.setdiff1d(np.arange(len(faces.labels)), np.r_[faces.closed, faces.open, faces.low])
    in_margin = int(clean[0])
    embeddings = faces.embeddings.astype(np.float32)
    # Between its own centre and another one, a little nearer the other: 0 < margin <= noise margin
    # (fixed at 0.2 rad: these clusters are so tight that the calibrated one is 0 and the band empty).
    own, other = faces.true[in_margin], (faces.true[in_margin] + 1) % 40
    embeddings[in_margin] = unit(0.48 * faces.centres[own] + 0.52 * faces.centres[other])
    unsupported = int(faces.closed[0])
    real = noisy.mean_prototype_cosine

    def disagreeing(embeddings, rows, classes, identities, batch_size):
        # The reference faces of the identity it sits nearest do not back the band for this face.
        out = real(embeddings, rows, classes, identities, batch_size)
        return np.where((rows == unsupported) & (classes != faces.labels[unsupported]), -1.0, out)

    monkeypatch.setattr(noisy, "mean_prototype_cosine", disagreeing)
    flags = mine(embeddings=embeddings.astype(np.float16), labels=faces.labels, config=MiningConfig(margin_m1=0.2))
    hard = {f.index: f for f in by_kind(flags, "hard")}
    assert hard[unsupported].evidence.reason == "noisy_band_unconfirmed"
    assert hard[in_margin].evidence.reason == "margin_band"
    assert 0 < hard[in_margin].evidence.margin_deg <= hard[in_margin].evidence.thresholds["noise_margin_deg"][
        "value"]
    assert hard[in_margin].suggestion == hard[unsupported].suggestion == "keep"
    assert hard[unsupported].score > hard[in_margin].score
    assert not {unsupported, in_margin} & {f.index for f in by_kind(flags, "noisy")}


def test_a_fixed_open_set_angle_overrides_the_calibration(faces):
    def removed(angle):
        flags = mine(embeddings=faces.embeddings, labels=faces.labels,
                     config=MiningConfig(kinds=("noisy",), open_set_angle=angle))
        return by_kind(flags, "noisy", "remove")

    fixed = removed(60.0)
    assert {f.index for f in fixed} >= set(faces.open.tolist())
    assert fixed[0].evidence.thresholds["open_set_angle_deg"]["rule"].startswith("fixed")
    assert fixed[0].evidence.thresholds["open_set_angle_deg"]["value"] == 60.0
    assert removed(120.0) == []


def test_kinds_limit_what_is_mined(faces):
    flags = mine(embeddings=faces.embeddings, labels=faces.labels, norms=faces.norms,
                 config=MiningConfig(kinds=("low_norm",)))
    assert {f.kind for f in flags} == {"low_norm"}
    with pytest.raises(ValueError):
        MiningConfig(kinds=("bogus",))


def test_robust_thresholds():
    values = np.r_[np.full(90, 10.0) + np.linspace(-1, 1, 90), [100.0] * 10]  # 10% outliers
    median, sigma, n = calibrate.robust_location_scale(values)
    assert 9.5 < median < 10.5 and sigma < 2 and n == 100
    t = calibrate.upper_threshold("x", values, 4.0, min_gap=0.0)
    assert 10 < t.value < 100 and t.as_dict()["k"] == 4.0
    assert calibrate.upper_threshold("x", values, 4.0, min_gap=50.0).value == pytest.approx(median + 50)
    assert calibrate.upper_threshold("x", values, 4.0, high=12.0).value == 12.0
    assert calibrate.upper_threshold("x", [], 4.0).as_dict()["value"] is None
    low = calibrate.low_norm(np.r_[np.full(100, 20.0) * np.exp(np.linspace(-0.1, 0.1, 100)), [1.0]], None, 3.5)
    assert 1.0 < low.value < 20.0 * math.exp(-0.1)
    assert calibrate.low_norm([5.0], 3.0, 3.5).value == 3.0


def test_cli_writes_flags_jsonl(tmp_path, faces, capsys):
    np.save(tmp_path / "e.npy", faces.embeddings)
    np.save(tmp_path / "l.npy", faces.labels)
    np.save(tmp_path / "n.npy", faces.norms)
    np.savez(tmp_path / "stats.npz", **head_stats(faces))
    out = tmp_path / "flags.jsonl"
    assert cli_main(["--embeddings", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "l.npy"),
                     "--norms", str(tmp_path / "n.npy"), "--stats", str(tmp_path / "stats.npz"),
                     "--out", str(out), "--kinds", "noisy,low_norm"]) == 0
    summary = json.loads(capsys.readouterr().out)
    flags = read_flags(out)
    assert summary["flags"] == len(flags) == len(out.read_text().splitlines())
    assert summary["mode"] == "stats"
    assert {f.kind for f in flags} == {"noisy", "low_norm"}
    assert {f.index for f in flags if f.suggestion == "relabel"} >= set(faces.closed.tolist())
