"""Running a cleaning round: the Celery task on the "rounds" queue, and the pipeline it runs.

claim -> training -> extracting -> mining -> publish, all in RUNS_ROOT/round-<id>:
    faces.npz          the training set frozen at the round's first start (round_data)
    checkpoints/ ...   the trainer's run folder (train.log, metrics.jsonl, stats.npz)
    embeddings/        extract_embeddings' output (resumable)

Reliability: the task is acknowledged late, and the Round row's claim (services.rounds) decides
who works, so a redelivered or duplicated message does nothing while the round is alive. A
worker that dies leaves a checkpoint and a stale heartbeat; rounds_recover(), run when a worker
starts and after each round, queues such rounds again and the next worker resumes them from
their run folder (training from its latest checkpoint, extraction from its last flushed batch).
RUNS_ROOT must therefore be shared by all workers that serve the rounds queue.

The heartbeat runs in its own thread, so a round proves it is alive however long a training
step, the statistics pass or mining takes; the pipeline checks between steps whether the
heartbeat found the round cancelled or taken over, and stops.

ml is imported inside the functions: it loads torch, which processes that only queue rounds
(the web app, the import worker) need not pay for.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.db import connection
from django.utils import timezone

from .models import Round
from .services.round_data import (
    SNAPSHOT_FILE,
    RoundFaces,
    load_round_faces,
    round_face_dataset,
    round_faces_current,
    round_key,
    round_mining_config,
    round_train_config,
    save_round_faces,
)
from .services.rounds import (
    ACTIVE,
    ROUNDS_QUEUE,
    first_stage,
    round_advance,
    round_claim,
    round_fail,
    round_heartbeat,
    round_publish,
    stale_seconds,
)

log = logging.getLogger("reviewapp.rounds")
ProgressFn = Callable[[dict], None]
# Progress keys about the whole round, kept from stage to stage.
ROUND_WIDE_PROGRESS = frozenset({"attempt", "faces", "identities", "resumed_from_step", "unreadable"})


class RoundStopped(Exception):
    """The round was cancelled or taken over by another worker: stop, and leave it alone."""


def run_dir_of(round_id: int) -> Path:
    return Path(settings.RUNS_ROOT) / f"round-{round_id}"


def heartbeat_seconds() -> float:
    return min(2.0, stale_seconds() / 4)


# -- the heartbeat ---------------------------------------------------------------------------------

class Heartbeat:
    """Writes the latest progress to the round every few seconds from a thread, and remembers
    when the round stopped being this worker's. `check()` raises RoundStopped after that."""

    def __init__(self, round_id: int, worker: str, progress: dict, on_progress: ProgressFn | None = None):
        self.round_id, self.worker = round_id, worker
        self.progress = dict(progress)
        self.on_progress = on_progress
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"round-{round_id}-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def update(self, **values) -> None:
        self.progress = {**self.progress, **values}  # one assignment: the thread sees old or new
        if self.on_progress is not None:
            self.on_progress(self.progress)

    def begin(self, stage: str) -> None:
        """A new stage: the previous one's step counts and rates no longer apply."""
        kept = {k: v for k, v in self.progress.items() if k in ROUND_WIDE_PROGRESS}
        self.progress = {**kept, "stage": stage, "percent": 0.0, "samples_per_s": None, "eta_s": None}
        if self.on_progress is not None:
            self.on_progress(self.progress)

    def check(self) -> None:
        if self._lost.is_set():
            raise RoundStopped

    def _beat(self) -> None:
        try:
            while not self._stop.wait(heartbeat_seconds()):
                try:
                    alive = round_heartbeat(round_id=self.round_id, worker=self.worker, progress=self.progress)
                except Exception:  # a database hiccup: the next beat tries again
                    log.exception("round %s: heartbeat failed", self.round_id)
                    continue
                if not alive:
                    self._lost.set()
                    return
        finally:
            connection.close()  # this thread's own connection


