"""Two sources with duplicate identities: one softmax against one head per source, printed as JSON.

    .venv/bin/python bench/sources.py [--epochs 6] [--shared 30] > bench/results/sources.json

The 158 identities of lfw/splits/train_identities.txt (4,324 images, clean labels) become two
sources, as when VGGFace2 is imported beside MS-Celeb-1M (`--into --source`) before anyone merged
the people both hold:
- `--shared` identities (30, drawn by --seed among those with at least 4 images) are in both: their
  images, in file order, alternate between source A and source B, under the same name, so each is
  two identity ids (A:name, B:name): a planted cross-source duplicate;
- the other identities are dealt at random, half to A, half to B.

The CPU configuration (cpu_small, ArcFace s = 32, bench/quality.py's 48x48 cache and settings) is
trained twice on the same faces and labels, the same epochs and seed:
  one_softmax  one head over every identity of both sources (the two halves of a shared person
               are negatives of each other);
  per_source   one shared backbone, one head per source (ml/train/multihead.py).
Each is embedded (image + mirror) and mined with ml.mining.mine at its defaults. Reported per
training: duplicate_identity {found, planted, false, false_cross_source}; noisy flags (every label
is right, so each is false) in all and on the faces of shared identities; and the geometry:
the median cosine between the two halves' mean embeddings against the median cosine of every other
identity's mean to its nearest other identity's mean, the share of halves that are each other's
nearest identity, and, threshold-free, the share of planted pairs among the as many identity pairs
with the highest centre cosine (what a perfect calibration of the miner's bound could reach).

    .venv/bin/python bench/sources.py --work-dir var/sources --reuse   # re-mine kept runs in seconds
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/quality.py: shared 2-core machine

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ml.embed import extract_embeddings  # noqa: E402
from ml.mining import mine  # noqa: E402
from ml.synthetic_noise import load_folder, read_lines  # noqa: E402
from ml.train.stats import load_stats  # noqa: E402
from ml.train.trainer import load_trained_network, train  # noqa: E402

log = logging.getLogger("bench.sources")
MODES = ("one_softmax", "per_source")


def _load_quality():
    """bench/quality.py (a script folder, not a package), registered by name so that its decode
    function pickles for the decode pool."""
    name = "bench_quality"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "bench" / "quality.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


quality = _load_quality()


@dataclasses.dataclass
class TwoSources:
    paths: list[str]           # per face, relative to the images folder
    names: list[str]           # per face, "A:person" or "B:person"
    sources: np.ndarray        # per face, 0 (A) or 1 (B)
    shared: list[str]          # persons in both sources

    @property
    def class_names(self) -> list[str]:
        return sorted(set(self.names))

    def labels(self) -> np.ndarray:
        ids = {n: i for i, n in enumerate(self.class_names)}
        return np.array([ids[n] for n in self.names], dtype=np.int64)

    def planted(self) -> set[frozenset]:
        ids = {n: i for i, n in enumerate(self.class_names)}
        return {frozenset((ids[f"A:{p}"], ids[f"B:{p}"])) for p in self.shared}


def split_sources(samples: Sequence[tuple[str, str]], shared: int, seed: int) -> TwoSources:
    """The LFW samples (path, person) as two sources, `shared` persons in both (see the docstring)."""
    rng = np.random.default_rng(seed)
    by_person: dict[str, list[str]] = {}
    for path, person in samples:
        by_person.setdefault(person, []).append(path)
    persons = sorted(by_person)
    eligible = [p for p in persons if len(by_person[p]) >= 4]
    both = sorted(rng.choice(eligible, size=min(shared, len(eligible)), replace=False).tolist())
    rest = [p for p in persons if p not in set(both)]
    in_a = set(rng.permutation(rest)[: len(rest) // 2].tolist())
    paths, names, sources = [], [], []
    for person in persons:
        for k, path in enumerate(by_person[person]):
            source = k % 2 if person in both else (0 if person in in_a else 1)
            paths.append(path)
            names.append(f"{'AB'[source]}:{person}")
            sources.append(source)
    return TwoSources(paths, names, np.array(sources, dtype=np.int64), both)


def geometry(embeddings: np.ndarray, labels: np.ndarray, split: TwoSources) -> dict:
    """Median cosine between the halves of each shared person, and of every other identity to its
    nearest other identity (mean embeddings, L2-normalised, faces L2-normalised first)."""
    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    classes = int(labels.max()) + 1
    centres = np.zeros((classes, x.shape[1]))
    np.add.at(centres, labels, x)
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    cos = centres @ centres.T
    np.fill_diagonal(cos, -np.inf)
    pairs = [tuple(sorted(p)) for p in split.planted()]
    in_pair = {c for p in pairs for c in p}
    halves = [cos[a, b] for a, b in pairs]
    others = [cos[c].max() for c in range(classes) if c not in in_pair]
    # How often a half's nearest identity is its other half.
    nearest = [int(np.argmax(cos[a]) == b) + int(np.argmax(cos[b]) == a) for a, b in pairs]
    # Threshold-free: of the len(pairs) identity pairs with the highest centre cosine, the share planted.
    upper = np.triu_indices(classes, 1)
    top = np.argsort(-cos[upper], kind="stable")[: len(pairs)]
    planted = set(pairs)
    top_planted = sum((int(upper[0][k]), int(upper[1][k])) in planted for k in top)
    return {"halves_cosine_median": float(np.median(halves)), "nearest_other_cosine_median": float(np.median(others)),
            "halves_mutually_nearest_share": float(np.mean(nearest) / 2),
            "top_pairs_planted_share": top_planted / max(len(pairs), 1)}


def score(flags, split: TwoSources, labels: np.ndarray) -> dict:
    planted = split.planted()
    class_source = np.zeros(labels.max() + 1, dtype=np.int64)
    class_source[labels] = split.sources
    found = {frozenset((f.label, f.other_label)) for f in flags if f.kind == "duplicate_identity"}
    false = found - planted
    shared_faces = np.isin(np.array([n[2:] for n in split.names]), split.shared)
    noisy = [f for f in flags if f.kind == "noisy"]
    return {
        "duplicate_identity": {
            "found": len(found & planted), "planted": len(planted), "false": len(false),
            "false_cross_source": sum(1 for p in false if len({int(class_source[c]) for c in p}) == 2),
        },
        "noisy_flags": len(noisy),
        "noisy_flags_on_shared_faces": sum(1 for f in noisy if shared_faces[f.index]),
        "noisy_relabel_to_other_half": sum(1 for f in noisy if f.target_label is not None
                                           and frozenset((f.label, f.target_label)) in planted),
    }


def run_mode(mode: str, args, split: TwoSources, cache, work: Path) -> dict:
    labels = split.labels()
    faces = quality.CachedFaces(cache, np.arange(len(labels)), labels, split.class_names)
    if mode == "per_source":
        faces.sources = split.sources  # the trainer builds one head per source from this
    config = quality.method_config("arcface", args, args.epochs)
    if len(faces) % args.batch_size == 1:  # a batch of one breaks batch norm (as bench/noise.py)
        config = dataclasses.replace(config, drop_last=True)
    started = time.monotonic()
    embedded_dir = work / f"{mode}-embeddings"
    if not (args.reuse and (work / mode / "stats.npz").exists() and (embedded_dir / "embeddings.npy").exists()):
        train(config, work / mode, dataset=faces)
        backbone, _, _ = load_trained_network(work / mode)
        extract_embeddings(backbone, faces, embedded_dir, batch_size=256, device="cpu", flip=True)
    else:
        log.info("%s: reusing the training and embeddings in %s", mode, work)
    train_s = json.loads((work / mode / "metrics.json").read_text())["elapsed_s"]
    embeddings, norms = np.load(embedded_dir / "embeddings.npy"), np.load(embedded_dir / "norms.npy")
    flags = mine(embeddings=embeddings, labels=labels, stats=load_stats(work / mode), norms=norms)
    out = {**score(flags, split, labels), "geometry": geometry(embeddings, labels, split),
           "train_seconds": train_s, "seconds": time.monotonic() - started}
    log.info("%s: %s", mode, json.dumps(quality._jsonable(out)))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", default=str(quality.DEFAULT_LFW), help="the LFW folder (with splits/)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each training (6)")
    parser.add_argument("--shared", type=int, default=30, help="identities in both sources (30)")
    parser.add_argument("--limit-identities", type=int, help="the first N training identities only")
    parser.add_argument("--size", type=int, default=quality.DEFAULT_SIZE, help="face side in pixels (48)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--scale", type=float, default=32.0)
    parser.add_argument("--seed", type=int, default=0, help="split and training seed (0)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    parser.add_argument("--work-dir", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --work-dir: take the trainings and embeddings already there (same arguments) "
                             "and only mine and score again")
    return parser


def run(args) -> dict:
    started = time.monotonic()
    torch.set_num_threads(2)
    args.r_max = 0.2  # read by quality.method_config only for Co-Mining
    lfw = Path(args.lfw)
    images = lfw / "images_deepfunneled"
    identities = read_lines(lfw / "splits" / "train_identities.txt")[: args.limit_identities]
    split = split_sources(load_folder(images, identities), args.shared, args.seed)
    cache = None if args.reuse else quality.decode_all([str(images / p) for p in split.paths], args.size)
    if cache is not None:
        log.info("decoded %d faces in %.0fs", len(split.paths), time.monotonic() - started)
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="sources-") as scratch:
        work = Path(args.work_dir or scratch)
        for mode in [m for m in args.modes.split(",") if m]:
            if mode not in MODES:
                raise SystemExit(f"unknown mode {mode!r}; choose from {MODES}")
            result[mode] = run_mode(mode, args, split, cache, work)
    labels = split.labels()
    result["seconds"] = time.monotonic() - started
    result["setup"] = {
        "identities": len(identities), "images": len(split.paths), "shared_identities": len(split.shared),
        "identity_ids": {"A": len({n for n in split.names if n[0] == "A"}),
                         "B": len({n for n in split.names if n[0] == "B"})},
        "images_per_source": {"A": int((split.sources == 0).sum()), "B": int((split.sources == 1).sum())},
        "classes": int(labels.max()) + 1, "epochs": args.epochs, "size": args.size, "batch_size": args.batch_size,
        "lr": args.lr, "scale": args.scale, "seed": args.seed, "threads": torch.get_num_threads(),
        "steps_per_epoch": math.ceil(len(split.paths) / args.batch_size), "reused": bool(args.reuse),
    }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    print(json.dumps(quality._jsonable(run(args)), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
