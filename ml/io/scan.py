"""Finding importable face images safely and cheaply: the folder and RecordIO scans (file
lists: ml.io.filelist), and the per-file checks every format shares (RootGuard).

One walk of a ROOT/<identity>/<image> folder (walk_folder) and one set of image extensions
(IMAGE_EXTENSIONS) serve import, training (ml.data.dataset's from_folder, through
folder_images) and noise injection (ml.synthetic_noise): what a folder import takes is what
trains. Every extension here is one Pillow decodes and image_format knows by its header
bytes; a GIF trains on its first frame, in RGB, like any other image.

Problems come in two kinds. `Rejected`: the entry breaks a rule (unknown extension, outside
the root, missing, not a regular file). `Unreadable`: the entry names real data that is not
a usable image (zero bytes, wrong header bytes, corrupt record, fails to decode).

Cost at a million files decides the shape of the checks:
- each *directory* is resolved once (realpath, cached) and must lie inside the resolved root;
- each file is opened once with O_NOFOLLOW: that single path walk tells missing files and
  symlinks apart (ELOOP; only then is the link resolved and checked against the root), fstat
  gives the type and size, and the first 16 bytes give the format by magic number. Measured
  on ext4 with warm caches, open+fstat+read+close costs ~6.5 us against ~3.5 us for a bare
  lstat: about 3 s more per million files, worth it to catch non-image files at import
  (a whole 1M-line file list scans in ~17 s on the 2-core dev machine);
- a full decode with Pillow happens only with verify_images (it costs milliseconds a file).
Hidden names (starting with '.': .DS_Store, AppleDouble '._x.jpg', .git) are skipped silently
by folder scans; file lists are taken as written. One hostile entry never stops a scan: a name
that is not UTF-8 (reported with its bytes as \\xNN), a symlink loop, a path over
MAX_PATH_BYTES are each refused and counted.
"""
from __future__ import annotations

import errno
import io
import itertools
import math
import os
import stat
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple

from PIL import Image

from .budget import over_budget
from .recordio import RecordReader, RecordIOError, insightface_entries, unpack_image

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "pgm", "ppm", "pnm", "bmp", "gif", "webp", "tif", "tiff"})
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_UNRESOLVED = object()
_PROGRESS_EVERY = 10_000
# The longest face path and identity name an import stores, in UTF-8 bytes. Postgres refuses
# a btree index entry over 2,704 bytes (face paths and identity names are unique per source),
# and text such as random names does not compress: longer entries are refused one by one.
MAX_PATH_BYTES = 2048
MAX_NAME_BYTES = 1024
# progress(stage, done, total or None); the scans report stage "scan" every 10,000 entries.
Progress = Callable[[str, int, "int | None"], None]


class FileProblem(Exception):
    """Why one entry was not imported; `unreadable` tells the two kinds apart."""

    unreadable = False

    @property
    def reason(self) -> str:
        return str(self)


class Rejected(FileProblem):
    pass


class Unreadable(FileProblem):
    unreadable = True


@dataclass
class ScanResult:
    """What a scan found: parallel columns of the importable faces (paths relative to
    `root`, or "rec:<key>" with the byte offsets for RecordIO), and the problems as
    (where, reason)."""

    root: str
    record_file: str = ""
    paths: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    offsets: list[int] | None = None
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def problem(self, where: str, exc: FileProblem) -> None:
        (self.unreadable if exc.unreadable else self.rejected).append((where, exc.reason))


def tick(progress: Progress | None, done: int) -> None:
    if progress is not None and done % _PROGRESS_EVERY == 0:
        progress("scan", done, None)


def has_image_extension(name: str) -> bool:
    dot = name.rfind(".")
    return dot >= 0 and name[dot + 1:].lower() in IMAGE_EXTENSIONS


