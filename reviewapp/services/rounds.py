"""Cleaning rounds in the database: start, claim, heartbeat, advance, cancel, fail, publish.

A round goes queued -> training -> extracting -> mining -> published, or ends failed or
cancelled. The worker that runs it is named in Round.worker and proves it is alive through
Round.heartbeat_at. Every status change is one conditional UPDATE on (id, status, worker),
so whoever changes a round must still hold it in the state it believes: a duplicate task
delivery claims nothing, a worker whose round was cancelled or taken over notices at its
next heartbeat and stops, and flags are published exactly once.

A round whose worker died (no heartbeat for stale_seconds()) can be claimed again; the new
worker resumes from the run folder (see services.round_pipeline). After max_attempts()
claims a round fails instead, so that a round that kills its worker every time (e.g. out of
memory) does not loop forever.
"""
from __future__ import annotations

import math
import os
from datetime import timedelta
from typing import Any, Iterable, Sequence

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, Max, OuterRef, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from ml.api import evidence_json, evidence_published

from .. import queueing
from ..models import Dataset, Decision, Flag, Round
from ..rules import ROUND_ACTIVE, ROUND_RUNNING, setting_seconds
from ..queueing import ROUNDS_QUEUE  # noqa: F401 (named here too)
from .publish_checks import flags_as_of_now, flags_supersede, snapshot_identities
from .round_data import clean_round_config

QUEUED, PUBLISHED = Round.Status.QUEUED, Round.Status.PUBLISHED


class RoundConflict(Exception):
    """The round (or its dataset) is not in a state that allows the change; nothing was written."""


def stale_seconds() -> float:
    """How long a running round may go without a heartbeat before another worker may take it."""
    return setting_seconds("ROUND_STALE_SECONDS", 120)


def max_attempts() -> int:
    return int(getattr(settings, "ROUND_MAX_ATTEMPTS", os.environ.get("ROUND_MAX_ATTEMPTS", 3)))


def first_stage(method: str) -> str:
    """Round.first_stage for a method."""
    return Round(method=method).first_stage


def _actor(user) -> str:
    return user.get_username() if user is not None else "system"


# -- life cycle -----------------------------------------------------------------------------------

# Training settings that name files: never taken from a browser (the round reads its faces
# from the database anyway).
_PATH_SETTINGS = ("path", "root", "labels")


def confine_round_config(method: str, config: dict | None, data_root) -> dict:
    """A round configuration from the web: the "embeddings" method's files (relative paths
    are taken from data_root) must resolve, symlinks followed, inside data_root; training
    settings naming files are refused. ValueError with the reason otherwise."""
    from .jobs import path_under_root

    if config is not None and not isinstance(config, dict):
        raise ValueError("the round configuration must be a JSON object")
    config = dict(config or {})
    if method == Round.Method.EMBEDDINGS:
        for key in ("embeddings", "norms", "paths"):
            if key in config:
                config[key] = str(path_under_root(str(config[key]), data_root, what=key))
        return config
    data = config.get("data")
    if isinstance(data, dict):
        named = sorted(key for key in data if key in _PATH_SETTINGS)
        if named:
            raise ValueError(f"data.{named[0]} cannot be set from the browser: a round trains on the "
                             "dataset's faces as they are in the database")
    return config


@transaction.atomic
def round_start(*, dataset: Dataset, method: str, config: dict | None = None, user=None,
                enqueue: bool = True, data_root=None) -> Round:
    """Queue round number N+1 of `dataset` and, once committed, its task on the rounds queue.

    Raises ValueError for a bad method or configuration, RoundConflict when a round of the
    dataset is already queued or running. enqueue=False leaves running it to the caller
    (`run_round --inline`). data_root (given for rounds started from the browser): file
    paths in the configuration must lie under it (confine_round_config)."""
    if method not in Round.Method.values:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(Round.Method.values)}")
    if data_root is not None:
        config = confine_round_config(method, config, data_root)
    config = clean_round_config(method, config)
    # Serialises concurrent starts on one dataset (Postgres); the unique number is the backstop.
    Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
    running = Round.objects.filter(dataset=dataset, status__in=ROUND_ACTIVE).order_by("number").first()
    if running is not None:
        raise RoundConflict(f"round {running.number} of {dataset.name} is {running.status}")
    number = (Round.objects.filter(dataset=dataset).aggregate(n=Max("number"))["n"] or 0) + 1
    try:
        with transaction.atomic():
            round_ = Round.objects.create(dataset=dataset, number=number, method=method, config=config,
                                          created_by=user, progress={"stage": QUEUED, "percent": 0.0})
    except IntegrityError:
        raise RoundConflict(f"another round of {dataset.name} was started at the same time") from None
    if enqueue:
        # A broker outage leaves the round queued for the periodic sweep, never a failed request.
        transaction.on_commit(lambda: queueing.round_try_send(round_.pk))
    return round_


