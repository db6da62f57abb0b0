"""The files ml writes for one round, named once: the run folder and its extraction folders.

    RUN/folds.npy                  each face's fold (ml.crossfit)
    RUN/fold-<k>/                  fold model k's trainer run (checkpoints, train.log, ...)
    RUN/fold-<k>/embeddings/       fold model k's extraction of every face
    RUN/embeddings/                the extraction of a pretrained model, or user rows laid out as one
    RUN/fingerprints.npz           the faces' image fingerprints (ml.mining.copies)
    RUN/identity_centres.npz       the relabel search's identity centres (ml.identity_index)

An extraction folder holds embeddings.npy (rows in dataset order), norms.npy, unreadable.json
(the rows whose image could not be read), progress.json (resuming) and, from the pretrained
extractor, alignment.npy. Names, paths and reading an extraction: numpy only.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EMBEDDINGS_DIR = "embeddings"
EMBEDDINGS_FILE = "embeddings.npy"
NORMS_FILE = "norms.npy"
PROGRESS_FILE = "progress.json"
UNREADABLE_FILE = "unreadable.json"
ALIGNMENT_FILE = "alignment.npy"
FOLDS_FILE = "folds.npy"
FINGERPRINTS_FILE = "fingerprints.npz"
CENTRES_FILE = "identity_centres.npz"


def fold_dir(run_dir: str | os.PathLike, fold: int) -> Path:
    return Path(run_dir) / f"fold-{fold}"


@dataclass(frozen=True)
class Extraction:
    """A finished extraction, rows in dataset order."""

    embeddings: np.ndarray             # (n, D), memory-mapped
    norms: np.ndarray | None           # (n,) feature norms, when the model gives them
    readable: np.ndarray               # (n,) bool: the image could be read (and the row is usable)
    face_found: np.ndarray | None = None  # (n,) bool: the pretrained detector found a face


@dataclass(frozen=True)
class ExtractionFolder:
    """One extraction's files (ml.embed, ml.pretrained)."""

    root: Path

    @property
    def embeddings(self) -> Path:
        return self.root / EMBEDDINGS_FILE

    @property
    def norms(self) -> Path:
        return self.root / NORMS_FILE

    @property
    def unreadable(self) -> Path:
        return self.root / UNREADABLE_FILE

    @property
    def progress(self) -> Path:
        return self.root / PROGRESS_FILE

    @property
    def alignment(self) -> Path:
        return self.root / ALIGNMENT_FILE

    def read(self, count: int) -> Extraction:
        """The finished extraction of `count` faces (the embeddings memory-mapped); with the
        pretrained extractor's alignment, whether its detector found each face."""
        readable = np.ones(count, dtype=bool)
        readable[json.loads(self.unreadable.read_text(encoding="utf-8"))] = False
        face_found = None
        if self.alignment.exists():
            alignment = np.load(self.alignment)
            face_found = alignment == 1 if len(alignment) == count else None
        return Extraction(np.load(self.embeddings, mmap_mode="r"), np.load(self.norms), readable, face_found)


@dataclass(frozen=True)
class RunFolder:
    """A round's run folder (the layout above)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def extraction(self) -> ExtractionFolder:
        return ExtractionFolder(self.root / EMBEDDINGS_DIR)

    @property
    def folds(self) -> Path:
        return self.root / FOLDS_FILE

    @property
    def fingerprints(self) -> Path:
        return self.root / FINGERPRINTS_FILE

    @property
    def identity_centres(self) -> Path:
        return self.root / CENTRES_FILE

    def fold(self, k: int) -> "RunFolder":
        """Fold model k's own run folder (its checkpoints, and its extraction)."""
        return RunFolder(fold_dir(self.root, k))

    def search_embeddings(self, given: str | os.PathLike | None = None) -> Path:
        """The embeddings the relabel search reads, rows in the round's dataset order: this
        folder's extraction (a pretrained model, or user rows matched by path), else `given` (the
        file an "embeddings" round was given, rows already in that order) when there is one, else
        the first fold model's extraction: a training round has one per fold (ml.crossfit), and
        the first fold's embeds every face in one space."""
        extracted = self.extraction.embeddings
        if given is not None and not extracted.exists():
            return Path(str(given))
        first_fold = self.fold(0).extraction.embeddings
        return first_fold if not extracted.exists() and first_fold.exists() else extracted