def image_format(head: bytes) -> str | None:
    """The image format named by a file's first bytes (16 are enough), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n":
        return "netpbm"
    return None


def decode_problem(source) -> str | None:
    """Why Pillow cannot fully decode `source` (a path or binary file), or None if it can. An
    image beyond the pixel budget (ml.io.budget) is refused on its header, never decoded."""
    try:
        with Image.open(source) as image:
            too_large = over_budget(image)
            if too_large:
                return too_large
            image.load()
    except Image.DecompressionBombError:
        return "image too large to decode safely"
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error...
        return f"cannot decode: {exc}"
    return None


def _is_utf8(name: str) -> bool:
    # os.scandir hands back undecodable bytes as lone surrogates, which no database stores.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_name(name: str) -> str:
    """A file name as text a database stores and a person reads: bytes that are not UTF-8
    (lone surrogates from os.scandir) written as \\xNN, so b"bad\\xff.pgm" shows as bad\\xff.pgm."""
    return name if _is_utf8(name) else os.fsencode(name).decode("utf-8", "backslashreplace")


def longer_than(text: str, max_bytes: int) -> bool:
    """Whether `text` takes more than `max_bytes` in UTF-8 (a character takes at most 4, so
    short text is never encoded: this runs once per face)."""
    return len(text) > max_bytes // 4 and len(text.encode("utf-8", "surrogatepass")) > max_bytes


def _link_problem(exc: OSError) -> FileProblem:
    # Following a symlink loop fails with ELOOP: that entry is refused, the scan goes on.
    if exc.errno == errno.ELOOP:
        return Rejected("symlink loop")
    return Unreadable(f"cannot read: {exc.strerror}")


class RootGuard:
    """Turns paths into canonical root-relative paths and inspects the files they name,
    refusing anything that leaves the resolved root."""

    def __init__(self, root: str | os.PathLike, *, verify_images: bool = False):
        self.root = os.path.realpath(root)
        self._prefix = self.root.rstrip(os.sep) + os.sep
        self._dirs: dict[str, str | None] = {}
        self.verify_images = verify_images

    def _inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self._prefix)

    def _relative_dir(self, head: str) -> str | None:
        real = os.path.realpath(os.path.join(self.root, head))
        if real == self.root:
            return ""
        if real.startswith(self._prefix):
            return real[len(self._prefix):] + "/"
        return None

    def relative(self, path: str) -> str:
        """The canonical root-relative form of `path` (relative to the root, or absolute)."""
        if "\0" in path:
            raise Rejected("path contains a NUL character")
        # os.path.split, inlined: this runs once per face
        slash = path.rfind("/")
        head, name = (path[:slash] or "/", path[slash + 1:]) if slash >= 0 else ("", path)
        if name in ("", ".", ".."):
            raise Rejected("not a file path")
        if not has_image_extension(name):
            raise Rejected("unknown extension")
        rel_dir = self._dirs.get(head, _UNRESOLVED)
        if rel_dir is _UNRESOLVED:
            rel_dir = self._dirs[head] = self._relative_dir(head)
        if rel_dir is None:
            raise Rejected("path leaves the root")
        relative = rel_dir + name
        if longer_than(relative, MAX_PATH_BYTES):
            raise Rejected(f"path longer than {MAX_PATH_BYTES} bytes")
        return relative

    def _open(self, full: str) -> tuple[int, str | None]:
        """(fd, the link's resolved target, or None when `full` is not a symlink)."""
        if not _NOFOLLOW and os.path.islink(full):  # platforms without O_NOFOLLOW
            return self._open_link(full)
        try:
            return os.open(full, _OPEN_FLAGS | _NOFOLLOW), None
        except (FileNotFoundError, NotADirectoryError):
            raise Rejected("missing file") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # the file itself is a symlink
                return self._open_link(full)
            raise Unreadable(f"cannot open: {exc.strerror}") from None

    def _open_link(self, full: str) -> tuple[int, str]:
        target = os.path.realpath(full)
        if not self._inside(target):
            raise Rejected("symlink leaves the root")
        try:
            return os.open(target, _OPEN_FLAGS), target
        except (FileNotFoundError, NotADirectoryError):
            raise Rejected("broken symlink") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Rejected("symlink loop") from None
            raise Unreadable(f"cannot open: {exc.strerror}") from None

    def inspect(self, relative: str) -> int:
        """The size in bytes of the image at a path from relative(); FileProblem otherwise."""
        return self.inspect_file(relative).size

    def inspect_file(self, relative: str) -> "Inspected":
        """inspect(), also telling where a symlink led: `target` is the root-relative path of
        the file it names (None for a plain file), so that a scan can import that file once."""
        full = self._prefix + relative
        fd, target = self._open(full)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise Rejected("not a regular file")
            if info.st_size == 0:
                raise Unreadable("zero-byte file")
            head = os.read(fd, 16)
        except OSError as exc:
            raise Unreadable(f"cannot read: {exc.strerror}") from None
        finally:
            os.close(fd)
        if image_format(head) is None:
            raise Unreadable("not an image (unrecognised header bytes)")
        if self.verify_images:
            problem = decode_problem(full)
            if problem:
                raise Unreadable(problem)
        return Inspected(info.st_size, None if target is None else target[len(self._prefix):])


class Inspected(NamedTuple):
    size: int
    target: str | None


class FolderEntry(NamedTuple):
    """An image found by scan_folder (identity set), or a problem found on the way; `entry` is
    the file's os.DirEntry (None for a problem)."""

    path: str
    identity: str | None
    problem: FileProblem | None = None
    entry: os.DirEntry | None = None


def _sorted_entries(path: str) -> list[os.DirEntry]:
    with os.scandir(path) as it:
        return sorted(it, key=lambda entry: entry.name)


def _scan_identity(folder: str, identity: str) -> Iterator[FolderEntry]:
    try:
        entries = _sorted_entries(folder)
    except OSError as exc:
        yield FolderEntry(identity, None, Unreadable(f"cannot list folder: {exc.strerror}"))
        return
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        where = f"{identity}/{shown_name(name)}"
        if not _is_utf8(name):
            yield FolderEntry(where, None, Rejected("name is not valid UTF-8"))
            continue
        try:
            nested = entry.is_dir()
        except OSError as exc:
            yield FolderEntry(where, None, _link_problem(exc))
            continue
        if nested:
            yield FolderEntry(where, None, Rejected("nested folder, not imported"))
        else:
            yield FolderEntry(where, identity, None, entry)


def walk_folder(root: str | os.PathLike) -> Iterator[FolderEntry]:
    """Images laid out as ROOT/<identity>/<image>, in name order. Only paths and identities
    are produced here; RootGuard.inspect checks the files themselves."""
    real_root = os.path.realpath(root)
    prefix = real_root.rstrip(os.sep) + os.sep
    for entry in _sorted_entries(real_root):
        name = entry.name
        if name.startswith("."):
            continue
        if not _is_utf8(name):
            yield FolderEntry(shown_name(name), None, Rejected("name is not valid UTF-8"))
            continue
        if entry.is_symlink():
            target = os.path.realpath(entry.path)
            if target != real_root and not target.startswith(prefix):
                yield FolderEntry(name, None, Rejected("symlink leaves the root"))
                continue
        try:
            is_folder = entry.is_dir()
        except OSError as exc:
            yield FolderEntry(name, None, _link_problem(exc))
            continue
        if is_folder:
            yield from _scan_identity(entry.path, name)
        else:
            yield FolderEntry(name, None, Rejected("file outside an identity folder"))


def _identity_folder(real_root: str, name: str) -> str:
    folder = os.path.realpath(os.path.join(real_root, name))
    # Names are untrusted: "../x" or "a/b" must not reach outside root/<identity>.
    if "/" in name or "\\" in name or os.path.dirname(folder) != real_root or not os.path.isdir(folder):
        raise ValueError(f"identity {name!r} is not a folder directly under {real_root}")
    return folder


def folder_images(root: str | os.PathLike, identities: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(path relative to root, identity) of every image file a folder import would take from
    ROOT/<identity>/<image>, by name and extension only (walk_folder; entries it refuses, and
    names without an image extension, are skipped without a word), in name order.
    `identities`: only those folders, in that order; ValueError when one is not a folder
    directly under root."""
    real_root = os.path.realpath(root)
    if identities is None:
        entries = walk_folder(real_root)
    else:
        entries = itertools.chain.from_iterable(
            _scan_identity(_identity_folder(real_root, name), name) for name in list(identities))
    return [(e.path, e.identity) for e in entries
            if e.problem is None and has_image_extension(e.path) and e.entry.is_file()]


class RecordEntry(NamedTuple):
    """An image record of a train.rec (label set), or the problem that stopped it."""

    key: int
    offset: int
    label: str | None
    size: int = 0
    problem: FileProblem | None = None


def iter_records(reader: RecordReader, *, verify_images: bool = False) -> Iterator[RecordEntry]:
    """Every image record of an InsightFace train.rec with its label as text.

    RecordIOError escapes only where the whole file is unusable (no .idx, corrupt header
    record); a bad image record is produced as a problem and the scan goes on.
    """
    for key, offset in list(insightface_entries(reader)):
        try:
            record = unpack_image(reader.read_at(offset)[0])
        except RecordIOError as exc:
            yield RecordEntry(key, offset, None, 0, Unreadable(str(exc)))
            continue
        except OSError as exc:  # e.g. a negative offset in a damaged .idx
            yield RecordEntry(key, offset, None, 0, Unreadable(f"cannot read: {exc.strerror}"))
            continue
        label = record.label
        if not math.isfinite(label):
            yield RecordEntry(key, offset, None, 0, Unreadable("label is not a number"))
            continue
        image = record.image
        problem = None
        if not image:
            problem = "empty image"
        elif image_format(image[:16]) is None:
            problem = "not an image (unrecognised header bytes)"
        elif verify_images:
            problem = decode_problem(io.BytesIO(image))
        if problem:
            yield RecordEntry(key, offset, None, 0, Unreadable(problem))
        else:
            yield RecordEntry(key, offset, str(int(label)), len(image))


def scan_folder(root: str | os.PathLike, *, verify_images: bool = False,
                progress: Progress | None = None) -> ScanResult:
    """Every importable image of ROOT/<identity>/<image>; identity = the folder name as found."""
    guard = RootGuard(root, verify_images=verify_images)
    result = ScanResult(root=guard.root)
    first_seen: dict[str, str] = {}
    for count, entry in enumerate(walk_folder(guard.root), 1):
        tick(progress, count)
        if entry.problem is not None:
            result.problem(entry.path, entry.problem)
            continue
        try:
            rel = guard.relative(entry.path)
            # An identity folder that is a symlink to another one inside the root names the
            # same files again; they are imported once, under the first name in sort order.
            earlier = first_seen.setdefault(rel, entry.path)
            if earlier != entry.path:
                raise Rejected(f"same file as {earlier}")
            size, target = guard.inspect_file(rel)
            # So does a symlink to another file: the file and its links count once, whichever
            # name comes first (only links are recorded: a plain file's rel is its target).
            if target is not None:
                earlier = first_seen.setdefault(target, entry.path)
                if earlier != entry.path:
                    raise Rejected(f"same file as {earlier}")
        except FileProblem as exc:
            result.problem(entry.path, exc)
            continue
        result.paths.append(rel)
        result.labels.append(entry.identity)
        result.sizes.append(size)
    return result


def scan_recordio(rec_path: str | os.PathLike, *, verify_images: bool = False,
                  progress: Progress | None = None) -> ScanResult:
    """Every importable image record of an InsightFace train.rec; identity = int(label) as
    text. RecordIOError only when the file as a whole is unusable (see iter_records)."""
    rec = os.path.realpath(rec_path)
    result = ScanResult(root=os.path.dirname(rec), record_file=rec, offsets=[])
    with RecordReader(rec) as reader:
        for count, entry in enumerate(iter_records(reader, verify_images=verify_images), 1):
            tick(progress, count)
            if entry.problem is not None:
                result.problem(f"rec:{entry.key}", entry.problem)
                continue
            result.paths.append(f"rec:{entry.key}")
            result.labels.append(entry.label)
            result.sizes.append(entry.size)
            result.offsets.append(entry.offset)
    return result
