"""The training engine: one network (or two Co-Mining peers), config-driven, exactly resumable.

A run lives in its own folder:
    config.json        the configuration it runs with
    checkpoints/       step_<global step>.pt, the newest `keep_checkpoints` of them
    metrics.jsonl      one line per report (every log_every steps and at each epoch's end)
    metrics.json       the summary, written when the run ends (also when interrupted)
    train.log          the log
    stats.npz          per-sample statistics (ml/train/stats.py), after a completed run
    prototypes.json    self-learning prototypes per identity, when self-learning ran

Exact resume. A run killed after a checkpoint and resumed ends with bit-identical weights to an
unbroken run on the CPU (tested; on GPUs, up to the non-determinism of their kernels). What makes it
so: the data order and the flips are pure functions of (seed, epoch) (ml/train/distributed.py) and
are independent of DataLoader workers, so this holds for any num_workers; the batches already done
in the interrupted epoch are skipped without being loaded; the learning rate is a function of the
global step; the checkpoint holds the model, head (with buffers such as RobustFace's φ), optimizer,
schedule, grad scaler, counters, self-learning labels, last-epoch records and the torch, numpy and
Python RNG states, which are restored last. DataLoaders get private generators, so they never draw
from the global torch RNG. Changing the batch size or the number of processes between the run and
its resume is refused: the epoch would no longer split into the same steps.

Distributed (torchrun): every process builds the same networks from the same seed, each wrapped in
DDP; rank r trains on its shard of the common order; only rank 0 writes files, between barriers.

Several sources: when the training data says which source each sample comes from (`sources`) and
its classes span two or more, the network gets one head per source over a shared backbone
(ml/train/multihead.py); with one source it is exactly the single head. Co-Mining and
self-learning run unchanged on top of it (their losses read the heads' global logits).
"""
from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ml.data.dataset import FaceDataset, collate_faces
from ml.data.label_overrides import TrainingSubset, select_with_overrides
from ml.data.transforms import build_transform
from ml.heads.factory import build_head
from ml.models.factory import build_backbone
from ml.train import checkpoint as ckpt
from ml.train import selflearn
from ml.train.comining import comining_losses, drop_rate
from ml.train.config import TrainConfig, save_config
from ml.train.multihead import MultiSourceHead, plan_heads
from ml.train.schedule import StepSchedule
from ml.train.distributed import (
    DistContext,
    EpochBatchSampler,
    FlipKeyed,
    all_sum_ints,
    barrier,
    broadcast_from_main,
    gather_rows,
    init_distributed,
    pick_device,
    positions_for_rank,
    steps_per_epoch,
)
from ml.train.stats import (
    STATS_FILE,
    SampleRecorder,
    band_margins,
    batch_stats,
    eval_loader,
    eval_mode,
    evaluate_samples,
    save_stats,
)

log = logging.getLogger("ml.train")
ProgressFn = Callable[[dict], None]
CHECKPOINT_FORMAT = 1


# -- data -----------------------------------------------------------------------------------------

@dataclass
class TrainingData:
    """A map-style dataset addressed by *position* 0..P-1, whose items carry their dataset index,
    with each position's training label and dataset index."""

    dataset: Dataset
    labels: np.ndarray
    indices: np.ndarray
    dataset_size: int
    num_classes: int
    class_names: list[str] | None = None
    sources: np.ndarray | None = None  # per position: its source id, None for one source

    @classmethod
    def wrap(cls, dataset: Dataset) -> "TrainingData":
        """From a FaceDataset, a TrainingSubset, or any dataset with `labels` (and optionally
        `num_classes`, and `sources`: a source id per item, for one head per source) whose items
        are (image | None, label, index)."""
        sources = getattr(dataset, "sources", None)
        sources = None if sources is None else np.asarray(sources)
        if isinstance(dataset, TrainingSubset):
            return cls(dataset, np.asarray(dataset.labels), np.asarray(dataset.indices), len(dataset.dataset),
                       int(dataset.selection.num_classes), dataset.dataset.class_names, sources)
        labels = np.asarray(dataset.labels)
        num_classes = int(getattr(dataset, "num_classes", int(labels.max()) + 1))
        return cls(dataset, labels, np.arange(len(dataset)), len(dataset), num_classes,
                   getattr(dataset, "class_names", None), sources)

    def labels_by_index(self) -> np.ndarray:
        out = np.full(self.dataset_size, -1, dtype=np.int64)
        out[self.indices] = self.labels
        return out


