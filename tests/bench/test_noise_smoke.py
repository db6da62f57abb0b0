"""bench/noise.py: the flag scoring and oracle review on hand-made flags, and a tiny end-to-end run
on the real LFW split (skipped where ../shared/data/lfw is absent) whose JSON has the promised shape."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ml.mining import FlagCandidate

BENCH = Path(__file__).resolve().parents[2] / "bench" / "noise.py"
PER_FACE = ("closed_set", "open_set", "low_norm")


@pytest.fixture(scope="module")
def bench():
    # bench/ is a folder of scripts, not a package.
    spec = importlib.util.spec_from_file_location("bench_noise", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tiny_truth(bench):
    # Faces 0-3 of a, 4-5 of b, 6-7 a's split half; face 1 is b's (closed), face 4 an outsider (open).
    kinds = ["clean", "closed", "clean", "clean", "open", "clean", "split", "split"]
    given = ["a", "a", "a", "a", "b", "b", "a#split", "a#split"]
    true = ["a", "b", "a", "a", None, "b", "a", "a"]
    return bench.Truth(kinds, given, true, [("a", "a#split")])


def flag(kind, index, score, suggestion="keep", target=None, label=None, other=None):
    return FlagCandidate(kind=kind, score=score, index=index, label=label, other_label=other, suggestion=suggestion,
                         target_label=target)


def test_flags_are_scored_per_kind_against_the_ground_truth(bench):
    truth = tiny_truth(bench)
    a, b, split = (truth.class_names.index(n) for n in ("a", "b", "a#split"))
    flags = [flag("noisy", 1, 5.0, "relabel", target=b), flag("noisy", 2, 1.0, "relabel", target=b),
             flag("noisy", 4, 3.0, "remove"), flag("hard", 3, 1.0), flag("hard", 1, 0.5),
             flag("duplicate_identity", None, 0.9, "merge", label=a, other=split),
             flag("duplicate_identity", None, 0.5, "merge", label=a, other=b)]
    result = bench.score_flags(flags, truth)
    closed = result["closed_set"]
    assert (closed["precision"], closed["recall"], closed["relabel_correct"]) == (0.5, 1.0, 1.0)
    assert closed["auc"] == 1.0  # the closed face has the highest relabel score
    assert result["open_set"]["f1"] == 1.0
    assert result["hard"]["flagged"] == 2 and result["hard"]["precision"] == 0.5
    assert result["duplicate_identity"] == {"found": 1, "false": 1, "planted": 1}


def test_oracle_removes_open_relabels_closed_merges_true_pairs_and_rejects_the_rest(bench):
    truth = tiny_truth(bench)
    a, b, split = (truth.class_names.index(n) for n in ("a", "b", "a#split"))
    flags = [flag("noisy", 1, 5.0, "relabel", target=a), flag("noisy", 4, 3.0, "remove"),
             flag("noisy", 2, 1.0, "relabel", target=b),
             flag("duplicate_identity", None, 0.9, "merge", label=a, other=split)]
    corrected, rows, decisions = bench.oracle_review(flags, truth, np.arange(8))
    assert decisions == {"removed": 1, "relabelled": 1, "merged": 1, "rejected": 1}
    assert list(rows) == [0, 1, 2, 3, 5, 6, 7]
    # Face 1 got its true label b (not the wrong suggestion a); the split half is a again.
    assert corrected.given_names == ["a", "b", "a", "a", "b", "a", "a"]
    assert set(corrected.kinds) == {"clean"} and not corrected.pairs


def test_round_two_does_not_raise_again_what_the_reviewer_kept(bench):
    truth = tiny_truth(bench)
    b = truth.class_names.index("b")
    round1 = [flag("noisy", 1, 5.0, "relabel", target=b), flag("noisy", 2, 1.0, "relabel", target=b),
              flag("hard", 3, 1.0), flag("noisy", 4, 3.0, "remove")]
    rejected = bench.rejected_faces(round1, truth)
    assert rejected == {(2, "relabel"), (3, "keep")}  # faces 1 and 4 were fixed, not kept
    # Round 2 trains without face 4 (removed): its face i is round 1's rows[i].
    rows = np.array([0, 1, 2, 3, 5, 6, 7])
    round2 = [flag("noisy", 2, 1.0, "relabel", target=b), flag("noisy", 2, 1.0, "remove"), flag("hard", 3, 1.0),
              flag("hard", 4, 1.0), flag("duplicate_identity", None, 0.9, "merge", label=0, other=2)]
    kept = bench.not_decided_before(round2, rows, rejected)
    assert [(f.kind, f.index, f.suggestion) for f in kept] == [("noisy", 2, "remove"), ("hard", 4, "keep"),
                                                              ("duplicate_identity", None, "merge")]


@pytest.mark.slow
def test_quick_run_prints_one_json_object_of_the_promised_shape(lfw_root, bench, capsys, tmp_path, monkeypatch):
    argv = ["--lfw", str(lfw_root), "--quick", "--only", "lfw158", "--limit-identities", "12", "--epochs", "1",
            "--long-epochs", "2", "--size", "24", "--batch-size", "32", "--work-dir", str(tmp_path / "work"),
            "--cache-dir", str(tmp_path / "cache"), "--no-pretrained"]
    assert bench.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, "the benchmark must print exactly one line: its JSON"
    result = json.loads(lines[0])
    assert set(result) == {"lfw158", "seconds", "setup"}
    lfw = result["lfw158"]
    for round_ in ("round1", "round2"):
        for kind in PER_FACE + ("any_noise",):
            assert {"precision", "recall", "f1", "auc"} <= set(lfw[round_][kind]), (round_, kind)
        assert "relabel_correct" in lfw[round_]
        for kind in ("duplicate_identity", "near_duplicate"):
            assert {"found", "planted", "false"} <= set(lfw[round_][kind]), (round_, kind)
    assert set(lfw["epochs"]) == {"1", "2"} and all(0.0 <= f <= 1.0 for f in lfw["epochs"].values())
    assert 0.0 <= lfw["cumulative"]["precision"] <= 1.0 and 0.0 <= lfw["cumulative"]["recall"] <= 1.0
    assert lfw["setup"]["noise"]["copy"] > 0 and lfw["setup"]["noise"]["junk"] > 0
    assert 0.0 <= lfw["baselines"]["arcface_loss"]["f1"] <= 1.0
    assert result["setup"]["judging"].startswith("cross-fitted")
    assert (tmp_path / "work" / "lfw158" / "noisy" / "ground_truth.jsonl").exists()

    # Every training was kept; a second run re-mines from the kept runs without training an epoch.
    from ml.train.trainer import Trainer
    monkeypatch.setattr(Trainer, "_train_epoch", lambda self: pytest.fail("a kept training was run again"))
    assert bench.main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    timed = ("train_embed_seconds",)
    for round_ in ("round1", "round2"):
        assert ({k: v for k, v in again["lfw158"][round_].items() if k not in timed}
                == {k: v for k, v in lfw[round_].items() if k not in timed})
