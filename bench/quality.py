"""Noise-robust training quality on LFW, printed as one JSON object.

    .venv/bin/python bench/quality.py [--budget-minutes 55] [--quick] > quality.json

The standard noisy benchmark (shared/data/README.md): the 158 training identities of
lfw/splits/train_identities.txt (4,324 images) with closed-set noise 0.15, open-set noise 0.05
from splits/openset_pool.txt and 8 split identities, seed 0. On it the CPU configuration is
trained four times:

    arcface        ArcFace on the noisy labels (the baseline)
    robustface     the RobustFace head on the noisy labels
    comining       two ArcFace peers with Co-Mining on the noisy labels (about 2x the compute)
    clean_ceiling  ArcFace on the ORIGINAL 4,324 images with their true identities: what training
                   would reach on a perfectly cleaned set. An open-set victim cannot be given a
                   "clean label" (its person is in no label), so the ceiling is trained on the
                   images the noise replaced, not on the noisy image set.

Each gets `verification_accuracy`: 10-fold, identity-disjoint accuracy on splits/eval_pairs.tsv
(5,274 pairs), each face embedded as normalise(z(image) + z(mirror)), threshold from the other
nine folds. And `noise_auc`: the ROC-AUC of a per-face noise score against the injected ground
truth, positives the closed-set and open-set faces, negatives the clean ones. Faces of split
identities are left out of it: their label is a real person's, merely under a second id, and no
per-face score can tell a face in one half from a face in the other; duplicates are found by
comparing identity centres, a separate check.

The per-face noise scores, fixed before measuring (alternatives are reported beside them):
- arcface, robustface: theta_y - theta_1 from the eval pass after training (final weights, no
  augmentation): how much farther the face lies from its label's centre than from the nearest
  other centre. A closed-set face sits near its true identity's centre (small theta_1); an
  open-set face far from its label's (large theta_y). Also reported: `noise_auc_theta_y`.
- comining: agreement + rank(loss) / N. agreement (0 clean by both, 1 disagreed, 2 noisy by
  both) is the peers' verdict in the last training epoch at the final drop rate; the rank of
  network A's eval-pass loss, scaled into (0, 1], orders faces within each verdict. Also
  reported: `noise_auc_margin` (theta_y - theta_1 of network A, as for the other methods).
- clean_ceiling: null. Its network was trained on every victim's true label and has memorised
  them; its score would measure that memory, not the detection of unknown noise.

Speed on 2 cores: every image (training set, open-set replacements, evaluation pairs) is decoded
once, centre-cropped to 150x150 (where LFW's funnelled face lies) and resized to --size (48), kept
as a uint8 tensor; training and evaluation read from that cache. The number of epochs is the same
for all four trainings: what fits in --budget-minutes after a throughput probe, Co-Mining counted
twice. A training that would overrun the budget left (the machine is shared) gets fewer epochs,
and its `epochs` key says so.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

# Before torch loads OpenMP: on a shared machine, spinning threads wait for a core another process
# holds. Measured here, 2 threads under load: 2.1 s per step with the default policy, 0.6 s passive.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ml.data.dataset import FaceItem  # noqa: E402
from ml.data.transforms import centre_crop  # noqa: E402
from ml.embed import extract_embeddings  # noqa: E402
from ml.evaluate import average_ranks, load_eval_pairs, noise_detection, relabel_accuracy, roc_auc  # noqa: E402
from ml.synthetic_noise import NoisySet, inject_noise, load_folder, read_lines, write_noisy_set  # noqa: E402
from ml.train.config import TrainConfig, load_config  # noqa: E402
from ml.train.stats import load_stats  # noqa: E402
from ml.train.trainer import build_network, load_trained_network, train  # noqa: E402

log = logging.getLogger("bench.quality")

DEFAULT_LFW = REPO.parent / "shared" / "data" / "lfw"
CONFIG = REPO / "ml" / "configs" / "cpu_small.py"
CROP = 150
# 48x48 rather than cpu_small's 64x64: a training step costs about half as much, so twice the
# epochs fit in the budget; 10 epochs at 48 already reach about 0.82 verification accuracy.
DEFAULT_SIZE, QUICK_SIZE = 48, 32
# Training order; the ceiling last, so that a budget squeezed by a busy machine hurts it first.
METHODS = ("arcface", "robustface", "comining", "clean_ceiling")
COST = {"arcface": 1.0, "robustface": 1.0, "comining": 2.0, "clean_ceiling": 1.0}
# Eval-pass cost in forward-only images per method (stats pass + flipped eval pairs), as a share
# of training images: a forward is about a third of a training step.
FORWARD_SHARE = 1.0 / 3.0
SAFETY = 0.92  # share of the budget left that training may plan to use


# -- data -----------------------------------------------------------------------------------------

def _decode(job: tuple[str, int]) -> np.ndarray:
    """One image as a uint8 H x W x 3 array: centre crop, then resize (as ml.data.transforms)."""
    path, size = job
    with Image.open(path) as image:
        image = centre_crop(image.convert("RGB"), CROP, CROP)
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def decode_all(paths: Sequence[str], size: int, processes: int = 2) -> torch.Tensor:
    """N x 3 x size x size uint8 tensor of the given image files, decoded once."""
    jobs = [(p, size) for p in paths]
    if processes > 1 and len(jobs) > 200:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            arrays = pool.map(_decode, jobs, chunksize=64)
    else:
        arrays = [_decode(job) for job in jobs]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class CachedFaces(Dataset):
    """FaceDataset's item contract, (image in [-1, 1], label, index), served from a uint8 cache.

    rows[i] is item i's row in the cache; images are never flipped here (the trainer flips)."""

    def __init__(self, cache: torch.Tensor, rows: Sequence[int], labels: Sequence[int],
                 class_names: Sequence[str] | None = None) -> None:
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)
        self._labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names) if class_names is not None else None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names is not None else int(self._labels.max()) + 1

    def __getitem__(self, index: int) -> FaceItem:
        # The same scaling as ml.data.transforms.to_tensor: x / 127.5 - 1.
        image = self.cache[self.rows[index]].float().div_(127.5).sub_(1.0)
        return FaceItem(image, int(self._labels[index]), int(index))


