"""Pure rules that services and selectors both read: how long a claim lasts, which round
statuses are still under way, when a job's worker counts as lost, which jobs are reviewers'
work, and which face a flag removes.

They live here, below both layers (see .importlinter), because a selector must not import a
service module: nothing here writes or opens a transaction.
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from .models import Job, Round


def setting_seconds(name: str, default: float) -> float:
    """A duration setting. Settings win over the environment (the environment lets tests
    shorten it in a worker)."""
    return float(getattr(settings, name, os.environ.get(name, default)))


# -- the claim clock ------------------------------------------------------------------------------

def claim_seconds() -> int:
    return int(getattr(settings, "FLAG_CLAIM_SECONDS", 1800))


def claim_cutoff(now=None):
    """Claims taken before this moment have expired."""
    return (now or timezone.now()) - timedelta(seconds=claim_seconds())


def claim_expires_at(claimed_at):
    return claimed_at + timedelta(seconds=claim_seconds())


# -- rounds ---------------------------------------------------------------------------------------

ROUND_RUNNING = (Round.Status.TRAINING, Round.Status.EXTRACTING, Round.Status.MINING)
# Still under way: a dataset has at most one such round.
ROUND_ACTIVE = (Round.Status.QUEUED, *ROUND_RUNNING)


# -- jobs -----------------------------------------------------------------------------------------

# Jobs of reviewers' work (deciding flags, undoing a batch): every member of the dataset sees
# them, where imports and exports are its admins' alone.
REVIEW_KINDS = (Job.Kind.BULK_DECIDE, Job.Kind.BATCH_UNDO)


def job_stale_seconds() -> float:
    """How long a running job may go without a heartbeat before the sweep fails it."""
    return setting_seconds("JOB_STALE_SECONDS", 60)


def heartbeat_age(job: Job) -> float | None:
    """Seconds since the job's worker last reported, for a running job."""
    stamp = (job.result or {}).get("heartbeat_at")
    if job.status != Job.Status.RUNNING or not stamp:
        return None
    try:
        return (timezone.now() - datetime.fromisoformat(stamp)).total_seconds()
    except (TypeError, ValueError):
        return None


# -- flags ----------------------------------------------------------------------------------------

def named_removal(flag) -> int | None:
    """The face the flag's own suggestion takes out: for a near-duplicate pair the copy its
    evidence names ("remove": "other_index" / "index"; None where it names none, a label
    question left to the reviewer; flags from before the key existed: `face`), else `face`."""
    evidence = flag.evidence if isinstance(flag.evidence, dict) else {}
    if flag.other_face_id is None or "remove" not in evidence:
        return flag.face_id
    return {"other_index": flag.other_face_id, "other_face": flag.other_face_id,
            "index": flag.face_id, "face": flag.face_id}.get(evidence["remove"])
