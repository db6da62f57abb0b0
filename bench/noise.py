"""Flag quality on the LFW noise benchmark, printed as one JSON object.

    .venv/bin/python bench/noise.py [--budget-minutes 23] [--quick] > noise.json
    .venv/bin/python bench/noise.py --reuse-cache [--no-round2] > noise.json   # re-mine in seconds

The standard noisy benchmark (shared/data/README.md): the 158 identities of
lfw/splits/train_identities.txt, closed-set noise 0.15, open-set 0.05 from splits/openset_pool.txt,
8 split identities, seed 0. Faces are decoded once into bench/quality.py's uint8 cache.

round1  The CPU configuration with the RobustFace head (the flagging model) is trained on the noisy
        labels; its eval-pass stats.npz and embeddings go through ml.mining.mine, and each flag kind
        is scored against the injected ground truth:
          closed_set  noisy flags suggesting relabel vs kind "closed"; relabel_correct is the share
                      of those flags on truly closed-set faces whose target is the true identity
          open_set    noisy flags suggesting remove vs kind "open"
          hard        counts by true kind; precision = share of hard flags on clean faces (hard
                      flags are meant to be clean but difficult)
          low_norm    vs kind "open" (outsiders, non-faces)
          duplicate_identity  planted split pairs found, and other pairs flagged
          noisy       every noisy or low_norm flag vs closed|open: the figure to set beside the
                      baselines
        AUC per kind: a face's score is its flag's score, shifted so that every flagged face ranks
        above every unflagged one (unflagged faces score 0). Faces of split identities are left out
        of precision/recall/AUC of the per-face kinds: their label names a real person, only under a
        second id, and that is the duplicate_identity flag's business.
round2  An oracle reviewer applies round 1's flags: a noisy/low_norm flag on a truly open-set face
        removes it; on a truly closed-set face relabels it (to the suggested identity when that is
        the true one, else to the true identity); a duplicate_identity flag on a planted pair merges
        the split half back; every other flag is rejected. RobustFace is retrained on the corrected
        set, mined again and scored the same way against the noise that remains. As in the app, a
        flag on a face and suggestion the reviewer already decided is not raised again
        (not_raised_again counts them).
baselines (same run, same noisy set, split faces left out, positives closed|open):
  arcface_loss  ArcFace trained on the noisy labels; a face's eval-pass loss is its score; F1 at the
                best threshold, and AUC.
  cleanlab      cleanlab.filter.find_label_issues on out-of-sample predicted probabilities from
                3-fold cross-validated multinomial logistic regression on the ArcFace baseline's
                frozen embeddings (the cheaper of the two recipes: no extra network trainings; the
                backbone has seen every noisy label, which favours memorisation, so this is the
                baseline's optimistic-for-speed variant). AUC from 1 - get_label_quality_scores.

        The miner's geometry is also scored as a plain ranking of every face (noisy_ranking:
        ml.mining.face_margins, AUC and F1 at the best threshold), the footing the baselines get.

Epochs: one common number for the three trainings, what fits in --budget-minutes after a
throughput probe; re-planned before each training since the machine is shared.

Cache: every training's outputs (stats.npz, embeddings, norms, seconds per step) are kept under
--cache-dir (var/bench-cache/<key>/e<epochs>/), the key a hash of the method's configuration, the
image size, the seed and the faces and labels trained on (so round 2's corrected set has its own).
--reuse-cache takes a cached training instead of training (the given --epochs, else the most
cached) and so re-mines and re-scores in seconds; the JSON's setup.reused_cache says so.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
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
from ml.evaluate import noise_detection, roc_auc  # noqa: E402
from ml.mining import FlagCandidate, face_margins, mine  # noqa: E402
from ml.noise import NoisySet, inject_noise, load_folder, read_lines, write_noisy_set  # noqa: E402
from ml.train.stats import load_stats  # noqa: E402
from ml.train.trainer import load_trained_network, train  # noqa: E402

log = logging.getLogger("bench.noise")


def _load_quality():
    """bench/quality.py (a script folder, not a package) for its cache, dataset and budget helpers.
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
TRAININGS = ("robustface", "arcface", "robustface")  # round 1, baseline, round 2
CV_FOLDS = 3


# -- ground truth in label ids --------------------------------------------------------------------