def labelled(names: Sequence[str], rows: Sequence[int], cache: torch.Tensor) -> CachedFaces:
    """A training set: label ids in sorted name order, as FaceDataset.from_list gives them."""
    class_names = sorted(set(names))
    ids = {name: i for i, name in enumerate(class_names)}
    return CachedFaces(cache, rows, [ids[n] for n in names], class_names)


def subsample_pairs(pairs, limit: int | None):
    """Every k-th pair (all folds kept), for the tiny modes; the full list when limit is None."""
    if limit is None or limit >= len(pairs.same):
        return pairs
    keep = np.linspace(0, len(pairs.same) - 1, limit).round().astype(np.int64)
    used = np.unique(np.concatenate([pairs.index_a[keep], pairs.index_b[keep]]))
    new_index = np.full(len(pairs.paths), -1, dtype=np.int64)
    new_index[used] = np.arange(len(used))
    return type(pairs)(paths=[pairs.paths[i] for i in used], index_a=new_index[pairs.index_a[keep]],
                       index_b=new_index[pairs.index_b[keep]], same=pairs.same[keep], folds=pairs.folds[keep])


# -- configuration and budget ---------------------------------------------------------------------

def method_config(method: str, args, epochs: int) -> TrainConfig:
    overrides = [
        f"epochs={epochs}", f"data.transform={{'crop': None, 'size': {args.size}, 'flip': True}}",
        "num_workers=0", "device='cpu'", "drop_last=False", "checkpoint_every=1000000000", f"lr={args.lr}",
        f"batch_size={args.batch_size}", f"warmup_epochs={args.warmup_epochs}", f"seed={args.seed}",
        f"head_kwargs={{'s': {args.scale}}}",
    ]
    if method == "robustface":
        overrides.append("head='robustface'")
    if method == "comining":
        overrides += ["method='comining'", f"comining.r_max={args.r_max}",
                      f"comining.ramp={min(2.0, max(epochs * 0.2, 0.5))}"]
    return load_config(CONFIG, overrides)


def probe_step_seconds(args, num_classes: int, data: CachedFaces, steps: int = 10) -> float:
    """Median seconds of one ArcFace training step at the benchmark's size and batch."""
    config = method_config("arcface", args, 1)
    with torch.random.fork_rng(devices=[]):
        net = build_network(config, num_classes, 0)
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        batch = [data[i] for i in range(min(args.batch_size, len(data)))]
        images = torch.stack([item.image for item in batch])
        labels = torch.tensor([item.label for item in batch])
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            _, logits, _, _ = net(images, labels)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    per_sample = float(np.median(times[2:] if steps > 3 else times)) / len(batch)
    return per_sample * args.batch_size


def plan_epochs(seconds_left: float, step_s: float, steps_per_epoch: int, eval_images: int,
                batch_size: int, methods: Sequence[str], max_epochs: int) -> int:
    """The common number of epochs the remaining trainings fit in `seconds_left`."""
    eval_s = len(methods) * eval_images * FORWARD_SHARE * step_s / batch_size
    epoch_s = steps_per_epoch * step_s * sum(COST[m] for m in methods)
    return int(max(1, min(max_epochs, math.floor((seconds_left * SAFETY - eval_s) / epoch_s))))


