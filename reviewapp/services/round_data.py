"""What a cleaning round trains on, and with which configuration.

The training set is the dataset as it stands, read by the query the export reads
(selectors.active_faces): active faces only, each under the survivor of its identity's merge
chain, class ids dense over the survivors that still have an active face, in identity-id
order, so class c is the exported label_id c. Dataset index i is the i-th active face in
face-id order, the same order the "embeddings" method expects its rows in.

A round freezes this mapping in its run folder (faces.npz) when it first starts, so that a
round resumed by another worker trains on exactly the faces and labels its checkpoints were
made with, even if reviewers changed labels meanwhile.

Several sources mix freely, folders, file lists and RecordIO files alike: each source gets
its own FaceDataset (relative paths under its root, or byte offsets in its .rec), and
RoundFaceDataset addresses them all by dataset index.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ml.api import atomic_open

from ..models import Face, Identity, Round, Source
from ..runs import round_key  # noqa: F401 (the snapshot's key; named here too)
from ..selectors.active_faces import active_face_labels

# ml.api's heavy names are imported inside the functions: loading ml.train or ml.data loads torch,
# which the web process should not pay for until it starts a round.

SNAPSHOT_FILE = "faces.npz"
# method -> (config file, settings laid over it)
METHOD_CONFIGS: dict[str, tuple[str, dict]] = {
    Round.Method.ARCFACE: ("cpu_small.py", {}),
    Round.Method.SUBCENTER: ("cpu_small.py", {"head": "subcenter", "head_kwargs": {"s": 32.0, "K": 3}}),
    Round.Method.ROBUSTFACE: ("cpu_small.py", {"head": "robustface", "head_kwargs": {"s": 32.0}}),
    Round.Method.COMINING: ("comining_cpu.py", {}),
}
# On a CUDA host a training round starts from the GPU preset instead (unless Round.config says
# "preset": "cpu" or "device": "cpu"): IResNet-50 at 112x112 with AMP and channels-last
# (iresnet50.py). Crop 150 suits LFW-like 250x250 photos and leaves an aligned 112x112 crop
# whole (a crop larger than the image is clamped). head_kwargs are given whole: iresnet50.py's
# ArcFace m2 is no keyword of the other heads.
GPU_CONFIG_FILE = "iresnet50.py"
GPU_METHOD_CONFIGS: dict[str, dict] = {
    Round.Method.ARCFACE: {"head": "arcface", "head_kwargs": {"s": 64.0, "m2": 0.5}},
    Round.Method.SUBCENTER: {"head": "subcenter", "head_kwargs": {"s": 64.0, "K": 3}},
    Round.Method.ROBUSTFACE: {"head": "robustface", "head_kwargs": {"s": 64.0}},
    Round.Method.COMINING: {"head": "arcface", "head_kwargs": {"s": 64.0, "m2": 0.5}, "method": "comining"},
}
GPU_ROUND_SETTINGS = {"data": {"transform": {"crop": 150}}}
PRESETS = ("cpu", "gpu")
# The training method a CUDA host's first round uses. RobustFace: on the held-out set of issue 9,
# default settings, its closed-set F1 was 0.62 against ArcFace's 0.07 (its noisy band delays
# memorising the wrong labels).
DEFAULT_GPU_METHOD = Round.Method.ROBUSTFACE
# Keys of Round.config that are not training settings.
ROUND_KEYS = frozenset({"embeddings", "norms", "paths", "mining", "preset"})


# -- the faces ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RoundFaces:
    """face_ids[i]: the Face of dataset index i (ascending); labels[i]: its class id;
    identity_ids[c]: the Identity of class c; sources[i]: the source (0..S-1, in source-id order)
    of face i's identity, the survivor's for a merged one, so that training gives each source its
    own head and a merged identity's faces train in the survivor's (ml/train/multihead.py).
    sources is None in snapshots written before it existed: one head, as then."""

    face_ids: np.ndarray
    labels: np.ndarray
    identity_ids: np.ndarray
    sources: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.face_ids)

    @property
    def num_classes(self) -> int:
        return len(self.identity_ids)


def round_faces_current(*, dataset_id: int) -> RoundFaces:
    """The dataset's active faces with their current labels, as the export labels them
    (selectors.active_faces). MergeCycle (a ValueError) when some face has no label."""
    face_ids, labels, identity_ids = active_face_labels(dataset_id=dataset_id)
    source_of = dict(Identity.objects.filter(dataset_id=dataset_id).values_list("pk", "source_id").iterator())
    class_sources = np.array([source_of[int(i)] for i in identity_ids], dtype=np.int64)
    sources = np.unique(class_sources, return_inverse=True)[1].astype(np.int64)[labels]
    return RoundFaces(face_ids, labels, identity_ids, sources)


def save_round_faces(faces: RoundFaces, path: Path, *, round_key: str) -> None:
    """Write the snapshot atomically; round_key says which round it belongs to."""
    extra = {} if faces.sources is None else {"sources": faces.sources}
    with atomic_open(path) as fh:
        np.savez(fh, face_ids=faces.face_ids, labels=faces.labels, identity_ids=faces.identity_ids,
                 round_key=np.array(round_key), **extra)


def load_round_faces(path: Path, *, round_key: str) -> RoundFaces | None:
    """The snapshot at path when it belongs to this round, else None."""
    try:
        with np.load(path) as data:
            if str(data["round_key"]) != round_key:
                return None
            sources = data["sources"] if "sources" in data.files else None
            return RoundFaces(data["face_ids"], data["labels"], data["identity_ids"], sources)
    except (FileNotFoundError, KeyError, ValueError, OSError):
        return None


# -- the images -----------------------------------------------------------------------------------

class RoundFaceDataset:
    """A map-style dataset of items (image | None, class id, dataset index) over faces from any
    number of sources, each source a FaceDataset."""

    class_names = None

    def __init__(self, parts: list, part_of: np.ndarray, local_of: np.ndarray,
                 labels: np.ndarray, num_classes: int, sources: np.ndarray | None = None) -> None:
        self.parts, self.part_of, self.local_of = parts, part_of, local_of
        self._labels, self._num_classes = labels, num_classes
        self.sources = sources  # per dataset index: the trainer's head per source (RoundFaces.sources)

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

    def read_bytes(self, index: int) -> bytes:
        """The encoded image of dataset index `index` (file or RecordIO record)."""
        return self.parts[self.part_of[index]].read_bytes(int(self.local_of[index]))


def round_face_dataset(faces: RoundFaces, *, dataset_id: int, transform) -> RoundFaceDataset:
    """The images of `faces` (removed since the snapshot or not), one FaceDataset per source."""
    from ml.api import FaceDataset, FaceSample

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
    return RoundFaceDataset(parts, part_of, local_of, faces.labels, faces.num_classes, faces.sources)


def round_face_paths(faces: RoundFaces, *, dataset_id: int) -> tuple[list[str], list[str]]:
    """(path as stored, its source's root) of each face of `faces`, in dataset-index order: what
    rows of user-supplied embeddings are matched by."""
    roots = dict(Source.objects.filter(dataset_id=dataset_id).values_list("pk", "root"))
    position = {int(face_id): i for i, face_id in enumerate(faces.face_ids)}
    paths, face_roots = [""] * len(faces), [""] * len(faces)
    rows = Face.objects.filter(dataset_id=dataset_id).order_by("pk").values_list("pk", "source_id", "path")
    for face_id, source_id, path in rows.iterator(chunk_size=20_000):
        i = position.get(face_id)
        if i is not None:
            paths[i], face_roots[i] = path, roots[source_id]
    return paths, face_roots


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


@functools.lru_cache(maxsize=1)
def host_has_cuda() -> bool:
    """Whether this process can train on a CUDA GPU. Without an NVIDIA driver the answer is no
    without importing torch, which the web process (it asks for the default method) avoids."""
    if not _nvidia_driver_loaded():
        return False
    import torch

    return bool(torch.cuda.is_available())


def _nvidia_driver_loaded() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def default_round_method(*, cuda: bool | None = None) -> str:
    """The method a round uses unless someone chooses: the pretrained descriptor on a CPU-only
    host (useful flags on 10K faces in minutes, where training a model on 2 cores took 42 minutes
    and flagged noise at random: issue 9), the GPU training preset on a CUDA host."""
    cuda = host_has_cuda() if cuda is None else cuda
    return DEFAULT_GPU_METHOD if cuda else Round.Method.PRETRAINED


def round_preset(round_config: Mapping[str, Any] | None = None, *, cuda: bool | None = None) -> str:
    """"gpu" or "cpu": Round.config's "preset" when set, "cpu" when it sets device "cpu", else
    "gpu" on a CUDA host."""
    round_config = round_config or {}
    preset = round_config.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {preset!r}")
        return preset
    if round_config.get("device") == "cpu":
        return "cpu"
    return "gpu" if (host_has_cuda() if cuda is None else cuda) else "cpu"


def round_train_config(method: str, round_config: Mapping[str, Any] | None = None, *, cuda: bool | None = None):
    """The training configuration (a TrainConfig) of a round: the method's config file (the GPU
    preset's on a CUDA host, see round_preset), then Round.config. Raises ValueError for an
    unknown method or setting."""
    from ml.api import train_config

    if method not in METHOD_CONFIGS:
        raise ValueError(f"method {method!r} does not train; choose from {sorted(METHOD_CONFIGS)}")
    if round_preset(round_config, cuda=cuda) == "gpu":
        head = GPU_METHOD_CONFIGS[method]
        filename = GPU_CONFIG_FILE
        overrides = [f"{key}={value!r}" for key, value in head.items()]
        overrides += [f"{key}={value!r}" for key, value in _dotted(GPU_ROUND_SETTINGS)]
    else:
        filename, preset = METHOD_CONFIGS[method]
        overrides = [f"{key}={value!r}" for key, value in _dotted(preset)]
    return train_config(filename, overrides + training_overrides(round_config or {}))


def round_model_note(method: str, round_config: Mapping[str, Any] | None = None, *,
                     cuda: bool | None = None) -> dict:
    """{"model": which model judges the round's faces, "why": the reason}, for the round page."""
    round_config = round_config or {}
    cuda = host_has_cuda() if cuda is None else cuda
    is_default = method == default_round_method(cuda=cuda)
    if method == Round.Method.PRETRAINED:
        model = "dlib ResNet face descriptor (pretrained, 128-d)"
        why = ("this host has no GPU, so the first round uses a pretrained model: it embeds the faces in "
               "minutes and, never having seen these labels, cannot have memorised a wrong one"
               if not cuda and is_default else
               "chosen when the round was started: a model that never saw these labels cannot have "
               "memorised a wrong one")
        return {"model": model, "why": why}
    if method == Round.Method.EMBEDDINGS:
        name = os.path.basename(str(round_config.get("embeddings", "")))
        return {"model": f"user-supplied embeddings ({name})", "why": "given when the round was started"}
    config = round_train_config(method, round_config, cuda=cuda)
    size = config.data.transform.get("size") if isinstance(config.data.transform, Mapping) else None
    preset = round_preset(round_config, cuda=cuda)
    amp = ", AMP, channels-last" if preset == "gpu" and config.amp else ""
    model = (f"{config.backbone} with a {config.head} head trained on this dataset's labels "
             f"({size}x{size} px{amp}, {preset.upper()} preset)")
    if preset == "gpu" and "preset" not in round_config:
        why = "this host has a CUDA GPU, so the round trains the GPU preset"
        why += " (the default method on this host)" if is_default else ""
    elif cuda:
        why = "the round's configuration chose the CPU preset"
    else:
        why = "chosen when the round was started; this host has no GPU, so it trains the CPU preset"
    return {"model": model, "why": why}


def round_mining_config(round_config: Mapping[str, Any]):
    """The MiningConfig of Round.config's "mining" object (thresholds; missing ones calibrate)."""
    from ml.api import MiningConfig

    mining = round_config.get("mining", {})
    if not isinstance(mining, Mapping):
        raise ValueError("config 'mining' must be an object of mining settings")
    _check_setting_types(mining, MiningConfig, "mining.")
    try:
        return MiningConfig(**mining)
    except TypeError as exc:  # an unknown keyword
        raise ValueError(f"config 'mining': {exc}") from None


# What each kind of setting must be, as the message says it. JSON has no int/float split, so a
# whole number serves where a number is asked for; true/false never serve as numbers.
_KINDS = {
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    bool: ("true or false", lambda v: isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
    dict: ("an object", lambda v: isinstance(v, Mapping)),
}
_SIZE = ("an integer, a pair of integers or null",
         lambda v: v is None or _KINDS[int][1](v)
         or (isinstance(v, list) and len(v) == 2 and all(_KINDS[int][1](x) for x in v)))
# data.transform is a free dict in TrainConfig; these are the options ml.data.transforms reads.
_TRANSFORM_KINDS = {"crop": _SIZE, "size": _SIZE, "flip": _KINDS[bool]}


def _kind_of(hint) -> tuple[str, Any] | None:
    """(description, check) for a TrainConfig field's type, or None when not checked here."""
    args = typing.get_args(hint)
    if type(None) in args and len(args) == 2:
        inner = _kind_of(next(a for a in args if a is not type(None)))
        if inner is None:
            return None
        return f"{inner[0]} or null", lambda v, check=inner[1]: v is None or check(v)
    return _KINDS.get(hint)


def _check_setting_types(values: Mapping[str, Any], cls, prefix: str = "") -> None:
    """Each training setting of Round.config has its TrainConfig field's type (load_config takes
    any literal, and a string epochs fails only in the worker, or as a TypeError here). Unknown
    keys are left to load_config, which names them."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        name = f"{prefix}{key}"
        hint = hints.get(key)
        if hint is None:
            continue
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ValueError(f"config {name!r} must be an object of settings, not {value!r}")
            _check_setting_types(value, hint, f"{name}.")
            continue
        kind = _kind_of(hint)
        if kind is not None and not kind[1](value):
            raise ValueError(f"config {name!r} must be {kind[0]}, not {value!r}")
        if name == "data.transform":
            for option, (what, check) in _TRANSFORM_KINDS.items():
                if option in value and not check(value[option]):
                    raise ValueError(f"config '{name}.{option}' must be {what}, not {value[option]!r}")


def training_setting_types_check(round_config: Mapping[str, Any]) -> None:
    """Raises ValueError naming the first training setting of the wrong type."""
    from ml.api import TrainConfig

    _check_setting_types({k: v for k, v in round_config.items() if k not in ROUND_KEYS}, TrainConfig)


def clean_round_config(method: str, round_config: Mapping[str, Any] | None) -> dict:
    """Round.config checked, before anything is queued, for what the worker would fail on;
    returned with file paths made absolute (the worker runs elsewhere). Raises ValueError."""
    round_config = {} if round_config is None else round_config
    if not isinstance(round_config, Mapping):
        raise ValueError("the round configuration must be a JSON object")
    round_config = json.loads(json.dumps(round_config))  # stored as JSON: it must be JSON
    round_mining_config(round_config)
    if method == Round.Method.PRETRAINED:
        unknown = set(round_config) - {"mining"}
        if unknown:
            raise ValueError(f"method 'pretrained' takes only mining settings, not {sorted(unknown)}")
        return round_config
    if method == Round.Method.EMBEDDINGS:
        unknown = set(round_config) - {"embeddings", "norms", "paths", "mining"}
        if unknown:
            raise ValueError("method 'embeddings' takes only embeddings, norms, paths and mining, "
                             f"not {sorted(unknown)}")
        if "embeddings" not in round_config:
            raise ValueError("method 'embeddings' needs config {'embeddings': '<.npz with paths and embeddings, "
                             "or .npy>'}")
        for key in ("embeddings", "norms", "paths"):
            if key in round_config:
                if not os.path.isfile(str(round_config[key])):
                    raise ValueError(f"{key}: {round_config[key]!r} is not a file")
                round_config[key] = os.path.abspath(str(round_config[key]))
        from ml.api import check_embeddings_file

        check_embeddings_file(round_config["embeddings"], round_config.get("paths"))
        return round_config
    round_preset(round_config, cuda=False)  # a bad "preset" fails here, on any host
    training_setting_types_check(round_config)
    try:
        train_config = round_train_config(method, round_config)
    except TypeError as exc:  # a value of the right type the config still cannot use
        raise ValueError(f"config: {exc}") from None
    if train_config.stop_at_step is not None:
        raise ValueError("stop_at_step would end training early: a round needs a complete run")
    return round_config