class Truth:
    """Per face of a (possibly corrected) training set: its true kind, given and true label ids."""

    def __init__(self, kinds: Sequence[str], given: Sequence[str], true: Sequence[str | None],
                 pairs: Sequence[tuple[str, str]]) -> None:
        self.class_names = sorted(set(given))
        ids = {n: i for i, n in enumerate(self.class_names)}
        self.kinds = np.asarray(kinds)
        self.given_names, self.true_names = list(given), list(true)
        self.labels = np.array([ids[n] for n in given], dtype=np.int64)
        self.true_ids = np.array([ids.get(n, -1) if n else -1 for n in true], dtype=np.int64)
        self.pair_names = [(a, b) for a, b in pairs if a in ids and b in ids]  # (original, split half)
        self.pairs = {frozenset((ids[a], ids[b])) for a, b in self.pair_names}

    def __len__(self) -> int:
        return len(self.kinds)


def truth_of(noisy: NoisySet) -> Truth:
    e = noisy.entries
    return Truth([x.kind for x in e], [x.given_label for x in e], [x.true_label for x in e],
                 [(p.label, p.split_label) for p in noisy.pairs])


# -- scoring flags --------------------------------------------------------------------------------

def face_scores(flags: Sequence[FlagCandidate], n: int) -> np.ndarray:
    """Per face: 0 unflagged, else 1 + the flag score's place in [0, 1] among these flags (the
    highest where a face has several), so that flagged faces outrank unflagged ones whatever the
    sign of the miner's score."""
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
    flagged = face_scores(flags, len(positive)) > 0
    tp = int(np.sum(flagged & positive & scored))
    n_flagged, n_pos = int(np.sum(flagged & scored)), int(np.sum(positive & scored))
    score = face_scores(flags, len(positive))[scored]
    return {"precision": tp / n_flagged if n_flagged else 0.0, "recall": tp / n_pos if n_pos else 0.0,
            "f1": 2 * tp / (n_flagged + n_pos) if n_flagged + n_pos else 0.0,
            "auc": roc_auc(score, positive[scored]) if 0 < n_pos < int(scored.sum()) else None,
            "flagged": n_flagged, "positives": n_pos}


def score_flags(flags: Sequence[FlagCandidate], truth: Truth) -> dict:
    kinds = truth.kinds
    scored = kinds != "split"
    noisy = [f for f in flags if f.kind == "noisy"]
    relabel = [f for f in noisy if f.suggestion == "relabel"]
    remove = [f for f in noisy if f.suggestion == "remove"]
    low_norm = [f for f in flags if f.kind == "low_norm"]
    hard = [f for f in flags if f.kind == "hard"]

    closed = detection(relabel, kinds == "closed", scored)
    on_closed = [f for f in relabel if kinds[f.index] == "closed"]
    closed["relabel_correct"] = (float(np.mean([f.target_label == truth.true_ids[f.index] for f in on_closed]))
                                 if on_closed else None)
    hard_kinds = {k: int(sum(kinds[f.index] == k for f in hard)) for k in ("clean", "closed", "open", "split")}
    found = {frozenset((f.label, f.other_label)) for f in flags if f.kind == "duplicate_identity"}
    return {
        "closed_set": closed,
        "open_set": detection(remove, kinds == "open", scored),
        "hard": {"flagged": len(hard), **hard_kinds,
                 "precision": hard_kinds["clean"] / len(hard) if hard else None},
        "low_norm": detection(low_norm, kinds == "open", scored),
        "duplicate_identity": {"found": len(found & truth.pairs), "false": len(found - truth.pairs),
                               "planted": len(truth.pairs)},
        "noisy": detection(noisy + low_norm, np.isin(kinds, ("closed", "open")), scored),
    }


# -- the oracle reviewer --------------------------------------------------------------------------

def oracle_review(flags: Sequence[FlagCandidate], truth: Truth, rows: np.ndarray) -> tuple[Truth, np.ndarray, dict]:
    """Round 1's decisions by a reviewer who knows the ground truth. Returns the corrected set's
    truth, its cache rows, and the count of each decision."""
    kinds = truth.kinds.copy()
    given = list(truth.given_names)
    removed = np.zeros(len(truth), dtype=bool)
    decisions = {"removed": 0, "relabelled": 0, "merged": 0, "rejected": 0}
    for f in flags:
        if f.kind in ("noisy", "low_norm") and kinds[f.index] == "open" and not removed[f.index]:
            removed[f.index] = True
            decisions["removed"] += 1
        elif f.kind in ("noisy", "low_norm") and kinds[f.index] == "closed":
            # The suggested identity when it is the true one, else the true one: either way the truth.
            given[f.index] = truth.true_names[f.index]
            kinds[f.index] = "clean"
            decisions["relabelled"] += 1
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
    corrected = Truth([kinds[i] for i in keep], [given[i] for i in keep], [truth.true_names[i] for i in keep],
                      truth.pair_names)
    return corrected, rows[keep], decisions


