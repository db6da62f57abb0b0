"""Face file lists: one image and its identity label per line.

Accepted line forms (blank lines and lines starting with '#' are skipped):
    path label            space separated: the label is the last whitespace token, so the
                          path may hold spaces only if the label does not
    path<TAB>label        the path may contain spaces
    index<TAB>path<TAB>label
                          InsightFace's .lst (three tab fields, integer first field); a
                          numeric label such as "12.000000" is read as "12"
    path<TAB>label_id<TAB>name
                          FaceClean's own clean export (integer middle field): the name,
                          un-escaped like the path, is the identity, so an export imports
                          back as it was
Fields are stripped of surrounding whitespace. The file is read as bytes and decoded line by
line, so one line that is not UTF-8 is reported without losing the others. A label may take
MAX_NAME_BYTES in UTF-8 and a line MAX_LINE_BYTES: a longer one is reported by its number and
skipped, and reading it costs no more memory than the bound.
"""
from __future__ import annotations

import os
from typing import BinaryIO, Iterable, Iterator, NamedTuple

from .scan import MAX_NAME_BYTES, FileProblem, Progress, Rejected, RootGuard, ScanResult, longer_than, tick

# The longest line read, in bytes before its line break: far above any line an import can
# store (a path of MAX_PATH_BYTES, a label of MAX_NAME_BYTES), and small enough that one
# line without a newline in a huge file costs no memory to speak of.
MAX_LINE_BYTES = 16_384


class ListLine(NamedTuple):
    """One meaningful line: either (path, label) or a problem saying why it was refused."""

    lineno: int
    path: str | None
    label: str | None
    problem: str | None = None


class MalformedLine(ValueError):
    pass


def _numeric_label(text: str) -> str:
    # .lst writers print float labels; the identity is the integer they stand for.
    try:
        value = float(text)
    except ValueError:
        return text
    if value.is_integer():
        return str(int(value))
    return text


_ESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f", "v": "\v"}


def _unescape(text: str) -> str:
    """Undo the export's COPY-style backslash escapes (\\t, \\n, \\\\ ...)."""
    if "\\" not in text:
        return text
    out, chars = [], iter(text)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
        else:
            out.append(char)
    return "".join(out)


def parse_list_line(text: str) -> tuple[str, str]:
    """(path, label) of one non-blank, non-comment line; MalformedLine says what is wrong."""
    if "\0" in text:
        raise MalformedLine("contains a NUL character")
    if "\t" in text:
        fields = [f.strip() for f in text.split("\t")]
        if len(fields) == 3 and fields[0].isascii() and fields[0].isdigit():
            path, label = fields[1], _numeric_label(fields[2])
        elif len(fields) == 3 and fields[1].isascii() and fields[1].isdigit():
            path, label = _unescape(fields[0]), _unescape(fields[2])
        elif len(fields) == 2:
            path, label = fields
        else:
            raise MalformedLine(
                f"expected 'path<TAB>label' or 'index<TAB>path<TAB>label', got {len(fields)} tab fields"
            )
    else:
        fields = text.rsplit(None, 1)
        if len(fields) != 2:
            raise MalformedLine("expected 'path label': no label")
        path, label = fields[0].strip(), fields[1]
    if not path:
        raise MalformedLine("empty path")
    if not label:
        raise MalformedLine("empty label")
    if longer_than(label, MAX_NAME_BYTES):
        raise MalformedLine(f"label longer than {MAX_NAME_BYTES} bytes")
    return path, label


def _bounded_lines(stream: BinaryIO, max_bytes: int) -> Iterator[bytes | None]:
    """Each line of `stream` with its line break, or None for a line of more than `max_bytes`
    before its break; such a line is read on and dropped in pieces of that size, never held
    whole (iterating the stream would hold a 512 MB file without newlines at once)."""
    readline = stream.readline
    while True:
        raw = readline(max_bytes + 1)
        if not raw:
            return
        if len(raw) <= max_bytes or raw.endswith(b"\n"):
            yield raw
            continue
        while raw and not raw.endswith(b"\n"):
            raw = readline(max_bytes + 1)
        yield None