def round_claim(*, round_id: int, worker: str) -> Round | None:
    """Take the round for `worker`: a queued round, or a running one whose heartbeat is older
    than stale_seconds(). Returns the claimed round, or None when it is not claimable (running
    elsewhere, finished, unknown): a duplicate delivery then does nothing.

    A compare-and-set on the values just read, so two workers never both win."""
    seen = Round.objects.filter(pk=round_id).values(
        "status", "worker", "heartbeat_at", "progress", "method").first()
    if seen is None or seen["status"] not in ROUND_ACTIVE:
        return None
    now = timezone.now()
    if seen["status"] != QUEUED:
        last = seen["heartbeat_at"]
        if last is not None and now - last < timedelta(seconds=stale_seconds()):
            return None
    same = Round.objects.filter(pk=round_id, status=seen["status"], worker=seen["worker"],
                                heartbeat_at=seen["heartbeat_at"])
    attempt = int((seen["progress"] or {}).get("attempt", 0)) + 1
    if attempt > max_attempts():
        same.update(status=Round.Status.FAILED, finished_at=now,
                    error=f"gave up after {attempt - 1} attempts: its worker stopped each time")
        return None
    status = first_stage(seen["method"]) if seen["status"] == QUEUED else seen["status"]
    progress = {**(seen["progress"] or {}), "stage": status, "attempt": attempt}
    if not same.update(status=status, worker=worker, heartbeat_at=now, progress=progress,
                       started_at=Coalesce("started_at", now)):
        return None
    return Round.objects.get(pk=round_id)


def round_heartbeat(*, round_id: int, worker: str, progress: dict) -> bool:
    """Record progress and that `worker` is alive. False when the round is no longer this
    worker's running round (cancelled, taken over, finished): the worker must stop."""
    return bool(Round.objects.filter(pk=round_id, worker=worker, status__in=ROUND_RUNNING)
                .update(progress=progress, heartbeat_at=timezone.now()))


def round_advance(*, round_id: int, worker: str, from_status: str, to_status: str, progress: dict) -> bool:
    """Move the round to its next stage; False when it is no longer (worker, from_status)."""
    return bool(Round.objects.filter(pk=round_id, worker=worker, status=from_status)
                .update(status=to_status, progress=progress, heartbeat_at=timezone.now()))


def round_cancel(*, round_id: int, user=None) -> Round:
    """Cancel a queued or running round; its worker stops at its next heartbeat.
    RoundConflict when the round has already ended."""
    for _ in range(3):  # the status may move on between the read and the update
        current = Round.objects.filter(pk=round_id).values_list("status", flat=True).first()
        if current is None:
            raise Round.DoesNotExist(f"no round {round_id}")
        if current not in ROUND_ACTIVE:
            raise RoundConflict(f"the round has already ended ({current})")
        if Round.objects.filter(pk=round_id, status=current).update(
                status=Round.Status.CANCELLED, finished_at=timezone.now(),
                error=f"cancelled by {_actor(user)} while {current}"):
            return Round.objects.get(pk=round_id)
    raise RoundConflict("the round keeps changing; try again")


def round_fail(*, round_id: int, worker: str, error: str) -> bool:
    """Mark `worker`'s running round failed; False when it no longer holds it."""
    return bool(Round.objects.filter(pk=round_id, worker=worker, status__in=ROUND_RUNNING).update(
        status=Round.Status.FAILED, finished_at=timezone.now(), error=error[:4000]))


# -- publishing -----------------------------------------------------------------------------------

class _NotPublishable(Exception):
    pass