def rejected_faces(flags: Sequence[FlagCandidate], truth: Truth) -> set[tuple[int, str]]:
    """(face, suggestion) of the per-face flags the oracle rejected in round 1 (kept the face as
    it was): the app does not raise those again in a later round."""
    fixed = {"open", "closed"}
    return {(int(f.index), f.suggestion) for f in flags
            if f.kind in ("noisy", "hard", "low_norm") and not (f.kind != "hard" and truth.kinds[f.index] in fixed)}


def not_decided_before(flags: Sequence[FlagCandidate], rows: np.ndarray,
                       rejected: set[tuple[int, str]]) -> list[FlagCandidate]:
    """Round 2's flags less those on a face and suggestion already decided in round 1 (rows maps
    round 2's face indices to round 1's)."""
    return [f for f in flags if f.index is None or f.kind == "near_duplicate"
            or (int(rows[f.index]), f.suggestion) not in rejected]


# -- training and baselines -----------------------------------------------------------------------

CACHE_ROOT = REPO / "var" / "bench-cache"


def cache_key(method: str, args, faces) -> str:
    """What a training's outputs depend on, epochs aside (a folder per epoch count below it):
    the method's configuration, the faces (cache rows) and their labels, the image size."""
    config = quality.method_config(method, args, 1)  # epochs: a folder level below the key
    spec = {"method": method, "config": repr(config), "size": args.size, "seed": args.seed,
            "rows": hashlib.sha256(np.ascontiguousarray(faces.rows).tobytes()).hexdigest(),
            "labels": hashlib.sha256(np.ascontiguousarray(faces.labels).tobytes()).hexdigest(),
            "classes": len(faces.class_names or [])}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def cached_epochs(folder: Path) -> list[int]:
    return sorted(int(p.name[1:]) for p in folder.glob("e*") if (p / "done.json").exists())


def train_run(method: str, args, epochs: int | None, faces, work: Path, name: str):
    """Train (or, with --reuse-cache, take a cached training of the same key), then (folder with
    stats.npz, embeddings, norms, measured seconds per step including the eval passes, epochs)
    for every face of `faces` in order. epochs None: the largest cached count."""
    folder = Path(args.cache_dir) / cache_key(method, args, faces) if args.cache_dir else None
    if folder is not None and args.reuse_cache:
        have = cached_epochs(folder)
        pick = epochs if epochs in have else (have[-1] if have and epochs is None else None)
        if pick is not None:
            done = folder / f"e{pick}"
            meta = json.loads((done / "done.json").read_text())
            log.info("%s: reusing %s (%d epochs)", name, done, pick)
            return (done, np.load(done / "embeddings.npy"), np.load(done / "norms.npy"), meta["step_s"], pick)
    if epochs is None:
        raise SystemExit(f"{name}: nothing cached under {folder}; give --epochs or a budget")
    started = time.monotonic()
    run_dir = work / name
    log.info("%s: %s, %d epochs on %d faces", name, method, epochs, len(faces))
    config = quality.method_config(method, args, epochs)
    # A last batch of one face breaks batch norm in training; flags come from the eval pass, which
    # sees every face, so dropping that one face from an epoch's steps costs nothing.
    if len(faces) % args.batch_size == 1:
        config = dataclasses.replace(config, drop_last=True)
    train(config, run_dir, dataset=faces)
    backbone, _, _ = load_trained_network(run_dir)
    embedded = extract_embeddings(backbone, faces, work / f"{name}-embeddings", batch_size=256, device="cpu",
                                  flip=True)
    step_s = (time.monotonic() - started) / (epochs * math.ceil(len(faces) / args.batch_size))
    embeddings, norms = np.load(embedded.embeddings_path), np.load(embedded.norms_path)
    if folder is None:
        return run_dir, embeddings, norms, step_s, epochs
    done = folder / f"e{epochs}"
    done.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(run_dir) / "stats.npz", done / "stats.npz")
    np.save(done / "embeddings.npy", embeddings)
    np.save(done / "norms.npy", norms)
    (done / "done.json").write_text(json.dumps({"method": method, "epochs": epochs, "step_s": step_s,
                                                 "faces": len(faces), "seconds": time.monotonic() - started}))
    return done, embeddings, norms, step_s, epochs


