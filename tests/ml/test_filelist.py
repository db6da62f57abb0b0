"""File-list parsing and the per-file checks of ml.io.scan (no database)."""
import io
import os

import pytest
from PIL import Image

from ml.io.filelist import (
    MalformedLine,
    format_list_line,
    iter_list_lines,
    parse_list_line,
    read_file_list,
    write_file_list,
)
from ml.io.scan import Rejected, RootGuard, Unreadable, image_format, walk_folder


def jpeg(size=(8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(out, format="JPEG")
    return out.getvalue()


@pytest.mark.parametrize(
    "line, expected",
    [
        ("a/b.jpg alice", ("a/b.jpg", "alice")),
        ("a/b.jpg   alice  ", ("a/b.jpg", "alice")),
        ("my photos/b 1.jpg bob", ("my photos/b 1.jpg", "bob")),
        ("my photos/b 1.jpg\tBob Smith", ("my photos/b 1.jpg", "Bob Smith")),
        ("3\tx/y.jpg\t12", ("x/y.jpg", "12")),
        ("3\tx/y.jpg\t12.000000", ("x/y.jpg", "12")),
        ("3\tx/y.jpg\t1.5", ("x/y.jpg", "1.5")),
        ("abc\tx/y.jpg", ("abc", "x/y.jpg")),
        ("a.jpg\t<script>alert('x')</script>", ("a.jpg", "<script>alert('x')</script>")),
        ("a.jpg \u05e9\u05dc\u05d5\u05dd", ("a.jpg", "\u05e9\u05dc\u05d5\u05dd")),
    ],
)
def test_parse_list_line(line, expected):
    assert parse_list_line(line) == expected


@pytest.mark.parametrize("line", ["lonely.jpg", "a\tb\tc", "a\tb\tc\td", "\tlabel", "path\t", "a.jpg b\0"])
def test_malformed_lines(line):
    with pytest.raises(MalformedLine):
        parse_list_line(line)


def test_iter_list_lines_numbers_problems_and_skips_comments():
    data = (
        b"# header comment\n"
        b"a.jpg alice\n"
        b"\n"
        b"   \n"
        b"lonely.jpg\n"
        b"b.jpg \xff\xfe\n"
        b"c.jpg bob\r\n"
    )
    lines = list(iter_list_lines(io.BytesIO(data)))
    assert [(l.lineno, l.path, l.label) for l in lines if l.problem is None] == [
        (2, "a.jpg", "alice"), (7, "c.jpg", "bob"),
    ]
    problems = {l.lineno: l.problem for l in lines if l.problem}
    assert set(problems) == {5, 6}
    assert "malformed" in problems[5] and "UTF-8" in problems[6]


def test_write_then_read_round_trip(tmp_path):
    rows = [("a.jpg", "alice"), ("dir with space/b.jpg", "bob"), ("c.jpg", "Mary Ann"), ("#d.jpg", "x")]
    target = tmp_path / "list.txt"
    assert write_file_list(target, rows) == 4
    read = [(l.path, l.label) for l in read_file_list(target)]
    assert read[:3] == rows[:3]
    assert read[3] == ("./#d.jpg", "x")
    with pytest.raises(ValueError):
        format_list_line("a\tb.jpg", "x")


@pytest.mark.parametrize(
    "head, fmt",
    [
        (b"\xff\xd8\xff\xe0", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF89a", "gif"),
        (b"BM\x00\x00", "bmp"), (b"RIFF\0\0\0\0WEBPVP8 ", "webp"), (b"II*\x00", "tiff"),
        (b"P5\n92 112\n", "netpbm"), (b"hello world", None), (b"P9\n", None), (b"", None),
    ],
)
def test_image_format(head, fmt):
    assert image_format(head) == fmt


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "alice").mkdir(parents=True)
    (root / "alice" / "1.jpg").write_bytes(jpeg())
    (root / "alice" / "empty.jpg").write_bytes(b"")
    (root / "alice" / "text.jpg").write_bytes(b"not an image at all")
    (root / "alice" / "notes.txt").write_bytes(b"hello")
    truncated = jpeg((64, 64))
    (root / "alice" / "cut.jpg").write_bytes(truncated[: len(truncated) // 2])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.jpg").write_bytes(jpeg())
    os.symlink(outside / "x.jpg", root / "alice" / "out.jpg")
    os.symlink(root / "alice" / "1.jpg", root / "alice" / "in.jpg")
    os.symlink(outside, root / "escape")
    return root


def test_guard_relative_paths(tree):
    guard = RootGuard(tree)
    assert guard.relative("alice/1.jpg") == "alice/1.jpg"
    assert guard.relative("alice/./../alice/1.jpg") == "alice/1.jpg"
    assert guard.relative(str(tree / "alice" / "1.jpg")) == "alice/1.jpg"
    assert guard.relative("top.JPG") == "top.JPG"
    for bad, reason in [
        ("../outside/x.jpg", "leaves the root"),
        ("/etc/x.jpg", "leaves the root"),
        ("escape/x.jpg", "leaves the root"),
        ("alice/notes.txt", "unknown extension"),
        ("alice/..", "not a file path"),
    ]:
        with pytest.raises(Rejected, match=reason):
            guard.relative(bad)


def test_guard_inspect(tree):
    guard = RootGuard(tree)
    assert guard.inspect("alice/1.jpg") == len(jpeg())
    assert guard.inspect("alice/in.jpg") == len(jpeg())  # symlink inside the root is fine
    assert guard.inspect("alice/cut.jpg") > 0  # header is fine: only a decode finds the cut
    cases = [
        ("alice/out.jpg", Rejected, "symlink leaves the root"),
        ("alice/missing.jpg", Rejected, "missing"),
        ("alice/empty.jpg", Unreadable, "zero-byte"),
        ("alice/text.jpg", Unreadable, "not an image"),
    ]
    for rel, kind, reason in cases:
        with pytest.raises(kind, match=reason):
            guard.inspect(rel)
    with pytest.raises(Unreadable, match="decode"):
        RootGuard(tree, verify_images=True).inspect("alice/cut.jpg")


def test_walk_folder(tree):
    (tree / "stray.jpg").write_bytes(jpeg())
    (tree / ".DS_Store").write_bytes(b"junk")
    (tree / "alice" / "._1.jpg").write_bytes(b"junk")
    (tree / "alice" / "nested").mkdir()
    entries = list(walk_folder(tree))
    found = [(e.path, e.identity) for e in entries if e.problem is None]
    assert ("alice/1.jpg", "alice") in found
    assert all(identity == "alice" for _, identity in found)
    assert not any(".DS_Store" in e.path or "._1" in e.path for e in entries)
    problems = {e.path: e.problem.reason for e in entries if e.problem is not None}
    assert problems == {
        "alice/nested": "nested folder, not imported",
        "escape": "symlink leaves the root",
        "stray.jpg": "file outside an identity folder",
    }


def test_faceclean_export_lines_parse_to_path_and_name():
    from ml.io.filelist import parse_list_line

    assert parse_list_line("tab\\there/0.jpg\t3\tJos\\\\e\\tA") == ("tab\there/0.jpg", "Jos\\e\tA")
    # InsightFace .lst (integer first field) is still read as before.
    assert parse_list_line("7\ta/b.jpg\t12.000000") == ("a/b.jpg", "12")


def test_a_label_longer_than_the_documented_maximum_is_a_malformed_line():
    from ml.io.scan import MAX_NAME_BYTES

    assert parse_list_line("a.jpg " + "x" * MAX_NAME_BYTES) == ("a.jpg", "x" * MAX_NAME_BYTES)
    with pytest.raises(MalformedLine, match=f"label longer than {MAX_NAME_BYTES} bytes"):
        parse_list_line("a.jpg\t" + "\u00e9" * MAX_NAME_BYTES)  # 2 bytes a character in UTF-8


@pytest.mark.parametrize("tail", [b"", b"\nb.jpg bob\n"])
def test_an_overlong_line_is_reported_by_number_in_bounded_memory(tail):
    import tracemalloc

    huge = b"x" * (4 << 20)  # 4 MB, no newline of its own
    data = b"a.jpg alice\n" + huge + tail
    stream = io.BufferedReader(io.BytesIO(data))
    del huge
    tracemalloc.start()
    try:
        lines = list(iter_list_lines(stream, max_line_bytes=1024))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 << 10, f"peak {peak} bytes while reading one line"
    assert lines[:2] == [
        (1, "a.jpg", "alice", None),
        (2, None, None, "line longer than 1024 bytes"),
    ]
    assert lines[2:] == ([(3, "b.jpg", "bob", None)] if tail else [])


def test_a_line_of_exactly_the_bound_is_read():
    line = b"a.jpg " + b"x" * 1018  # 1024 bytes before the newline
    assert [l.label for l in iter_list_lines(io.BytesIO(line + b"\n"), max_line_bytes=1024)] == ["x" * 1018]
    assert [l.label for l in iter_list_lines(io.BytesIO(line), max_line_bytes=1024)] == ["x" * 1018]
