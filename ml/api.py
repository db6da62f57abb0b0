"""The app's one door into ml: reviewapp imports ml through this module only.

What the review app asks of ml, by what it is for:
- reading and writing images and files: the decoding budget, RecordIO, folder / file list /
  RecordIO scans, user-supplied embeddings files, atomic writes (re-exported: ml.io's own names
  are the API);
- a round's files: RunFolder / ExtractionFolder (ml.run_folder), so no file name of ml's is
  spelled on the app side;
- a round's work: train_config (the config folder is found here), train_folds, extract_folds,
  extract_pretrained, supplied embeddings, image_fingerprints, mine, mine_folds, chart_summary;
- the relabel search: identity centres (ml.centres, the one definition) and the identity index;
- a flag's evidence as the app stores and reads it (ml.evidence).

Light at import (numpy, PIL): torch and faiss are imported inside the functions that need them,
and the heavy classes (TrainConfig, MiningConfig, FlagCandidate, FaceDataset, ...) are loaded on
first access, so the web process never pays for torch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ml.centres import Centres, identity_centres, unit_rows
from ml.evidence import evidence_json, evidence_published, evidence_read
from ml.identity_index import IdentityIndex, face_query, identity_index_load, identity_index_write
from ml.io.atomic import atomic_open, atomic_path, write_bytes_atomic, write_text_atomic
from ml.io.budget import IMAGE_MAX_PIXELS, over_budget
from ml.io.embeddings_file import EmbeddingsFile, RowMatch, check_embeddings_file, load_embeddings_file, match_rows
from ml.io.filelist import scan_file_list
from ml.io.recordio import RecordIOError, RecordReader, RecordWriter, pack_image, unpack_image
from ml.io.scan import Progress, ScanResult, scan_folder, scan_recordio, shown_name
from ml.run_folder import Extraction, ExtractionFolder, RunFolder
from ml.supplied import matched_extraction, rows_as_given

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
Report = Callable[[int, int], None]  # progress(done, total); raising in it stops the work where it is

__all__ = [
    "atomic_open", "atomic_path", "Centres", "chart_summary", "check_embeddings_file", "CONFIGS_DIR",
    "EmbeddingsFile", "eval_transform", "evidence_json", "evidence_published", "evidence_read",
    "extract_folds", "extract_pretrained", "Extraction", "ExtractionFolder", "face_query", "FaceBoxes",
    "fold_extractions", "identity_centres", "identity_index_load", "identity_index_write", "IdentityIndex",
    "image_fingerprints", "IMAGE_MAX_PIXELS", "load_embeddings_file", "match_rows", "matched_extraction",
    "mine", "mine_folds", "over_budget", "pack_image", "Progress", "RecordIOError", "RecordReader",
    "RecordWriter", "resumed_steps", "RowMatch", "rows_as_given", "RunFolder", "scan_file_list",
    "scan_folder", "scan_recordio", "ScanResult", "shown_name", "train_config", "train_folds", "unit_rows",
    "unpack_image", "write_bytes_atomic", "write_text_atomic",
]

# Loaded on first access: `from ml.api import MiningConfig` inside a function costs torch then, not at import.
_HEAVY = {
    "TrainConfig": "ml.train.config",
    "MiningConfig": "ml.mining.config",
    "FlagCandidate": "ml.mining.candidate",
    "FaceDataset": "ml.data.dataset",
    "FaceSample": "ml.data.dataset",
    "FoldOutputs": "ml.crossfit",
    "ImageFingerprints": "ml.mining.copies",
}


def __getattr__(name: str) -> Any:
    if name in _HEAVY:
        return getattr(importlib.import_module(_HEAVY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- training -------------------------------------------------------------------------------------

def train_config(filename: str, overrides: Sequence[str] = ()):
    """The TrainConfig of ml/configs/<filename> with `key=<python literal>` overrides."""
    from ml.train.config import load_config

    return load_config(CONFIGS_DIR / filename, list(overrides))


def eval_transform(config):
    """The preprocessing a trained model's faces get when they are embedded (no augmentation)."""
    from ml.data.transforms import build_transform

    return build_transform(config.data.transform, train=False)


