"""Flag quality against planted noise on two LFW benchmarks of different shape, as one JSON object.

    .venv/bin/python bench/noise.py [--quick] [--only lfw158] > noise.json

Benchmarks (one set of defaults for both; nothing here is tuned per benchmark):
  lfw158    the 158 identities of lfw/splits/train_identities.txt (10 to 530 images each, 4,324),
            closed-set 0.15, open-set 0.05 from splits/openset_pool.txt, 8 split identities, seed 0;
  lfw_wide  the 452 identities outside those 158 with 4 to 9 images (2,409 faces), closed-set 0.20,
            open-set 0.20 from the pool less those identities' images (kept disjoint), 10 split
            identities, seed 1.
Both also get planted copies (ml.synthetic_noise plant_copies: byte-identical, re-encoded, resized, cropped,
a quarter filed under another identity) and junk (plant_junk: blank, blur, tiny, background,
synthetic), 2% of the faces each.

Per benchmark:
  round1     FaceClean's own model, as a training round runs it: ml.crossfit (each face judged by the
             fold model that never saw its label), --method (robustface) for --epochs (10), flags
             from ml.mining (images fingerprinted for copies), scored against the ground truth;
  epochs     the closed-set F1 of round 1 at --epochs and at --long-epochs (40): memorisation would
             show as a drop;
  round2     an oracle reviewer applies round 1 (removes open-set, junk and copies it was shown,
             relabels closed-set to the true identity, merges true duplicate pairs, rejects the
             rest); the corrected set is trained and mined again and scored against what remains;
             questions answered in round 1 are not asked again (not_raised_again);
  cumulative every planted problem (closed, open, junk, copy) that a round-1 or round-2 flag put in
             front of the reviewer, and the share of flagged faces that were planted problems;
  pretrained round 1 with --method pretrained (dlib's ResNet descriptor, no training);
  baselines  arcface_loss: ArcFace trained on the noisy labels, its eval-pass loss as the score (F1 at
             the best threshold, AUC); cleanlab: find_label_issues on 3-fold cross-validated logistic
             regression over the pretrained embeddings (the same embeddings as `pretrained`).
Scoring: per-face kinds leave out the faces of split identities (their label names a real person,
under a second id: the duplicate_identity flag's business) and planted copies (near_duplicate's);
open_set also leaves out junk (low_norm's; removing junk as open-set is right too, and any_noise
counts it). AUC: flagged faces rank above unflagged ones, by score within.
Trainings and embeddings are kept in --cache-dir keyed by what they depend on; a rerun resumes or
reuses them.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/quality.py: shared 2-core machine

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ml.crossfit import embed_folds, mine_cross_fitted, train_folds  # noqa: E402
from ml.evaluate import noise_detection, roc_auc  # noqa: E402
from ml.mining import FlagCandidate, MiningConfig, mine  # noqa: E402
from ml.mining.copies import fingerprint_images  # noqa: E402
from ml.synthetic_noise import NoisySet, inject_noise, load_folder, plant_copies, plant_junk, read_lines, write_noisy_set  # noqa: E402,E501
from ml.train.stats import load_stats  # noqa: E402
from ml.train.trainer import train  # noqa: E402

log = logging.getLogger("bench.noise")
CACHE_ROOT = REPO / "var" / "bench-cache"
CV_FOLDS = 3
PROBLEMS = ("closed", "open", "junk", "copy")


def _load_quality():
    """bench/quality.py (a script folder, not a package) for its decoding and training config.
    Registered in sys.modules so that its decode function pickles by name for the decode pool."""
    name = "bench_quality"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


quality = _load_quality()


@dataclass(frozen=True)
class Benchmark:
    name: str
    closed: float
    open: float
    split: int
    seed: int
    copies: float = 0.02
    junk: float = 0.02


BENCHMARKS = (Benchmark("lfw158", closed=0.15, open=0.05, split=8, seed=0),
              Benchmark("lfw_wide", closed=0.20, open=0.20, split=10, seed=1))


def benchmark_identities(lfw: Path, name: str) -> tuple[list[str], list[str]]:
    """(identities, open-set pool) of a benchmark, the pool disjoint from the identities."""
    train_ids = read_lines(lfw / "splits" / "train_identities.txt")
    pool = read_lines(lfw / "splits" / "openset_pool.txt")
    if name == "lfw158":
        return train_ids, pool
    images = lfw / "images_deepfunneled"
    taken = set(train_ids)
    wide = sorted(d.name for d in images.iterdir()
                  if d.is_dir() and d.name not in taken and 4 <= sum(1 for _ in d.iterdir()) <= 9)
    chosen = set(wide)
    return wide, [p for p in pool if p.split("/", 1)[0] not in chosen]


# -- ground truth in label ids --------------------------------------------------------------------

class Truth:
    """Per face of a (possibly corrected) set: its true kind, given and true label ids, paths."""

    def __init__(self, kinds: Sequence[str], given: Sequence[str], true: Sequence[str | None],
                 pairs: Sequence[tuple[str, str]], paths: Sequence[str] | None = None,
                 copy_of: Sequence[str | None] | None = None) -> None:
        self.class_names = sorted(set(given))
        ids = {n: i for i, n in enumerate(self.class_names)}
        self.kinds = np.asarray(kinds)
        self.given_names, self.true_names = list(given), list(true)
        self.labels = np.array([ids[n] for n in given], dtype=np.int64)
        self.true_ids = np.array([ids.get(n, -1) if n else -1 for n in true], dtype=np.int64)
        self.pair_names = [(a, b) for a, b in pairs if a in ids and b in ids]  # (original, split half)
        self.pairs = {frozenset((ids[a], ids[b])) for a, b in self.pair_names}
        self.paths = list(paths) if paths is not None else [str(i) for i in range(len(kinds))]
        self.copy_of = list(copy_of) if copy_of is not None else [None] * len(kinds)

    def __len__(self) -> int:
        return len(self.kinds)

    def subset(self, keep: np.ndarray, kinds=None, given=None) -> "Truth":
        kinds = self.kinds if kinds is None else kinds
        given = self.given_names if given is None else given
        return Truth([kinds[i] for i in keep], [given[i] for i in keep], [self.true_names[i] for i in keep],
                     self.pair_names, [self.paths[i] for i in keep], [self.copy_of[i] for i in keep])

    def copy_pairs(self) -> set[frozenset]:
        """Planted (copy, original) face pairs, as index pairs of this set."""
        where = {p: i for i, p in enumerate(self.paths)}
        return {frozenset((i, where[c])) for i, c in enumerate(self.copy_of) if c is not None and c in where}


def truth_of(noisy: NoisySet) -> Truth:
    e = noisy.entries
    return Truth([x.kind for x in e], [x.given_label for x in e], [x.true_label for x in e],
                 [(p.label, p.split_label) for p in noisy.pairs], [x.path for x in e],
                 [getattr(x, "copy_of", None) for x in e])


# -- scoring flags --------------------------------------------------------------------------------

def face_scores(flags: Sequence[FlagCandidate], n: int) -> np.ndarray:
    """Per face: 0 unflagged, else 1 + the flag score's place in [0, 1] among these flags (the
    highest where a face has several), so that flagged faces outrank unflagged ones."""
    out = np.zeros(n)
    if not flags:
        return out
    raw = np.array([f.score for f in flags], dtype=np.float64)
    span = raw.max() - raw.min()
    shifted = 1.0 + ((raw - raw.min()) / span if span > 0 else np.zeros_like(raw))
    for flag, value in zip(flags, shifted):
        out[flag.index] = max(out[flag.index], value)
    return out


def detection(flags: Sequence[FlagCandidate], positive: np.ndarray, scored: np.ndarray) -> dict:
    """Precision/recall/F1 of the flagged faces and AUC of their scores, on faces where `scored`."""
    score = face_scores(flags, len(positive))
    flagged = score > 0
    tp = int(np.sum(flagged & positive & scored))
    n_flagged, n_pos = int(np.sum(flagged & scored)), int(np.sum(positive & scored))
    return {"precision": tp / n_flagged if n_flagged else 0.0, "recall": tp / n_pos if n_pos else 0.0,
            "f1": 2 * tp / (n_flagged + n_pos) if n_flagged + n_pos else 0.0,
            "auc": roc_auc(score[scored], positive[scored]) if 0 < n_pos < int(scored.sum()) else None,
            "flagged": n_flagged, "positives": n_pos}


def near_duplicate_figures(flags: Sequence[FlagCandidate], truth: Truth) -> dict:
    planted = truth.copy_pairs()
    pairs = {frozenset((f.index, f.other_index)) for f in flags if f.kind == "near_duplicate"}
    # A copy of a copy's original found through another copy of it is found too.
    copies = {i for pair in planted for i in pair if truth.kinds[i] == "copy"}
    found_copies = {i for pair in pairs for i in pair if i in copies}
    false = [p for p in pairs if not (p & copies)]
    return {"found": len(found_copies), "planted": len(copies), "false": len(false),
            "precision": (len(pairs) - len(false)) / len(pairs) if pairs else None}


def score_flags(flags: Sequence[FlagCandidate], truth: Truth) -> dict:
    kinds = truth.kinds
    per_face = ~np.isin(kinds, ("split", "copy"))
    noisy = [f for f in flags if f.kind == "noisy"]
    relabel = [f for f in noisy if f.suggestion == "relabel"]
    remove = [f for f in noisy if f.suggestion == "remove"]
    low_norm = [f for f in flags if f.kind == "low_norm"]
    hard = [f for f in flags if f.kind == "hard"]

    closed = detection(relabel, kinds == "closed", per_face)
    on_closed = [f for f in relabel if kinds[f.index] == "closed"]
    relabel_correct = (float(np.mean([f.target_label == truth.true_ids[f.index] for f in on_closed]))
                       if on_closed else None)
    hard_kinds = {k: int(sum(kinds[f.index] == k for f in hard)) for k in ("clean", "closed", "open", "junk")}
    found = {frozenset((f.label, f.other_label)) for f in flags if f.kind == "duplicate_identity"}
    return {
        "closed_set": {**closed, "relabel_correct": relabel_correct},
        "relabel_correct": relabel_correct,
        "open_set": detection(remove, kinds == "open", per_face & (kinds != "junk")),
        "any_noise": detection(noisy + low_norm, np.isin(kinds, ("closed", "open", "junk")), per_face),
        "low_norm": detection(low_norm, kinds == "junk", per_face),
        "hard": {"flagged": len(hard), **hard_kinds,
                 "precision": hard_kinds["clean"] / len(hard) if hard else None},
        "duplicate_identity": {"found": len(found & truth.pairs), "false": len(found - truth.pairs),
                               "planted": len(truth.pairs)},
        "near_duplicate": near_duplicate_figures(flags, truth),
    }


def flagged_problems(flags: Sequence[FlagCandidate], truth: Truth, rows: np.ndarray) -> tuple[set, set]:
    """(faces the flags put before a reviewer as a problem, those that were planted problems), as
    round-1 row numbers. A near-duplicate flag shows both faces of its pair."""
    shown = set()
    for f in flags:
        if f.kind in ("noisy", "low_norm"):
            shown.add(int(f.index))
        elif f.kind == "near_duplicate":
            shown.update((int(f.index), int(f.other_index)))
    problems = {i for i in shown if truth.kinds[i] in PROBLEMS}
    return {int(rows[i]) for i in shown}, {int(rows[i]) for i in problems}


# -- the oracle reviewer --------------------------------------------------------------------------

def oracle_review(flags: Sequence[FlagCandidate], truth: Truth, rows: np.ndarray) -> tuple[Truth, np.ndarray, dict]:
    """Round 1's decisions by a reviewer who knows the ground truth. Returns the corrected set's
    truth, its cache rows, and the count of each decision."""
    kinds = truth.kinds.copy()
    given = list(truth.given_names)
    removed = np.zeros(len(truth), dtype=bool)
    decisions = {"removed": 0, "relabelled": 0, "merged": 0, "rejected": 0}

    def remove(i: int) -> None:
        if not removed[i]:
            removed[i] = True
            decisions["removed"] += 1

    for f in flags:
        if f.kind in ("noisy", "low_norm") and kinds[f.index] in ("open", "junk", "copy"):
            remove(f.index)
        elif f.kind in ("noisy", "low_norm") and kinds[f.index] == "closed":
            # The suggested identity when it is the true one, else the true one: either way the truth.
            given[f.index] = truth.true_names[f.index]
            kinds[f.index] = "clean"
            decisions["relabelled"] += 1
        elif f.kind == "near_duplicate" and "copy" in (kinds[f.index], kinds[f.other_index]):
            remove(f.index if kinds[f.index] == "copy" else f.other_index)
        elif f.kind == "duplicate_identity" and frozenset((f.label, f.other_label)) in truth.pairs:
            names = {truth.class_names[f.label], truth.class_names[f.other_label]}
            original, split = next(p for p in truth.pair_names if set(p) == names)
            for i, name in enumerate(given):
                if name == split:
                    given[i] = original
                    if kinds[i] == "split":
                        kinds[i] = "clean"
            decisions["merged"] += 1
        else:
            decisions["rejected"] += 1
    keep = np.flatnonzero(~removed)
    return truth.subset(keep, kinds, given), rows[keep], decisions


def rejected_faces(flags: Sequence[FlagCandidate], truth: Truth) -> set[tuple[int, str]]:
    """(face, suggestion) of the per-face flags the oracle rejected in round 1 (kept the face as
    it was): the app does not raise those again in a later round."""
    fixed = set(PROBLEMS)
    return {(int(f.index), f.suggestion) for f in flags
            if f.kind in ("noisy", "hard", "low_norm") and not (f.kind != "hard" and truth.kinds[f.index] in fixed)}


def not_decided_before(flags: Sequence[FlagCandidate], rows: np.ndarray,
                       rejected: set[tuple[int, str]]) -> list[FlagCandidate]:
    """Round 2's flags less those on a face and suggestion already decided in round 1 (rows maps
    round 2's face indices to round 1's)."""
    return [f for f in flags if f.index is None or f.kind == "near_duplicate"
            or (int(rows[f.index]), f.suggestion) not in rejected]


# -- models ---------------------------------------------------------------------------------------

def _key(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    return digest.hexdigest()[:16]


def train_config(method: str, args, epochs: int):
    config = quality.method_config(method, args, epochs)
    return dataclasses.replace(config, folds=args.folds, stats_batch_size=256)


def cross_fitted_round(method: str, args, epochs: int, faces, truth: Truth, fingerprints, cache: Path):
    """Train one model per fold (cached, resumable), embed, mine: the flags a training round gives."""
    config = train_config(method, args, epochs)
    run = cache / f"crossfit-{_key(method, repr(config), args.size, faces.rows, truth.labels)}"
    started = time.monotonic()
    assignment = train_folds(config, faces, truth.labels, run, num_classes=faces.num_classes)
    outputs = embed_folds(config, faces, run, assignment)
    seconds = time.monotonic() - started
    flags = mine_cross_fitted(outputs, truth.labels, fingerprints=fingerprints)
    return flags, seconds


def arcface_loss_baseline(args, faces, truth: Truth, cache: Path) -> dict:
    """ArcFace on the noisy labels, every face's eval-pass loss as its noise score."""
    config = quality.method_config("arcface", args, args.epochs)
    run = cache / f"arcface-{_key(repr(config), args.size, faces.rows, truth.labels)}"
    if not (run / "stats.npz").exists():
        train(config, run, dataset=faces, resume=True)
    scored = ~np.isin(truth.kinds, ("split", "copy"))
    loss = load_stats(run)["loss"].astype(np.float64)[scored]
    found = noise_detection(np.nan_to_num(loss, nan=0.0), np.isin(truth.kinds[scored], ("closed", "open", "junk")))
    return {"f1": found["f1"], "auc": found["auc"], "precision": found["precision"], "recall": found["recall"]}


