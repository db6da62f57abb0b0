"""Running a cleaning round: the Celery task on the "rounds" queue, and the pipeline it runs.

claim -> training -> extracting -> mining -> publish, all in RUNS_ROOT/round-<id>:
    faces.npz          the training set frozen at the round's first start (round_data)
    checkpoints/ ...   the trainer's run folder (train.log, metrics.jsonl, stats.npz)
    embeddings/        extract_embeddings' output (resumable)

Reliability: the task is acknowledged late, and the Round row's claim (services.rounds) decides
who works, so a redelivered or duplicated message does nothing while the round is alive. A
worker that dies leaves a checkpoint and a stale heartbeat; rounds_recover(), run when a worker
starts and after each round, and rounds_sweep(), run periodically by every rounds worker (a
timer in reviewapp.tasks), queue such rounds again and a live worker resumes them from their
run folder (training from its latest checkpoint, extraction from its last flushed batch).
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
from datetime import timedelta
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
    round_face_paths,
    round_faces_current,
    round_key,
    round_mining_config,
    round_model_note,
    round_train_config,
    save_round_faces,
)
from .services.rounds import (
    ACTIVE,
    ROUNDS_QUEUE,
    RUNNING,
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
ROUND_WIDE_PROGRESS = frozenset({"attempt", "crossfit", "faces", "identities", "resumed_from_step",
                                 "unreadable", "judged_by", "embeddings_file", "face_boxes"})


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
    from ml.crossfit import mine_cross_fitted
    from ml.data.transforms import build_transform
    from ml.embed import load_extraction
    from ml.mining import mine

    run_dir = run_dir_of(round_.pk)
    faces = _training_set(round_, run_dir)
    heartbeat.update(faces=len(faces), identities=faces.num_classes,
                     judged_by=round_model_note(round_.method, round_.config))
    status = round_.status

    def advance(to_status: str) -> None:
        nonlocal status
        heartbeat.begin(to_status)
        if not round_advance(round_id=round_.pk, worker=worker, from_status=status, to_status=to_status,
                             progress=heartbeat.progress):
            raise RoundStopped
        log.info("round %s: %s", round_.pk, to_status)
        status = to_status

    folds = None  # a training round's per-fold outputs
    face_found = None  # per face, whether the extractor's face detector found one
    if round_.method == Round.Method.EMBEDDINGS:
        embeddings, norms, stats, readable = _user_embeddings(round_, faces, run_dir, heartbeat)
    elif round_.method == Round.Method.PRETRAINED:  # no training: the first stage is extracting
        if status == Round.Status.EXTRACTING:
            _extract_pretrained(faces, round_.dataset_id, run_dir, heartbeat)
            advance(Round.Status.MINING)
        embeddings, norms, readable = load_extraction(run_dir / "embeddings", len(faces))
        stats = None
        face_found = _faces_found(run_dir / "embeddings", len(faces))
    else:
        config = _loader_workers_allowed(round_train_config(round_.method, round_.config))
        heartbeat.update(crossfit=_crossfit_note(faces, config.folds))
        data = round_face_dataset(faces, dataset_id=round_.dataset_id,
                                  transform=build_transform(config.data.transform, train=False))
        # Cross-fitted (ml.crossfit): each face is judged by the fold model that never saw its label.
        if status == Round.Status.TRAINING:
            _train(config, data, faces, run_dir, heartbeat)
            advance(Round.Status.EXTRACTING)
        if status == Round.Status.EXTRACTING:
            _extract(config, data, run_dir, heartbeat)
            advance(Round.Status.MINING)
        folds = _trained_outputs(run_dir, len(faces))
        embeddings, norms, stats = folds[0].embeddings, folds[0].norms, None
        readable = np.logical_and.reduce([fold.readable for fold in folds])

    heartbeat.check()
    heartbeat.update(unreadable=int((~readable).sum()))
    started = time.monotonic()
    mining_config = round_mining_config(round_.config)
    fingerprints = _round_fingerprints(round_, faces, run_dir, heartbeat, mining_config.kinds)
    if folds is None:
        candidates = mine(embeddings=embeddings, labels=faces.labels, stats=stats, norms=norms, active=readable,
                          config=mining_config, fingerprints=fingerprints, face_found=face_found)
    else:
        candidates = mine_cross_fitted(folds, faces.labels, active=readable, config=mining_config,
                                       fingerprints=fingerprints)
    heartbeat.update(percent=100.0, mining_s=round(time.monotonic() - started, 2))
    heartbeat.check()
    # A cross-fitted round charts the first fold model's held-out faces: an honest sample.
    charted = readable if folds is None else readable & folds[0].judged
    summary = _chart_summary(faces, embeddings, norms, stats, charted, candidates, mining_config)
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


def _crossfit_note(faces: RoundFaces, folds: int) -> dict:
    """What the round page tells about a cross-fitted round: how many models, and from how many
    faces of an identity each learned it (a model trained from scratch learns little from a few)."""
    sizes = np.bincount(faces.labels[faces.labels >= 0]) if len(faces) else np.zeros(0, dtype=np.int64)
    sizes = sizes[sizes > 0]
    median = float(np.median(sizes)) if len(sizes) else 0.0
    return {"folds": int(folds), "median_faces_per_identity": median,
            "median_faces_learned": round(median * (folds - 1) / folds, 1)}


def _train(config, data, faces: RoundFaces, run_dir: Path, heartbeat: Heartbeat) -> None:
    """One model per fold (ml.crossfit), each resumed from its own checkpoints."""
    from ml.crossfit import fold_dir, train_folds
    from ml.train.checkpoint import latest_checkpoint, load_checkpoint

    folds = int(config.folds)
    resumed = {f: latest_checkpoint(fold_dir(run_dir, f)) for f in range(folds)}
    steps = {f: int(load_checkpoint(c)["global_step"]) for f, c in resumed.items() if c is not None}
    if steps:
        heartbeat.update(resumed_from_step=sum(steps.values()))
        log.info("round in %s: resuming training from steps %s", run_dir, steps)

    def progress(stage: str, fold: int, record: dict) -> None:
        heartbeat.check()  # raising here stops the trainer where it is
        total = int(record["total"])
        _report(heartbeat, fold * total + int(record["step"]), folds * total, record.get("samples_per_s"),
                record.get("eta_s"), substage=record.get("stage"), epoch=record.get("epoch"), fold=fold,
                folds=folds)

    train_folds(config, data, faces.labels, run_dir, folds=folds, num_classes=faces.num_classes, progress=progress)


def _extract(config, data, run_dir: Path, heartbeat: Heartbeat) -> None:
    """Every fold model embeds every face (resumable)."""
    from ml.crossfit import FOLDS_FILE, embed_folds
    from ml.train.distributed import pick_device

    assignment = np.load(run_dir / FOLDS_FILE)
    count, folds = len(assignment), int(assignment.max(initial=-1)) + 1
    report = _extraction_progress(heartbeat)
    embed_folds(config, data, run_dir, assignment, device=pick_device(config.device),
                progress=lambda stage, fold, r: report(fold * count + r["step"], folds * count))


def _extraction_progress(heartbeat: Heartbeat, **extra) -> Callable[[int, int], None]:
    """progress(done, total) for a pass over the faces (an extraction, the fingerprints):
    heartbeat, percent, rows/s since this process began; `extra` goes into every report."""
    baseline: list[tuple[float, int]] = []  # (time, rows done) at the first report of this process

    def progress(done: int, total: int) -> None:
        heartbeat.check()
        now = time.monotonic()
        baseline[:] = baseline or [(now, done)]
        seconds, rows = now - baseline[0][0], done - baseline[0][1]
        rate = rows / seconds if seconds > 0 and rows > 0 else None
        _report(heartbeat, done, total, rate, (total - done) / rate if rate else None, **extra)

    return progress


def _extract_pretrained(faces: RoundFaces, dataset_id: int, run_dir: Path, heartbeat: Heartbeat) -> None:
    """dlib's descriptor on every face's image, resumable in RUN/embeddings like _extract. In a
    daemon (prefork) pool process no loader processes may start: described in-process, slower."""
    from ml.pretrained import extract_pretrained

    data = round_face_dataset(faces, dataset_id=dataset_id, transform=None)
    workers = 0 if multiprocessing.current_process().daemon else min(2, os.cpu_count() or 1)
    result = extract_pretrained(data, run_dir / "embeddings", num_workers=workers, resume=True,
                                progress=_extraction_progress(heartbeat))
    heartbeat.update(face_boxes={"detected": result.detected, "whole_image": result.whole_image})


def _faces_found(folder: Path, count: int) -> np.ndarray | None:
    """The pretrained extractor's per-face record of whether its detector found a face."""
    from ml.pretrained import ALIGNMENT_FILE

    path = folder / ALIGNMENT_FILE
    if not path.exists():
        return None
    alignment = np.load(path)
    return alignment == 1 if len(alignment) == count else None


