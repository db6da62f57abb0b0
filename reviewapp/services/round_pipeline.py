"""Running a cleaning round to its end in this process: the pipeline the rounds queue's task
(reviewapp.tasks_rounds) and `run_round --inline` call.

claim -> training -> extracting -> mining -> publish, all in the round's run folder
(reviewapp.runs, laid out by ml.api.RunFolder):
    faces.npz          the training set frozen at the round's first start (round_data)
    fold-<k>/ ...      each fold model's trainer run (train.log, metrics.jsonl, checkpoints)
    embeddings/        the pretrained extraction, or user rows matched by path (resumable)
and, once the round publishes, identity_centres.npz for the relabel search.

Reliability: the task is acknowledged late, and the Round row's claim (services.rounds) decides
who works, so a redelivered or duplicated message does nothing while the round is alive. A
worker that dies leaves a checkpoint and a stale heartbeat; services.round_recovery queues such
rounds again and a live worker resumes them from their run folder (training from its latest
checkpoint, extraction from its last flushed batch).

The heartbeat runs in its own thread (services.workers), so a round proves it is alive however
long a training step, the statistics pass or mining takes; the pipeline checks between steps
whether the heartbeat found the round cancelled or taken over, and stops.

ml.api's heavy parts load torch inside its functions, which processes that only queue rounds
(the web app, the import worker) need not pay for.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import time
from typing import Callable

import numpy as np

from ml import api as ml
from ml.api import Extraction, RunFolder

from ..models import Round
from ..runs import round_key, round_run_folder, round_search_embeddings
from .round_data import (
    SNAPSHOT_FILE,
    RoundFaces,
    load_round_faces,
    round_face_dataset,
    round_face_paths,
    round_faces_current,
    round_mining_config,
    round_model_note,
    round_train_config,
    save_round_faces,
)
from .rounds import first_stage, round_advance, round_claim, round_fail, round_heartbeat, round_publish, stale_seconds
from .workers import HeartbeatThread, beat_seconds

log = logging.getLogger("reviewapp.rounds")
ProgressFn = Callable[[dict], None]
# Progress keys about the whole round, kept from stage to stage.
ROUND_WIDE_PROGRESS = frozenset({"attempt", "crossfit", "faces", "identities", "resumed_from_step",
                                 "unreadable", "judged_by", "embeddings_file", "face_boxes"})


class RoundStopped(Exception):
    """The round was cancelled or taken over by another worker: stop, and leave it alone."""


def heartbeat_seconds() -> float:
    return beat_seconds(stale_seconds(), at_most=2.0)


# -- the heartbeat ---------------------------------------------------------------------------------

class Heartbeat:
    """The round's latest progress, written to the round every few seconds by a heartbeat thread
    (services.workers); remembers when the round stopped being this worker's. `check()` raises
    RoundStopped after that."""

    def __init__(self, round_id: int, worker: str, progress: dict, on_progress: ProgressFn | None = None):
        self.round_id, self.worker = round_id, worker
        self.progress = dict(progress)
        self.on_progress = on_progress
        self._thread = HeartbeatThread(f"round-{round_id}", self._beat, heartbeat_seconds)

    def __enter__(self) -> "Heartbeat":
        self._thread.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._thread.__exit__(*exc)

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
        if self._thread.lost.is_set():
            raise RoundStopped

    def _beat(self) -> bool:
        return round_heartbeat(round_id=self.round_id, worker=self.worker, progress=self.progress)


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
    run = round_run_folder(round_.pk)
    faces = _training_set(round_, run)
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
    stats = None  # no method here gives the trainer's per-sample statistics (cross-fitting skips them)
    if round_.method == Round.Method.EMBEDDINGS:
        found = _user_embeddings(round_, faces, run, heartbeat)
    elif round_.method == Round.Method.PRETRAINED:  # no training: the first stage is extracting
        if status == Round.Status.EXTRACTING:
            _extract_pretrained(faces, round_.dataset_id, run, heartbeat)
            advance(Round.Status.MINING)
        found = run.extraction.read(len(faces))
    else:
        config = _loader_workers_allowed(round_train_config(round_.method, round_.config))
        heartbeat.update(crossfit=_crossfit_note(faces, config.folds))
        data = round_face_dataset(faces, dataset_id=round_.dataset_id, transform=ml.eval_transform(config))
        # Cross-fitted (ml.crossfit): each face is judged by the fold model that never saw its label.
        if status == Round.Status.TRAINING:
            _train(config, data, faces, run, heartbeat)
            advance(Round.Status.EXTRACTING)
        if status == Round.Status.EXTRACTING:
            ml.extract_folds(config, data, run, _extraction_progress(heartbeat))
            advance(Round.Status.MINING)
        folds = ml.fold_extractions(run, len(faces))
        found = Extraction(folds[0].embeddings, folds[0].norms,
                           np.logical_and.reduce([fold.readable for fold in folds]))

    heartbeat.check()
    readable = found.readable
    heartbeat.update(unreadable=int((~readable).sum()))
    started = time.monotonic()
    mining_config = round_mining_config(round_.config)
    fingerprints = _round_fingerprints(round_, faces, run, heartbeat, mining_config.kinds)
    if folds is None:
        candidates = ml.mine(embeddings=found.embeddings, labels=faces.labels, stats=stats, norms=found.norms,
                             active=readable, config=mining_config, fingerprints=fingerprints,
                             face_found=found.face_found)
    else:
        candidates = ml.mine_folds(folds, faces.labels, active=readable, config=mining_config,
                                   fingerprints=fingerprints)
    heartbeat.update(percent=100.0, mining_s=round(time.monotonic() - started, 2))
    heartbeat.check()
    # A cross-fitted round charts the first fold model's held-out faces: an honest sample.
    charted = readable if folds is None else readable & folds[0].judged
    summary = _chart_summary(faces, found, stats, charted, candidates, mining_config)
    published = round_publish(round_id=round_.pk, worker=worker, candidates=candidates,
                              index_to_face=faces.face_ids, class_to_identity=faces.identity_ids,
                              progress=heartbeat.progress, summary=summary)
    if published is None:
        raise RoundStopped
    try:  # the relabel search's identity centres, ready before the first reviewer asks for them
        round_centres_write(round_=Round.objects.get(pk=round_.pk))
    except Exception:
        log.exception("round %s: identity centres not written; the relabel search has no nearest identities",
                      round_.pk)


def round_centres_write(*, round_: Round):
    """Write the round's identity centres (ml.api.identity_index_write) for the relabel search,
    from its frozen training set and the embeddings the search reads. Returns the file, or None
    when this machine does not hold the round's files."""
    run = round_run_folder(round_.pk)
    faces = load_round_faces(run.root / SNAPSHOT_FILE, round_key=round_key(round_))
    if faces is None:
        return None
    path = ml.identity_index_write(run.identity_centres, embeddings_path=round_search_embeddings(round_),
                                   labels=faces.labels, count=faces.num_classes, identity_ids=faces.identity_ids,
                                   face_ids=faces.face_ids, key=round_key(round_))
    if path is None:
        log.warning("round %s: its embeddings do not match its %d faces; no identity centres", round_.pk, len(faces))
    return path


