"""InsightFace / MXNet RecordIO, read and written without MXNet.

On-disk format (dmlc-core): each record is
    uint32 magic 0xCED7230A | uint32 lrec | payload | zero padding to 4 bytes
where lrec's upper 3 bits are a continuation flag (0 whole, 1 first, 2 middle, 3 last part)
and its lower 29 bits the part's length. A writer splits a payload wherever the magic word
appears at a 4-byte-aligned offset and drops that word; the reader puts it back.

An image payload starts with MXNet's IRHeader, struct "<IfQQ" (flag, label, id, id2); when
flag > 0 the header is followed by `flag` float32 labels. InsightFace's train.rec keeps a
header record at key 0 whose label is (first identity key, end key); keys 1..first-1 are
images, each identity key's label is the (start, end) range of its image keys. The .idx file
maps key to byte offset, one "key<TAB>offset" line each; `property` holds "classes,h,w".
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")
_LENGTH_MASK = (1 << 29) - 1


class RecordIOError(ValueError):
    """The file is not RecordIO, or is truncated or corrupt at the given offset."""


@dataclass(frozen=True)
class ImageRecord:
    labels: tuple[float, ...]
    id: int
    id2: int
    image: bytes

    @property
    def label(self) -> float:
        return self.labels[0]


def pack_image(image: bytes, label, id: int = 0, id2: int = 0) -> bytes:
    """IRHeader plus image bytes; a sequence label is stored as flag floats after the header."""
    if isinstance(label, (int, float, np.integer, np.floating)):
        return _HEADER.pack(0, float(label), id, id2) + image
    labels = np.asarray(label, dtype="<f4")
    return _HEADER.pack(len(labels), 0.0, id, id2) + labels.tobytes() + image


def unpack_image(payload: bytes) -> ImageRecord:
    if len(payload) < _HEADER.size:
        raise RecordIOError("record shorter than its image header")
    flag, label, id_, id2 = _HEADER.unpack_from(payload)
    offset = _HEADER.size
    if flag > 0:
        end = offset + 4 * flag
        if end > len(payload):
            raise RecordIOError("record shorter than its label array")
        labels = tuple(float(x) for x in np.frombuffer(payload[offset:end], dtype="<f4"))
        offset = end
    else:
        labels = (label,)
    return ImageRecord(labels=labels, id=id_, id2=id2, image=payload[offset:])


def _split_on_magic(payload: bytes) -> list[bytes]:
    parts, start = [], 0
    pos = payload.find(_MAGIC_BYTES)
    while pos != -1:
        if pos % 4 == 0:
            parts.append(payload[start:pos])
            start = pos + 4
            pos = payload.find(_MAGIC_BYTES, start)
        else:
            pos = payload.find(_MAGIC_BYTES, pos + 1)
    parts.append(payload[start:])
    return parts


class RecordWriter:
    """Writes a .rec and its .idx; use as a context manager."""

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.rec_path = os.fspath(rec_path)
        self.idx_path = os.fspath(idx_path) if idx_path else os.path.splitext(self.rec_path)[0] + ".idx"
        self._rec = open(self.rec_path, "wb")
        self._idx = open(self.idx_path, "w", encoding="ascii")

    def write(self, key: int, payload: bytes) -> int:
        offset = self._rec.tell()
        parts = _split_on_magic(payload)
        for i, part in enumerate(parts):
            if len(parts) == 1:
                cflag = 0
            else:
                cflag = 1 if i == 0 else (3 if i == len(parts) - 1 else 2)
            if len(part) > _LENGTH_MASK:
                raise RecordIOError("record part longer than 2**29 - 1 bytes")
            self._rec.write(_MAGIC_BYTES + struct.pack("<I", (cflag << 29) | len(part)) + part)
            self._rec.write(b"\0" * (-len(part) % 4))
        self._idx.write(f"{key}\t{offset}\n")
        return offset

    def close(self):
        self._rec.close()
        self._idx.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RecordReader:
    """Random access to a .rec by byte offset or by key (through the .idx).

    Reads with os.pread on one descriptor, so one reader can serve many threads, and it can
    be pickled into DataLoader workers (the descriptor is reopened in each process).
    """

    def __init__(self, rec_path, idx_path=None, *, load_index: bool = True):
        self.rec_path = os.fspath(rec_path)
        default_idx = os.path.splitext(self.rec_path)[0] + ".idx"
        self.idx_path = os.fspath(idx_path) if idx_path else default_idx
        self.size = os.path.getsize(self.rec_path)
        self._fd = None
        self._pid = None
        has_index = load_index and os.path.exists(self.idx_path)
        self.offsets = read_index(self.idx_path) if has_index else {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fd"] = state["_pid"] = None
        return state

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.rec_path, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def read_at(self, offset: int) -> tuple[bytes, int]:
        """The payload of the record starting at `offset`, and the offset after it."""
        fd, parts = self._descriptor(), []
        while True:
            head = os.pread(fd, 8, offset)
            if len(head) < 8:
                raise RecordIOError(f"truncated record header at byte {offset}")
            magic, lrec = struct.unpack("<II", head)
            if magic != MAGIC:
                raise RecordIOError(f"no record starts at byte {offset}")
            cflag, length = lrec >> 29, lrec & _LENGTH_MASK
            body = os.pread(fd, length, offset + 8)
            if len(body) < length:
                raise RecordIOError(f"truncated record at byte {offset}")
            if (cflag in (0, 1)) != (not parts):
                raise RecordIOError(f"broken multi-part record at byte {offset}")
            parts.append(body)
            offset += 8 + length + (-length % 4)
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts), offset

    def read_key(self, key: int) -> bytes:
        try:
            offset = self.offsets[key]
        except KeyError:
            raise RecordIOError(f"key {key} is not in {self.idx_path}") from None
        return self.read_at(offset)[0]

    def scan(self):
        """Every (offset, payload) in file order, for files without an index."""
        offset = 0
        while offset < self.size:
            payload, following = self.read_at(offset)
            yield offset, payload
            offset = following

    def close(self):
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_index(idx_path: str | os.PathLike) -> dict[int, int]:
    offsets = {}
    with open(idx_path, encoding="ascii") as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise RecordIOError(f"{idx_path}:{lineno}: expected 'key<TAB>offset'")
            offsets[int(fields[0])] = int(fields[1])
    return offsets


def insightface_entries(reader: RecordReader):
    """(key, offset) of the image records of an InsightFace train.rec, in key order.

    With the key-0 header record, images are keys 1..first_identity_key-1; without one
    (plain im2rec output) every indexed record is an image.
    """
    offsets = reader.offsets
    if not offsets:
        raise RecordIOError(f"{reader.idx_path} is missing or empty")
    image_keys = sorted(offsets)
    if 0 in offsets:
        head = unpack_image(reader.read_key(0))
        if len(head.labels) >= 2 and head.labels[0] >= 1:
            first_identity = int(head.labels[0])
            image_keys = [k for k in image_keys if 1 <= k < first_identity]
    for key in image_keys:
        yield key, offsets[key]


def read_property(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """(classes, height, width) from InsightFace's `property` file, or None if absent."""
    try:
        with open(path, encoding="ascii") as fh:
            parts = [int(p) for p in fh.read().strip().split(",")]
    except FileNotFoundError:
        return None
    if len(parts) != 3:
        raise RecordIOError(f"{path}: expected 'classes,height,width'")
    return tuple(parts)


def write_insightface(rec_path, items, image_size=(112, 112)) -> int:
    """Write an InsightFace-layout train.rec/.idx/property from (image_bytes, label) pairs.

    Labels must be integers 0..C-1; images of one label are written consecutively in the order
    given (sort by label first for the identity ranges to be exact). Returns the image count.
    """
    items = list(items)
    first_identity = len(items) + 1
    ranges: dict[int, list[int]] = {}
    for key, (_, label) in enumerate(items, start=1):
        span = ranges.setdefault(int(label), [key, key + 1])
        span[1] = key + 1
    labels = sorted(ranges)
    end = first_identity + len(labels)
    with RecordWriter(rec_path) as writer:
        writer.write(0, pack_image(b"", (first_identity, end)))
        for key, (image, label) in enumerate(items, start=1):
            writer.write(key, pack_image(image, float(label), id=key))
        for i, label in enumerate(labels):
            writer.write(first_identity + i, pack_image(b"", tuple(ranges[label])))
    prop = os.path.join(os.path.dirname(os.fspath(rec_path)), "property")
    with open(prop, "w", encoding="ascii") as fh:
        fh.write(f"{len(labels)},{image_size[0]},{image_size[1]}\n")
    return len(items)