# -- the pipeline ----------------------------------------------------------------------------------

def execute_round(*, round_id: int, worker: str, on_progress: ProgressFn | None = None) -> str:
    """Claim and run a round to its end in this process. Returns what happened: "published",
    "failed", "stopped" (cancelled or taken over) or "not claimed"."""
    round_ = round_claim(round_id=round_id, worker=worker)
    if round_ is None:
        log.info("round %s: not claimed (finished, cancelled or running elsewhere)", round_id)
        return "not claimed"
    log.info("round %s: claimed by %s at %s (attempt %s)", round_id, worker, round_.status,
             round_.progress.get("attempt"))
    heartbeat = Heartbeat(round_id, worker, round_.progress, on_progress)
    try:
        with heartbeat:
            _run(round_, worker, heartbeat)
    except RoundStopped:
        log.info("round %s: stopped, it was cancelled or taken over", round_id)
        return "stopped"
    except Exception as exc:
        log.exception("round %s failed", round_id)
        round_fail(round_id=round_id, worker=worker, error=f"{type(exc).__name__}: {exc}")
        return "failed"
    log.info("round %s: published", round_id)
    return "published"


def _run(round_: Round, worker: str, heartbeat: Heartbeat) -> None:
    from ml.data.transforms import build_transform
    from ml.mining import mine

    run_dir = run_dir_of(round_.pk)
    faces = _training_set(round_, run_dir)
    heartbeat.update(faces=len(faces), identities=faces.num_classes)
    status = round_.status

    def advance(to_status: str) -> None:
        nonlocal status
        heartbeat.begin(to_status)
        if not round_advance(round_id=round_.pk, worker=worker, from_status=status, to_status=to_status,
                             progress=heartbeat.progress):
            raise RoundStopped
        log.info("round %s: %s", round_.pk, to_status)
        status = to_status

    if round_.method == Round.Method.EMBEDDINGS:
        embeddings, norms, stats, readable = _user_embeddings(round_.config, len(faces))
    else:
        config = _loader_workers_allowed(round_train_config(round_.method, round_.config))
        data = round_face_dataset(faces, dataset_id=round_.dataset_id,
                                  transform=build_transform(config.data.transform, train=False))
        if status == Round.Status.TRAINING:
            _train(config, data, run_dir, heartbeat)
            advance(Round.Status.EXTRACTING)
        if status == Round.Status.EXTRACTING:
            _extract(config, data, run_dir, heartbeat)
            advance(Round.Status.MINING)
        embeddings, norms, stats, readable = _trained_outputs(run_dir, len(faces))

    heartbeat.check()
    heartbeat.update(unreadable=int((~readable).sum()))
    started = time.monotonic()
    mining_config = round_mining_config(round_.config)
    candidates = mine(embeddings=embeddings, labels=faces.labels, stats=stats, norms=norms, active=readable,
                      config=mining_config)
    heartbeat.update(percent=100.0, mining_s=round(time.monotonic() - started, 2))
    heartbeat.check()
    summary = _chart_summary(faces, embeddings, norms, stats, readable, candidates, mining_config)
    published = round_publish(round_id=round_.pk, worker=worker, candidates=candidates,
                              index_to_face=faces.face_ids, class_to_identity=faces.identity_ids,
                              progress=heartbeat.progress, summary=summary)
    if published is None:
        raise RoundStopped
    try:  # the relabel search's identity centres, ready before the first reviewer asks for them
        from .selectors.identities import identity_centres_file
        identity_centres_file(round_=Round.objects.get(pk=round_.pk))
    except Exception:
        log.exception("round %s: identity centres not cached; the first search computes them", round_.pk)


