"""Importing a dataset from an image folder, a file list or an InsightFace RecordIO file.

The files are scanned and checked first, outside any transaction (ml.io.scan does the path
safety and the cheap per-file checks); then one transaction creates the dataset and source
if needed, the missing identities in bulk, the faces (COPY on Postgres, bulk_create
elsewhere) and the audit row. Nothing bad in the input stops the import: every refused entry
is counted and listed in the report, everything valid is imported, and importing the same
data again adds nothing (faces are unique per (source, path)).

Identities are namespaced by source: the same name in two sources is two identities, to be
merged by review once shown to be the same person.
"""
from __future__ import annotations

import io
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable

from django.db import connection, transaction

from ml.api import Progress, ScanResult, scan_file_list, scan_folder, scan_recordio, shown_name

from ..models import Dataset, Decision, Face, Identity, Source

FORMATS = ("folder", "list", "recordio")
DEFAULT_SOURCE = "main"
_COPY_CHUNK = 100_000
_BULK_BATCH = 5_000
_NAME_MAX = 200  # Dataset.name and Source.name
# From this many faces on, foreign keys are checked once after the insert instead of per row
# (see _face_foreign_keys_checked_once); below it the table stays open to readers.
BULK_LOAD_MIN_FACES = 100_000


class ImportImpossible(Exception):
    """The import cannot start at all (missing path, unknown target dataset...)."""


def _printable(text: str) -> str:
    # Names are untrusted: keep terminal control characters out of the text report.
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


@dataclass
class ImportReport:
    dataset: str
    source: str
    format: str
    faces: int = 0
    identities: int = 0
    skipped_existing: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        return {
            "faces": self.faces,
            "identities": self.identities,
            "skipped_existing": self.skipped_existing,
            "unreadable": len(self.unreadable),
            "rejected": len(self.rejected),
            "seconds": round(self.seconds, 3),
            "dataset": self.dataset,
            "source": self.source,
        }

    def text(self) -> str:
        lines = [
            f"Import into {_printable(self.dataset)} / {_printable(self.source)} ({self.format}) "
            f"in {self.seconds:.1f} s",
            f"  faces imported:      {self.faces}",
            f"  identities created:  {self.identities}",
            f"  already present:     {self.skipped_existing}",
            f"  unreadable:          {len(self.unreadable)}",
            f"  rejected:            {len(self.rejected)}",
        ]
        for title, problems in (("Unreadable", self.unreadable), ("Rejected", self.rejected)):
            if problems:
                lines.append(f"{title} ({len(problems)}):")
                lines.extend(f"  {_printable(where)}: {_printable(reason)}" for where, reason in problems)
        return "\n".join(lines)

    __str__ = text


def _locate(fmt: str, path: str, root: str | None) -> tuple[str, str]:
    """(resolved root, resolved .rec or "") for an import, or ImportImpossible."""
    located = _locate_paths(fmt, path, root)
    for found in located:
        if shown_name(found) != found:  # the source row stores both; no column holds such bytes
            raise ImportImpossible(f"{shown_name(found)} is not valid UTF-8; rename it to import from it")
    return located


def _locate_paths(fmt: str, path: str, root: str | None) -> tuple[str, str]:
    if fmt == "folder":
        if not os.path.isdir(path):
            raise ImportImpossible(f"{path} is not a folder")
        return os.path.realpath(path), ""
    if fmt == "list":
        if not os.path.isfile(path):
            raise ImportImpossible(f"{path} is not a file list")
        root = root if root is not None else os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(root):
            raise ImportImpossible(f"root {root} is not a folder")
        return os.path.realpath(root), ""
    # A folder stands for the train.rec inside it, as InsightFace lays datasets out.
    rec = os.path.join(path, "train.rec") if os.path.isdir(path) else path
    if not os.path.isfile(rec):
        raise ImportImpossible(f"{rec} is not a RecordIO file")
    rec = os.path.realpath(rec)
    return os.path.dirname(rec), rec