def iter_list_lines(stream: BinaryIO, *, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[ListLine]:
    """Every entry and every malformed line of a binary stream, with 1-based line numbers."""
    for lineno, raw in enumerate(_bounded_lines(stream, max_line_bytes), 1):
        if raw is None:
            yield ListLine(lineno, None, None, f"line longer than {max_line_bytes} bytes")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield ListLine(lineno, None, None, f"not valid UTF-8 (byte {exc.start})")
            continue
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            path, label = parse_list_line(text.rstrip("\r\n"))
        except MalformedLine as exc:
            yield ListLine(lineno, None, None, f"malformed line: {exc}")
            continue
        yield ListLine(lineno, path, label)


def read_file_list(path: str | os.PathLike, *, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[ListLine]:
    with open(path, "rb") as stream:
        yield from iter_list_lines(stream, max_line_bytes=max_line_bytes)


def list_rows(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Every (path, label) of a file list, for training: the first line that import would
    refuse raises ValueError naming the file and line."""
    rows = []
    for lineno, image_path, label, problem in read_file_list(path):
        if problem is not None:
            raise ValueError(f"{os.fspath(path)}:{lineno}: {problem}")
        rows.append((image_path, label))
    return rows


_SHOWN_PATH_CHARS = 200


def _shown_path(path: str) -> str:
    # A refused path is quoted in the report; one of thousands of characters is cut short.
    return path if len(path) <= _SHOWN_PATH_CHARS else path[:_SHOWN_PATH_CHARS] + "..."


def scan_file_list(list_path: str | os.PathLike, root: str | os.PathLike, *, verify_images: bool = False,
                   progress: Progress | None = None, max_line_bytes: int = MAX_LINE_BYTES) -> ScanResult:
    """Every importable image named by a file list, paths relative to `root` (or absolute
    inside it). A path listed twice is refused the second time, however it is spelled."""
    guard = RootGuard(root, verify_images=verify_images)
    result = ScanResult(root=guard.root)
    relative, inspect = guard.relative, guard.inspect
    first_line: dict[str, int] = {}
    shared_labels: dict[str, str] = {}  # one string object per identity, not one per face
    lines = read_file_list(list_path, max_line_bytes=max_line_bytes)
    for count, (lineno, path, label, problem) in enumerate(lines, 1):
        tick(progress, count)
        if problem is not None:
            result.rejected.append((f"line {lineno}", problem))
            continue
        try:
            rel = relative(path)
            earlier = first_line.setdefault(rel, lineno)
            if earlier != lineno:
                raise Rejected(f"duplicate of line {earlier}")
            size = inspect(rel)
        except FileProblem as exc:
            result.problem(f"line {lineno}: {_shown_path(path)}", exc)
            continue
        result.paths.append(rel)
        result.labels.append(shared_labels.setdefault(label, label))
        result.sizes.append(size)
    return result


def format_list_line(path: str, label: str) -> str:
    """The line that parse_list_line reads back as (path, label): TAB-separated whenever
    either side contains whitespace that space separation would lose."""
    if "\t" in path or "\t" in label or "\n" in path or "\n" in label:
        raise ValueError("paths and labels in a file list cannot contain tabs or newlines")
    if path != path.strip() or label != label.strip() or not path or not label:
        raise ValueError("paths and labels in a file list must be non-empty without surrounding whitespace")
    if path.startswith("#"):
        path = "./" + path  # a leading '#' would make the line a comment
    if any(ch.isspace() for ch in path + label):
        return f"{path}\t{label}\n"
    return f"{path} {label}\n"


def write_file_list(path: str | os.PathLike, rows: Iterable[tuple[str, str]]) -> int:
    """Write (path, label) rows as a UTF-8 file list; returns the row count."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for image_path, label in rows:
            out.write(format_list_line(image_path, label))
            count += 1
    return count
