"""Writing a file so that a reader, or a restart after a crash, finds the old file or the
new one under its name, never half of one.

The data goes to a temporary file in the target's folder (".<name>.<pid>-<hex>.part": a
rename never crosses file systems, and the web process's stale-file sweep,
services.jobs, knows the name); when the block succeeds the file is fsynced, renamed onto
the target and the folder fsynced, so that after a power loss the name points at the whole
new data (ext4 and XFS may otherwise persist the rename before the data, or lose the
rename). When the block fails the temporary file is removed and the target is untouched.

durable=False skips both fsyncs, for caches that are rebuilt when lost (a thumbnail, a
centres file): the rename alone already keeps concurrent readers from half a file.
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

PARTIAL_SUFFIX = ".part"


def partial_name(final: Path) -> Path:
    """A fresh temporary name next to `final`."""
    return final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}")


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or folder by path (a folder: its entries, such as a rename into it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(final: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """A temporary path next to `final` for the block to write (by path, in any way); renamed
    onto `final` when the block succeeds, removed when it fails. Creates the folder."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_name(final)
    try:
        yield partial
        if durable:
            fsync_path(partial)  # the data is on disk before the name points at it
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(final.parent)  # and the name itself survives a power loss


@contextmanager
def atomic_open(final: str | os.PathLike, mode: str = "wb", *, durable: bool = True,
                encoding: str | None = None, newline: str | None = None) -> Iterator[IO]:
    """atomic_path, opened: a file object (mode "wb" or "w") to write `final`'s new content to.
    np.save/np.savez and torch.save write to it as to a path."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes a whole new file: mode 'wb' or 'w', not {mode!r}")
    with atomic_path(final, durable=durable) as partial:
        with open(partial, mode, encoding=encoding, newline=newline) as fh:
            yield fh


def write_bytes_atomic(final: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    with atomic_open(final, "wb", durable=durable) as fh:
        fh.write(data)


def write_text_atomic(final: str | os.PathLike, text: str, *, durable: bool = True,
                      encoding: str = "utf-8") -> None:
    with atomic_open(final, "w", durable=durable, encoding=encoding, newline="\n") as fh:
        fh.write(text)