def round_publish(*, round_id: int, worker: str, candidates: Iterable[Any], index_to_face: Sequence[int],
                  class_to_identity: Sequence[int], progress: dict | None = None,
                  summary: dict | None = None) -> int | None:
    """Turn mining candidates into the round's flags and mark it published, in one transaction.

    Only `worker`'s round in status mining that has no flags yet is published, so it happens
    exactly once. Candidates are checked against the data as it is now (publish_checks: faces
    removed, relabelled or decided since the round's snapshot, merges followed), those the
    reviewers have already answered (see decided_questions) are dropped, and the published flags
    supersede the earlier rounds' open flags on the same subjects (publish_checks.flags_supersede).
    index_to_face maps dataset index -> Face id, class_to_identity class id -> Identity id;
    `progress`, the worker's last progress, is kept on the row with the flag counts. `summary`
    (ml.mining.summary.round_summary's chart data) is stored as Round.summary with the published
    flags per kind, the previous published round's, what was not raised (already_decided, and
    dropped: per publish_checks.DROP_REASONS) and superseded (per kind), in the same transaction.
    Returns the number of flags written, or None when nothing was published."""
    try:
        return _publish(round_id, worker, list(candidates), np.asarray(index_to_face),
                        np.asarray(class_to_identity), progress, summary)
    except _NotPublishable:
        return None


def _kind_counts(flags: Iterable[Flag]) -> dict[str, int]:
    counts = {kind: 0 for kind in Flag.Kind.values}
    for flag in flags:
        counts[flag.kind] += 1
    return counts


def _previous_counts(round_: Round) -> dict | None:
    """The flags per kind of the dataset's latest published round before `round_`: one GROUP BY
    over that round's flags (the flag_queue index leads with round)."""
    previous = (Round.objects.filter(dataset_id=round_.dataset_id, status=PUBLISHED, number__lt=round_.number)
                .order_by("-number").values("pk", "number").first())
    if previous is None:
        return None
    counts = {kind: 0 for kind in Flag.Kind.values}
    for row in Flag.objects.filter(round_id=previous["pk"]).values("kind").annotate(n=Count("pk")).order_by():
        counts[row["kind"]] = row["n"]
    return {"round": previous["number"], "flags": counts}


def _round_summary(round_: Round, summary: dict | None, kept: list[Flag], already_decided: int,
                   dropped: dict[str, int], superseded: dict[str, int]) -> dict:
    summary = json_safe(dict(summary or {}))
    summary["mined"] = summary.pop("flags", None)
    summary.update(flags=_kind_counts(kept), already_decided=already_decided, dropped=dropped,
                   superseded=superseded, previous=_previous_counts(round_))
    return summary


@transaction.atomic
def _publish(round_id, worker, candidates, index_to_face, class_to_identity, progress, summary=None) -> int:
    round_ = Round.objects.select_for_update().filter(
        pk=round_id, worker=worker, status=Round.Status.MINING).first()
    if round_ is None or Flag.objects.filter(round_id=round_id).exists():
        raise _NotPublishable
    flags = [_flag(round_id, c, index_to_face, class_to_identity) for c in candidates]
    # The candidates describe the data as frozen when the round started; reviewers went on
    # deciding meanwhile. Checked here, under the publish's transaction, against the data now.
    current = flags_as_of_now(round_=round_, flags=flags,
                              snapshot_identity=snapshot_identities(candidates, index_to_face, class_to_identity))
    answered = decided_questions(dataset_id=round_.dataset_id, round_id=round_id)
    kept = [flag for flag in current.kept if question_key(flag) not in answered]
    already_decided = len(current.kept) - len(kept)
    superseded = flags_supersede(round_=round_, flags=kept)
    now = timezone.now()
    progress = {**(round_.progress if progress is None else progress), "stage": PUBLISHED, "percent": 100.0,
                "flags": len(kept), "already_decided": already_decided,
                "dropped_during_round": sum(current.dropped.values()), "superseded": sum(superseded.values())}
    updated = Round.objects.filter(pk=round_id, worker=worker, status=Round.Status.MINING).update(
        status=PUBLISHED, finished_at=now, heartbeat_at=now, progress=progress,
        summary=_round_summary(round_, summary, kept, already_decided, current.dropped, superseded))
    if not updated:
        raise _NotPublishable
    Flag.objects.bulk_create(kept, batch_size=5000)
    return len(kept)


