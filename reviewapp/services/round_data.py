"""What a cleaning round trains on, and with which configuration.

The training set is the dataset as it stands: active faces only, each under its current
identity (Face.identity already carries relabels and merges; merge chains are resolved
anyway). Dataset index i is the i-th active face in face-id order, the same order the
"embeddings" method expects its rows in. Class ids are dense over the identities that still
have an active face, in identity-id order, like the exported label_id.

A round freezes this mapping in its run folder (faces.npz) when it first starts, so that a
round resumed by another worker trains on exactly the faces and labels its checkpoints were
made with, even if reviewers changed labels meanwhile.

Several sources mix freely, folders, file lists and RecordIO files alike: each source gets
its own FaceDataset (relative paths under its root, or byte offsets in its .rec), and
RoundFaceDataset addresses them all by dataset index.
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..models import Face, Identity, Round, Source

# ml is imported inside the functions: importing ml.train or ml.data loads torch, which the web
# process should not pay for until it starts a round.

SNAPSHOT_FILE = "faces.npz"
CONFIGS_DIR = Path(__file__).resolve().parents[2] / "ml" / "configs"
# method -> (config file, settings laid over it)
METHOD_CONFIGS: dict[str, tuple[str, dict]] = {
    Round.Method.ARCFACE: ("cpu_small.py", {}),
    Round.Method.SUBCENTER: ("cpu_small.py", {"head": "subcenter", "head_kwargs": {"s": 32.0, "K": 3}}),
    Round.Method.ROBUSTFACE: ("cpu_small.py", {"head": "robustface", "head_kwargs": {"s": 32.0}}),
    Round.Method.COMINING: ("comining_cpu.py", {}),
}
# Keys of Round.config that are not training settings.
ROUND_KEYS = frozenset({"embeddings", "norms", "mining"})


# -- the faces ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RoundFaces:
    """face_ids[i]: the Face of dataset index i (ascending); labels[i]: its class id;
    identity_ids[c]: the Identity of class c."""

    face_ids: np.ndarray
    labels: np.ndarray
    identity_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.face_ids)

    @property
    def num_classes(self) -> int:
        return len(self.identity_ids)


def _surviving_identity(dataset_id: int) -> dict[int, int]:
    """identity id -> the identity it ends up as after merges (itself when not merged)."""
    parent = dict(Identity.objects.filter(dataset_id=dataset_id, merged_into__isnull=False)
                  .values_list("pk", "merged_into_id"))

    def root(identity_id: int) -> int:
        seen = set()
        while identity_id in parent and identity_id not in seen:
            seen.add(identity_id)
            identity_id = parent[identity_id]
        return identity_id

    return {identity_id: root(identity_id) for identity_id in parent}


def round_faces_current(*, dataset_id: int) -> RoundFaces:
    """The dataset's active faces with their current labels."""
    rows = Face.objects.filter(dataset_id=dataset_id, status=Face.Status.ACTIVE).order_by("pk")
    # Streamed into one flat array: millions of faces never exist as Python tuples all at once.
    rows = np.fromiter(itertools.chain.from_iterable(rows.values_list("pk", "identity_id").iterator(chunk_size=50_000)),
                       dtype=np.int64).reshape(-1, 2)
    face_ids, identities = rows[:, 0], rows[:, 1]
    merged = _surviving_identity(dataset_id)
    if merged:
        identities = np.array([merged.get(int(i), int(i)) for i in identities], dtype=np.int64)
    identity_ids, labels = np.unique(identities, return_inverse=True)
    return RoundFaces(face_ids, labels.astype(np.int64), identity_ids.astype(np.int64))


def save_round_faces(faces: RoundFaces, path: Path, *, round_key: str) -> None:
    """Write the snapshot atomically; round_key says which round it belongs to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, face_ids=faces.face_ids, labels=faces.labels, identity_ids=faces.identity_ids,
             round_key=np.array(round_key))
    os.replace(tmp, path)


def load_round_faces(path: Path, *, round_key: str) -> RoundFaces | None:
    """The snapshot at path when it belongs to this round, else None."""
    try:
        with np.load(path) as data:
            if str(data["round_key"]) != round_key:
                return None
            return RoundFaces(data["face_ids"], data["labels"], data["identity_ids"])
    except (FileNotFoundError, KeyError, ValueError, OSError):
        return None


def round_key(round_: Round) -> str:
    """Tells this round's run folder from a leftover of another database (ids get reused)."""
    return f"{round_.pk}:{round_.created_at.isoformat()}"


# -- the images -----------------------------------------------------------------------------------

class RoundFaceDataset:
    """A map-style dataset of items (image | None, class id, dataset index) over faces from any
    number of sources, each source a FaceDataset."""

    class_names = None

    def __init__(self, parts: list, part_of: np.ndarray, local_of: np.ndarray,
                 labels: np.ndarray, num_classes: int) -> None:
        self.parts, self.part_of, self.local_of = parts, part_of, local_of
        self._labels, self._num_classes = labels, num_classes

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def __getitem__(self, index: int) -> tuple:
        image, label, _ = self.parts[self.part_of[index]][int(self.local_of[index])]
        return image, label, index


