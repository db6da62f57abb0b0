"""The cleaned dataset and its audit, written out for training and for the record.

List format, one line per active face, in face-id order:
    path<TAB>label_id<TAB>identity_name
- label_id: dense 0..C-1 over the surviving identities (merged_into resolved to the end of
  its chain) that still have an active face, in identity-id order.
- path: relative to the face's source root ("rec:<key>" for RecordIO faces); when the
  dataset has more than one source it is prefixed with "<source name>/".
- Text fields are escaped as in PostgreSQL's COPY text format, because that is what the
  Postgres path streams: backslash becomes \\\\, and tab, newline, carriage return, backspace,
  form feed and vertical tab become \\t \\n \\r \\b \\f \\v. So a line is always three
  fields split on tab and lines split on "\\n" only; no other character is touched.

RecordIO: InsightFace's train.rec/.idx/property (see ml.io.recordio), images grouped by
label, streamed one image at a time.

Audit CSV: one row per Decision in id order (DECISION_COLUMNS), JSON cells with sorted keys.
Names, actors and paths are untrusted: a text cell starting with = + - @, tab or carriage
return gets a leading apostrophe, so that a spreadsheet shows it instead of running it.

Both engines run the same SQL (selectors.active_faces: recursive merge chains, dense_rank
labels, the query training reads its classes from too). Postgres
streams it with COPY ... TO STDOUT; other engines (SQLite) fetch it in chunks and escape
here. Every file is written under a temporary name in the target folder and renamed into
place at the end, so a crash never leaves half a file under the final name.
"""
from __future__ import annotations

import csv
import io
import json
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from django.db import connection, transaction
from django.http import Http404
from PIL import Image

from ml.api import RecordWriter, atomic_path, pack_image

from ..models import Dataset, Decision, Face, Source
from ..selectors.active_faces import MergeCycle, active_faces_count, active_faces_query
from .images import face_bytes

FETCH_ROWS = 5000
DEFAULT_IMAGE_SIZE = (112, 112)
# PostgreSQL COPY text-format escapes (see the module doc).
_COPY_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\b": "\\b", "\f": "\\f", "\v": "\\v"}
)
# Spreadsheets run a cell that starts with one of these as a formula (OWASP CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
DECISION_COLUMNS = [
    "id", "created_at", "actor", "user_id", "round", "flag_id", "flag_kind", "action",
    "face_id", "face_path", "identity_id", "identity_name", "before", "after", "evidence",
]


class ExportError(Exception):
    """The export could not be written; no file was left under the final name."""


@dataclass(frozen=True)
class ExportSummary:
    faces: int
    identities: int
    seconds: float
    format: str
    paths: tuple[str, ...]

    def as_dict(self) -> dict:
        return asdict(self) | {"paths": list(self.paths)}


def escape_field(text: str) -> str:
    """A list-file field escaped exactly as PostgreSQL's COPY text format does it."""
    return text.translate(_COPY_ESCAPES)


# ---- the query -------------------------------------------------------------------------------

def _query(dataset_id: int, columns: str, order: str) -> tuple[str, list]:
    """Active faces as f (with s, their source, and m: label, name) to select from."""
    return active_faces_query(dataset_id=dataset_id, columns=columns, order=order)


def _stats(dataset_id: int) -> tuple[int, int]:
    """(active faces, identities they resolve to)."""
    try:
        return active_faces_count(dataset_id=dataset_id)
    except MergeCycle as exc:
        raise ExportError(str(exc)) from None


def _path_column(dataset_id: int) -> str:
    if Source.objects.filter(dataset_id=dataset_id).count() > 1:
        return "s.name || '/' || f.path"
    return "f.path"


def _rows(sql: str, params: list):
    """Rows in chunks; on Postgres from a server-side cursor, so memory stays flat."""
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(FETCH_ROWS):
            yield from rows


@contextmanager
def _snapshot():
    """One consistent view of the dataset for the counts and the rows. On Postgres outside
    any transaction that is REPEATABLE READ; inside a caller's transaction, the caller's."""
    nested = connection.in_atomic_block
    with transaction.atomic():
        if connection.vendor == "postgresql" and not nested:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                # Measured on 1M faces: JIT compiling costs ~1 s a query and never pays
                # back here, and 64 MB keeps the face hash and sort off disk.
                cursor.execute("SET LOCAL jit = off")
                cursor.execute("SET LOCAL work_mem = '64MB'")
        yield


# ---- list export -----------------------------------------------------------------------------

def _write_list(dataset_id: int, target: Path) -> int:
    sql, params = _query(dataset_id, f"{_path_column(dataset_id)}, m.label, m.name", "f.id")
    with open(target, "wb") as fh:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                statement = cursor.mogrify(sql, params).decode()
                cursor.copy_expert(f"COPY ({statement}) TO STDOUT", fh)
                return cursor.rowcount
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="\n")
        count = 0
        for path, label, name in _rows(sql, params):
            text.write(f"{escape_field(path)}\t{label}\t{escape_field(name)}\n")
            count += 1
        text.flush()
        text.detach()
        return count


