"""RecordIO: round trips, multi-part records, label arrays, truncation, .idx and property."""
import struct

import numpy as np
import pytest

from ml.io.recordio import (
    MAGIC,
    RecordIOError,
    RecordReader,
    RecordWriter,
    insightface_entries,
    pack_image,
    read_index,
    read_property,
    unpack_image,
    write_insightface,
)

MAGIC_BYTES = struct.pack("<I", MAGIC)


def write_records(tmp_path, payloads):
    rec = tmp_path / "data.rec"
    with RecordWriter(rec) as writer:
        offsets = [writer.write(key, payload) for key, payload in enumerate(payloads)]
    return rec, offsets


def test_round_trip_by_key_and_offset(tmp_path):
    payloads = [b"", b"a", b"abcd", b"odd length!", bytes(range(256)) * 3]
    rec, offsets = write_records(tmp_path, payloads)
    with RecordReader(rec) as reader:
        assert reader.offsets == dict(enumerate(offsets))
        for key, payload in enumerate(payloads):
            assert reader.read_key(key) == payload
            assert reader.read_at(offsets[key])[0] == payload
        assert [p for _, p in reader.scan()] == payloads


def test_magic_word_at_aligned_offsets_is_split_and_restored(tmp_path):
    aligned = b"abcd" + MAGIC_BYTES + b"efgh" + MAGIC_BYTES + MAGIC_BYTES + b"tail"
    unaligned = b"ab" + MAGIC_BYTES + b"cd"  # not at a 4-byte boundary: stays in one part
    at_start_and_end = MAGIC_BYTES + b"1234" + MAGIC_BYTES
    rec, offsets = write_records(tmp_path, [aligned, unaligned, at_start_and_end, b"after"])
    raw = rec.read_bytes()
    # The aligned payload became a multi-part record: its first part's flag is 1.
    first_lrec = struct.unpack_from("<I", raw, offsets[0] + 4)[0]
    assert first_lrec >> 29 == 1
    assert struct.unpack_from("<I", raw, offsets[1] + 4)[0] >> 29 == 0
    with RecordReader(rec) as reader:
        assert reader.read_key(0) == aligned
        assert reader.read_key(1) == unaligned
        assert reader.read_key(2) == at_start_and_end
        assert reader.read_key(3) == b"after"


def test_image_header_with_scalar_and_array_labels():
    scalar = unpack_image(pack_image(b"\xff\xd8\xffjpeg", 7, id=3, id2=4))
    assert scalar.labels == (7.0,) and scalar.label == 7.0
    assert (scalar.id, scalar.id2, scalar.image) == (3, 4, b"\xff\xd8\xffjpeg")
    array = unpack_image(pack_image(b"img", np.array([1.5, 2.0, -3.0])))
    assert array.labels == (1.5, 2.0, -3.0)
    assert array.label == 1.5 and array.image == b"img"


def test_short_image_headers_raise():
    with pytest.raises(RecordIOError):
        unpack_image(b"short")
    # flag says 4 labels but only one float follows
    with pytest.raises(RecordIOError):
        unpack_image(struct.pack("<IfQQ", 4, 0.0, 0, 0) + b"\0\0\0\0")


def test_truncated_file_raises(tmp_path):
    rec, offsets = write_records(tmp_path, [b"x" * 100, b"y" * 100])
    data = rec.read_bytes()
    rec.write_bytes(data[:-10])
    with RecordReader(rec) as reader:
        assert reader.read_key(0) == b"x" * 100
        with pytest.raises(RecordIOError, match="truncated"):
            reader.read_key(1)
    rec.write_bytes(data[: offsets[1] + 5])  # cut inside the record header
    with RecordReader(rec) as reader, pytest.raises(RecordIOError, match="truncated"):
        reader.read_key(1)


def test_garbage_offset_and_unknown_key_raise(tmp_path):
    rec, _ = write_records(tmp_path, [b"x" * 12])
    with RecordReader(rec) as reader:
        with pytest.raises(RecordIOError, match="no record"):
            reader.read_at(4)
        with pytest.raises(RecordIOError, match="not in"):
            reader.read_key(99)


def test_idx_reading(tmp_path):
    idx = tmp_path / "a.idx"
    idx.write_text("1\t0\n\n2\t120\n10\t4096\n")
    assert read_index(idx) == {1: 0, 2: 120, 10: 4096}
    idx.write_text("1\t0\t5\n")
    with pytest.raises(RecordIOError):
        read_index(idx)


def test_property_reading(tmp_path):
    prop = tmp_path / "property"
    assert read_property(prop) is None
    prop.write_text("85742,112,112\n")
    assert read_property(prop) == (85742, 112, 112)
    prop.write_text("85742,112\n")
    with pytest.raises(RecordIOError):
        read_property(prop)


def test_write_insightface_layout(tmp_path):
    items = [(b"img-a0", 0), (b"img-a1", 0), (b"img-b0", 1), (b"img-c0", 2), (b"img-c1", 2)]
    rec = tmp_path / "train.rec"
    assert write_insightface(rec, items, image_size=(112, 96)) == 5
    assert read_property(tmp_path / "property") == (3, 112, 96)
    with RecordReader(rec) as reader:
        header = unpack_image(reader.read_key(0))
        assert header.labels == (6.0, 9.0)  # first identity key, end key
        entries = list(insightface_entries(reader))
        assert [key for key, _ in entries] == [1, 2, 3, 4, 5]
        records = [unpack_image(reader.read_at(offset)[0]) for _, offset in entries]
        assert [(r.image, int(r.label)) for r in records] == items
        # identity records carry the range of their image keys
        assert unpack_image(reader.read_key(6)).labels == (1.0, 3.0)
        assert unpack_image(reader.read_key(8)).labels == (4.0, 6.0)


def test_plain_rec_without_header_lists_every_record(tmp_path):
    rec = tmp_path / "plain.rec"
    with RecordWriter(rec) as writer:
        for key in (5, 6, 7):
            writer.write(key, pack_image(b"img", key))
    with RecordReader(rec) as reader:
        assert [key for key, _ in insightface_entries(reader)] == [5, 6, 7]


def test_missing_index_raises(tmp_path):
    rec, _ = write_records(tmp_path, [b"x"])
    (tmp_path / "data.idx").unlink()
    with RecordReader(rec) as reader, pytest.raises(RecordIOError, match="missing or empty"):
        list(insightface_entries(reader))