def out_of_sample_probabilities(embeddings: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    x = embeddings - embeddings.mean(axis=0)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    classes = int(labels.max()) + 1
    probs = np.zeros((len(labels), classes))
    counts = np.bincount(labels, minlength=classes)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    strata = np.where(counts[labels] >= folds, labels, -1)
    for fit, held in splitter.split(x, strata):
        model = LogisticRegression(max_iter=300, C=10.0)
        model.fit(x[fit], labels[fit])
        probs[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
    probs += 1e-6  # a class absent from a fold's training part; cleanlab wants rows summing to 1
    return probs / probs.sum(axis=1, keepdims=True)


def cleanlab_baseline(embeddings: np.ndarray, truth: Truth, seed: int) -> dict:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = out_of_sample_probabilities(embeddings, truth.labels, CV_FOLDS, seed)
    issues = find_label_issues(truth.labels, probs)
    quality_scores = get_label_quality_scores(truth.labels, probs)
    scored = ~np.isin(truth.kinds, ("split", "copy"))
    positive = np.isin(truth.kinds[scored], ("closed", "open", "junk"))
    flagged = issues[scored]
    tp, n_flag, n_pos = int(np.sum(flagged & positive)), int(flagged.sum()), int(positive.sum())
    return {"f1": 2 * tp / (n_flag + n_pos) if n_flag + n_pos else 0.0,
            "auc": roc_auc(1.0 - quality_scores[scored], positive),
            "precision": tp / n_flag if n_flag else 0.0, "recall": tp / n_pos if n_pos else 0.0,
            "flagged": n_flag, "method": f"{CV_FOLDS}-fold logistic regression on the pretrained embeddings"}


def pretrained_embeddings(paths: Sequence[str], cache: Path):
    from ml.pretrained import pretrained_embeddings as extract

    from ml.pretrained import ALIGNMENT_FILE

    out = cache / f"pretrained-{_key(sorted(paths), len(paths))}"
    embeddings, norms, readable = extract(list(paths), out, num_workers=2)
    return embeddings, norms, readable, np.load(out / ALIGNMENT_FILE) == 1


# -- one benchmark --------------------------------------------------------------------------------

def noisy_set(bench: Benchmark, lfw: Path, args, work: Path) -> NoisySet:
    images = lfw / "images_deepfunneled"
    identities, pool = benchmark_identities(lfw, bench.name)
    identities = identities[: args.limit_identities]
    noisy = inject_noise(load_folder(images, identities), pool, closed=bench.closed, open=bench.open,
                         split=min(bench.split, max(1, len(identities) // 4)), seed=bench.seed)
    n = len(noisy.entries)
    noisy = plant_copies(noisy, images, work, max(1, round(bench.copies * n)), 0.25, bench.seed)
    noisy = plant_junk(noisy, images, work, bench.junk, bench.seed)
    return noisy


def image_paths(noisy: NoisySet, images: Path) -> list[str]:
    return [e.path if os.path.isabs(e.path) else str(images / e.path) for e in noisy.entries]


def run_benchmark(bench: Benchmark, args, work: Path) -> dict:
    started = time.monotonic()
    lfw = Path(args.lfw)
    images = lfw / "images_deepfunneled"
    work.mkdir(parents=True, exist_ok=True)
    noisy = noisy_set(bench, lfw, args, work)
    write_noisy_set(noisy, work / "noisy")
    truth = truth_of(noisy)
    paths = image_paths(noisy, images)
    cache_dir = Path(args.cache_dir) / bench.name
    cache_dir.mkdir(parents=True, exist_ok=True)
    decoded_file = cache_dir / f"decoded-{_key(paths, args.size)}.pt"
    if decoded_file.exists():
        decoded = torch.load(decoded_file)
    else:
        decoded = quality.decode_all(paths, args.size)
        torch.save(decoded, decoded_file)
    fingerprints = fingerprint_images(lambda i: Path(paths[i]).read_bytes(), len(paths))
    rows = np.arange(len(truth))

    def faces_of(t: Truth, r: np.ndarray):
        return quality.CachedFaces(decoded, r, t.labels, t.class_names)

    result: dict = {"setup": {"identities": len(truth.class_names) - len(truth.pair_names), "images": len(truth),
                              "noise": {k: int(np.sum(truth.kinds == k)) for k in
                                        ("clean", "closed", "open", "split", "copy", "junk")},
                              "closed": bench.closed, "open": bench.open, "split": bench.split,
                              "seed": bench.seed}}
    flags1, seconds = cross_fitted_round(args.method, args, args.epochs, faces_of(truth, rows), truth,
                                         fingerprints, cache_dir)
    result["round1"] = {**score_flags(flags1, truth), "train_embed_seconds": round(seconds, 1)}
    result["epochs"] = {str(args.epochs): result["round1"]["closed_set"]["f1"]}
    if args.long_epochs and args.long_epochs != args.epochs:
        long_flags, long_seconds = cross_fitted_round(args.method, args, args.long_epochs, faces_of(truth, rows),
                                                      truth, fingerprints, cache_dir)
        long_scores = score_flags(long_flags, truth)
        result["epochs"][str(args.long_epochs)] = long_scores["closed_set"]["f1"]
        result["epochs_detail"] = {str(args.long_epochs): {k: long_scores[k] for k in
                                                           ("closed_set", "open_set", "any_noise")}}

    shown, found = flagged_problems(flags1, truth, rows)
    if not args.no_round2:
        corrected, rows2, decisions = oracle_review(flags1, truth, rows)
        keep = np.isin(rows, rows2)
        flags2, _ = cross_fitted_round(args.method, args, args.epochs, faces_of(corrected, rows2), corrected,
                                       fingerprints.subset(np.flatnonzero(keep)), cache_dir)
        asked = not_decided_before(flags2, rows2, rejected_faces(flags1, truth))
        result["round2"] = {**score_flags(asked, corrected), "decisions": decisions,
                            "not_raised_again": len(flags2) - len(asked),
                            "remaining": {k: int(np.sum(corrected.kinds == k)) for k in
                                          ("clean", "closed", "open", "split", "copy", "junk")}}
        shown2, found2 = flagged_problems(asked, corrected, rows2)
        shown, found = shown | shown2, found | found2
    planted = int(np.isin(truth.kinds, PROBLEMS).sum())
    result["cumulative"] = {"precision": len(found) / len(shown) if shown else 0.0,
                            "recall": len(found) / planted if planted else 0.0,
                            "flagged": len(shown), "planted": planted}

    if not args.no_pretrained:
        embeddings, norms, readable, face_found = pretrained_embeddings(paths, cache_dir)
        flags_p = mine(embeddings=embeddings, labels=truth.labels, norms=norms, active=readable,
                       fingerprints=fingerprints, face_found=face_found, config=MiningConfig())
        result["pretrained"] = score_flags(flags_p, truth)
        result["baselines"] = {"cleanlab": cleanlab_baseline(embeddings, truth, bench.seed)}
    if not args.no_baselines:
        result.setdefault("baselines", {})["arcface_loss"] = arcface_loss_baseline(
            args, faces_of(truth, rows), truth, cache_dir)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


# -- the command ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", default=str(quality.DEFAULT_LFW), help="the LFW folder (with splits/)")
    parser.add_argument("--only", choices=[b.name for b in BENCHMARKS], action="append",
                        help="run only this benchmark (repeatable)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 16 identities, 24x24 faces, 1 epoch")
    parser.add_argument("--method", default="robustface", choices=("arcface", "robustface", "comining"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--long-epochs", type=int, default=40, help="the second epoch count (0: skip)")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--limit-identities", type=int, help="the first N identities of each benchmark")
    parser.add_argument("--size", type=int, help=f"face side in pixels ({quality.DEFAULT_SIZE})")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--scale", type=float, default=32.0)
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--work-dir", default=str(REPO / "var" / "bench-noise"),
                        help="the noisy sets and their planted images (kept: the cache keys name their paths)")
    parser.add_argument("--cache-dir", default=str(CACHE_ROOT), help="trainings, embeddings and decoded faces")
    parser.add_argument("--no-round2", action="store_true")
    parser.add_argument("--no-pretrained", action="store_true", help="skip dlib (and the cleanlab baseline)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the ArcFace-loss baseline's training")
    return parser


def apply_quick(args) -> None:
    if args.quick:
        args.limit_identities = args.limit_identities or 16
        args.epochs = 1 if args.epochs == 10 else args.epochs
        args.long_epochs = 2 if args.long_epochs == 40 else args.long_epochs
        args.size = args.size or quality.QUICK_SIZE
    args.size = args.size or quality.DEFAULT_SIZE
    args.r_max = 0.2  # read by quality.method_config only for Co-Mining


def run(args) -> dict:
    started = time.monotonic()
    torch.set_num_threads(2)
    apply_quick(args)
    result = {}
    for bench in BENCHMARKS:
        if args.only and bench.name not in args.only:
            continue
        log.info("benchmark %s", bench.name)
        result[bench.name] = run_benchmark(bench, args, Path(args.work_dir) / bench.name)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["setup"] = {"method": args.method, "epochs": args.epochs, "long_epochs": args.long_epochs,
                       "folds": args.folds, "size": args.size, "batch_size": args.batch_size,
                       "threads": torch.get_num_threads(), "judging": "cross-fitted (ml.crossfit)"}
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    print(json.dumps(quality._jsonable(run(args)), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