def _chart_summary(faces: RoundFaces, embeddings, norms, stats, readable, candidates, mining_config) -> dict:
    """The round page's chart data (ml.mining.summary). Charts are a view on the flags, not
    the flags: when they cannot be computed the round still publishes, saying why."""
    from ml.mining.summary import round_summary

    try:
        return round_summary(labels=faces.labels, stats=stats, embeddings=embeddings, norms=norms, active=readable,
                             candidates=candidates, margin=mining_config.margin,
                             margin_m1=mining_config.margin_m1)
    except Exception as exc:
        log.exception("round summary failed")
        return {"error": f"{type(exc).__name__}: {exc}"}


def _training_set(round_: Round, run_dir: Path) -> RoundFaces:
    """The round's frozen training set, made from the current labels on its first start.
    A run folder that belongs to no earlier attempt of this round is a leftover: cleared."""
    key = round_key(round_)
    faces = load_round_faces(run_dir / SNAPSHOT_FILE, round_key=key)
    if faces is not None:
        return faces
    if round_.status != first_stage(round_.method):
        raise RuntimeError(f"{run_dir} does not hold this round's files, so it cannot resume at "
                           f"{round_.status}; RUNS_ROOT must be shared by the round workers")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    faces = round_faces_current(dataset_id=round_.dataset_id)
    save_round_faces(faces, run_dir / SNAPSHOT_FILE, round_key=key)
    return faces


def _loader_workers_allowed(config):
    """A prefork pool's child is a daemon and may not start DataLoader workers. Round workers
    should run `--pool solo` (scripts/run.sh does); under prefork the round still runs, with
    the images decoded in the training process itself, slower."""
    if config.num_workers and multiprocessing.current_process().daemon:
        log.warning("this worker's pool process is a daemon: loading images without DataLoader workers; "
                    "run the rounds queue with `celery worker --pool solo` for full speed")
        config = dataclasses.replace(config, num_workers=0)
    return config


def _report(heartbeat: Heartbeat, done: int, total: int, samples_per_s: float | None, eta_s: float | None,
            **extra) -> None:
    heartbeat.update(percent=round(100.0 * done / max(total, 1), 1), step=done, total=total,
                     samples_per_s=None if samples_per_s is None else round(samples_per_s, 2),
                     eta_s=None if eta_s is None else round(eta_s, 1), **extra)


def _train(config, data, run_dir: Path, heartbeat: Heartbeat) -> None:
    from ml.train.checkpoint import latest_checkpoint, load_checkpoint
    from ml.train.trainer import train

    existing = latest_checkpoint(run_dir)
    if existing is not None:
        step = int(load_checkpoint(existing)["global_step"])
        heartbeat.update(resumed_from_step=step)
        log.info("round in %s: resuming training from step %s", run_dir, step)

    def progress(record: dict) -> None:
        heartbeat.check()  # raising here stops the trainer where it is
        _report(heartbeat, int(record["step"]), int(record["total"]), record.get("samples_per_s"),
                record.get("eta_s"), substage=record.get("stage"), epoch=record.get("epoch"))

    result = train(config, run_dir, dataset=data, progress=progress, resume=True)
    if result.interrupted or result.stats_path is None:
        raise RuntimeError("training stopped before its end (stop_at_step?), so there are no statistics to mine")


def _extract(config, data, run_dir: Path, heartbeat: Heartbeat) -> None:
    from ml.embed import extract_embeddings
    from ml.train.distributed import pick_device
    from ml.train.trainer import load_trained_network

    backbone, _, _ = load_trained_network(run_dir, device=pick_device(config.device))
    baseline: list[tuple[float, int]] = []  # (time, rows done) at the first report of this process

    def progress(done: int, total: int) -> None:
        heartbeat.check()
        now = time.monotonic()
        baseline[:] = baseline or [(now, done)]
        seconds, rows = now - baseline[0][0], done - baseline[0][1]
        rate = rows / seconds if seconds > 0 and rows > 0 else None
        _report(heartbeat, done, total, rate, (total - done) / rate if rate else None)

    extract_embeddings(backbone, data, run_dir / "embeddings", batch_size=config.stats_batch_size, flip=True,
                       num_workers=config.num_workers, resume=True, progress=progress)