def resumed_steps(run: RunFolder, folds: int) -> dict[int, int]:
    """Per fold that has a checkpoint, the step its training resumes from."""
    from ml.train.checkpoint import latest_checkpoint, load_checkpoint

    found = {k: latest_checkpoint(run.fold(k).root) for k in range(folds)}
    return {k: int(load_checkpoint(c)["global_step"]) for k, c in found.items() if c is not None}


def train_folds(config, data, labels: np.ndarray, run: RunFolder, *, num_classes: int,
                progress: Callable[[str, int, dict], None] | None = None) -> None:
    """One model per fold (ml.crossfit), each resumed from its own checkpoints."""
    from ml.crossfit import train_folds as train

    train(config, data, labels, run.root, folds=int(config.folds), num_classes=num_classes, progress=progress)


def extract_folds(config, data, run: RunFolder, progress: Report) -> None:
    """Every fold model embeds every face (resumable); progress counts faces over all folds."""
    from ml.crossfit import embed_folds
    from ml.train.distributed import pick_device

    assignment = np.load(run.folds)
    count, folds = len(assignment), int(assignment.max(initial=-1)) + 1
    embed_folds(config, data, run.root, assignment, device=pick_device(config.device),
                progress=lambda stage, fold, r: progress(fold * count + r["step"], folds * count))


def fold_extractions(run: RunFolder, count: int) -> list:
    """Each fold model's embeddings of every face (ml.crossfit.FoldOutputs), with the faces it may judge."""
    from ml.crossfit import load_fold_outputs

    assignment = np.load(run.folds)
    if len(assignment) != count:
        raise RuntimeError(f"{run.folds} holds {len(assignment)} faces, the round {count}")
    return [load_fold_outputs(run.root, fold, assignment, count) for fold in range(int(assignment.max()) + 1)]


@dataclass(frozen=True)
class FaceBoxes:
    """How the pretrained extractor cut its faces: by its detector, or the whole image."""

    detected: int
    whole_image: int


def extract_pretrained(data, run: RunFolder, *, num_workers: int, progress: Report) -> FaceBoxes:
    """dlib's descriptor on every face's image into run.extraction (resumable)."""
    from ml.pretrained import extract_pretrained as extract

    result = extract(data, run.extraction.root, num_workers=num_workers, resume=True, progress=progress)
    return FaceBoxes(detected=result.detected, whole_image=result.whole_image)


# -- mining ---------------------------------------------------------------------------------------

def image_fingerprints(run: RunFolder, open_reader: Callable[[], Callable[[int], bytes]], count: int,
                       progress: Report):
    """The faces' image fingerprints (ml.mining.copies: near duplicates are decided on pixels),
    computed once from the raw bytes and kept in the run folder for a resumed round.
    open_reader() gives read(i) -> face i's raw bytes; called only when they are computed."""
    from ml.mining.copies import ImageFingerprints, fingerprint_images

    try:
        found = ImageFingerprints.load(run.fingerprints)
        if len(found) == count:
            return found
    except (OSError, KeyError, ValueError):
        pass
    fingerprints = fingerprint_images(open_reader(), count, progress=progress)
    fingerprints.save(run.fingerprints)
    return fingerprints


def mine(**inputs) -> list:
    """Flags (ml.mining.FlagCandidate) from one model's embeddings (ml.mining.mine)."""
    from ml.mining import mine as mine_one

    return mine_one(**inputs)


def mine_folds(folds: list, labels: np.ndarray, **inputs) -> list:
    """Flags from cross-fitted fold models, each judging its held-out faces (ml.crossfit)."""
    from ml.crossfit import mine_cross_fitted

    return mine_cross_fitted(folds, labels, **inputs)


def chart_summary(**inputs) -> dict:
    """The round page's chart data, JSON-safe (ml.mining.summary.round_summary)."""
    from ml.mining.summary import round_summary

    return round_summary(**inputs)
