"""Which samples to train on, and with which labels, after a cleaning round.

A cleaning round yields either an override mapping (dataset index -> new label, -1 = removed),
a label file of `index<TAB>label` lines meaning the same, or a cleaned file list (`path label`
lines: samples whose path is absent are removed). Each becomes a `TrainingSelection`, and
`TrainingSubset` serves it as a map-style dataset, so torch's DistributedSampler applies as is.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from ml.data.dataset import FaceDataset, FaceItem
from ml.io.filelist import list_rows

REMOVED = -1


@dataclass(frozen=True)
class TrainingSelection:
    """labels: one entry per dataset sample, REMOVED (-1) where it is left out.
    indices: the dataset indices kept, ascending. unmatched: entries of a cleaned list that name
    no dataset sample (always 0 for overrides)."""

    labels: np.ndarray
    indices: np.ndarray
    num_classes: int
    unmatched: int = 0

    @property
    def train_labels(self) -> np.ndarray:
        """The label of each kept sample, aligned with `indices`."""
        return self.labels[self.indices]

    @property
    def removed(self) -> int:
        return int(len(self.labels) - len(self.indices))


def _selection(labels: np.ndarray, num_classes: int, unmatched: int = 0) -> TrainingSelection:
    indices = np.flatnonzero(labels != REMOVED)
    # A relabel may name an id past the original classes (e.g. a split identity).
    top = int(labels[indices].max()) + 1 if len(indices) else 0
    return TrainingSelection(labels, indices, max(num_classes, top), unmatched)


def apply_overrides(base_labels, overrides: Mapping[int, int], num_classes: int | None = None) -> TrainingSelection:
    """base_labels with overrides applied: index -> new label, or REMOVED to leave it out."""
    labels = np.array(base_labels, dtype=np.int64, copy=True)
    if overrides:
        keys = np.fromiter(overrides.keys(), dtype=np.int64, count=len(overrides))
        values = np.fromiter(overrides.values(), dtype=np.int64, count=len(overrides))
        if keys.min() < 0 or keys.max() >= len(labels):
            raise IndexError(f"override index out of range 0..{len(labels) - 1}")
        if values.min() < REMOVED:
            raise ValueError("override labels must be >= 0, or -1 for removed")
        labels[keys] = values
    if num_classes is None:
        num_classes = int(np.max(base_labels)) + 1 if len(labels) else 0
    return _selection(labels, num_classes)


def read_label_file(path: str | os.PathLike) -> dict[int, int]:
    """`index<TAB>label` lines (blank and '#' lines ignored) as {index: label}; a later line for
    the same index wins."""
    overrides = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'index<TAB>label'")
            try:
                overrides[int(fields[0])] = int(fields[1])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: index and label must be integers") from None
    return overrides


def select_with_overrides(dataset: FaceDataset, overrides: Mapping[int, int] | str | os.PathLike) -> TrainingSelection:
    """The dataset's labels with an override mapping, or a label file's, applied."""
    if not isinstance(overrides, Mapping):
        overrides = read_label_file(overrides)
    return apply_overrides(dataset.labels, overrides, num_classes=dataset.num_classes)


def select_from_file_list(dataset: FaceDataset, list_path, root=None) -> TrainingSelection:
    """Keep the samples a cleaned `path label` list names, with the list's labels.

    Paths are compared after joining to a root (the list's: `root`, default the dataset's root)
    and normalising. A label is read as a class name when the dataset has that name, otherwise
    as an integer id.
    """
    list_root = os.fspath(root) if root is not None else dataset.root
    position = {_path_key(dataset.root, s.location): i for i, s in enumerate(dataset.samples)}
    name_to_id = {name: i for i, name in enumerate(dataset.class_names or [])}
    labels = np.full(len(dataset), REMOVED, dtype=np.int64)
    unmatched = 0
    for path, label in list_rows(list_path):
        index = position.get(_path_key(list_root, path))
        if index is None:
            unmatched += 1
            continue
        labels[index] = name_to_id[label] if label in name_to_id else _integer_label(label, list_path)
    return _selection(labels, dataset.num_classes, unmatched)


def _path_key(root: str | None, location) -> str:
    if isinstance(location, (int, np.integer)):
        raise TypeError("a file list can only be matched against a file-backed dataset")
    if root is not None and not os.path.isabs(location):
        location = os.path.join(root, location)
    return os.path.normpath(location)


def _integer_label(label: str, list_path) -> int:
    try:
        value = int(label)
    except ValueError:
        raise ValueError(f"{list_path}: label {label!r} is neither a class name nor an id") from None
    if value < 0:
        raise ValueError(f"{list_path}: negative label {value}")
    return value


class TrainingSubset(Dataset):
    """The kept samples of a selection, with their new labels. Items keep the *dataset* index
    as their index, so per-sample signals recorded in training map back to the dataset."""

    def __init__(self, dataset: FaceDataset, selection: TrainingSelection):
        if len(selection.labels) != len(dataset):
            raise ValueError("selection was made for a dataset of another size")
        self.dataset = dataset
        self.selection = selection
        self.indices = selection.indices
        self.labels = selection.train_labels
        sources = getattr(dataset, "sources", None)
        self.sources = None if sources is None else np.asarray(sources)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> FaceItem:
        item = self.dataset[int(self.indices[position])]
        return FaceItem(item.image, int(self.labels[position]), item.index)


def distributed_sampler(
    dataset: Dataset,
    *,
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
    num_replicas: int | None = None,
    rank: int | None = None,
) -> DistributedSampler:
    """torch's DistributedSampler, also usable without a process group (then one replica).

    Call `set_epoch(epoch)` every epoch: the order is a function of (seed, epoch) only, the same
    on every rank, and each rank takes every num_replicas-th index of it.
    """
    in_group = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if in_group else 1
    if rank is None:
        rank = dist.get_rank() if in_group else 0
    return DistributedSampler(
        dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