def mine_run(run_dir: Path, embeddings: np.ndarray, norms: np.ndarray, labels: np.ndarray) -> list[FlagCandidate]:
    return mine(embeddings=embeddings, labels=labels, stats=load_stats(run_dir), norms=norms)


def margin_ranking(embeddings: np.ndarray, truth: Truth) -> dict:
    """The miner's geometry as a plain ranking of every face (ml.mining.face_margins), scored as
    the baselines are: AUC, and F1 at the best threshold (which the flags do not get to pick)."""
    scored = truth.kinds != "split"
    margin = face_margins(embeddings=embeddings, labels=truth.labels)[scored]
    found = noise_detection(np.nan_to_num(margin, nan=-180.0), np.isin(truth.kinds[scored], ("closed", "open")))
    return {"auc": found["auc"], "f1_best_threshold": found["f1"]}


def loss_baseline(run_dir: Path, truth: Truth) -> dict:
    scored = truth.kinds != "split"
    loss = load_stats(run_dir)["loss"].astype(np.float64)[scored]
    found = noise_detection(np.nan_to_num(loss, nan=0.0), np.isin(truth.kinds[scored], ("closed", "open")))
    return {"f1": found["f1"], "auc": found["auc"], "precision": found["precision"], "recall": found["recall"]}


