"""Command line: python -m ml train | embed | pretrained-embed | verify | score.

    python -m ml train --config ml/configs/cpu_small.py --data-folder DIR --run-dir RUN [--set k=v ...] [--resume]
    torchrun --nproc_per_node=N -m ml train ...        (the same, data parallel over N processes)
    python -m ml embed --run-dir RUN --data-folder DIR --out DIR
    python -m ml pretrained-embed --data-folder DIR --out DIR     (dlib's pretrained descriptor, no training)
    python -m ml verify --run-dir RUN --pairs ../shared/data/lfw/splits/eval_pairs.tsv \\
        --images-root ../shared/data/lfw/images_deepfunneled
    python -m ml score --scores RUN/stats.npz --key theta_y --ground-truth NOISY/ground_truth.jsonl

Each command prints one JSON object on stdout (rank 0 only under torchrun); logs go to stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np


def _add_data_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--data-folder", help="images as FOLDER/<identity>/<image>")
    group.add_argument("--data-list", help="a list file of `path label` lines")
    group.add_argument("--data-rec", help="an InsightFace train.rec (with train.idx)")
    parser.add_argument("--data-root", help="folder the --data-list paths are relative to (default: the list's)")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--run-dir", help="a training run folder (its latest checkpoint is used)")
    group.add_argument("--checkpoint", help="a checkpoint file")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml", description="FaceClean's training and evaluation tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model (works under torchrun)",
                                description="Train per a config file into a run folder.")
    train.add_argument("--config", help="a Python config file, e.g. ml/configs/cpu_small.py (default: the defaults)")
    _add_data_arguments(train, required=False)
    train.add_argument("--labels", help="label overrides of a cleaning round: `index<TAB>label` lines, -1 removes")
    train.add_argument("--run-dir", required=True, help="the run folder (created)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, dotted for sections: --set epochs=5 --set comining.r_max=0.3")
    train.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    train.set_defaults(func=cmd_train)

    embed = commands.add_parser("embed", help="embed a dataset with a trained model",
                                description="Write embeddings.npy (L2-normalised, flip-summed), norms.npy, "
                                            "unreadable.json; resumable.")
    _add_model_arguments(embed)
    _add_data_arguments(embed, required=True)
    embed.add_argument("--out", help="output folder (default: RUN/embeddings)")
    embed.add_argument("--no-flip", action="store_true", help="embed the image only, not image + its mirror")
    embed.set_defaults(func=cmd_embed)

    pretrained = commands.add_parser(
        "pretrained-embed", help="embed a dataset with dlib's pretrained face descriptor",
        description="dlib's ResNet descriptor (128-d) on each image: the largest face the HOG detector "
                    "finds, else the whole image (aligned crops), 5-point aligned. Writes the folder "
                    "layout of `embed` plus alignment.npy (1 detected, 0 whole image, -1 unreadable); "
                    "resumable.")
    _add_data_arguments(pretrained, required=True)
    pretrained.add_argument("--out", required=True, help="output folder")
    pretrained.add_argument("--batch-size", type=int, default=32, help="images per saved batch")
    pretrained.add_argument("--num-workers", type=int, default=min(2, os.cpu_count() or 1),
                            help="processes describing images (default: up to 2)")
    pretrained.add_argument("--restart", action="store_true", help="ignore saved progress in --out")
    pretrained.set_defaults(func=cmd_pretrained_embed)

    verify = commands.add_parser("verify", help="verification accuracy on a pairs file",
                                 description="10-fold verification accuracy, TAR at FAR and AUC on pairs.")
    _add_model_arguments(verify)
    verify.add_argument("--pairs", required=True, help="TSV with header fold, path_a, path_b, same")
    verify.add_argument("--images-root", required=True, help="folder the pair paths are relative to")
    verify.add_argument("--work-dir", help="where to keep the pair images' embeddings (default: a temporary folder)")
    verify.add_argument("--out", help="also write the JSON result here")
    verify.set_defaults(func=cmd_verify)

    score = commands.add_parser("score", help="score a per-face noise signal against injected ground truth",
                                description="Precision, recall, F1 and ROC-AUC of a per-face score (higher = "
                                            "more likely noisy) against ground_truth.jsonl from ml.synthetic_noise, "
                                            "overall and per noise kind (each kind against the clean faces).")
    score.add_argument("--scores", required=True, help="a .npy of one score per face, or a .npz with --key")
    score.add_argument("--key", help="the array of a .npz to use (e.g. theta_y, loss, train_agreement)")
    score.add_argument("--ground-truth", required=True, help="ground_truth.jsonl, lines in training-list order")
    score.add_argument("--invert", action="store_true", help="lower score = more likely noisy (e.g. a norm)")
    score.add_argument("--threshold", type=float, help="also report precision/recall at this threshold")
    score.add_argument("--out", help="also write the JSON result here")
    score.set_defaults(func=cmd_score)
    return parser


# -- train ----------------------------------------------------------------------------------------

def _data_source(args) -> tuple[str, str] | None:
    for kind, value in (("folder", args.data_folder), ("list", args.data_list), ("recordio", args.data_rec)):
        if value:
            return kind, value
    return None


def cmd_train(args) -> int:
    from ml.train.config import load_config
    from ml.train.distributed import init_distributed, shutdown_distributed
    from ml.train.trainer import train

    config = load_config(args.config, args.overrides)
    source = _data_source(args)
    if source is not None:
        config.data.kind, config.data.path = source
    if args.data_root:
        config.data.root = args.data_root
    if args.labels:
        config.data.labels = args.labels
    config.validate()
    ctx = init_distributed(config.device)
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        result = train(config, args.run_dir, resume=args.resume)
    finally:
        shutdown_distributed()
    if ctx.is_main:
        _print_json({"run_dir": str(result.run_dir), "checkpoint": str(result.checkpoint),
                     "stats": str(result.stats_path) if result.stats_path else None, **result.metrics})
    return 0


# -- embed / verify -------------------------------------------------------------------------------

def _load_model(args):
    import torch

    from ml.train.distributed import pick_device
    from ml.train.trainer import load_trained_network

    device = pick_device(args.device)
    backbone, _, config = load_trained_network(args.run_dir or args.checkpoint, device=device)
    return backbone, config, torch.device(device)


def cmd_embed(args) -> int:
    from ml.data.transforms import build_transform
    from ml.embed import extract_embeddings

    backbone, config, device = _load_model(args)
    dataset = _face_dataset(args, build_transform(config.data.transform, train=False))
    out = args.out or str(Path(args.run_dir or Path(args.checkpoint).parent.parent) / "embeddings")
    result = extract_embeddings(backbone, dataset, out, batch_size=args.batch_size, device=device,
                                flip=not args.no_flip, num_workers=args.num_workers)
    _print_json({"out_dir": str(result.out_dir), "embeddings": str(result.embeddings_path),
                 "norms": str(result.norms_path), "count": result.count, "dim": result.dim,
                 "unreadable": len(result.unreadable)})
    return 0


def _face_dataset(args, transform=None):
    from ml.data.dataset import FaceDataset

    kind, path = _data_source(args)
    if kind == "folder":
        return FaceDataset.from_folder(path, transform=transform)
    if kind == "list":
        return FaceDataset.from_list(path, args.data_root, transform=transform)
    return FaceDataset.from_recordio(path, transform=transform)


def cmd_pretrained_embed(args) -> int:
    import time

    from ml.pretrained import MODEL_NAME, extract_pretrained

    dataset = _face_dataset(args)
    started = time.monotonic()
    result = extract_pretrained(dataset, args.out, batch_size=args.batch_size, num_workers=args.num_workers,
                                resume=not args.restart)
    embedded = result.embedding
    _print_json({"out_dir": str(embedded.out_dir), "embeddings": str(embedded.embeddings_path),
                 "norms": str(embedded.norms_path), "alignment": str(result.alignment_path),
                 "model": MODEL_NAME, "count": embedded.count, "dim": embedded.dim,
                 "unreadable": len(embedded.unreadable), "detected": result.detected,
                 "whole_image": result.whole_image, "seconds": round(time.monotonic() - started, 2)})
    return 0


def cmd_verify(args) -> int:
    from ml.data.dataset import FaceDataset, FaceSample
    from ml.data.transforms import build_transform
    from ml.embed import extract_embeddings
    from ml.evaluate import load_eval_pairs

    backbone, config, device = _load_model(args)
    pairs = load_eval_pairs(args.pairs)
    dataset = FaceDataset([FaceSample(p, 0) for p in pairs.paths], root=args.images_root,
                          transform=build_transform(config.data.transform, train=False))
    with tempfile.TemporaryDirectory(prefix="verify-") as scratch:
        work = args.work_dir or scratch
        embedded = extract_embeddings(backbone, dataset, work, batch_size=args.batch_size, device=device,
                                      flip=True, num_workers=args.num_workers)
        result = pairs.evaluate(np.load(embedded.embeddings_path))
    result["unreadable_images"] = len(embedded.unreadable)
    _emit(result, args.out)
    return 0


# -- score ----------------------------------------------------------------------------------------

def load_scores(path: str, key: str | None) -> np.ndarray:
    data = np.load(path)
    if isinstance(data, np.lib.npyio.NpzFile):
        if key is None:
            raise SystemExit(f"{path} holds {sorted(data.files)}: choose one with --key")
        return np.asarray(data[key], dtype=np.float64)
    return np.asarray(data, dtype=np.float64)


def score_noise(scores: np.ndarray, kinds: Sequence[str], threshold: float | None = None) -> dict:
    """noise_detection overall (noisy = not clean) and per kind (that kind against clean faces).
    NaN scores (faces never scored, e.g. unreadable) rank below every real score."""
    from ml.evaluate import noise_detection

    kinds = np.asarray(kinds)
    scores = np.asarray(scores, dtype=np.float64).copy()
    missing = np.isnan(scores)
    if missing.all():
        raise ValueError("every score is NaN")
    scores[missing] = np.nanmin(scores) - 1.0
    clean = kinds == "clean"
    result = {"all": noise_detection(scores, ~clean, threshold=threshold), "unscored": int(missing.sum())}
    for kind in sorted(set(kinds.tolist()) - {"clean"}):
        subset = clean | (kinds == kind)
        result[kind] = noise_detection(scores[subset], kinds[subset] == kind, threshold=threshold)
    return result


def cmd_score(args) -> int:
    scores = load_scores(args.scores, args.key)
    with open(args.ground_truth, encoding="utf-8") as fh:
        kinds = [json.loads(line)["kind"] for line in fh if line.strip()]
    if len(scores) != len(kinds):
        raise SystemExit(f"{len(scores)} scores but {len(kinds)} ground-truth lines")
    if args.invert:
        scores = -scores
    _emit(score_noise(scores, kinds, args.threshold), args.out)
    return 0


# -- output ---------------------------------------------------------------------------------------

def _jsonable(value):
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _print_json(payload: dict) -> None:
    print(json.dumps(_jsonable(payload), sort_keys=True))


def _emit(payload: dict, out: str | None) -> None:
    if out:
        Path(out).write_text(json.dumps(_jsonable(payload), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _print_json(payload)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return args.func(args)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        # Mistakes in the arguments, config or data: a message, not a traceback.
        print(f"python -m ml {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
