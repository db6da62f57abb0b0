"""The cleaned dataset as training and export both read it: one query, one definition.

- Active faces only (status ACTIVE), each under the identity its merge chain ends at
  (merged_into followed to an identity that is not merged; relabels already live in
  Face.identity).
- Label ids are dense 0..C-1 over those surviving identities that still have an active face,
  in identity-id order: dense_rank over the survivor's id.
- Faces of an identity in a merge cycle (never made by the label services) resolve to no
  survivor: `active_faces_count` refuses them (MergeCycle) rather than dropping them silently.

Training (services.round_data.round_faces_current) reads face ids, labels and survivors
through `active_face_labels`; the export (services.exports) streams other columns of the same
query through `active_faces_query`; the dataset page's counts read `merge_survivors`. A test
checks that training and export agree face by face (tests/reviewapp/test_export.py).
"""
from __future__ import annotations

import itertools

import numpy as np
from django.db import connection

from ..models import Face, Identity, Source


class MergeCycle(ValueError):
    """Active faces belong to identities whose merges form a loop: they have no label."""


def _tables() -> dict[str, str]:
    quote = connection.ops.quote_name
    return {"face": quote(Face._meta.db_table), "identity": quote(Identity._meta.db_table),
            "source": quote(Source._meta.db_table)}


# Every identity of the dataset with the survivor at the end of its merge chain.
_CHAIN = """
WITH RECURSIVE chain (id, root) AS (
    SELECT id, id FROM {identity} WHERE dataset_id = %s AND merged_into_id IS NULL
    UNION ALL
    SELECT i.id, chain.root FROM {identity} i JOIN chain ON i.merged_into_id = chain.id
)
"""
_LABELS = """,
labels (root, label) AS (
    SELECT root, dense_rank() OVER (ORDER BY root) - 1 FROM (
        SELECT DISTINCT chain.root FROM {face} f JOIN chain ON chain.id = f.identity_id
        WHERE f.dataset_id = %s AND f.status = %s
    ) used
),
labelled (id, root, label, name) AS {materialized} (
    SELECT chain.id, chain.root, labels.label, r.name
    FROM chain JOIN labels ON labels.root = chain.root JOIN {identity} r ON r.id = chain.root
)
"""
# `labelled` maps every identity id straight to its survivor, label and survivor's name, so
# the face query has one key join. MATERIALIZED keeps SQLite from inlining it into a plan
# that rescans the chain for every face (measured on the label-ordered RecordIO query,
# 4,324 faces: 6 s without, 0.01 s with).
_FROM = """
FROM {face} f
{join} labelled m ON m.id = f.identity_id
JOIN {source} s ON s.id = f.source_id
WHERE f.dataset_id = %s AND f.status = %s
"""
_COUNT = """
SELECT count(*), count(chain.root), count(DISTINCT chain.root)
FROM {face} f LEFT JOIN chain ON chain.id = f.identity_id
WHERE f.dataset_id = %s AND f.status = %s
"""


def _materialized() -> str:
    # PostgreSQL 12+ and SQLite 3.35+ know the keyword; older SQLite gets the same rows.
    if connection.vendor == "sqlite" and connection.Database.sqlite_version_info < (3, 35):
        return ""
    return "MATERIALIZED"


def active_faces_query(*, dataset_id: int, columns: str, order: str,
                       unresolved: bool = False) -> tuple[str, list]:
    """(sql, params) selecting `columns` over the dataset's active faces as f, with s their
    source and m their label (m.label, m.root: the survivor's id, m.name: its name), ordered
    by `order`. unresolved=True keeps faces of a merge cycle, with m's columns NULL."""
    sql = (_CHAIN + _LABELS + "SELECT " + columns + _FROM + "ORDER BY " + order).format(
        materialized=_materialized(), join="LEFT JOIN" if unresolved else "JOIN", **_tables()
    )
    active = Face.Status.ACTIVE.value
    return sql, [dataset_id, dataset_id, active, dataset_id, active]


def active_faces_count(*, dataset_id: int) -> tuple[int, int]:
    """(active faces, labels they resolve to); MergeCycle when some resolve to none."""
    with connection.cursor() as cursor:
        cursor.execute((_CHAIN + _COUNT).format(**_tables()),
                       [dataset_id, dataset_id, Face.Status.ACTIVE.value])
        faces, resolved, identities = cursor.fetchone()
    if resolved != faces:
        raise MergeCycle(f"{faces - resolved} active faces belong to identities in a merge cycle")
    return faces, identities


def merge_survivors(*, dataset_id: int) -> dict[int, int]:
    """{merged identity id: the survivor at the end of its chain}, merged identities only."""
    with connection.cursor() as cursor:
        cursor.execute((_CHAIN + "SELECT id, root FROM chain WHERE id <> root").format(**_tables()), [dataset_id])
        return dict(cursor.fetchall())


def active_face_labels(*, dataset_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(face_ids ascending, labels[i] of face i, identity_ids[c]: the survivor of label c) as
    int64 arrays, in one query. MergeCycle when an active face has no label."""
    sql, params = active_faces_query(dataset_id=dataset_id, columns="f.id, COALESCE(m.label, -1), COALESCE(m.root, -1)",
                                     order="f.id", unresolved=True)
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        # Streamed into one flat array: millions of faces never exist as Python tuples all at once.
        chunks = iter(lambda: cursor.fetchmany(50_000), [])
        rows = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(chunks)),
                           dtype=np.int64).reshape(-1, 3)
    face_ids, labels, roots = rows[:, 0].copy(), rows[:, 1].copy(), rows[:, 2]
    if (labels < 0).any():
        raise MergeCycle(f"{int((labels < 0).sum())} active faces belong to identities in a merge cycle")
    identity_ids = np.zeros(int(labels.max()) + 1 if len(labels) else 0, dtype=np.int64)
    identity_ids[labels] = roots
    return face_ids, labels, identity_ids