FINGERPRINTS_FILE = "fingerprints.npz"


def _round_fingerprints(round_: Round, faces: RoundFaces, run_dir: Path, heartbeat: Heartbeat, kinds):
    """The round's image fingerprints (ml.mining.copies: near duplicates are decided on pixels),
    computed once from the faces' raw bytes and kept in the run folder for a resumed round."""
    from ml.mining.copies import ImageFingerprints, fingerprint_images

    if "near_duplicate" not in kinds:
        return None
    path = run_dir / FINGERPRINTS_FILE
    try:
        found = ImageFingerprints.load(path)
        if len(found) == len(faces):
            return found
    except (OSError, KeyError, ValueError):
        pass
    read = round_face_dataset(faces, dataset_id=round_.dataset_id, transform=None).read_bytes
    fingerprints = fingerprint_images(read, len(faces),
                                      progress=_extraction_progress(heartbeat, substage="fingerprints"))
    fingerprints.save(path)
    return fingerprints


def _trained_outputs(run_dir: Path, count: int):
    """Each fold model's embeddings of every face, with the faces it may judge."""
    from ml.crossfit import FOLDS_FILE, load_fold_outputs

    assignment = np.load(run_dir / FOLDS_FILE)
    if len(assignment) != count:
        raise RuntimeError(f"{run_dir / FOLDS_FILE} holds {len(assignment)} faces, the round {count}")
    return [load_fold_outputs(run_dir, fold, assignment, count) for fold in range(int(assignment.max()) + 1)]


