"""A map-style face dataset over image files or an InsightFace RecordIO.

Each item is (image tensor C x H x W, label, index). An image that cannot be decoded (missing,
truncated, not an image, beyond the pixel budget of ml.io.budget) comes back as (None, label,
index) instead of raising, and `collate_faces` drops it from the batch and reports its index in
`FaceBatch.skipped`. The count therefore survives DataLoader workers (a counter inside the
dataset would stay in the worker process); the caller adds up `len(batch.skipped)`.
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from ml.data.transforms import build_transform
from ml.io.budget import over_budget
from ml.io.filelist import list_rows
from ml.io.recordio import RecordReader, insightface_entries, unpack_image
from ml.io.scan import folder_images

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)  # slots: millions of these live in memory at once
class FaceSample:
    """location: a path (absolute, or relative to the dataset root) or a byte offset in the .rec."""

    location: str | int
    label: int


class FaceItem(NamedTuple):
    image: torch.Tensor | None
    label: int
    index: int


class FaceBatch(NamedTuple):
    """A collated batch. `indices` are the dataset indices of the kept rows, `skipped` those of the
    unreadable ones; `images` is an empty tensor when every image of the batch was unreadable."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: torch.Tensor


def collate_faces(items: Sequence[tuple]) -> FaceBatch:
    kept = [item for item in items if item[0] is not None]
    skipped = torch.tensor([int(item[2]) for item in items if item[0] is None], dtype=torch.long)
    if not kept:
        empty = torch.empty(0, dtype=torch.long)
        return FaceBatch(torch.empty(0), empty, empty.clone(), skipped)
    return FaceBatch(
        images=torch.stack([item[0] for item in kept]),
        labels=torch.tensor([int(item[1]) for item in kept], dtype=torch.long),
        indices=torch.tensor([int(item[2]) for item in kept], dtype=torch.long),
        skipped=skipped,
    )