def out_of_sample_probabilities(embeddings: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    classes = int(labels.max()) + 1
    probs = np.zeros((len(labels), classes))
    # Stratified where every class has `folds` members; identities with fewer still land in some fold.
    counts = np.bincount(labels, minlength=classes)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    strata = np.where(counts[labels] >= folds, labels, -1)
    for fit, held in splitter.split(x, strata):
        model = LogisticRegression(max_iter=300, C=10.0)
        model.fit(x[fit], labels[fit])
        probs[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
    # A class absent from a fold's training part gets no mass there; cleanlab wants rows summing to 1.
    probs += 1e-6
    return probs / probs.sum(axis=1, keepdims=True)


def cleanlab_baseline(embeddings: np.ndarray, truth: Truth, seed: int) -> dict:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = out_of_sample_probabilities(embeddings, truth.labels, CV_FOLDS, seed)
    issues = find_label_issues(truth.labels, probs)
    quality_scores = get_label_quality_scores(truth.labels, probs)
    scored = truth.kinds != "split"
    positive = np.isin(truth.kinds[scored], ("closed", "open"))
    flagged = issues[scored]
    tp, n_flag, n_pos = int(np.sum(flagged & positive)), int(flagged.sum()), int(positive.sum())
    return {"f1": 2 * tp / (n_flag + n_pos) if n_flag + n_pos else 0.0,
            "auc": roc_auc(1.0 - quality_scores[scored], positive),
            "precision": tp / n_flag if n_flag else 0.0, "recall": tp / n_pos if n_pos else 0.0,
            "flagged": n_flag, "method": f"{CV_FOLDS}-fold logistic regression on frozen ArcFace embeddings"}


# -- the benchmark --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", default=str(quality.DEFAULT_LFW), help="the LFW folder (with splits/)")
    parser.add_argument("--budget-minutes", type=float, default=23.0,
                        help="wall-clock budget of the run's trainings and passes (23)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 identities, 32x32 faces, 2 epochs")
    parser.add_argument("--epochs", type=int, help="fixed epochs per training instead of the budget's")
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--limit-identities", type=int, help="the first N training identities only")
    parser.add_argument("--size", type=int, help=f"face side in pixels ({quality.DEFAULT_SIZE}; 32 with --quick)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--scale", type=float, default=32.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", help="keep runs here (default: a temporary folder)")
    parser.add_argument("--cache-dir", default=str(CACHE_ROOT),
                        help="keep each training's stats, embeddings and norms here, keyed by its configuration, "
                             "faces and labels, one folder per epoch count ('' = no cache)")
    parser.add_argument("--reuse-cache", action="store_true",
                        help="take a cached training of the same key instead of training (the given --epochs, "
                             "else the most epochs cached): re-mines and re-scores in seconds")
    parser.add_argument("--no-round2", action="store_true", help="stop after round 1 and the baselines")
    return parser


def apply_quick(args) -> None:
    if args.quick:
        args.limit_identities = args.limit_identities or 20
        args.epochs = args.epochs or 2
        args.size = args.size or quality.QUICK_SIZE
    args.size = args.size or quality.DEFAULT_SIZE
    args.r_max = 0.2  # read by quality.method_config only for Co-Mining


class LazyCache:
    """The decoded uint8 faces, decoded on first use: a run served from the training cache never
    needs the images."""

    def __init__(self, paths: Sequence[str], size: int) -> None:
        self.paths, self.size, self.tensor = paths, size, None

    def __getitem__(self, index):
        if self.tensor is None:
            started = time.monotonic()
            self.tensor = quality.decode_all(self.paths, self.size)
            log.info("decoded %d faces in %.0fs", len(self.paths), time.monotonic() - started)
        return self.tensor[index]


def run(args) -> dict:
    started = time.monotonic()
    torch.set_num_threads(2)
    apply_quick(args)
    lfw = Path(args.lfw)
    images = lfw / "images_deepfunneled"
    identities = read_lines(lfw / "splits" / "train_identities.txt")[: args.limit_identities]
    noisy = inject_noise(load_folder(images, identities), read_lines(lfw / "splits" / "openset_pool.txt"),
                         closed=0.15, open=0.05, split=8, seed=args.seed)
    cache = LazyCache([str(images / e.path) for e in noisy.entries], args.size)
    rows = np.arange(len(noisy.entries))
    truth = truth_of(noisy)
    plan = {"step_s": None}

    def faces_of(t: Truth, r: np.ndarray):
        return quality.CachedFaces(cache, r, t.labels, t.class_names)

    def epochs_for(step: int, n: int, faces) -> int | None:
        if args.epochs is not None:
            return args.epochs
        if args.reuse_cache and args.cache_dir and cached_epochs(Path(args.cache_dir) / cache_key(
                TRAININGS[step], args, faces)):
            return None  # the cached training, whatever its epochs
        if plan["step_s"] is None:
            plan["step_s"] = quality.probe_step_seconds(args, faces.num_classes, faces)
        left = args.budget_minutes * 60 - (time.monotonic() - started)
        epochs = quality.plan_epochs(left, plan["step_s"], math.ceil(n / args.batch_size), 2 * n, args.batch_size,
                                     TRAININGS[step:], args.max_epochs)
        # One common number: a later training may get fewer (the machine got busier), never more,
        # or the slack of a quiet spell goes to the baseline and starves round 2.
        plan["first"] = plan.get("first") or epochs
        return min(epochs, plan["first"])

    def trained(step: int, faces, work: Path, name: str):
        out_dir, embeddings, norms, measured, epochs = train_run(TRAININGS[step], args, epochs_for(step, len(faces),
                                                                                                    faces),
                                                                 faces, work, name)
        # Re-plan the rest with the rate measured (the machine is shared); never the faster guess.
        if plan["step_s"] is not None:
            plan["step_s"] = max(plan["step_s"], measured)
        return out_dir, embeddings, norms, epochs

    with tempfile.TemporaryDirectory(prefix="noise-") as scratch:
        work = Path(args.work_dir or scratch)
        write_noisy_set(noisy, work / "noisy")
        faces = faces_of(truth, rows)
        run1, emb1, norms1, e1 = trained(0, faces, work, "round1")
        epochs = [e1]
        flags1 = mine_run(run1, emb1, norms1, truth.labels)
        result = {"round1": {**score_flags(flags1, truth), "noisy_ranking": margin_ranking(emb1, truth)}}

        base, emb_base, _, e2 = trained(1, faces, work, "arcface")
        epochs.append(e2)
        result["baselines"] = {"arcface_loss": loss_baseline(base, truth),
                               "cleanlab": cleanlab_baseline(emb_base, truth, args.seed)}

        if not args.no_round2:
            corrected, rows2, decisions = oracle_review(flags1, truth, rows)
            faces2 = faces_of(corrected, rows2)
            run2, emb2, norms2, e3 = trained(2, faces2, work, "round2")
            epochs.append(e3)
            mined2 = mine_run(run2, emb2, norms2, corrected.labels)
            flags2 = not_decided_before(mined2, rows2, rejected_faces(flags1, truth))
            result["round2"] = {**score_flags(flags2, corrected), "noisy_ranking": margin_ranking(emb2, corrected),
                                "decisions": decisions, "not_raised_again": len(mined2) - len(flags2),
                                "remaining": {k: int(np.sum(corrected.kinds == k))
                                              for k in ("clean", "closed", "open", "split")}}
    result["seconds"] = time.monotonic() - started
    result["setup"] = {"identities": len(identities), "images": len(rows), "noise": noisy.counts(),
                       "size": args.size, "epochs": epochs, "budget_minutes": args.budget_minutes,
                       "batch_size": args.batch_size, "threads": torch.get_num_threads(),
                       "reused_cache": bool(args.reuse_cache)}
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    print(json.dumps(quality._jsonable(run(args)), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