def _user_embeddings(round_: Round, faces: RoundFaces, run_dir: Path, heartbeat: Heartbeat):
    """The "embeddings" method. Rows named by path (an .npz with paths, or an .npy with a paths
    file) are matched to the faces by path and written in face order to RUN/embeddings (the
    identity search reads them there); faces the file misses are left unjudged, rows naming no
    face ignored, both reported in the progress. An .npy without paths: rows in face-id order."""
    from ml.io.embeddings_file import load_embeddings_file

    config = round_.config
    count = len(faces)
    given = load_embeddings_file(config["embeddings"], config.get("paths"), config.get("norms"))
    if given.paths is None:
        if len(given.embeddings) != count:
            raise ValueError(f"{config['embeddings']} holds {len(given.embeddings)} embeddings; the dataset has "
                             f"{count} active faces (one row each, in face-id order), or name the rows by path")
        return given.embeddings, given.norms, None, _finite_rows(given.embeddings, np.arange(count))
    return _matched_embeddings(given, faces, round_.dataset_id, run_dir / "embeddings", heartbeat)


def _finite_rows(embeddings, rows: np.ndarray) -> np.ndarray:
    """Per entry of rows: the file's row exists (>= 0) and is finite. In slices: the file may be
    far larger than memory."""
    finite = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), 65_536):
        part = rows[start:start + 65_536]
        present = part >= 0
        finite[start:start + 65_536][present] = np.isfinite(np.asarray(embeddings[part[present]])).all(axis=1)
    return finite