def build_training_data(config: TrainConfig) -> TrainingData:
    """The dataset the config names, with the label overrides of a cleaning round applied.
    Its transform never flips: flips come from the sampler (see distributed.py)."""
    transform = build_transform(config.data.transform, train=False)
    kind, path = config.data.kind, config.data.path
    if not path:
        raise ValueError("no training data: set data.path (--data-folder, --data-list or --data-rec)")
    if kind == "folder":
        dataset = FaceDataset.from_folder(path, transform=transform)
    elif kind == "list":
        dataset = FaceDataset.from_list(path, config.data.root, transform=transform)
    else:
        dataset = FaceDataset.from_recordio(path, transform=transform)
    if len(dataset) == 0:
        raise ValueError(f"no images found in {path}")
    if config.data.labels:
        return TrainingData.wrap(TrainingSubset(dataset, select_with_overrides(dataset, config.data.labels)))
    return TrainingData.wrap(dataset)


# -- networks -------------------------------------------------------------------------------------

class FaceNet(nn.Module):
    """Backbone and margin head as one module, so that one DDP wrapper synchronises both.

    forward returns (embeddings, logits, the head's last_stats, logits for `corrected` labels).
    The corrected-label logits are computed with the head in eval mode, so that heads with running
    statistics (AdaFace, CurricularFace, RobustFace) update them once per batch, from the given labels.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: torch.Tensor, labels: torch.Tensor, corrected: torch.Tensor | None = None):
        embeddings = self.backbone(images)
        logits = self.head(embeddings.float(), labels)
        stats = dict(self.head.last_stats)
        corrected_logits = None
        if corrected is not None:
            with eval_mode(self.head):
                corrected_logits = self.head(embeddings.float(), corrected)
        return embeddings, logits, stats, corrected_logits


def backbone_kwargs(config: TrainConfig) -> dict:
    """The backbone's kwargs; its input size follows the transform's output size unless set."""
    kwargs = dict(config.backbone_kwargs)
    size = config.data.transform.get("size")
    if "input_size" not in kwargs and size is not None:
        height, width = (size, size) if isinstance(size, int) else size
        if height != width:
            raise ValueError("the backbones take square inputs: data.transform.size must be square")
        kwargs["input_size"] = int(height)
    return kwargs


def build_network(config: TrainConfig, num_classes: int, seed: int, class_head: np.ndarray | None = None) -> FaceNet:
    """class_head: the head of each class (ml/train/multihead.py) for one head per source; None
    for the single head over every class."""
    torch.manual_seed(seed)
    backbone = build_backbone(config.backbone, **backbone_kwargs(config))
    if class_head is None:
        head = build_head(config.head, backbone.embedding_dim, num_classes, **config.head_kwargs)
    else:
        sizes = np.bincount(np.asarray(class_head), minlength=int(np.max(class_head)) + 1)
        head = MultiSourceHead([build_head(config.head, backbone.embedding_dim, int(n), **config.head_kwargs)
                                for n in sizes], class_head)
    return FaceNet(backbone, head)


def build_optimizer(config: TrainConfig, parameters) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision (always on the CPU)."""
    if not config.amp or device.type != "cuda":
        return None
    if config.amp_dtype == "bf16" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def load_trained_network(path: str | Path, *, network: int = 0, device: str | torch.device = "cpu"):
    """(backbone, head, config) from a checkpoint file or a run folder (its latest checkpoint)."""
    path = Path(path)
    if path.is_dir():
        found = ckpt.latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint in {path / ckpt.CHECKPOINT_DIR}")
        path = found
    state = ckpt.load_checkpoint(path)
    config = TrainConfig.from_dict(state["config"])
    class_head = state.get("class_head")
    with torch.random.fork_rng(devices=[]):  # building seeds torch: leave the caller's RNG alone
        net = build_network(config, int(state["num_classes"]), config.seed,
                            None if class_head is None else class_head.numpy())
    net.backbone.load_state_dict(state["networks"][network]["backbone"])
    net.head.load_state_dict(state["networks"][network]["head"])
    net.to(device).eval()
    return net.backbone, net.head, config