def _chart_summary(faces: RoundFaces, found: Extraction, stats, readable, candidates, mining_config) -> dict:
    """The round page's chart data (ml.api.chart_summary). Charts are a view on the flags, not
    the flags: when they cannot be computed the round still publishes, saying why."""
    try:
        return ml.chart_summary(labels=faces.labels, stats=stats, embeddings=found.embeddings, norms=found.norms,
                                active=readable, candidates=candidates, margin=mining_config.margin,
                                margin_m1=mining_config.margin_m1)
    except Exception as exc:
        log.exception("round summary failed")
        return {"error": f"{type(exc).__name__}: {exc}"}


def _training_set(round_: Round, run: RunFolder) -> RoundFaces:
    """The round's frozen training set, made from the current labels on its first start.
    A run folder that belongs to no earlier attempt of this round is a leftover: cleared."""
    key = round_key(round_)
    faces = load_round_faces(run.root / SNAPSHOT_FILE, round_key=key)
    if faces is not None:
        return faces
    if round_.status != first_stage(round_.method):
        raise RuntimeError(f"{run.root} does not hold this round's files, so it cannot resume at "
                           f"{round_.status}; RUNS_ROOT must be shared by the round workers")
    if run.root.exists():
        shutil.rmtree(run.root)
    faces = round_faces_current(dataset_id=round_.dataset_id)
    save_round_faces(faces, run.root / SNAPSHOT_FILE, round_key=key)
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


