"""Cross-fitted judging: no face is judged by a model that trained on its label.

Why: a network fits clean faces first and memorises noisy labels later (Arpit et al. 2017). A
face whose wrong label has been memorised sits next to that label, so the margin that should
expose it is gone. Measured here: ArcFace from scratch on noisy LFW-158 gave a margin ROC-AUC of
0.975 after 12 epochs and 0.45 after 20; on an unseen ~10K-face set, 20 epochs, 0.49 (chance).
An early snapshot only delays this, and where "early" lies depends on the set, the head and the
epoch count, which is exactly what a default cannot know.

What: the faces are dealt into k folds, stratified by identity. Model f trains on every fold but
f (all identities are still classes); it then embeds every face, and the faces of fold f, whose
labels it never saw, are the ones it judges (cleanlab's cross-validated probabilities, with
embeddings instead of probabilities). Mining runs once per fold's model on its held-out faces:
centres, reference faces, the neighbour graph, the thresholds and the flags. Each face is judged exactly
once. With k = 2 the compute equals one training on all faces (two models, half the faces each);
the price is that each model learns from half the faces.

The faces a model trained on take no part at all in its space, not even in the centres: they sit
where training put them, on their (possibly wrong) labels' class weights, ever tighter as epochs
go on. Measured on LFW-158 (RobustFace, 48 px, 2 folds): with centres built from every face the
closed-set F1 was 0.757 at 10 epochs and 0.726 at 40, open-set recall fell from 0.50 to 0.14;
with held-out faces only, 0.722 and 0.737. More folds leave fewer held-out faces per space
(4 folds: 0.687 at 10 epochs), so 2 is the default.

Run folder: <run_dir>/fold-<f>/ holds fold f's training run (checkpoints, resumable) and its
embeddings/ (ml.embed, resumable); folds.npy the assignment.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from ml.io.atomic import atomic_open
from ml.run_folder import EMBEDDINGS_DIR, FOLDS_FILE, fold_dir  # noqa: F401 (named here too)


def assign_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold per face (-1 for unlabelled ones): each identity's faces, shuffled, dealt round-robin
    from a random start, so every identity with >= k faces has faces in every fold and fold
    sizes differ by at most one face per identity."""
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    out = np.full(len(labels), -1, dtype=np.int64)
    order = np.argsort(labels, kind="stable")
    order = order[labels[order] >= 0]
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, bounds):
        if len(members) == 0:
            continue
        members = rng.permutation(members)
        out[members] = (np.arange(len(members)) + rng.integers(folds)) % folds
    return out


