"""Training configuration: one dataclass, loaded from a Python file, overridden from the command line.

A config file under ml/configs/ defines `config = dict(...)` (or `config = TrainConfig(...)`); nested
sections (data, comining, selflearn) are plain dicts there. `--set key=value` overrides any field,
nested ones with dots (`--set comining.r_max=0.3 --set data.transform.size=32`); values are read as
Python literals where they parse (`0.1`, `True`, `{"crop": None}`) and as strings otherwise, nanoGPT
style. Unknown keys are an error: a misspelt option must not silently do nothing.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("poly", "cosine")
METHODS = ("single", "comining")
DEVICES = ("auto", "cpu", "cuda")
DATA_KINDS = ("folder", "list", "recordio")
AMP_DTYPES = ("bf16", "fp16")


@dataclass
class DataConfig:
    """kind folder: path is root/<identity>/<image>; list: a `path label` file, images relative to
    root (default: the list's folder); recordio: an InsightFace train.rec. `labels`: optional
    override file (`index<TAB>label`, -1 removes) from a cleaning round."""

    kind: str = "folder"
    path: str = ""
    root: str | None = None
    labels: str | None = None
    transform: dict = field(default_factory=lambda: {"crop": None, "size": 112, "flip": True})


@dataclass
class CoMiningConfig:
    """r(T) = r_max * min(T / ramp, 1), T in epochs (fractional when ramp_by == "step")."""

    r_max: float = 0.2
    ramp: float = 2.0
    ramp_by: str = "epoch"
    clean_weight: float = 2.0


@dataclass
class SelfLearnConfig:
    """Deep Self-Learning: from `start_epoch` on, every epoch re-derives prototypes and corrected
    labels and trains on (1 - alpha) CE(y) + alpha CE(y_hat)."""

    enabled: bool = False
    start_epoch: int = 1
    samples_per_identity: int = 64
    prototypes: int = 3
    alpha: float = 0.5
    top_fraction: float = 0.4
    eta_max: float = 0.95


@dataclass
class TrainConfig:
    backbone: str = "cpu_small"
    backbone_kwargs: dict = field(default_factory=dict)
    head: str = "arcface"
    head_kwargs: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # Warm-up in steps, or in epochs when warmup_epochs > 0 (then it wins).
    warmup_steps: int = 0
    warmup_epochs: float = 0.0
    schedule: str = "poly"
    poly_power: float = 2.0
    min_lr: float = 0.0
    epochs: int = 10
    # Interrupt (with a checkpoint) once this many steps are done; the schedule still spans `epochs`.
    stop_at_step: int | None = None
    batch_size: int = 128  # per process
    drop_last: bool = True
    grad_clip: float = 5.0  # max global gradient norm; 0 turns clipping off

    amp: bool = False  # CUDA only; ignored on the CPU
    amp_dtype: str = "bf16"  # bf16 where the GPU has it, else fp16 with a GradScaler
    channels_last: bool = True  # CUDA only

    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 50
    seed: int = 0
    num_workers: int = 4
    device: str = "auto"

    method: str = "single"
    comining: CoMiningConfig = field(default_factory=CoMiningConfig)
    selflearn: SelfLearnConfig = field(default_factory=SelfLearnConfig)
    # The per-sample statistics pass (stats.npz) after training.
    stats_pass: bool = True
    stats_batch_size: int = 256
    # Cleaning rounds train one model per fold and judge each face with the model that never
    # saw its label (ml.crossfit); plain `ml train` ignores it.
    folds: int = 2

    def validate(self) -> "TrainConfig":
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("method", self.method, METHODS)
        if not isinstance(self.folds, int) or self.folds < 2:
            raise ValueError(f"folds must be an integer >= 2 (cross-fitted judging), got {self.folds!r}")
        _choice("device", self.device, DEVICES)
        _choice("amp_dtype", self.amp_dtype, AMP_DTYPES)
        _choice("data.kind", self.data.kind, DATA_KINDS)
        _choice("comining.ramp_by", self.comining.ramp_by, ("epoch", "step"))
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be at least 1")
        if not 0.0 <= self.comining.r_max < 1.0:
            raise ValueError("comining.r_max must be in [0, 1)")
        if not 0.0 <= self.selflearn.alpha <= 1.0:
            raise ValueError("selflearn.alpha must be in [0, 1]")
        if self.method == "comining" and self.selflearn.enabled:
            raise ValueError("self-learning is implemented for method 'single' only")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        return _build(cls, values, "").validate()


def _choice(name: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


def _build(cls, values: Mapping[str, Any], prefix: str):
    """A (nested) dataclass from a dict; unknown keys raise."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(prefix + k for k in unknown)}")
    kwargs = {}
    for name, value in values.items():
        nested = _nested_type(cls, name)
        if nested is not None and isinstance(value, Mapping):
            value = _build(nested, value, f"{prefix}{name}.")
        kwargs[name] = value
    return cls(**kwargs)


def _nested_type(cls, name: str):
    default = next(f for f in dataclasses.fields(cls) if f.name == name)
    if default.default_factory is not dataclasses.MISSING:
        sample = default.default_factory()
        if dataclasses.is_dataclass(sample):
            return type(sample)
    return None


def parse_value(text: str) -> Any:
    """A Python literal where `text` is one, else the string itself (so paths need no quotes)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(values: dict, overrides: Sequence[str]) -> dict:
    """`key=value` strings applied to a (nested) config dict; dotted keys reach into sections."""
    values = json.loads(json.dumps(values))  # a deep copy of plain data
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value")
        target = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                raise ValueError(f"override {key!r}: {part!r} is not a config section")
            target = target[part]
        target[parts[-1]] = parse_value(raw.strip())
    return values


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The config of a Python config file (or the defaults when path is None), with overrides."""
    values = TrainConfig().to_dict()
    if path is not None:
        defined = runpy.run_path(str(path)).get("config")
        if defined is None:
            raise ValueError(f"{path} defines no `config`")
        if isinstance(defined, TrainConfig):
            defined = defined.to_dict()
        values = _merge(values, dict(defined))
    return TrainConfig.from_dict(apply_overrides(values, overrides))


def _merge(base: dict, update: Mapping) -> dict:
    """update over base, section by section (a config file may set only data.path)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