def _flag(round_id: int, candidate, index_to_face, class_to_identity) -> Flag:
    def face(index):
        return None if index is None else int(index_to_face[int(index)])

    def identity(label):
        return None if label is None or int(label) < 0 else int(class_to_identity[int(label)])

    kind, suggestion = str(candidate.kind), str(candidate.suggestion)
    if kind not in Flag.Kind.values or suggestion not in Flag.Suggestion.values:
        raise ValueError(f"unknown flag kind {kind!r} or suggestion {suggestion!r}")
    flag = Flag(round_id=round_id, kind=kind, suggestion=suggestion, score=_finite(candidate.score),
                evidence=_evidence_with_ids(candidate.evidence, face, identity),
                suggested_identity_id=identity(getattr(candidate, "target_label", None)))
    if kind == Flag.Kind.DUPLICATE_IDENTITY:
        flag.identity_a_id, flag.identity_b_id = identity(candidate.label), identity(candidate.other_label)
    else:
        flag.face_id, flag.other_face_id = face(candidate.index), face(getattr(candidate, "other_index", None))
    return flag


def _evidence_with_ids(evidence, face, identity) -> dict:
    """Mining names faces by dataset index and identities by class index of this round: numbers
    that mean nothing once the round is over (the next round numbers rows differently). The web
    app, the API and the audit read database ids, so the evidence contract's row keys
    (ml.evidence.ROW_KEYS) become their id keys; the mining's own record is left alone."""
    return evidence_published(json_safe(evidence_json(evidence)), face=face, identity=identity)


def _finite(value) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0


def json_safe(value):
    """Evidence as JSON the database accepts: numpy values as Python ones, NaN and infinities
    as null (PostgreSQL's jsonb refuses NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- what the reviewers already answered ----------------------------------------------------------

def question_key(flag: Flag) -> tuple:
    """What a flag asks, independent of the round: its kind and suggestion about one face (with
    the suggested identity for a relabel), an unordered face pair, or an unordered identity pair."""
    if flag.identity_a_id is not None and flag.face_id is None:
        a, b = sorted((flag.identity_a_id, flag.identity_b_id))
        return ("identities", flag.kind, flag.suggestion, a, b)
    if flag.other_face_id is not None:
        a, b = sorted((flag.face_id, flag.other_face_id))
        return ("faces", flag.kind, flag.suggestion, a, b)
    target = flag.suggested_identity_id if flag.suggestion == Flag.Suggestion.RELABEL else None
    return ("face", flag.kind, flag.suggestion, flag.face_id, target)


# A superseded flag was never answered: a later round asked about its subject and nobody decided.
UNANSWERED = (Flag.State.OPEN, Flag.State.SUPERSEDED)


def decided_questions(*, dataset_id: int, round_id: int | None = None) -> set[tuple]:
    """The question keys of the dataset's earlier flags that a reviewer has answered.

    An earlier flag (another round of the dataset) counts as answered when
    - its state is confirmed, rejected or decided otherwise (not open, not superseded), or
    - a Decision names it (the reviewer acted on the flag itself), or
    - it is about a face and a Decision on that face was taken after the flag's round was
      published (the reviewer changed or kept the face by other means since seeing it).
    A new candidate with the same question key is not raised again. A different kind, a
    different suggestion or, for relabels, a different suggested identity is a new question.
    """
    named = Decision.objects.filter(flag=OuterRef("pk"))
    revisited = Decision.objects.filter(face=OuterRef("face"), created_at__gte=OuterRef("round__finished_at"))
    earlier = Flag.objects.filter(round__dataset_id=dataset_id)
    if round_id is not None:
        earlier = earlier.exclude(round_id=round_id)
    answered = (
        earlier.annotate(named=Exists(named), revisited=Exists(revisited))
        .filter(~Q(state__in=UNANSWERED) | Q(named=True) | Q(face__isnull=False, revisited=True))
        .only("kind", "suggestion", "face_id", "other_face_id", "identity_a_id", "identity_b_id",
              "suggested_identity_id")
    )
    return {question_key(flag) for flag in answered.iterator(chunk_size=10_000)}