def _scan(fmt, path, root, record_file, verify_images, progress) -> ScanResult:
    if fmt == "folder":
        return scan_folder(root, verify_images=verify_images, progress=progress)
    if fmt == "list":
        return scan_file_list(path, root, verify_images=verify_images, progress=progress)
    try:
        return scan_recordio(record_file, verify_images=verify_images, progress=progress)
    except (OSError, ValueError) as exc:  # RecordIOError, or an .idx that is not numbers
        raise ImportImpossible(f"{record_file} is not a readable InsightFace RecordIO file: {exc}") from None


def _target(*, name, into, source_name, fmt, root, record_file, create: bool):
    """(dataset, source, whether the source is new) to import into; with create=False only
    checks, creating nothing (so a hopeless import fails before a long scan)."""
    if into is not None:
        dataset = Dataset.objects.filter(name=into).first()
        if dataset is None:
            raise ImportImpossible(f"dataset {into!r} does not exist (--into needs an existing dataset)")
    elif create:
        dataset, _ = Dataset.objects.get_or_create(name=name)
    else:
        dataset = Dataset.objects.filter(name=name).first()
    source = Source.objects.filter(dataset=dataset, name=source_name).first() if dataset else None
    if source is not None and (
        source.format != fmt or source.root != root or source.record_file != record_file
    ):
        raise ImportImpossible(
            f"source {source_name!r} of dataset {dataset.name!r} was imported from "
            f"{source.record_file or source.root} ({source.format}); use another --source name"
        )
    created = source is None and create
    if created:
        source = Source.objects.create(
            dataset=dataset, name=source_name, format=fmt, root=root, record_file=record_file
        )
    return dataset, source, created


def _identity_ids(dataset: Dataset, source: Source, labels: list[str], progress) -> tuple[dict, int]:
    """name -> id for every label, creating the missing identities; also how many were new."""
    existing = dict(Identity.objects.filter(source=source).values_list("name", "id"))
    missing = [name for name in dict.fromkeys(labels) if name not in existing]
    if progress is not None:
        progress("identities", 0, len(missing))
    Identity.objects.bulk_create(
        (Identity(dataset=dataset, source=source, name=name) for name in missing),
        batch_size=_BULK_BATCH,
        ignore_conflicts=True,  # a concurrent import of the same source may have made some
    )
    ids = dict(Identity.objects.filter(source=source).values_list("name", "id"))
    if progress is not None:
        progress("identities", len(missing), len(missing))
    return ids, len(ids) - len(existing)


def _copy_field(text: str) -> str:
    # COPY's text format: backslash, tab and line breaks must be escaped; paths rarely have any.
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


def _copy_rows(cursor, sql: str, data: str) -> None:
    cursor.copy_expert(sql, io.StringIO(data))  # psycopg2's, through Django's cursor wrapper


_NULL = "\\N"  # COPY text format's NULL


def _copy_faces(cursor, table: str, columns: list[str], prefix: str, scan: ScanResult,
                identity_fields: list[str], progress) -> None:
    """COPY the scanned faces in chunks, each row `prefix` + path, record offset, identity
    field(s), size."""
    total = len(scan.paths)
    paths, sizes = scan.paths, scan.sizes
    offsets = scan.offsets if scan.offsets is not None else [_NULL] * total
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    for start in range(0, total, _COPY_CHUNK):
        end = min(start + _COPY_CHUNK, total)
        rows = [
            f"{prefix}{_copy_field(paths[i])}\t{offsets[i]}\t{identity_fields[i]}\t{sizes[i]}\n"
            for i in range(start, end)
        ]
        _copy_rows(cursor, sql, "".join(rows))
        if progress is not None:
            progress("faces", end, total)


# Face columns in the order _copy_faces writes them after its prefix.
_FACE_COLUMNS = (
    "dataset", "source", "status", "path", "record_offset", "original_identity", "identity", "size",
)


def _face_columns() -> dict[str, str]:
    return {f.name: connection.ops.quote_name(f.column) for f in Face._meta.concrete_fields}