def load_or_assign_folds(run_dir: Path, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The assignment saved in the run folder (a resumed round must keep it), else a new one."""
    path = Path(run_dir) / FOLDS_FILE
    if path.exists():
        saved = np.load(path)
        if len(saved) == len(labels) and int(saved.max(initial=-1)) < folds:
            return saved
    assignment = assign_folds(labels, folds, seed)
    with atomic_open(path) as fh:
        np.save(fh, assignment)
    return assignment


class FoldView(Dataset):
    """The faces at `positions` of a dataset; items keep their dataset index (and label)."""

    def __init__(self, dataset: Dataset, positions: np.ndarray):
        self.dataset, self.positions = dataset, np.asarray(positions, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, position: int):
        return self.dataset[int(self.positions[position])]


def fold_training_data(dataset: Dataset, labels: np.ndarray, assignment: np.ndarray, fold: int, num_classes: int):
    """Fold `fold`'s model trains on every other fold's faces, over all classes."""
    from ml.train.trainer import TrainingData

    positions = np.flatnonzero((assignment >= 0) & (assignment != fold))
    sources = getattr(dataset, "sources", None)  # several sources: one head each (ml/train/multihead.py)
    return TrainingData(FoldView(dataset, positions), np.asarray(labels)[positions], positions, len(labels),
                        num_classes, getattr(dataset, "class_names", None),
                        None if sources is None else np.asarray(sources)[positions])


@dataclass
class FoldOutputs:
    """One fold model's view of every face, and which faces it may judge."""

    fold: int
    embeddings: np.ndarray   # (n, D) every face, in this model's space
    norms: np.ndarray        # (n,)
    readable: np.ndarray     # (n,) bool
    judged: np.ndarray       # (n,) bool: the faces this model never trained on


ProgressFn = Callable[[str, int, dict], None]  # (stage "train"|"extract", fold, record)


def train_folds(config, dataset: Dataset, labels: np.ndarray, run_dir: Path, *, folds: int | None = None,
                num_classes: int | None = None, progress: ProgressFn | None = None) -> np.ndarray:
    """Train one model per fold (config.folds unless given), each resuming from its checkpoints.
    Returns the assignment."""
    from ml.train.trainer import train

    labels = np.asarray(labels, dtype=np.int64)
    num_classes = int(num_classes if num_classes is not None else labels.max() + 1)
    folds = int(config.folds if folds is None else folds)
    assignment = load_or_assign_folds(run_dir, labels, folds, config.seed)
    # The trainer's statistics pass scores the faces a model trained on: the very judgement
    # this module avoids. Skip it; the held-out embeddings below are what mining reads.
    config = dataclasses.replace(config, stats_pass=False)
    for fold in range(folds):
        data = fold_training_data(dataset, labels, assignment, fold, num_classes)
        if len(data.labels) % config.batch_size == 1:  # a last batch of one face breaks batch norm
            config = dataclasses.replace(config, drop_last=True)
        report = None if progress is None else (lambda record, f=fold: progress("train", f, record))
        result = train(dataclasses.replace(config, seed=config.seed + fold), fold_dir(run_dir, fold), dataset=data,
                       progress=report, resume=True)
        if result.interrupted:
            raise RuntimeError(f"fold {fold}'s training stopped before its end (stop_at_step?)")
    return assignment


def embed_folds(config, dataset: Dataset, run_dir: Path, assignment: np.ndarray, *, device="cpu",
                progress: ProgressFn | None = None) -> list[FoldOutputs]:
    """Every fold model embeds every face (resumable), with flips as ml.embed does."""
    from ml.embed import extract_embeddings
    from ml.train.trainer import load_trained_network

    outputs = []
    for fold in range(int(assignment.max(initial=-1)) + 1):
        backbone, _, _ = load_trained_network(fold_dir(run_dir, fold), device=device)
        report = None if progress is None else (
            lambda done, total, f=fold: progress("extract", f, {"step": done, "total": total}))
        result = extract_embeddings(backbone, dataset, fold_dir(run_dir, fold) / EMBEDDINGS_DIR,
                                    batch_size=config.stats_batch_size, flip=True, num_workers=config.num_workers,
                                    resume=True, progress=report)
        outputs.append(load_fold_outputs(run_dir, fold, assignment, result.count))
    return outputs


def load_fold_outputs(run_dir: Path, fold: int, assignment: np.ndarray, count: int) -> FoldOutputs:
    from ml.embed import load_extraction

    embeddings, norms, readable = load_extraction(fold_dir(run_dir, fold) / EMBEDDINGS_DIR, count)
    return FoldOutputs(fold, embeddings, norms, readable, assignment == fold)


def mine_cross_fitted(outputs: list[FoldOutputs], labels: np.ndarray, *, active: np.ndarray | None = None,
                      config=None, fingerprints=None) -> list:
    """Flags from every fold model, each judging only its held-out faces (see the module doc).

    Per-face flags (noisy, hard, low quality) come from the one model that never saw the face.
    Duplicate identities are judged on every model's held-out faces at once: each pair's cross
    margin is averaged over the models (ml.mining.duplicates.pooled_duplicate_identities).
    Copies (near duplicates) are an image question, asked once."""
    from ml.mining import MiningConfig
    from ml.mining.candidate import DUPLICATE_IDENTITY, NEAR_DUPLICATE
    from ml.mining.duplicates import pooled_duplicate_identities
    from ml.mining.flags import mine_copies_only, mine_space, prepare_space, sort_flags

    config = config or MiningConfig()
    labels = np.asarray(labels, dtype=np.int64)
    per_face = dataclasses.replace(config, kinds=tuple(k for k in config.kinds
                                                      if k not in (NEAR_DUPLICATE, DUPLICATE_IDENTITY)))

    def usable(out: FoldOutputs) -> np.ndarray:
        return out.readable if active is None else (out.readable & np.asarray(active, dtype=bool))

    spaces = []
    for out in outputs:
        # Only the held-out faces, for the flags and for the geometry they are measured against.
        space = prepare_space(out.embeddings, labels, active=usable(out) & out.judged, config=config)
        if space is not None:
            spaces.append((out, space))
    if not spaces:
        return []
    flags, pairs = [], set()
    if DUPLICATE_IDENTITY in config.kinds:
        flags, pairs = pooled_duplicate_identities([s.duplicate_view(config) for _, s in spaces], labels, config)
    for out, space in spaces:
        # The fingerprints go to every fold for the image-sharpness signal of low quality.
        for flag in mine_space(space, norms=out.norms, config=per_face, fingerprints=fingerprints,
                               duplicates=([], pairs)):
            flag.evidence.judged_by = f"fold {out.fold} model (never trained on this face)"
            flags.append(flag)
    if NEAR_DUPLICATE in config.kinds and fingerprints is not None:
        # Copies are looked for among all faces at once; the first model's embeddings only say,
        # for a copy filed under two identities, which of them the face belongs to.
        flags += mine_copies_only(embeddings=outputs[0].embeddings, labels=labels, active=usable(outputs[0]),
                                  fingerprints=fingerprints, config=config)
    return sort_flags(flags)
