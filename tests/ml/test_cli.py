"""python -m ml train | embed | verify | score on a tiny synthetic face folder."""
import json
import subprocess
import sys

import numpy as np
import pytest

from ml.__main__ import main, score_noise
from tests.ml.test_trainer import TINY_BACKBONE, make_faces, one_thread  # noqa: F401 (autouse fixture)

TINY = [
    "backbone_kwargs=" + repr(TINY_BACKBONE), "head_kwargs={'s': 16.0}", "data.transform.crop=None",
    "data.transform.size=32", "epochs=1", "batch_size=8", "num_workers=0", "device='cpu'", "log_every=1",
    "checkpoint_every=2",
]


def run_cli(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    faces = make_faces(folder / "faces")
    args = ["train", "--config", "ml/configs/cpu_small.py", "--data-folder", str(faces), "--run-dir",
            str(folder / "run")]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    return folder, faces


def test_help_works_through_the_module_entry_point():
    for argv in ([], ["train"], ["embed"], ["verify"], ["score"]):
        out = subprocess.run([sys.executable, "-m", "ml", *argv, "--help"], capture_output=True, text=True, check=True)
        assert "usage: python -m ml" in out.stdout
    assert "--resume" in subprocess.run([sys.executable, "-m", "ml", "train", "--help"], capture_output=True,
                                        text=True).stdout


def test_train_writes_a_run_and_resumes(trained, capsys):
    folder, faces = trained
    run = folder / "run"
    assert (run / "checkpoints").is_dir() and (run / "stats.npz").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["path"] == str(faces) and config["data"]["transform"]["size"] == 32
    assert config["head_kwargs"] == {"s": 16.0} and config["backbone"] == "cpu_small"
    # Without --resume an existing run is refused; with it, a finished run just reports again.
    assert main(["train", "--data-folder", str(faces), "--run-dir", str(run), *sum((["--set", s] for s in TINY), [])]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert main(["train", "--data-folder", str(faces), "--run-dir", str(folder / "other"), "--set", "epochz=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err
    summary = run_cli(capsys, "train", "--config", "ml/configs/cpu_small.py", "--data-folder", str(faces),
                      "--run-dir", str(run), "--resume", *sum((["--set", s] for s in TINY), []))
    assert summary["completed"] is True and summary["global_step"] == 3


def test_embed(trained, capsys):
    folder, faces = trained
    result = run_cli(capsys, "embed", "--run-dir", str(folder / "run"), "--data-folder", str(faces),
                     "--out", str(folder / "emb"), "--device", "cpu", "--num-workers", "0")
    assert result["count"] == 24 and result["dim"] == 32 and result["unreadable"] == 0
    embeddings = np.load(folder / "emb" / "embeddings.npy")
    assert embeddings.shape == (24, 32)
    assert np.allclose(np.linalg.norm(embeddings.astype(np.float32), axis=1), 1.0, atol=1e-2)


def test_verify(trained, capsys):
    folder, faces = trained
    people = sorted(p.name for p in faces.iterdir())
    rows = ["fold\tpath_a\tpath_b\tsame"]
    for fold in range(2):
        for k, person in enumerate(people):
            other = people[(k + 1) % len(people)]
            rows.append(f"{fold}\t{person}/{fold:03d}.jpg\t{person}/{fold + 2:03d}.jpg\t1")
            rows.append(f"{fold}\t{person}/{fold:03d}.jpg\t{other}/{fold + 3:03d}.jpg\t0")
    pairs = folder / "pairs.tsv"
    pairs.write_text("\n".join(rows) + "\n")
    result = run_cli(capsys, "verify", "--checkpoint", str(sorted((folder / "run" / "checkpoints").iterdir())[-1]),
                     "--pairs", str(pairs), "--images-root", str(faces), "--device", "cpu", "--num-workers", "0",
                     "--out", str(folder / "verify.json"))
    assert result["pairs"] == 16 and result["same_pairs"] == 8
    assert 0.0 <= result["accuracy"] <= 1.0 and len(result["fold_accuracies"]) == 2
    assert json.loads((folder / "verify.json").read_text())["pairs"] == 16


def test_score_against_ground_truth(trained, tmp_path, capsys):
    folder, _ = trained
    kinds = ["clean"] * 18 + ["closed"] * 3 + ["open"] * 2 + ["split"]
    truth = tmp_path / "ground_truth.jsonl"
    truth.write_text("".join(json.dumps({"path": f"{i}.jpg", "kind": k, "true_label": None, "given_label": "x"})
                             + "\n" for i, k in enumerate(kinds)))
    scores = np.where(np.array(kinds) == "clean", 0.1, 0.9)
    scores[0] = 0.95  # one clean face scored as noisy
    np.save(tmp_path / "scores.npy", scores)
    result = run_cli(capsys, "score", "--scores", str(tmp_path / "scores.npy"), "--ground-truth", str(truth),
                     "--out", str(tmp_path / "score.json"))
    assert result["all"]["noisy"] == 6 and result["all"]["samples"] == 24
    assert result["all"]["auc"] == pytest.approx(1 - 1 / 18)  # the clean face outranks all 6 noisy ones
    assert result["closed"]["samples"] == 21 and result["open"]["samples"] == 20
    inverted = run_cli(capsys, "score", "--scores", str(tmp_path / "scores.npy"), "--ground-truth", str(truth),
                       "--invert")
    assert inverted["all"]["auc"] < 0.1
    # A run's stats.npz works directly, with --key.
    from_stats = run_cli(capsys, "score", "--scores", str(folder / "run" / "stats.npz"), "--key", "theta_y",
                         "--ground-truth", str(truth))
    assert from_stats["all"]["samples"] == 24


def test_score_ranks_unscored_faces_last():
    result = score_noise(np.array([np.nan, 0.9, 0.1, 0.2]), ["closed", "closed", "clean", "clean"])
    assert result["unscored"] == 1 and result["all"]["auc"] == pytest.approx(0.5)
