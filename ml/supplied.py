"""User-supplied embeddings (the "embeddings" round method) as an extraction.

Rows named by path (an .npz with paths, or an .npy with a paths file) are matched to the faces
(ml.io.embeddings_file.match_rows) and written in face order to an extraction folder, laid out
as ml.embed lays out its own (the relabel search reads them there); faces the file misses are
unreadable, rows naming no face ignored. An .npy without paths gives rows in face order as it is.
numpy only.
"""
from __future__ import annotations

import json

import numpy as np

from ml.centres import finite_rows
from ml.io.embeddings_file import EmbeddingsFile, RowMatch
from ml.run_folder import Extraction, ExtractionFolder

_BLOCK = 65_536  # rows per slice: the file may be far larger than memory


def rows_as_given(given: EmbeddingsFile) -> Extraction:
    """A file without paths: its rows are the faces, in order; a row that is not finite is unreadable."""
    count = len(given.embeddings)
    return Extraction(given.embeddings, given.norms, finite_rows(given.embeddings, np.arange(count)))


def matched_extraction(given: EmbeddingsFile, match: RowMatch, folder: ExtractionFolder) -> Extraction:
    """The matched rows written in face order to `folder` (embeddings.npy, norms.npy when the
    file has norms, unreadable.json), and read back memory-mapped."""
    count = len(match.rows)
    readable = finite_rows(given.embeddings, match.rows)
    folder.root.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(folder.embeddings, mode="w+", dtype=np.float32,
                                    shape=(count, given.embeddings.shape[1]))
    for start in range(0, count, _BLOCK):
        rows = match.rows[start:start + _BLOCK]
        block = np.zeros((len(rows), out.shape[1]), dtype=np.float32)
        block[rows >= 0] = given.embeddings[rows[rows >= 0]]
        block[~readable[start:start + _BLOCK]] = 0.0
        out[start:start + _BLOCK] = block
    out.flush()
    norms = None
    if given.norms is not None:
        norms = np.where(match.rows >= 0, given.norms[np.maximum(match.rows, 0)], 0.0).astype(np.float32)
        np.save(folder.norms, norms)
    folder.unreadable.write_text(json.dumps(np.flatnonzero(~readable).tolist()), encoding="utf-8")
    del out
    return Extraction(np.load(folder.embeddings, mmap_mode="r"), norms, readable)