def _train(config, data, faces: RoundFaces, run: RunFolder, heartbeat: Heartbeat) -> None:
    """One model per fold (ml.crossfit), each resumed from its own checkpoints."""
    folds = int(config.folds)
    steps = ml.resumed_steps(run, folds)
    if steps:
        heartbeat.update(resumed_from_step=sum(steps.values()))
        log.info("round in %s: resuming training from steps %s", run.root, steps)

    def progress(stage: str, fold: int, record: dict) -> None:
        heartbeat.check()  # raising here stops the trainer where it is
        total = int(record["total"])
        _report(heartbeat, fold * total + int(record["step"]), folds * total, record.get("samples_per_s"),
                record.get("eta_s"), substage=record.get("stage"), epoch=record.get("epoch"), fold=fold,
                folds=folds)

    ml.train_folds(config, data, faces.labels, run, num_classes=faces.num_classes, progress=progress)


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


def _extract_pretrained(faces: RoundFaces, dataset_id: int, run: RunFolder, heartbeat: Heartbeat) -> None:
    """dlib's descriptor on every face's image, resumable in the run's extraction folder. In a
    daemon (prefork) pool process no loader processes may start: described in-process, slower."""
    data = round_face_dataset(faces, dataset_id=dataset_id, transform=None)
    workers = 0 if multiprocessing.current_process().daemon else min(2, os.cpu_count() or 1)
    boxes = ml.extract_pretrained(data, run, num_workers=workers, progress=_extraction_progress(heartbeat))
    heartbeat.update(face_boxes={"detected": boxes.detected, "whole_image": boxes.whole_image})


def _round_fingerprints(round_: Round, faces: RoundFaces, run: RunFolder, heartbeat: Heartbeat, kinds):
    """The round's image fingerprints (near duplicates are decided on pixels), once per round."""
    if "near_duplicate" not in kinds:
        return None
    def open_reader():
        return round_face_dataset(faces, dataset_id=round_.dataset_id, transform=None).read_bytes

    return ml.image_fingerprints(run, open_reader, len(faces), _extraction_progress(heartbeat, substage="fingerprints"))


def _user_embeddings(round_: Round, faces: RoundFaces, run: RunFolder, heartbeat: Heartbeat) -> Extraction:
    """The "embeddings" method. Rows named by path (an .npz with paths, or an .npy with a paths
    file) are matched to the faces by path and written in face order to the run's extraction
    folder (the identity search reads them there); faces the file misses are left unjudged, rows
    naming no face ignored, both reported in the progress. An .npy without paths: rows in face-id
    order."""
    config = round_.config
    count = len(faces)
    given = ml.load_embeddings_file(config["embeddings"], config.get("paths"), config.get("norms"))
    if given.paths is None:
        if len(given.embeddings) != count:
            raise ValueError(f"{config['embeddings']} holds {len(given.embeddings)} embeddings; the dataset has "
                             f"{count} active faces (one row each, in face-id order), or name the rows by path")
        return ml.rows_as_given(given)
    paths, roots = round_face_paths(faces, dataset_id=round_.dataset_id)
    match = ml.match_rows(paths, roots, given.paths)
    heartbeat.update(embeddings_file=match.report())
    if match.missing == count:
        raise ValueError(f"no row of the embeddings file names a face of the dataset (e.g. "
                         f"{match.missing_examples[:2]} are not in it); name rows by the path as imported, "
                         "relative to the source's folder, or absolute")
    return ml.matched_extraction(given, match, run.extraction)