# -- the trainer ----------------------------------------------------------------------------------

@dataclass
class TrainResult:
    run_dir: Path
    global_step: int
    epochs_completed: int
    interrupted: bool
    checkpoint: Path | None
    stats_path: Path | None
    metrics: dict = field(default_factory=dict)


class Trainer:
    def __init__(self, config: TrainConfig, run_dir: str | Path, *, data: Dataset | TrainingData | None = None,
                 ctx: DistContext | None = None, progress: ProgressFn | None = None) -> None:
        self.config = config.validate()
        self.run_dir = Path(run_dir)
        self.ctx = ctx if ctx is not None else DistContext(device=pick_device(config.device))
        self.device = self.ctx.device
        self.progress_fn = progress
        _seed_everything(config.seed)
        if isinstance(data, TrainingData):
            self.data = data
        else:
            self.data = TrainingData.wrap(data) if data is not None else build_training_data(config)
        if self.data.num_classes < 2:
            raise ValueError("training needs at least two identities")
        self.flip = bool(config.data.transform.get("flip", False))
        self.steps_per_epoch = steps_per_epoch(len(self.data.labels), config.batch_size, self.ctx.world_size,
                                               config.drop_last)
        self.total_steps = self.steps_per_epoch * config.epochs

        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.channels_last = config.channels_last and self.device.type == "cuda"
        peers = 2 if config.method == "comining" else 1
        self.class_head = plan_heads(self.data.labels, self.data.sources, self.data.num_classes)
        # Peers differ only by their initialisation seed.
        self.nets = [build_network(config, self.data.num_classes, config.seed + i, self.class_head)
                     for i in range(peers)]
        for net in self.nets:
            net.to(self.device)
            if self.channels_last:
                net.to(memory_format=torch.channels_last)
        self.models = [self._parallel(net) for net in self.nets]
        _seed_everything(config.seed)

        self.optimizer = build_optimizer(config, [p for net in self.nets for p in net.parameters()])
        warmup = config.warmup_steps
        if config.warmup_epochs > 0:
            warmup = round(config.warmup_epochs * self.steps_per_epoch)
        self.schedule = StepSchedule(self.optimizer, base_lr=config.lr, total_steps=self.total_steps,
                                     warmup_steps=warmup, kind=config.schedule, power=config.poly_power,
                                     min_lr=config.min_lr)
        self.amp_dtype = amp_dtype(config, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        self.epoch = 0  # epochs completed
        self.step_in_epoch = 0  # batches of the current epoch completed
        self.global_step = 0
        self.skipped_images = 0
        self.elapsed_before = 0.0  # training seconds of the run before this process resumed it
        self.recorder: SampleRecorder | None = None
        self.corrected: torch.Tensor | None = None  # self-learning label per dataset index, -1 = none
        self.prototypes: torch.Tensor | None = None
        self.selflearn_epoch = -1
        self._last_saved_step: int | None = None
        self._log_handler: logging.Handler | None = None
        self._reset_window()

    # -- set-up ---------------------------------------------------------------------------------

    def _parallel(self, net: FaceNet) -> nn.Module:
        if not self.ctx.distributed:
            return net
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # With a head per source, a rank's batch may hold no sample of some head: its weights then
        # get no gradient there, which DDP must be told to expect.
        return DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=self.class_head is not None)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _prepare_run_dir(self, resume: bool) -> None:
        existing = ckpt.latest_checkpoint(self.run_dir)
        if existing is not None and not resume:
            raise FileExistsError(f"{self.run_dir} already holds checkpoints: resume it or use a new run folder")
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, self.run_dir / "config.json")
            self._log_handler = logging.FileHandler(self.run_dir / "train.log", encoding="utf-8")
            self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(self._log_handler)
            log.setLevel(logging.INFO)
        barrier(self.ctx)
        if existing is not None:
            self._load(existing)
            if self.ctx.is_main:
                _truncate_metrics(self.run_dir / "metrics.jsonl", self.global_step)
            self._info(f"resumed from {existing.name}: epoch {self.epoch}, step {self.global_step}/{self.total_steps}")
        else:
            self._info(f"training {self.config.backbone} + {self.config.head} ({self.config.method}) on "
                       f"{len(self.data.labels)} images, {self.data.num_classes} identities, "
                       f"{self.total_steps} steps, {self.ctx.world_size} process(es) on {self.device}")
            if self.class_head is not None:
                self._info(f"one head per source: {np.bincount(self.class_head).tolist()} identities")

    def _close_log(self) -> None:
        if self._log_handler is not None:
            log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def _info(self, message: str) -> None:
        if self.ctx.is_main:
            log.info(message)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, resume: bool = False) -> TrainResult:
        """Train to the end (or to stop_at_step), resuming from the run folder's latest checkpoint
        when `resume`. An exception from the progress callback stops the run where it is."""
        try:
            self._prepare_run_dir(resume)
            self._started = time.monotonic()
            self._start_step = self.global_step
            stop = self.config.stop_at_step
            if stop is not None and self.global_step >= stop:
                return self._finish(interrupted=self.global_step < self.total_steps)
            while self.epoch < self.config.epochs:
                if self._train_epoch():
                    return self._finish(interrupted=True)
            return self._finish(interrupted=False)
        finally:
            self._close_log()

    def _train_epoch(self) -> bool:
        """Train the rest of the current epoch; True when stop_at_step was reached."""
        epoch = self.epoch
        self._begin_epoch(epoch)
        sampler = EpochBatchSampler(
            len(self.data.labels), self.config.batch_size, seed=self.config.seed, epoch=epoch,
            rank=self.ctx.rank, world_size=self.ctx.world_size, drop_last=self.config.drop_last,
            flip=self.flip, start_batch=self.step_in_epoch,
        )
        loader = DataLoader(
            FlipKeyed(self.data.dataset), batch_sampler=sampler, num_workers=self.config.num_workers,
            collate_fn=collate_faces, pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.config.seed * 100_003 + epoch),
        )
        for batch in loader:
            lr = self.optimizer.param_groups[0]["lr"]
            loss, kept = self._train_step(batch, epoch)
            self.global_step += 1
            self.step_in_epoch += 1
            self.schedule.step()
            end_of_epoch = self.step_in_epoch == self.steps_per_epoch
            if end_of_epoch:
                self.epoch, self.step_in_epoch = epoch + 1, 0
            stop = self.config.stop_at_step is not None and self.global_step >= self.config.stop_at_step
            if self.global_step % self.config.checkpoint_every == 0 or stop:
                self._save_checkpoint()
            self._report(loss, kept, epoch, end_of_epoch, lr)
            if stop:
                self._info(f"stopped at step {self.global_step} (stop_at_step)")
                return True
        return False

    def _begin_epoch(self, epoch: int) -> None:
        if epoch == self.config.epochs - 1 and self.recorder is None:
            self.recorder = SampleRecorder(self.data.dataset_size)
        sl = self.config.selflearn
        if sl.enabled and epoch >= sl.start_epoch and self.selflearn_epoch != epoch:
            self._relabel(epoch)

    def _train_step(self, batch, epoch: int) -> tuple[torch.Tensor | None, int]:
        kept = len(batch.labels)
        skipped, empty_ranks = all_sum_ints(self.ctx, [len(batch.skipped), int(kept == 0)])
        self.skipped_images += skipped
        if empty_ranks:
            # Every rank must run the same collectives: when any rank has nothing readable, all skip.
            return None, 0
        images = batch.images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = batch.labels.to(self.device, non_blocking=True)
        corrected = None
        if self.corrected is not None and self.config.selflearn.enabled:
            corrected = self.corrected[batch.indices].to(self.device)
            corrected = torch.where(corrected >= 0, corrected, labels)

        with self._autocast():
            outputs = [model(images, labels, corrected) for model in self.models]
        selection = None
        if self.config.method == "comining":
            cm = self.config.comining
            progress = epoch if cm.ramp_by == "epoch" else self.global_step / self.steps_per_epoch
            loss_a, loss_b, selection = comining_losses(
                F.cross_entropy(outputs[0][1], labels, reduction="none"),
                F.cross_entropy(outputs[1][1], labels, reduction="none"),
                drop_rate(progress, cm.r_max, cm.ramp), cm.clean_weight,
            )
            loss = loss_a + loss_b
        elif corrected is not None:
            loss = selflearn.self_learning_loss(outputs[0][1], outputs[0][3], labels, corrected,
                                                self.config.selflearn.alpha).mean()
        else:
            loss = F.cross_entropy(outputs[0][1], labels)

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            for net in self.nets:  # each peer's own gradient norm: one must not throttle the other
                nn.utils.clip_grad_norm_(net.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

        if self.recorder is not None:
            embeddings, logits, head_stats, _ = outputs[0]
            values = batch_stats(self.nets[0].head, embeddings, labels, logits, head_stats)
            if selection is not None:
                values["agreement"] = selection.agreement
            self.recorder.record(batch.indices, values)
        return loss.detach(), kept

    # -- reporting ------------------------------------------------------------------------------

    def _reset_window(self) -> None:
        self._window_loss = None
        self._window_steps = 0
        self._window_samples = 0
        self._window_start = time.monotonic()

    def _report(self, loss: torch.Tensor | None, kept: int, epoch: int, end_of_epoch: bool, lr: float) -> None:
        if loss is not None:
            self._window_loss = loss if self._window_loss is None else self._window_loss + loss
            self._window_steps += 1
        self._window_samples += kept * self.ctx.world_size
        last = self.global_step == self.total_steps
        if not (self.global_step % self.config.log_every == 0 or end_of_epoch or last):
            return
        now = time.monotonic()
        mean_loss = float((self._window_loss / self._window_steps).item()) if self._window_steps else float("nan")
        per_step = (now - self._started) / max(self.global_step - self._start_step, 1)
        record = {
            "stage": "train",
            "step": self.global_step,
            "total": self.total_steps,
            "epoch": epoch + 1,
            "epochs": self.config.epochs,
            "loss": mean_loss,
            "lr": lr,
            "samples_per_s": self._window_samples / max(now - self._window_start, 1e-9),
            "eta_s": per_step * (self.total_steps - self.global_step),
            "skipped_images": self.skipped_images,
        }
        self._reset_window()
        if self.ctx.is_main:
            _append_jsonl(self.run_dir / "metrics.jsonl", record)
            log.info("epoch %d/%d step %d/%d loss %.4f lr %.5f %.1f samples/s eta %.0fs%s",
                     record["epoch"], record["epochs"], record["step"], record["total"], record["loss"],
                     record["lr"], record["samples_per_s"], record["eta_s"],
                     f" skipped {self.skipped_images}" if self.skipped_images else "")
        self._progress(record)

    def _progress(self, record: dict) -> None:
        if self.progress_fn is not None:
            self.progress_fn(record)

    # -- self-learning --------------------------------------------------------------------------

    @torch.no_grad()
    def _features(self, net: FaceNet, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode, unflipped features of every training position (all ranks get all rows),
        and which positions were readable."""
        count = len(self.data.labels)
        position_of = np.full(self.data.dataset_size, -1, dtype=np.int64)
        position_of[self.data.indices] = np.arange(count)
        loader = eval_loader(FlipKeyed(self.data.dataset), positions_for_rank(count, self.ctx),
                             self.config.stats_batch_size, self.config.num_workers, self.device.type == "cuda")
        rows, chunks = [], []
        with eval_mode(net):
            for done, batch in enumerate(loader, 1):
                if len(batch.labels):
                    with self._autocast():
                        z = net.backbone(batch.images.to(self.device, non_blocking=True))
                    chunks.append(z.float().cpu())
                    rows.append(torch.from_numpy(position_of[batch.indices.numpy()]))
                self._progress({"stage": stage, "step": done, "total": len(loader), "epoch": self.epoch + 1})
        dim = net.backbone.embedding_dim
        rows_t = torch.cat(rows) if rows else torch.empty(0, dtype=torch.long)
        feats = torch.cat(chunks) if chunks else torch.empty((0, dim))
        features = gather_rows(self.ctx, rows_t, feats, count)
        readable = gather_rows(self.ctx, rows_t, torch.ones(len(rows_t)), count) > 0
        return features, readable

    def _relabel(self, epoch: int) -> None:
        """Prototypes and corrected labels from the current weights, for this epoch."""
        sl = self.config.selflearn
        self._sync_buffers()
        features, readable = self._features(self.nets[0], "selflearn")
        keep = readable.numpy()
        prototypes = selflearn.find_prototypes(
            features[readable], self.data.labels[keep], self.data.indices[keep], self.data.num_classes,
            samples_per_identity=sl.samples_per_identity, p=sl.prototypes, top_fraction=sl.top_fraction,
            eta_max=sl.eta_max, rng=np.random.default_rng([self.config.seed, epoch, 2]),
        )
        corrected = torch.full((self.data.dataset_size,), -1, dtype=torch.long)
        rows = torch.from_numpy(self.data.indices[keep])
        corrected[rows] = selflearn.corrected_labels(features[readable], prototypes)
        # Rank 0's result everywhere: GPUs need not agree to the last bit on the argmax.
        self.corrected = broadcast_from_main(self.ctx, corrected)
        self.prototypes = broadcast_from_main(self.ctx, prototypes.members)
        self.selflearn_epoch = epoch
        changed = int((self.corrected[rows] != torch.from_numpy(self.data.labels[keep])).sum())
        self._info(f"self-learning before epoch {epoch + 1}: {changed} of {int(keep.sum())} labels corrected")

    # -- checkpoints ----------------------------------------------------------------------------

    def _state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "num_classes": self.data.num_classes,
            "class_head": None if self.class_head is None else torch.from_numpy(self.class_head),
            "dataset_size": self.data.dataset_size,
            "networks": [{"backbone": n.backbone.state_dict(), "head": n.head.state_dict()} for n in self.nets],
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.ctx.world_size,
            "skipped_images": self.skipped_images,
            "elapsed_s": self._elapsed(),
            "recorder": self.recorder.state_dict() if self.recorder is not None else None,
            "selflearn": None if self.corrected is None else {
                "epoch": self.selflearn_epoch, "corrected": self.corrected, "prototypes": self.prototypes,
            },
            "rng": ckpt.capture_rng_state(),
        }

    def _save_checkpoint(self) -> None:
        if self.recorder is not None:
            self.recorder.gather(self.ctx)  # rank 0 writes: it must hold every rank's records
        barrier(self.ctx)
        if self.ctx.is_main:
            path = ckpt.save_checkpoint(self._state(), self.run_dir, self.global_step, self.config.keep_checkpoints)
            log.info("checkpoint %s", path.name)
        barrier(self.ctx)
        self._last_saved_step = self.global_step

    def _load(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path)
        if state["steps_per_epoch"] != self.steps_per_epoch or len(state["networks"]) != len(self.nets):
            raise ValueError(
                f"{path} was written with {state['steps_per_epoch']} steps per epoch and "
                f"{len(state['networks'])} network(s); this run has {self.steps_per_epoch} and {len(self.nets)}: "
                "the dataset, batch size, number of processes or method changed"
            )
        saved_heads = state.get("class_head")  # absent in checkpoints older than heads per source
        same_heads = (saved_heads is None and self.class_head is None) or (
            saved_heads is not None and self.class_head is not None
            and np.array_equal(saved_heads.numpy(), self.class_head))
        if not same_heads:
            raise ValueError(f"{path} was written with other heads per source than this run's data gives: "
                             "the dataset's sources changed")
        for net, saved in zip(self.nets, state["networks"]):
            net.backbone.load_state_dict(saved["backbone"])
            net.head.load_state_dict(saved["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.skipped_images = int(state["skipped_images"])
        self.elapsed_before = float(state["elapsed_s"])
        self._last_saved_step = self.global_step
        if state["recorder"] is not None:
            self.recorder = SampleRecorder(self.data.dataset_size)
            self.recorder.load_state_dict(state["recorder"])
        if state["selflearn"] is not None:
            self.selflearn_epoch = int(state["selflearn"]["epoch"])
            self.corrected = state["selflearn"]["corrected"]
            self.prototypes = state["selflearn"]["prototypes"]
        ckpt.restore_rng_state(state["rng"])

    def _elapsed(self) -> float:
        started = getattr(self, "_started", None)
        return self.elapsed_before + (time.monotonic() - started if started is not None else 0.0)

    # -- the end --------------------------------------------------------------------------------

    def _sync_buffers(self) -> None:
        """Rank 0's buffers (BatchNorm running statistics, head EMAs) on every rank. DDP copies
        them at the start of each forward, so after the last one each rank holds its own; an eval
        pass or the end of training needs them to agree."""
        if self.ctx.distributed:
            for net in self.nets:
                for buffer in net.buffers():
                    dist.broadcast(buffer, src=0)

    def _finish(self, interrupted: bool) -> TrainResult:
        self._sync_buffers()
        if self._last_saved_step != self.global_step:
            self._save_checkpoint()
        stats_path = None
        unreadable = None
        if not interrupted:
            stats_path, unreadable = self._write_stats()
        elapsed = self._elapsed()
        trained_steps = self.global_step - self._start_step
        metrics = {
            "completed": not interrupted,
            "global_step": self.global_step,
            "total_steps": self.total_steps,
            "epochs_completed": self.epoch,
            "skipped_images": self.skipped_images,
            "unreadable_images": unreadable,
            "elapsed_s": elapsed,
            "samples_per_s": trained_steps * self.config.batch_size * self.ctx.world_size
            / max(time.monotonic() - self._started, 1e-9),
            "world_size": self.ctx.world_size,
            "device": str(self.device),
            "images": int(len(self.data.labels)),
            "identities": self.data.num_classes,
        }
        if self.ctx.is_main:
            (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
            self._info(f"{'interrupted' if interrupted else 'finished'} at step {self.global_step}")
        barrier(self.ctx)
        return TrainResult(self.run_dir, self.global_step, self.epoch, interrupted,
                           ckpt.latest_checkpoint(self.run_dir), stats_path, metrics)

    def _write_stats(self) -> tuple[Path | None, int | None]:
        net = self.nets[0]
        evaluated, unreadable = None, None
        if self.config.stats_pass:
            count = len(self.data.labels)
            evaluated, unreadable_local = evaluate_samples(
                net.backbone, net.head, FlipKeyed(self.data.dataset), positions_for_rank(count, self.ctx),
                self.data.dataset_size, ctx=self.ctx, batch_size=self.config.stats_batch_size,
                num_workers=self.config.num_workers, autocast=self._autocast,
                progress=lambda done, total: self._progress(
                    {"stage": "stats", "step": done, "total": total, "epoch": self.epoch}),
            )
            unreadable = all_sum_ints(self.ctx, [unreadable_local])[0]
        if self.recorder is not None:
            self.recorder.gather(self.ctx)
        path = None
        if self.ctx.is_main:
            extra = {}
            if self.class_head is not None:
                extra["class_head"] = self.class_head
            if self.corrected is not None:
                extra["corrected_label"] = self.corrected.numpy()
            path = save_stats(self.run_dir / STATS_FILE, evaluated, self.recorder, self.data.labels_by_index(),
                              band_margins(net.head), extra)
            if self.prototypes is not None:
                selflearn.write_prototypes(self.run_dir, self.prototypes, self.selflearn_epoch + 1,
                                           self.data.class_names)
        return path, unreadable


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, global_step: int) -> None:
    """Drop report lines past the checkpoint a run resumes from: they are about to be redone."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= global_step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def train(config: TrainConfig, run_dir: str | Path, *, dataset: Dataset | TrainingData | None = None,
          progress: ProgressFn | None = None, resume: bool = False) -> TrainResult:
    """Train per `config` into `run_dir`: the entry point for the CLI, torchrun and the worker.

    Under torchrun the process group is set up from the environment (and left for the caller to
    tear down). `progress` gets dicts with stage ("train", "selflearn" or "stats"), step, total,
    epoch and, for training, loss, lr, samples_per_s, eta_s, skipped_images; it is called on every
    rank, every log_every steps and at each epoch's end. `dataset` overrides config.data.
    """
    ctx = init_distributed(config.device)
    return Trainer(config, run_dir, data=dataset, ctx=ctx, progress=progress).run(resume=resume)
