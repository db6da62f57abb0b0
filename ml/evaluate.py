"""Scores for FaceClean's models: face verification and noisy-label detection (numpy only).

Conventions: a verification pair is predicted "same" when its cosine is *strictly above* the
threshold; a sample is flagged noisy when its score is *at or above* the threshold (the
threshold is then the lowest flagged score, the natural value to show a reviewer).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# Result keys "tar_at_far_<name>".
FARS = {"1e-2": 1e-2, "1e-3": 1e-3}


# -- ranking primitives ---------------------------------------------------------------------------

def average_ranks(values) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts_group) - 1
    bounds = np.flatnonzero(np.r_[starts_group, True])  # group starts, then len(values)
    mean_rank = (bounds[:-1] + bounds[1:] - 1) / 2.0 + 1.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def roc_auc(scores, positive) -> float:
    """Area under the ROC curve, higher score = more likely positive; ties count one half.
    It is the Mann-Whitney U statistic over (positives x negatives); NaN without both classes."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if scores.shape != positive.shape:
        raise ValueError("scores and labels differ in shape")
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = average_ranks(scores)[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _descending(scores: np.ndarray, positive: np.ndarray):
    """Scores sorted high to low, with the true-positive and false-positive counts of every cut
    "take the top k" (k = 0..n) and which cuts fall between distinct scores (ties not split)."""
    order = np.argsort(-scores, kind="mergesort")
    ordered, hits = scores[order], positive[order]
    tp = np.r_[0, np.cumsum(hits)]
    fp = np.r_[0, np.cumsum(~hits)]
    valid = np.ones(len(ordered) + 1, dtype=bool)
    valid[1:-1] = ordered[:-1] > ordered[1:]
    return ordered, tp, fp, valid


# -- verification ---------------------------------------------------------------------------------

def cosine_scores(embeddings_a, embeddings_b) -> np.ndarray:
    """Row-wise cosine; rows are re-normalised in float64 (float16 storage drifts from unit
    length), and a zero row (an unreadable image) scores 0."""
    a = np.asarray(embeddings_a, dtype=np.float64)
    b = np.asarray(embeddings_b, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.einsum("ij,ij->i", a, b)


def best_accuracy_threshold(scores, same) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of "same iff score > threshold" on these pairs.
    The threshold lies midway between the two scores it separates; of equally good cuts the
    highest threshold is taken."""
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    ordered, tp, fp, valid = _descending(scores, same)
    n_neg = len(same) - int(same.sum())
    correct = np.where(valid, tp + (n_neg - fp), -1)
    k = int(np.argmax(correct))
    if k == 0:
        threshold = ordered[0]
    elif k == len(ordered):
        threshold = np.nextafter(ordered[-1], -np.inf)
    else:
        threshold = (ordered[k - 1] + ordered[k]) / 2.0
    return float(threshold), float(correct[k] / len(same))


def tar_at_far(scores, same, far: float) -> dict:
    """True accept rate at the threshold where at most `far` of impostor pairs score above it:
    the threshold is the (floor(far * n_impostor) + 1)-th highest impostor score."""
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    impostor = np.sort(scores[~same])[::-1]
    genuine = scores[same]
    allowed = int(np.floor(far * len(impostor) + 1e-9))
    threshold = impostor[allowed] if allowed < len(impostor) else -np.inf
    return {
        "tar": float(np.mean(genuine > threshold)) if len(genuine) else float("nan"),
        "far": float(np.mean(impostor > threshold)) if len(impostor) else float("nan"),
        "threshold": float(threshold),
    }


def _fold_ids(folds, n: int) -> np.ndarray:
    if np.isscalar(folds):
        return np.arange(n) * int(folds) // max(n, 1)
    folds = np.asarray(folds)
    if folds.shape != (n,):
        raise ValueError("folds must give one fold id per pair")
    return folds


def verification(embeddings_a, embeddings_b, same, folds=10) -> dict:
    """Verification scores of pairs (row i of a against row i of b).

    folds: one fold id per pair (e.g. LFW's), or a number of folds to cut the pairs into in
    order. Accuracy: for each fold, the threshold that maximises accuracy on the other folds,
    applied to it; mean and population std over folds. TAR at FAR and ROC-AUC use all pairs.
    """
    scores = cosine_scores(embeddings_a, embeddings_b)
    same = np.asarray(same, dtype=bool)
    fold_ids = _fold_ids(folds, len(scores))
    accuracies, thresholds = [], []
    for fold in np.unique(fold_ids):
        held_out = fold_ids == fold
        threshold, _ = best_accuracy_threshold(scores[~held_out], same[~held_out])
        thresholds.append(threshold)
        accuracies.append(float(np.mean((scores[held_out] > threshold) == same[held_out])))
    result = {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "fold_accuracies": accuracies,
        "fold_thresholds": thresholds,
        "threshold": float(np.mean(thresholds)),
        "auc": roc_auc(scores, same),
        "pairs": int(len(scores)),
        "same_pairs": int(same.sum()),
    }
    for name, far in FARS.items():
        result[f"tar_at_far_{name}"] = tar_at_far(scores, same, far)
    return result


@dataclass(frozen=True)
class EvalPairs:
    """Pairs over a list of unique image paths, so that each image is embedded once."""

    paths: list[str]
    index_a: np.ndarray
    index_b: np.ndarray
    same: np.ndarray
    folds: np.ndarray

    def evaluate(self, embeddings) -> dict:
        """verification() with `embeddings` row i being the embedding of paths[i]."""
        embeddings = np.asarray(embeddings)
        return verification(embeddings[self.index_a], embeddings[self.index_b], self.same, self.folds)


def load_eval_pairs(tsv_path: str | os.PathLike) -> EvalPairs:
    """A `fold, path_a, path_b, same` TSV with a header line (the project's LFW eval_pairs.tsv;
    paths relative to images_deepfunneled/). Paths are indexed in order of first appearance."""
    with open(tsv_path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        if header != ["fold", "path_a", "path_b", "same"]:
            raise ValueError(f"{tsv_path}: expected the header fold, path_a, path_b, same; got {header}")
        rows = [line.rstrip("\n").split("\t") for line in fh if line.strip()]
    bad = [i for i, row in enumerate(rows, 2) if len(row) != 4]
    if bad:
        raise ValueError(f"{tsv_path}:{bad[0]}: expected 4 tab-separated columns")
    position: dict[str, int] = {}
    for row in rows:
        for path in row[1:3]:
            position.setdefault(path, len(position))
    return EvalPairs(
        paths=list(position),
        index_a=np.array([position[row[1]] for row in rows], dtype=np.int64),
        index_b=np.array([position[row[2]] for row in rows], dtype=np.int64),
        same=np.array([int(row[3]) for row in rows], dtype=np.int64) == 1,
        folds=np.array([int(row[0]) for row in rows], dtype=np.int64),
    )


# -- noisy-label detection ------------------------------------------------------------------------

def _precision_recall_f1(true_pos: int, flagged: int, positives: int) -> dict:
    """Zero (not NaN) where a ratio has nothing to count, so that results stay JSON-friendly."""
    precision = true_pos / flagged if flagged else 0.0
    recall = true_pos / positives if positives else 0.0
    f1 = 2 * true_pos / (flagged + positives) if flagged + positives else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "flagged": int(flagged)}


def detection_at(scores, is_noisy, threshold: float) -> dict:
    """Precision, recall and F1 of flagging every sample with score >= threshold."""
    scores = np.asarray(scores, dtype=np.float64)
    is_noisy = np.asarray(is_noisy, dtype=bool)
    flagged = scores >= threshold
    result = _precision_recall_f1(int(np.sum(flagged & is_noisy)), int(flagged.sum()), int(is_noisy.sum()))
    return {"threshold": float(threshold), **result}


def best_f1_threshold(scores, is_noisy) -> dict:
    """The cut maximising F1 (ties never split; of equal F1 the highest threshold). Flagging
    nothing is a candidate, reported as threshold +inf."""
    scores = np.asarray(scores, dtype=np.float64)
    is_noisy = np.asarray(is_noisy, dtype=bool)
    ordered, tp, _, valid = _descending(scores, is_noisy)
    positives = int(is_noisy.sum())
    flagged = np.arange(len(ordered) + 1)
    denominator = np.maximum(flagged + positives, 1)
    f1 = np.where(valid, 2 * tp / denominator, -1.0)
    k = int(np.argmax(f1))
    threshold = ordered[k - 1] if k else np.inf
    return {"threshold": float(threshold), **_precision_recall_f1(int(tp[k]), k, positives)}


def noise_detection(scores, is_noisy, *, threshold: float | None = None) -> dict:
    """How well `scores` (higher = more likely noisy) find the truly noisy samples.

    Top-level precision/recall/f1/threshold are at `threshold` when given, else at the best-F1
    threshold; both are also under "best" and "at_threshold" (None when not given).
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_noisy = np.asarray(is_noisy, dtype=bool)
    if scores.shape != is_noisy.shape:
        raise ValueError("scores and is_noisy differ in shape")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    best = best_f1_threshold(scores, is_noisy)
    at_threshold = detection_at(scores, is_noisy, threshold) if threshold is not None else None
    headline = at_threshold if at_threshold is not None else best
    return {
        **headline,
        "auc": roc_auc(scores, is_noisy),
        "samples": int(len(scores)),
        "noisy": int(is_noisy.sum()),
        "best": best,
        "at_threshold": at_threshold,
    }


def relabel_accuracy(suggested, true_labels, mask=None) -> float:
    """The share of relabel suggestions (rows where mask is true) naming the true identity;
    NaN when there is none."""
    suggested = np.asarray(suggested)
    true_labels = np.asarray(true_labels)
    mask = np.ones(len(suggested), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if not mask.any():
        return float("nan")
    return float(np.mean(suggested[mask] == true_labels[mask]))