# ---- RecordIO export -------------------------------------------------------------------------

def _image_size(data: bytes) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.height, image.width
    except (OSError, ValueError, Image.DecompressionBombError):
        return DEFAULT_IMAGE_SIZE


def _face_images(dataset_id: int):
    """(face id, image bytes, label) in label then face-id order, one image in memory at a time."""
    sources = {s.pk: s for s in Source.objects.filter(dataset_id=dataset_id)}
    sql, params = _query(dataset_id, "f.id, f.source_id, f.path, f.record_offset, m.label",
                         "m.label, f.id")
    for face_id, source_id, path, offset, label in _rows(sql, params):
        face = Face(pk=face_id, path=path, record_offset=offset, dataset_id=dataset_id)
        face.source = sources[source_id]
        try:
            image = face_bytes(face=face)
        except Http404 as exc:
            raise ExportError(f"face {face_id} ({path!r}): {exc}") from None
        yield face_id, image, label


def _write_recordio(dataset_id: int, rec: Path, idx: Path, prop: Path, faces: int, identities: int):
    """InsightFace layout (see ml.io.recordio): header at key 0, images at keys 1..faces,
    then one range record per label; written as the rows stream in."""
    first_identity = faces + 1
    ranges: list[tuple[int, int]] = []
    size, key = DEFAULT_IMAGE_SIZE, 0
    with RecordWriter(rec, idx) as writer:
        writer.write(0, pack_image(b"", (first_identity, first_identity + identities)))
        for key, (_, image, label) in enumerate(_face_images(dataset_id), start=1):
            if key == 1:
                size = _image_size(image)
            if label == len(ranges):  # rows come in label order, labels are dense
                ranges.append((key, key + 1))
            ranges[label] = (ranges[label][0], key + 1)
            writer.write(key, pack_image(image, float(label), id=key))
        if (key, len(ranges)) != (faces, identities):
            raise ExportError("the dataset changed while it was being exported")
        for i, span in enumerate(ranges):
            writer.write(first_identity + i, pack_image(b"", span))
    prop.write_text(f"{identities},{size[0]},{size[1]}\n", encoding="ascii")


# ---- public API ------------------------------------------------------------------------------

def dataset_export(*, dataset: Dataset, out, fmt: str = "list") -> ExportSummary:
    """Write the cleaned dataset: `out` is the list file, or for "recordio" the .rec file
    (its .idx next to it, `property` in the same folder)."""
    if fmt not in ("list", "recordio"):
        raise ValueError(f"unknown export format {fmt!r}: use 'list' or 'recordio'")
    started = time.perf_counter()
    out = Path(out)
    with _snapshot():
        faces, identities = _stats(dataset.pk)
        if fmt == "list":
            with atomic_path(out) as partial:
                if _write_list(dataset.pk, partial) != faces:
                    raise ExportError("the dataset changed while it was being exported")
            paths = (str(out),)
        else:
            idx, prop = out.with_suffix(".idx"), out.with_name("property")
            with ExitStack() as stack:
                rec_part, idx_part, prop_part = (
                    stack.enter_context(atomic_path(p)) for p in (out, idx, prop)
                )
                _write_recordio(dataset.pk, rec_part, idx_part, prop_part, faces, identities)
            paths = (str(out), str(idx), str(prop))
    return ExportSummary(faces=faces, identities=identities, format=fmt, paths=paths,
                         seconds=round(time.perf_counter() - started, 3))


def _cell(value):
    """CSV cell; text that a spreadsheet would run as a formula gets a leading quote. Spreadsheets
    skip leading blanks before reading a formula (" =1+2" runs), so those are looked past."""
    if isinstance(value, str) and value.lstrip(" \t\r\n").startswith(_FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _decision_row(d: Decision) -> list:
    return [
        d.pk, d.created_at.isoformat(), d.actor, d.user_id,
        d.round.number if d.round_id else None, d.flag_id, d.flag.kind if d.flag_id else None,
        d.action, d.face_id, d.face.path if d.face_id else None,
        d.identity_id, d.identity.name if d.identity_id else None,
        _json(d.before), _json(d.after), _json(d.evidence),
    ]


def decisions_export(*, dataset: Dataset, out) -> int:
    """The audit trail as UTF-8 CSV, one row per Decision in id order; returns the row count."""
    decisions = (Decision.objects.filter(dataset=dataset).order_by("id")
                 .select_related("round", "flag", "face", "identity"))
    count = 0
    with atomic_path(Path(out)) as partial:
        with open(partial, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(DECISION_COLUMNS)
            for decision in decisions.iterator(chunk_size=FETCH_ROWS):
                writer.writerow([_cell(v) for v in _decision_row(decision)])
                count += 1
    return count