# -- evaluation -----------------------------------------------------------------------------------

def verify(run_dir: Path, eval_faces: CachedFaces, pairs, scratch: Path) -> dict:
    backbone, _, _ = load_trained_network(run_dir)
    embedded = extract_embeddings(backbone, eval_faces, scratch, batch_size=256, device="cpu", flip=True)
    result = pairs.evaluate(np.load(embedded.embeddings_path))
    return {"verification_accuracy": result["accuracy"], "verification_std": result["accuracy_std"],
            "verification_auc": result["auc"], "tar_at_far_1e-2": result["tar_at_far_1e-2"]["tar"],
            "tar_at_far_1e-3": result["tar_at_far_1e-3"]["tar"]}


def normalised_rank(values: np.ndarray) -> np.ndarray:
    """Rank / N in (0, 1], ties sharing their mean rank."""
    return average_ranks(values) / len(values)


def noise_figures(method: str, stats: dict, noisy: NoisySet, class_names: list[str]) -> dict:
    """noise_auc (closed|open against clean, split faces left out) and the alternatives."""
    kinds = np.array([e.kind for e in noisy.entries])
    margin = stats["theta_y"].astype(np.float64) - stats["theta_1"].astype(np.float64)
    if method == "comining":
        score = stats["train_agreement"].astype(np.float64) + normalised_rank(stats["loss"].astype(np.float64))
        alternatives = {"noise_auc_margin": margin}
    else:
        score = margin
        alternatives = {"noise_auc_theta_y": stats["theta_y"].astype(np.float64)}
    scored = kinds != "split"
    positive = np.isin(kinds, ("closed", "open"))
    if np.isnan(score[scored]).any():
        raise ValueError(f"{method}: some faces have no noise score")
    detection = noise_detection(score[scored], positive[scored])
    out = {"noise_auc": detection["auc"], "noise_best_f1": detection["f1"]}
    for kind in ("closed", "open"):
        subset = (kinds == "clean") | (kinds == kind)
        out[f"noise_auc_{kind}"] = roc_auc(score[subset], kinds[subset] == kind)
    for name, values in alternatives.items():
        out[name] = roc_auc(values[scored], positive[scored])
    # How often the nearest other identity j* is the true one, for closed-set faces.
    ids = {name: i for i, name in enumerate(class_names)}
    closed = kinds == "closed"
    true_ids = np.array([ids.get(e.true_label, -1) if e.true_label else -1 for e in noisy.entries])
    out["closed_relabel_accuracy"] = relabel_accuracy(stats["j_star"], true_ids, closed)
    return out


