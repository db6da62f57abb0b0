"""bench/quality.py end to end in a tiny mode on the real LFW split: the JSON it prints has every
method's figures, in range. Skips where ../shared/data/lfw is absent."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "quality.py"
METHODS = ("arcface", "robustface", "comining", "clean_ceiling")


def load_bench():
    # bench/ is a folder of scripts, not a package.
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH)
    module = importlib.util.module_from_spec(spec)
    # Registered so that its decode function pickles by name for the decoding processes.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_bench()


def in_unit_interval(value) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


@pytest.mark.slow
def test_tiny_run_prints_one_json_object_with_every_method(lfw_root, bench, capsys, tmp_path):
    argv = ["--lfw", str(lfw_root), "--quick", "--limit-identities", "12", "--limit-pairs", "200",
            "--epochs", "1", "--size", "24", "--batch-size", "32", "--work-dir", str(tmp_path)]
    assert bench.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, "the benchmark must print exactly one line: its JSON"
    result = json.loads(lines[0])

    assert set(METHODS) <= set(result)
    for method in METHODS:
        assert in_unit_interval(result[method]["verification_accuracy"]), method
        assert result[method]["epochs"] == 1
    for method in ("arcface", "robustface", "comining"):
        assert in_unit_interval(result[method]["noise_auc"]), method
    assert result["clean_ceiling"]["noise_auc"] is None
    assert result["seconds"] > 0
    # 12 identities: the noise mix was injected (every kind present) and the run kept to its pairs.
    assert result["setup"]["pairs"] == 200
    assert all(result["setup"]["noise"][kind] > 0 for kind in ("closed", "open", "split"))
    # The noisy set the scores were measured against was written where asked.
    assert (tmp_path / "noisy" / "ground_truth.jsonl").exists()


def test_cached_faces_serve_the_trainer_item_contract(bench):
    import numpy as np
    import torch

    cache = torch.tensor([[[[0, 255]]], [[[127, 128]]]], dtype=torch.uint8).expand(2, 3, 1, 2).contiguous()
    faces = bench.labelled(["b", "a"], [1, 0], cache)
    image, label, index = faces[0]
    assert faces.class_names == ["a", "b"] and label == 1 and index == 0
    assert torch.allclose(image[0, 0], torch.tensor([127 / 127.5 - 1, 128 / 127.5 - 1]), atol=1e-6)
    assert np.array_equal(faces.labels, [1, 0]) and faces.num_classes == 2


def test_budget_plans_fewer_epochs_for_less_time_and_counts_comining_twice(bench):
    plan = lambda seconds, methods: bench.plan_epochs(seconds, 0.5, 68, 17_000, 64, methods, 100)  # noqa: E731
    full = plan(3000, bench.METHODS)
    assert plan(1500, bench.METHODS) < full
    assert plan(3000, ("arcface",)) > plan(3000, ("comining",)) > full
    assert plan(1, bench.METHODS) == 1
