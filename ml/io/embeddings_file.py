"""Embeddings a user brings, as users have them: rows named by image path, in any order.

Accepted forms:
- E.npz holding `paths` (N strings) and `embeddings` (N x D), optionally `norms` (N);
- E.npy (N x D) with a paths file P.txt, one path per line, line i naming row i;
- E.npy alone: rows already in the dataset's own order (the older form; no matching).

A row's path matches a face when it equals the face's path as stored (relative to its source's
root), or, absolute, names the same file under that root. Faces no row names are reported and
left unjudged; rows that name no face are reported and ignored.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import Sequence

import numpy as np

EXAMPLES = 5  # paths quoted in a report


def _is_npz(path: str) -> bool:
    return zipfile.is_zipfile(path)


def check_embeddings_file(embeddings_path: str, paths_path: str | None = None) -> None:
    """Cheap checks before a round is queued: the arrays a form needs are there. ValueError."""
    if _is_npz(embeddings_path):
        if paths_path is not None:
            raise ValueError("an .npz carries its own paths: give either an .npz or an .npy with a paths file")
        with np.load(embeddings_path, allow_pickle=False) as data:
            missing = {"paths", "embeddings"} - set(data.files)
        if missing:
            raise ValueError(f"{embeddings_path} lacks {sorted(missing)}: an .npz needs 'paths' and 'embeddings'")
        return
    try:
        shape = np.load(embeddings_path, mmap_mode="r", allow_pickle=False).shape
    except ValueError as exc:
        raise ValueError(f"{embeddings_path} is neither an .npz nor an .npy array: {exc}") from None
    if len(shape) != 2:
        raise ValueError(f"{embeddings_path} holds an array of shape {shape}; embeddings are N x D")


@dataclass(frozen=True)
class EmbeddingsFile:
    """embeddings: N x D (memory-mapped for an .npy); paths: N strings, or None for the older
    form whose rows are in dataset order; norms: N or None."""

    embeddings: np.ndarray
    paths: list[str] | None
    norms: np.ndarray | None


def read_paths_file(path: str) -> list[str]:
    """One path per line; trailing whitespace and the line ending are not part of it."""
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\r\n").rstrip() for line in fh]


def load_embeddings_file(embeddings_path: str, paths_path: str | None = None,
                         norms_path: str | None = None) -> EmbeddingsFile:
    norms = None
    if _is_npz(embeddings_path):
        with np.load(embeddings_path, allow_pickle=False) as data:
            embeddings = np.asarray(data["embeddings"])
            paths = [str(p) for p in data["paths"].tolist()]
            if "norms" in data.files:
                norms = np.asarray(data["norms"], dtype=np.float32).reshape(-1)
    else:
        embeddings = np.load(embeddings_path, mmap_mode="r", allow_pickle=False)
        paths = read_paths_file(paths_path) if paths_path else None
    if norms_path:
        norms = np.load(norms_path, allow_pickle=False).astype(np.float32).reshape(-1)
    if embeddings.ndim != 2:
        raise ValueError(f"{embeddings_path} holds embeddings of shape {embeddings.shape}; they must be N x D")
    for name, values in (("paths", paths), ("norms", norms)):
        if values is not None and len(values) != len(embeddings):
            raise ValueError(f"{len(values)} {name} for {len(embeddings)} embedding rows")
    return EmbeddingsFile(embeddings, paths, norms)


@dataclass(frozen=True)
class RowMatch:
    """rows[i]: the file's row for face i, -1 when the file has none."""

    rows: np.ndarray
    missing: int
    missing_examples: list[str]
    extra: int
    extra_examples: list[str]
    repeated: int  # rows naming a face an earlier row already named (the first one counts)

    def report(self) -> dict:
        return {"matched": int((self.rows >= 0).sum()), "missing": self.missing,
                "missing_examples": self.missing_examples, "extra": self.extra,
                "extra_examples": self.extra_examples, "repeated": self.repeated}


def _key(path: str) -> str:
    return os.path.normpath(path.replace("\\", "/")) if path else path


def match_rows(face_paths: Sequence[str], face_roots: Sequence[str], file_paths: Sequence[str]) -> RowMatch:
    """Face i (stored path face_paths[i], relative to face_roots[i]) gets the row whose path is
    that relative path or the absolute path root/path. Both spellings may mix in one file."""
    first_row: dict[str, int] = {}
    repeated = 0
    for row, path in enumerate(file_paths):
        key = _key(str(path).strip())
        if key in first_row:
            repeated += 1
        else:
            first_row[key] = row
    rows = np.full(len(face_paths), -1, dtype=np.int64)
    used = np.zeros(len(file_paths), dtype=bool)
    missing_examples: list[str] = []
    for i, (path, root) in enumerate(zip(face_paths, face_roots)):
        row = first_row.get(_key(os.path.join(root, path)) if root else "", -1)
        if row < 0:
            row = first_row.get(_key(path), -1)
        if row >= 0 and not used[row]:
            rows[i], used[row] = row, True
        elif len(missing_examples) < EXAMPLES:
            missing_examples.append(path)
    unused = np.flatnonzero(~used)
    extra = [int(r) for r in unused if _key(str(file_paths[r]).strip()) in first_row
             and first_row[_key(str(file_paths[r]).strip())] == r]
    return RowMatch(rows=rows, missing=int((rows < 0).sum()), missing_examples=missing_examples,
                    extra=len(extra), extra_examples=[str(file_paths[r]) for r in extra[:EXAMPLES]],
                    repeated=repeated)