def _insert_faces_postgres(dataset, source, scan: ScanResult, identity_of: list[int], *,
                           new_source: bool, progress) -> int:
    """COPY the faces in; returns how many were inserted.

    A source created by this transaction is invisible to every other one, so its faces
    cannot conflict: they are copied straight into the face table (measured twice as fast
    as INSERT ... SELECT). Otherwise they go through a temporary table and one INSERT ...
    SELECT that skips the faces already there.
    """
    table = connection.ops.quote_name(Face._meta.db_table)
    column = _face_columns()
    columns = [column[name] for name in _FACE_COLUMNS]
    prefix = f"{dataset.pk}\t{source.pk}\t{Face.Status.ACTIVE}\t"
    with connection.cursor() as cursor:
        if new_source:
            # original_identity and identity start out equal: one id written twice.
            twice = {i: f"{i}\t{i}" for i in set(identity_of)}
            _copy_faces(cursor, table, columns, prefix, scan, [twice[i] for i in identity_of], progress)
            return len(scan.paths)
        cursor.execute("DROP TABLE IF EXISTS faceclean_import")
        cursor.execute(
            "CREATE TEMPORARY TABLE faceclean_import "
            "(path text, record_offset bigint, identity_id bigint, size bigint) ON COMMIT DROP"
        )
        staged = ["path", "record_offset", "identity_id", "size"]
        _copy_faces(cursor, "faceclean_import", staged, "", scan, [str(i) for i in identity_of], progress)
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) "
            "SELECT %s, %s, %s, i.path, i.record_offset, i.identity_id, i.identity_id, i.size "
            f"FROM faceclean_import i WHERE NOT EXISTS (SELECT 1 FROM {table} f "
            f"WHERE f.{column['source']} = %s AND f.{column['path']} = i.path) "
            # a concurrent import of the same source may insert between the check and here
            f"ON CONFLICT ({column['source']}, {column['path']}) DO NOTHING",
            [dataset.pk, source.pk, Face.Status.ACTIVE, source.pk],
        )
        inserted = cursor.rowcount
        cursor.execute("DROP TABLE faceclean_import")
    return inserted


def _face_foreign_keys(cursor) -> list[tuple[str, str, str]]:
    """(name, definition, referenced table) of each foreign key on the face table."""
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid), confrelid::regclass::text FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'f' ORDER BY conname",
        [Face._meta.db_table],
    )
    return cursor.fetchall()


def _lock_for_bulk_load(cursor) -> None:
    # Every lock _face_foreign_keys_checked_once needs, taken up front in one order, so the
    # import waits for other writers at its start instead of deadlocking with them later.
    referenced = sorted({table for _, _, table in _face_foreign_keys(cursor)})
    cursor.execute(f"LOCK TABLE {', '.join(referenced)} IN SHARE ROW EXCLUSIVE MODE")
    cursor.execute(f"LOCK TABLE {connection.ops.quote_name(Face._meta.db_table)} IN ACCESS EXCLUSIVE MODE")


@contextmanager
def _face_foreign_keys_checked_once():
    """Drop the face table's foreign keys around a bulk insert and add them back, in the same
    transaction, as PostgreSQL's "Populating a Database" advice goes.

    Postgres checks a foreign key row by row at commit: ~7 us a check, 4 per face, 28 s a
    million faces (measured), more than the COPY itself. Adding a key back validates every
    row in one join (~0.5 s a million). The price: until commit, the face table is locked
    ACCESS EXCLUSIVE and the tables it references SHARE ROW EXCLUSIVE (_lock_for_bulk_load),
    so only imports of BULK_LOAD_MIN_FACES or more do this.
    """
    table = connection.ops.quote_name(Face._meta.db_table)
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        keys = _face_foreign_keys(cursor)
        drop = ", ".join(f"DROP CONSTRAINT {quote(name)}" for name, _, _ in keys)
        add = ", ".join(f"ADD CONSTRAINT {quote(name)} {definition}" for name, definition, _ in keys)
        if keys:
            _alter_with_nothing_pending(cursor, f"ALTER TABLE {table} {drop}")
        yield
        if keys:
            _alter_with_nothing_pending(cursor, f"ALTER TABLE {table} {add}")