def _matched_embeddings(given, faces: RoundFaces, dataset_id: int, folder: Path, heartbeat: Heartbeat):
    from ml.embed import EMBEDDINGS_FILE, NORMS_FILE, UNREADABLE_FILE
    from ml.io.embeddings_file import match_rows

    paths, roots = round_face_paths(faces, dataset_id=dataset_id)
    match = match_rows(paths, roots, given.paths)
    heartbeat.update(embeddings_file=match.report())
    if match.missing == len(faces):
        raise ValueError(f"no row of the embeddings file names a face of the dataset (e.g. "
                         f"{match.missing_examples[:2]} are not in it); name rows by the path as imported, "
                         "relative to the source's folder, or absolute")
    readable = _finite_rows(given.embeddings, match.rows)
    folder.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(folder / EMBEDDINGS_FILE, mode="w+", dtype=np.float32,
                                    shape=(len(faces), given.embeddings.shape[1]))
    for start in range(0, len(faces), 65_536):
        rows = match.rows[start:start + 65_536]
        block = np.zeros((len(rows), out.shape[1]), dtype=np.float32)
        block[rows >= 0] = given.embeddings[rows[rows >= 0]]
        block[~readable[start:start + 65_536]] = 0.0
        out[start:start + 65_536] = block
    out.flush()
    norms = None
    if given.norms is not None:
        norms = np.where(match.rows >= 0, given.norms[np.maximum(match.rows, 0)], 0.0).astype(np.float32)
        np.save(folder / NORMS_FILE, norms)
    (folder / UNREADABLE_FILE).write_text(json.dumps(np.flatnonzero(~readable).tolist()), encoding="utf-8")
    del out
    return np.load(folder / EMBEDDINGS_FILE, mmap_mode="r"), norms, None, readable


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


def enqueue_round(round_id: int, countdown: float | None = None, expires: float | None = None) -> None:
    run_round_task.apply_async(kwargs={"round_id": round_id}, queue=ROUNDS_QUEUE, countdown=countdown,
                               expires=expires)


def try_enqueue_round(round_id: int) -> bool:
    """Send a new round's task. With the broker unreachable the round stays queued, committed,
    and the periodic sweep (rounds_sweep) sends it once the broker is back: starting a round
    never fails on the broker. False when it was not sent."""
    try:
        enqueue_round(round_id)
    except Exception as exc:  # kombu's OperationalError, a refused or reset connection, ...
        log.warning("round %s stays queued, the broker is unreachable (%s); the sweep sends it later", round_id, exc)
        return False
    return True


def rounds_sweep() -> int:
    """The periodic recovery every rounds worker runs (reviewapp.tasks): send a task for each
    round that a live worker may claim right now, so that an idle worker takes over a dead
    one's round within the stale limit plus one sweep period. Claimable: running with a stale
    heartbeat, or queued for longer than a period (its message may be lost: the broker was down
    when it was started). Copies expire after two periods, so they do not pile up behind a busy
    worker, and one that finds the round alive does nothing (round_claim). Returns how many
    were sent; none while the broker is down (the next sweep tries again)."""
    from .services.jobs import sweep_seconds

    period, now = sweep_seconds(), timezone.now()
    stale_before = now - timedelta(seconds=stale_seconds())
    claimable = (Round.objects.filter(status__in=RUNNING, heartbeat_at__lt=stale_before)
                 | Round.objects.filter(status__in=RUNNING, heartbeat_at__isnull=True)
                 | Round.objects.filter(status=Round.Status.QUEUED, created_at__lt=now - timedelta(seconds=period)))
    sent = 0
    for round_id in claimable.order_by("pk").values_list("pk", flat=True):
        try:
            enqueue_round(round_id, expires=2 * period)
        except Exception as exc:
            log.warning("recovery could not reach the broker (%s); the next sweep tries again", exc)
            break
        sent += 1
    if sent:
        log.info("sweep: sent %d round(s) a live worker may take over", sent)
    return sent


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
    if ROUNDS_QUEUE not in consumed_queues(sender):
        return
    try:
        rounds_recover()
    except Exception:  # never keep a worker from starting
        log.exception("could not re-queue unfinished rounds")
    finally:
        connection.close()


def consumed_queues(consumer) -> set[str]:
    try:
        return {q.name for q in consumer.task_consumer.queues}
    except AttributeError:
        return {ROUNDS_QUEUE}