class FaceDataset(Dataset):
    def __init__(
        self,
        samples: Sequence[FaceSample],
        *,
        root: str | os.PathLike | None = None,
        record_file: str | os.PathLike | None = None,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        class_names: Sequence[str] | None = None,
        sources: Sequence[int] | np.ndarray | None = None,
    ):
        self.samples = list(samples)
        # Per sample, the source (0..S-1) it came from, when a dataset joins several: the trainer
        # then gives each source its own classification head (ml/train/multihead.py).
        self.sources = None if sources is None else np.asarray(sources, dtype=np.int64)
        if self.sources is not None and len(self.sources) != len(self.samples):
            raise ValueError(f"{len(self.sources)} sources for {len(self.samples)} samples")
        self.root = os.fspath(root) if root is not None else None
        self.record_file = os.fspath(record_file) if record_file is not None else None
        # Without a transform, images are only converted to [-1, 1] tensors at their own size.
        self.transform = transform if transform is not None else build_transform(None)
        self.class_names = list(class_names) if class_names is not None else None
        self._reader = RecordReader(self.record_file, load_index=False) if self.record_file else None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        """Every sample's label; built on each access, so keep the array rather than re-reading."""
        return np.fromiter((s.label for s in self.samples), dtype=np.int64, count=len(self.samples))

    @property
    def num_classes(self) -> int:
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.labels.max()) + 1 if self.samples else 0

    def path_of(self, index: int) -> str:
        """The file path of a file-backed sample, joined to the root when it is relative."""
        location = self.samples[index].location
        if isinstance(location, (int, np.integer)):
            raise TypeError(f"sample {index} is a RecordIO offset, not a path")
        if self.root is not None and not os.path.isabs(location):
            return os.path.join(self.root, location)
        return location

    def read_bytes(self, index: int) -> bytes:
        location = self.samples[index].location
        if self._reader is not None and isinstance(location, (int, np.integer)):
            payload, _ = self._reader.read_at(int(location))
            return unpack_image(payload).image
        with open(self.path_of(index), "rb") as fh:
            return fh.read()

    def load_image(self, index: int) -> Image.Image | None:
        """The decoded RGB image, upright as its EXIF orientation says, or None when it cannot be
        read or is beyond the pixel budget (ml.io.budget; checked on the header, before decoding)."""
        try:
            image = Image.open(io.BytesIO(self.read_bytes(index)))
            too_large = over_budget(image)
            if too_large:
                log.debug("image %d (%s) not decoded: %s", index, self.samples[index].location, too_large)
                return None
            image.load()  # decode now: a truncated file fails here rather than in the transform
            # A phone photo is stored sideways with an EXIF orientation tag; review shows it upright.
            return ImageOps.exif_transpose(image).convert("RGB")
        except Exception as exc:  # decoders of untrusted files raise many exception types
            log.debug("unreadable image %d (%s): %s", index, self.samples[index].location, exc)
            return None

    def __getitem__(self, index: int) -> FaceItem:
        label = int(self.samples[index].label)
        image = self.load_image(index)
        if image is None:
            return FaceItem(None, label, index)
        return FaceItem(self.transform(image), label, index)

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_folder(cls, root: str | os.PathLike, *, transform=None) -> "FaceDataset":
        """root/<identity>/<image>, the images a folder import takes (ml.io.scan.folder_images:
        the same walk and extensions); identities with an image, in sorted names -> ids 0..C-1."""
        root = os.fspath(root)
        images = folder_images(root)
        class_names = sorted({identity for _, identity in images})
        ids = {name: i for i, name in enumerate(class_names)}
        samples = [FaceSample(path, ids[identity]) for path, identity in images]
        return cls(samples, root=root, transform=transform, class_names=class_names)

    @classmethod
    def from_list(cls, list_path, root=None, *, transform=None) -> "FaceDataset":
        """A file list as import reads it (ml.io.filelist: `path label`, `path<TAB>label`,
        InsightFace's .lst, FaceClean's export). Relative paths are taken relative to `root`,
        by default the list file's folder. Labels (integers or names) are mapped to ids 0..C-1 in
        sorted order (numeric order when all are integers); `class_names` keeps the originals."""
        list_path = os.fspath(list_path)
        root = os.fspath(root) if root is not None else os.path.dirname(os.path.abspath(list_path))
        rows = list_rows(list_path)
        names = sorted({label for _, label in rows}, key=_label_sort_key)
        ids = {name: i for i, name in enumerate(names)}
        samples = [FaceSample(path, ids[label]) for path, label in rows]
        return cls(samples, root=root, transform=transform, class_names=names)

    @classmethod
    def from_recordio(cls, rec_path, *, transform=None) -> "FaceDataset":
        """An InsightFace train.rec (+ .idx); stored labels are mapped to ids 0..C-1 in sorted
        order and `class_names` holds them as strings."""
        reader = RecordReader(rec_path, load_index=True)
        try:
            entries = list(insightface_entries(reader))
            stored = _recordio_labels(reader, entries)
        finally:
            reader.close()
        values = sorted(set(stored))
        ids = {v: i for i, v in enumerate(values)}
        samples = [FaceSample(offset, ids[label]) for (_, offset), label in zip(entries, stored)]
        names = [str(int(v)) if float(v).is_integer() else str(v) for v in values]
        return cls(samples, record_file=rec_path, transform=transform, class_names=names)


def _label_sort_key(label: str):
    try:
        return (0, int(label), "")
    except ValueError:
        return (1, 0, label)


def _recordio_labels(reader: RecordReader, entries: list[tuple[int, int]]) -> list[float]:
    """The stored label of each image record.

    With InsightFace's identity records (key 0 -> first identity key, each identity key -> its
    image key range) only the first image of each identity is read; otherwise every record.
    """
    by_key = {}
    if 0 in reader.offsets:
        head = unpack_image(reader.read_key(0))
        if len(head.labels) >= 2 and head.labels[0] >= 1:
            for identity_key in range(int(head.labels[0]), int(head.labels[1])):
                if identity_key not in reader.offsets:
                    continue
                start, end = (int(v) for v in unpack_image(reader.read_key(identity_key)).labels[:2])
                if start in reader.offsets:
                    label = unpack_image(reader.read_key(start)).label
                    by_key.update((k, label) for k in range(start, end))
    return [by_key[key] if key in by_key else unpack_image(reader.read_key(key)).label for key, _ in entries]