def _alter_with_nothing_pending(cursor, sql: str) -> None:
    # Postgres refuses to alter a table (here: the referenced ones' triggers) while deferred
    # checks of rows inserted in this transaction are pending: run those first.
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    cursor.execute(sql)
    cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def _insert_faces_orm(dataset, source, scan: ScanResult, identity_of: list[int], progress) -> int:
    before = Face.objects.filter(source=source).count()
    offsets = scan.offsets
    faces = (
        Face(
            dataset=dataset, source=source, path=path, size=size,
            record_offset=offsets[i] if offsets is not None else None,
            original_identity_id=identity_of[i], identity_id=identity_of[i],
        )
        for i, (path, size) in enumerate(zip(scan.paths, scan.sizes))
    )
    Face.objects.bulk_create(faces, batch_size=_BULK_BATCH, ignore_conflicts=True)
    if progress is not None:
        progress("faces", len(scan.paths), len(scan.paths))
    return Face.objects.filter(source=source).count() - before


def dataset_import(
    *,
    path: str | os.PathLike,
    name: str | None,
    fmt: str,
    root: str | os.PathLike | None = None,
    into: str | None = None,
    source: str | None = None,
    verify_images: bool = False,
    progress: Progress | None = None,
    actor: str = "cli",
    user=None,
    then: Callable[[Dataset, ImportReport], None] | None = None,
) -> ImportReport:
    """Import faces from `path` into dataset `name` (created, or re-used for a re-import), or
    with `into` into an existing dataset (then `name` is not used) as source `source`.

    fmt: "folder" (PATH/<identity>/<image>), "list" (file list; paths relative to `root`,
    by default the list's folder) or "recordio" (an InsightFace train.rec, or its folder).
    Raises ImportImpossible when nothing can be imported at all. `then(dataset, report)` runs
    last inside the import's transaction (after the scan, which stays outside it): whatever
    it writes commits with the import, and if it raises, the import is rolled back whole.
    """
    started = time.monotonic()
    if fmt not in FORMATS:
        raise ImportImpossible(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if into is None and not name:
        raise ImportImpossible("a dataset name is needed (or --into an existing dataset)")
    for label, value in (("dataset name", name), ("source name", source)):
        if value is not None and len(value) > _NAME_MAX:
            raise ImportImpossible(f"{label} longer than {_NAME_MAX} characters")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImportImpossible(f"{path} does not exist")
    root, record_file = _locate(fmt, path, os.fspath(root) if root is not None else None)
    target = {
        "name": name, "into": into, "source_name": source or DEFAULT_SOURCE, "fmt": fmt,
        "root": root, "record_file": record_file,
    }
    _target(**target, create=False)
    scan = _scan(fmt, path, root, record_file, verify_images, progress)

    postgres = connection.vendor == "postgresql"
    bulk = postgres and len(scan.paths) >= BULK_LOAD_MIN_FACES
    with transaction.atomic():
        if bulk:
            with connection.cursor() as cursor:
                _lock_for_bulk_load(cursor)
        dataset, source_row, new_source = _target(**target, create=True)
        name_to_id, created = _identity_ids(dataset, source_row, scan.labels, progress)
        identity_of = [name_to_id[label] for label in scan.labels]
        if postgres:
            with _face_foreign_keys_checked_once() if bulk else nullcontext():
                inserted = _insert_faces_postgres(
                    dataset, source_row, scan, identity_of, new_source=new_source, progress=progress
                )
        else:
            inserted = _insert_faces_orm(dataset, source_row, scan, identity_of, progress)
        report = ImportReport(
            dataset=dataset.name, source=source_row.name, format=fmt,
            faces=inserted, identities=created, skipped_existing=len(scan.paths) - inserted,
            unreadable=scan.unreadable, rejected=scan.rejected,
            seconds=time.monotonic() - started,
        )
        Decision.objects.create(
            action=Decision.Action.IMPORT, actor=actor, user=user, dataset=dataset, after=report.summary()
        )
        if then is not None:
            then(dataset, report)
    report.seconds = time.monotonic() - started
    return report
