"""mine(): a trained model's per-sample statistics and embeddings in, review flags out.

Faces taking part: active, labelled (label >= 0) and readable (a non-zero embedding row).
Nothing else is flagged, nor used for centres, prototypes or neighbour searches.
Order of work: identities (centres, reference faces) -> the face neighbour graph (one k-NN
self-join of all faces) -> duplicate identities (their pairs silence the noisy/hard flags they
explain) -> noisy and hard -> low norm -> near duplicates.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ml.io.atomic import atomic_open
from ml.mining.candidate import (  # noqa: F401 (FlagCandidate re-exported: part of this module's API)
    DUPLICATE_IDENTITY, HARD, KINDS, LOW_NORM, NEAR_DUPLICATE, NOISY, FlagCandidate,
)
from ml.mining.config import MiningConfig
from ml.mining.geometry import centred_unit_embeddings
from ml.mining.copies import ImageFingerprints, mine_copies
from ml.mining.duplicates import DuplicateView, mean_own_cosine, pooled_duplicate_identities
from ml.mining.neighbours import FaceNeighbours, face_neighbours
from ml.mining.noisy import face_angles, mine_noisy
from ml.mining.prototypes import Identities, build_identities, own_centre_cosine
from ml.mining.quality import mine_low_norm
from ml.mining.search import row_norms

__all__ = ["FlagCandidate", "MiningConfig", "MiningSpace", "eligible_rows", "face_margins", "mine", "mine_space",
           "prepare_space", "read_flags", "write_flags"]


def eligible_rows(embeddings: np.ndarray, labels: np.ndarray, active: np.ndarray | None,
                  batch_size: int = 32_768) -> np.ndarray:
    """Dataset indices of the faces that take part in mining."""
    labels = np.asarray(labels)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise ValueError(f"embeddings {embeddings.shape} do not match {len(labels)} labels")
    keep = labels >= 0
    if active is not None:
        active = np.asarray(active, dtype=bool)
        if active.shape != labels.shape:
            raise ValueError(f"active has shape {active.shape}, the labels {labels.shape}")
        keep &= active
    keep &= row_norms(embeddings, batch_size) > 0.5
    return np.flatnonzero(keep)


@dataclass
class MiningSpace:
    """One model's embedding space made ready for mining: centred unit embeddings, the faces
    taking part (rows), identity centres and reference faces, and the face neighbour graph."""

    embeddings: np.ndarray
    labels: np.ndarray
    rows: np.ndarray
    identities: Identities
    neighbours: FaceNeighbours | None
    mean_norm: float

    def duplicate_view(self, config: MiningConfig) -> DuplicateView:
        own_cos = own_centre_cosine(self.embeddings, self.labels, self.rows, self.identities, config.batch_size)
        return DuplicateView(self.identities, self.neighbours,
                             mean_own_cosine(own_cos, self.labels, self.rows, self.identities.count))


def prepare_space(embeddings: np.ndarray, labels: np.ndarray, *, active: np.ndarray | None = None,
                  config: MiningConfig) -> MiningSpace | None:
    """None when no face takes part."""
    labels = np.asarray(labels).astype(np.int64)
    rows = eligible_rows(embeddings, labels, active, config.batch_size)
    if len(rows) == 0:
        return None
    embeddings, mean_norm = centred_unit_embeddings(embeddings, rows, config.batch_size)
    identities = build_identities(embeddings, labels, rows, p=config.prototypes_per_identity,
                                  samples_per_identity=config.prototype_samples, seed=config.seed,
                                  batch_size=config.batch_size)
    needs_graph = set(config.kinds) & {NOISY, HARD, DUPLICATE_IDENTITY}
    neighbours = face_neighbours(embeddings, rows, config) if needs_graph else None
    return MiningSpace(embeddings, labels, rows, identities, neighbours, mean_norm)


def mine(*, embeddings: np.ndarray, labels: np.ndarray, stats: dict | None = None, norms: np.ndarray | None = None,
         active: np.ndarray | None = None, config: MiningConfig | None = None,
         fingerprints: ImageFingerprints | None = None, face_found: np.ndarray | None = None) -> list[FlagCandidate]:
    """Flags of every kind in config.kinds, grouped by kind, highest score first within a kind.

    fingerprints: the images' (ml.mining.copies); near_duplicate flags come only from them (the
    embeddings may propose pairs, never decide), none without; their sharpness is also a
    low-quality signal. face_found: per face, whether the extractor's face detector found one
    (ml.mining.quality)."""
    config = config or MiningConfig()
    space = prepare_space(embeddings, labels, active=active, config=config)
    if space is None:
        return []
    duplicates = None
    if DUPLICATE_IDENTITY in config.kinds:
        duplicates = pooled_duplicate_identities([space.duplicate_view(config)], space.labels, config)
    return mine_space(space, stats=stats, norms=norms, config=config, fingerprints=fingerprints,
                      face_found=face_found, duplicates=duplicates)


def mine_space(space: MiningSpace, *, stats: dict | None = None, norms: np.ndarray | None = None,
               config: MiningConfig, fingerprints: ImageFingerprints | None = None,
               face_found: np.ndarray | None = None, duplicates=None) -> list[FlagCandidate]:
    """mine()'s flags from a prepared space; duplicates: (flags, set of (a, b) class pairs) found
    beforehand (their pairs silence the noisy/hard flags they explain), None for none."""
    embeddings, labels, identities = space.embeddings, space.labels, space.identities
    flags: list[FlagCandidate] = []
    duplicate_pairs: set[tuple[int, int]] = set()
    if duplicates is not None:
        found, duplicate_pairs = duplicates
        flags += found
    if NOISY in config.kinds or HARD in config.kinds:
        flags += [f for f in mine_noisy(embeddings, labels, space.rows, identities, space.neighbours, stats, config,
                                        duplicate_pairs) if f.kind in config.kinds]
    if LOW_NORM in config.kinds:
        sharpness = None if fingerprints is None else np.where(fingerprints.readable, fingerprints.sharpness, np.nan)
        flags += mine_low_norm(norms, stats, labels, space.rows, config, sharpness=sharpness,
                               face_found=face_found)
    if NEAR_DUPLICATE in config.kinds and fingerprints is not None:
        flags += _copies_among(space.rows, embeddings, labels, fingerprints)
    for flag in flags:
        flag.evidence.embedding_mean_norm = round(space.mean_norm, 4)
    return sort_flags(flags)


def sort_flags(flags: list[FlagCandidate]) -> list[FlagCandidate]:
    """Grouped by kind in KINDS order, highest score first within a kind (in place)."""
    order = {kind: i for i, kind in enumerate(KINDS)}
    flags.sort(key=lambda f: (order[f.kind], -f.score))
    return flags


def _copies_among(rows: np.ndarray, embeddings: np.ndarray, labels: np.ndarray,
                  fingerprints: ImageFingerprints) -> list[FlagCandidate]:
    taking_part = np.zeros(len(labels), dtype=bool)
    taking_part[rows] = True
    return mine_copies(fingerprints, labels, embeddings=embeddings, active=taking_part)


def mine_copies_only(*, embeddings: np.ndarray, labels: np.ndarray, fingerprints: ImageFingerprints,
                     active: np.ndarray | None = None, config: MiningConfig | None = None) -> list[FlagCandidate]:
    """mine()'s near_duplicate flags alone. The (centred) embeddings only tell, for a copy filed
    under two identities, which one it belongs to, so no centres, reference faces or neighbour
    graph are built (a cross-fitted round asks this once, over every face)."""
    config = config or MiningConfig()
    labels = np.asarray(labels).astype(np.int64)
    rows = eligible_rows(embeddings, labels, active, config.batch_size)
    if len(rows) == 0:
        return []
    embeddings, mean_norm = centred_unit_embeddings(embeddings, rows, config.batch_size)
    flags = _copies_among(rows, embeddings, labels, fingerprints)
    for flag in flags:
        flag.evidence.embedding_mean_norm = round(mean_norm, 4)
    return flags


def face_margins(*, embeddings: np.ndarray, labels: np.ndarray, active: np.ndarray | None = None,
                 config: MiningConfig | None = None) -> np.ndarray:
    """Per face, the margin the noisy rule thresholds (degrees: angle to its own centre, itself
    left out, minus angle to the nearest other centre); NaN where the face takes no part. A
    ranking of every face, for comparing the miner's geometry with other noise scores."""
    config = config or MiningConfig()
    labels = np.asarray(labels).astype(np.int64)
    out = np.full(len(labels), np.nan)
    rows = eligible_rows(embeddings, labels, active, config.batch_size)
    if len(rows) == 0:
        return out
    embeddings, _ = centred_unit_embeddings(embeddings, rows, config.batch_size)
    identities = build_identities(embeddings, labels, rows, p=config.prototypes_per_identity,
                                  samples_per_identity=config.prototype_samples, seed=config.seed,
                                  batch_size=config.batch_size)
    angles = face_angles(embeddings, labels, rows, identities, face_neighbours(embeddings, rows, config), config)
    out[rows] = angles.own_angle - angles.other_angle
    return out


def write_flags(flags: Iterable[FlagCandidate], path: str | Path) -> int:
    """flags.jsonl, one flag per line; written to a temporary name first so readers never see
    half a file. Returns the number written."""
    count = 0
    with atomic_open(path, "w", encoding="utf-8") as fh:
        for flag in flags:
            fh.write(flag.to_json() + "\n")
            count += 1
    return count


def read_flags(path: str | Path) -> list[FlagCandidate]:
    with open(path, encoding="utf-8") as fh:
        return [FlagCandidate.from_dict(json.loads(line)) for line in fh if line.strip()]