def final_loss(run_dir: Path) -> tuple[float | None, float | None]:
    """(mean training loss of the first reported window, of the last one) from metrics.jsonl."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in lines if r.get("stage") == "train"]
    return (losses[0], losses[-1]) if losses else (None, None)


# -- the benchmark --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", default=str(DEFAULT_LFW), help="the LFW folder (with splits/)")
    parser.add_argument("--budget-minutes", type=float, default=55.0,
                        help="wall-clock budget for the whole run, all four trainings included (55)")
    parser.add_argument("--quick", action="store_true",
                        help="a few-minute smoke run: 30 identities, 32x32 faces, 3 epochs, 1,000 pairs")
    parser.add_argument("--epochs", type=int, help="fixed epochs per training instead of the budget's")
    parser.add_argument("--max-epochs", type=int, default=40, help="most epochs the budget may plan (40)")
    parser.add_argument("--limit-identities", type=int, help="train on the first N identities only")
    parser.add_argument("--limit-pairs", type=int, help="evaluate on N of the pairs (all folds kept)")
    parser.add_argument("--size", type=int,
                        help=f"face side in pixels after the 150 crop ({DEFAULT_SIZE}; {QUICK_SIZE} with --quick)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--scale", type=float, default=32.0, help="logit scale s of every head (32)")
    parser.add_argument("--r-max", type=float, default=0.2, help="Co-Mining's final drop rate (0.2)")
    parser.add_argument("--seed", type=int, default=0, help="noise and training seed (0)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset to run")
    parser.add_argument("--work-dir", help="keep the noisy set and runs here (default: a temporary folder)")
    return parser


def apply_quick(args) -> None:
    if not args.quick:
        args.size = args.size or DEFAULT_SIZE
        return
    args.limit_identities = args.limit_identities or 30
    args.limit_pairs = args.limit_pairs or 1000
    args.epochs = args.epochs or 3
    args.size = args.size or QUICK_SIZE


def run(args) -> dict:
    started = time.monotonic()
    torch.set_num_threads(2)
    apply_quick(args)
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown method(s) {sorted(unknown)}; choose from {METHODS}")
    lfw = Path(args.lfw)
    images = lfw / "images_deepfunneled"
    identities = read_lines(lfw / "splits" / "train_identities.txt")[: args.limit_identities]
    clean = load_folder(images, identities)
    noisy = inject_noise(clean, read_lines(lfw / "splits" / "openset_pool.txt"), closed=0.15, open=0.05,
                         split=8, seed=args.seed)
    pairs = subsample_pairs(load_eval_pairs(lfw / "splits" / "eval_pairs.tsv"), args.limit_pairs)

    paths = list(dict.fromkeys([p for p, _ in clean] + [e.path for e in noisy.entries] + pairs.paths))
    row = {p: i for i, p in enumerate(paths)}
    cache = decode_all([str(images / p) for p in paths], args.size)
    log.info("decoded %d images to %dx%d in %.0fs", len(paths), args.size, args.size, time.monotonic() - started)
    noisy_faces = labelled([e.given_label for e in noisy.entries], [row[e.path] for e in noisy.entries], cache)
    clean_faces = labelled([name for _, name in clean], [row[p] for p, _ in clean], cache)
    eval_faces = CachedFaces(cache, [row[p] for p in pairs.paths], np.zeros(len(pairs.paths)))

    with tempfile.TemporaryDirectory(prefix="quality-") as scratch:
        work = Path(args.work_dir or scratch)
        write_noisy_set(noisy, work / "noisy")
        # drop_last is off: every face is seen in the last epoch, where Co-Mining's verdicts are taken.
        steps_per_epoch = math.ceil(len(noisy_faces) / args.batch_size)
        planned = args.epochs
        step_s = None
        if planned is None:
            step_s = probe_step_seconds(args, noisy_faces.num_classes, noisy_faces)
            eval_images = len(noisy_faces) + 2 * len(eval_faces)
            planned = plan_epochs(args.budget_minutes * 60 - (time.monotonic() - started), step_s, steps_per_epoch,
                                  eval_images, args.batch_size, methods, args.max_epochs)
            log.info("probe: %.3fs per step of %d; %d epochs per training", step_s, args.batch_size, planned)
        result: dict = {}
        for i, method in enumerate(methods):
            epochs = planned
            if args.epochs is None and step_s is not None:
                # Re-plan the rest with the measured rate: the machine may have got busier.
                left = args.budget_minutes * 60 - (time.monotonic() - started)
                epochs = min(planned, plan_epochs(left, step_s, steps_per_epoch, len(noisy_faces) + 2 * len(eval_faces),
                                                  args.batch_size, methods[i:], args.max_epochs))
            faces = clean_faces if method == "clean_ceiling" else noisy_faces
            result[method] = train_and_score(method, args, epochs, faces, noisy, eval_faces, pairs, work)
            if step_s is not None:
                measured = result[method]["train_seconds"] / (epochs * steps_per_epoch * COST[method])
                step_s = max(step_s, measured)
    result["seconds"] = time.monotonic() - started
    result["setup"] = {
        "identities": len(identities), "images": len(noisy_faces), "labels": noisy_faces.num_classes,
        "noise": noisy.counts(), "pairs": int(len(pairs.same)), "size": args.size, "crop": CROP,
        "batch_size": args.batch_size, "lr": args.lr, "scale": args.scale, "planned_epochs": planned,
        "budget_minutes": args.budget_minutes, "threads": torch.get_num_threads(),
    }
    return result


def train_and_score(method: str, args, epochs: int, faces: CachedFaces, noisy: NoisySet,
                    eval_faces: CachedFaces, pairs, work: Path) -> dict:
    run_dir = work / method
    config = method_config(method, args, epochs)
    log.info("%s: %d epochs on %d images", method, epochs, len(faces))
    start = time.monotonic()
    train(config, run_dir, dataset=faces)
    train_seconds = time.monotonic() - start
    out = verify(run_dir, eval_faces, pairs, work / f"{method}-eval")
    if method == "clean_ceiling":
        out["noise_auc"] = None
    else:
        out.update(noise_figures(method, load_stats(run_dir), noisy, faces.class_names))
    first, last = final_loss(run_dir)
    out.update({"epochs": epochs, "train_seconds": train_seconds, "eval_seconds": time.monotonic() - start
                - train_seconds, "first_loss": first, "final_loss": last})
    log.info("%s: %s", method, json.dumps(_jsonable(out)))
    return out


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    print(json.dumps(_jsonable(run(args)), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