def round_face_dataset(faces: RoundFaces, *, dataset_id: int, transform) -> RoundFaceDataset:
    """The images of `faces` (removed since the snapshot or not), one FaceDataset per source."""
    from ml.data.dataset import FaceDataset, FaceSample

    sources = {s.pk: s for s in Source.objects.filter(dataset_id=dataset_id)}
    position = {int(face_id): i for i, face_id in enumerate(faces.face_ids)}
    per_source: dict[int, list[FaceSample]] = {}
    part_of = np.full(len(faces), -1, dtype=np.int64)
    local_of = np.full(len(faces), -1, dtype=np.int64)
    order = list(sources)
    part_index = {source_id: k for k, source_id in enumerate(order)}
    rows = (Face.objects.filter(dataset_id=dataset_id).order_by("pk")
            .values_list("pk", "source_id", "path", "record_offset"))
    for face_id, source_id, path, offset in rows.iterator(chunk_size=20_000):
        i = position.get(face_id)
        if i is None:
            continue
        samples = per_source.setdefault(source_id, [])
        is_record = sources[source_id].format == Source.Format.RECORDIO
        part_of[i], local_of[i] = part_index[source_id], len(samples)
        samples.append(FaceSample(int(offset) if is_record else path, int(faces.labels[i])))
    if (part_of < 0).any():
        raise ValueError(f"{int((part_of < 0).sum())} faces of the round no longer exist")
    parts = []
    for source_id in order:
        source = sources[source_id]
        if source.format == Source.Format.RECORDIO:
            parts.append(FaceDataset(per_source.get(source_id, []), record_file=source.record_file,
                                     transform=transform))
        else:
            parts.append(FaceDataset(per_source.get(source_id, []), root=source.root, transform=transform))
    return RoundFaceDataset(parts, part_of, local_of, faces.labels, faces.num_classes)


# -- the configuration ----------------------------------------------------------------------------

def _dotted(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """{"data": {"transform": {"size": 32}}} -> [("data.transform.size", 32)]: nested dicts set
    single keys, so that overriding one transform option keeps the others."""
    out = []
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            out.extend(_dotted(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def training_overrides(round_config: Mapping[str, Any]) -> list[str]:
    """Round.config's training settings as load_config overrides (`key=<python literal>`)."""
    settings = {k: v for k, v in round_config.items() if k not in ROUND_KEYS}
    return [f"{key}={value!r}" for key, value in _dotted(settings)]


def round_train_config(method: str, round_config: Mapping[str, Any] | None = None):
    """The training configuration (a TrainConfig) of a round: the method's config file, then
    Round.config. Raises ValueError for an unknown method or setting."""
    from ml.train.config import load_config

    if method not in METHOD_CONFIGS:
        raise ValueError(f"method {method!r} does not train; choose from {sorted(METHOD_CONFIGS)}")
    filename, preset = METHOD_CONFIGS[method]
    overrides = [f"{key}={value!r}" for key, value in _dotted(preset)]
    return load_config(CONFIGS_DIR / filename, overrides + training_overrides(round_config or {}))


def round_mining_config(round_config: Mapping[str, Any]):
    """The MiningConfig of Round.config's "mining" object (thresholds; missing ones calibrate)."""
    from ml.mining import MiningConfig

    mining = round_config.get("mining", {})
    if not isinstance(mining, Mapping):
        raise ValueError("config 'mining' must be an object of mining settings")
    try:
        return MiningConfig(**mining)
    except TypeError as exc:  # an unknown keyword
        raise ValueError(f"config 'mining': {exc}") from None


def clean_round_config(method: str, round_config: Mapping[str, Any] | None) -> dict:
    """Round.config checked, before anything is queued, for what the worker would fail on;
    returned with file paths made absolute (the worker runs elsewhere). Raises ValueError."""
    round_config = {} if round_config is None else round_config
    if not isinstance(round_config, Mapping):
        raise ValueError("the round configuration must be a JSON object")
    round_config = json.loads(json.dumps(round_config))  # stored as JSON: it must be JSON
    round_mining_config(round_config)
    if method == Round.Method.EMBEDDINGS:
        unknown = set(round_config) - {"embeddings", "norms", "mining"}
        if unknown:
            raise ValueError(f"method 'embeddings' takes only embeddings, norms and mining, not {sorted(unknown)}")
        if "embeddings" not in round_config:
            raise ValueError("method 'embeddings' needs config {'embeddings': '<path to .npy>'}")
        for key in ("embeddings", "norms"):
            if key in round_config:
                if not os.path.isfile(str(round_config[key])):
                    raise ValueError(f"{key}: {round_config[key]!r} is not a file")
                round_config[key] = os.path.abspath(str(round_config[key]))
        return round_config
    if round_train_config(method, round_config).stop_at_step is not None:
        raise ValueError("stop_at_step would end training early: a round needs a complete run")
    return round_config
