"""The relabel search's identity index: a round's identity centres, written once when the round
publishes and searched with faiss (never a faces x identities matrix).

The file (RunFolder.identity_centres) holds the centres (ml.centres), the identity id of each
centre, the face id of each embedding row, and a key naming the round, so that a leftover of
another round (another database reusing ids) is never read as this one's.
numpy at import; faiss when an index is loaded, torch when one is written (in the worker).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ml.centres import finite_rows, identity_centres, unit_rows
from ml.io.atomic import atomic_open
from ml.run_folder import UNREADABLE_FILE


@dataclass(frozen=True)
class IdentityIndex:
    identity_ids: np.ndarray   # (C,) ascending: the identity of centre c
    face_ids: np.ndarray       # (n,) ascending: the face of embedding row i
    centres: np.ndarray        # (C, D) float32 unit vectors
    index: Any                 # faiss.IndexFlatIP over the centres

    def face_row(self, face_id: int) -> int | None:
        """The embedding row of a face, None for a face the round did not see."""
        row = int(np.searchsorted(self.face_ids, face_id))
        return row if row < len(self.face_ids) and self.face_ids[row] == face_id else None

    def centre_of(self, identity_id: int) -> np.ndarray | None:
        row = int(np.searchsorted(self.identity_ids, identity_id))
        if row < len(self.identity_ids) and self.identity_ids[row] == identity_id:
            return self.centres[row:row + 1]
        return None

    def nearest(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(identity id, cosine) of the k centres nearest to the (1, D) unit query, nearest first."""
        k = min(k, len(self.identity_ids))
        sims, rows = self.index.search(np.ascontiguousarray(query, dtype=np.float32), k)
        return [(int(self.identity_ids[row]), float(sim)) for sim, row in zip(sims[0], rows[0]) if row >= 0]


def identity_index_write(path: Path, *, embeddings_path: Path, labels: np.ndarray, count: int,
                         identity_ids: np.ndarray, face_ids: np.ndarray, key: str) -> Path | None:
    """Compute the centres of `count` classes from the embeddings file (rows: faces in dataset
    order, labelled by `labels`) and write them to `path`, atomically: a concurrent reader sees
    all or nothing. Rows listed in the extraction's unreadable.json, and rows that are not
    finite, count for nothing. None when the file does not match the faces (nothing written)."""
    path, embeddings_path = Path(path), Path(embeddings_path)
    if not embeddings_path.is_file():
        return None
    embeddings = np.load(embeddings_path, mmap_mode="r", allow_pickle=False)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        return None
    usable = finite_rows(embeddings, np.arange(len(labels)))
    unreadable = embeddings_path.parent / UNREADABLE_FILE
    if unreadable.exists():
        usable[json.loads(unreadable.read_text(encoding="utf-8"))] = False
    centres = identity_centres(embeddings, np.asarray(labels), np.flatnonzero(usable), count).centres
    with atomic_open(path) as fh:
        np.savez(fh, centres=centres.astype(np.float32), identity_ids=identity_ids, face_ids=face_ids,
                 round_key=np.array(key))
    return path


def identity_index_load(path: Path, *, key: str) -> IdentityIndex | None:
    """The index of a centres file, or None when there is none or it belongs to another round.
    Kept in memory per (file, modification time)."""
    path = Path(path)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    return _loaded(str(path), mtime, key)


@lru_cache(maxsize=2)
def _loaded(path: str, mtime_ns: int, key: str) -> IdentityIndex | None:
    import faiss

    with np.load(path) as data:
        if str(data["round_key"]) != key:
            return None
        centres, identity_ids, face_ids = data["centres"], data["identity_ids"], data["face_ids"]
    index = faiss.IndexFlatIP(centres.shape[1])
    index.add(np.ascontiguousarray(centres, dtype=np.float32))
    return IdentityIndex(identity_ids, face_ids, centres, index)


def face_query(embeddings_path: Path, row: int) -> np.ndarray | None:
    """Embedding row `row` as a (1, D) unit query (a row that is not finite counts as zeros),
    or None when the file cannot be read."""
    try:
        embeddings = np.load(embeddings_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    raw = np.nan_to_num(np.asarray(embeddings[row:row + 1], dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return unit_rows(raw)