def _trained_outputs(run_dir: Path, count: int):
    from ml.embed import EMBEDDINGS_FILE, NORMS_FILE, UNREADABLE_FILE
    from ml.train.stats import load_stats

    folder = run_dir / "embeddings"
    embeddings = np.load(folder / EMBEDDINGS_FILE, mmap_mode="r")
    norms = np.load(folder / NORMS_FILE)
    readable = np.ones(count, dtype=bool)
    readable[json.loads((folder / UNREADABLE_FILE).read_text(encoding="utf-8"))] = False
    return embeddings, norms, load_stats(run_dir), readable


def _user_embeddings(config: dict, count: int):
    """The "embeddings" method: rows in face-id order of the active faces."""
    embeddings = np.load(config["embeddings"], mmap_mode="r", allow_pickle=False)
    if embeddings.ndim != 2 or len(embeddings) != count:
        raise ValueError(f"{config['embeddings']} holds {embeddings.shape} embeddings; the dataset has {count} "
                         "active faces (one row each, in face-id order)")
    norms = None
    if config.get("norms"):
        norms = np.load(config["norms"], allow_pickle=False).astype(np.float32).reshape(-1)
        if len(norms) != count:
            raise ValueError(f"{config['norms']} holds {len(norms)} norms for {count} faces")
    readable = np.empty(count, dtype=bool)
    for start in range(0, count, 65_536):  # in slices: the file may be far larger than memory
        readable[start:start + 65_536] = np.isfinite(embeddings[start:start + 65_536]).all(axis=1)
    return embeddings, norms, None, readable


# -- Celery ----------------------------------------------------------------------------------------

def worker_name(hostname: str | None = None) -> str:
    """Unique per process: a restarted worker must not pass for the one that died."""
    return f"{hostname or socket.gethostname()}:{os.getpid()}"


# Both tasks belong on the rounds queue: enqueue_round names it, and so should a route
# (task_routes) for any other caller.
@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_round_task(self, round_id: int) -> str:
    outcome = execute_round(round_id=round_id, worker=worker_name(self.request.hostname))
    if outcome != "not claimed":
        rounds_recover()
    return outcome


@shared_task(ignore_result=True)
def recover_rounds_task() -> int:
    """rounds_recover() as a task, e.g. for a periodic schedule."""
    return rounds_recover()


def enqueue_round(round_id: int, countdown: float | None = None) -> None:
    run_round_task.apply_async(kwargs={"round_id": round_id}, queue=ROUNDS_QUEUE, countdown=countdown)


def rounds_recover() -> int:
    """Queue every unfinished round again, timed for when it becomes claimable: a running
    round when its heartbeat goes stale, a queued one now (its message may have been lost with
    a worker). Copies that find the round alive do nothing. Returns how many were queued."""
    now, stale = timezone.now(), stale_seconds()
    rows = Round.objects.filter(status__in=ACTIVE).values_list("pk", "status", "heartbeat_at")
    queued = 0
    for round_id, status, heartbeat_at in rows:
        wait = 0.0
        if status != Round.Status.QUEUED and heartbeat_at is not None:
            wait = stale - (now - heartbeat_at).total_seconds()
        enqueue_round(round_id, countdown=wait + 1.0 if wait > 0 else None)
        queued += 1
    if queued:
        log.info("queued %d unfinished round(s) again", queued)
    return queued


@worker_ready.connect
def _recover_on_worker_start(sender=None, **kwargs) -> None:
    if ROUNDS_QUEUE not in _consumed_queues(sender):
        return
    try:
        rounds_recover()
    except Exception:  # never keep a worker from starting
        log.exception("could not re-queue unfinished rounds")
    finally:
        connection.close()


def _consumed_queues(consumer) -> set[str]:
    try:
        return {q.name for q in consumer.task_consumer.queues}
    except AttributeError:
        return {ROUNDS_QUEUE}
