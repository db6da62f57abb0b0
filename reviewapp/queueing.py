"""The one place that puts work on the broker. Services call these; nothing else imports a task
module. Task modules are imported inside the functions: they import the services, which import
this module.

A job or round is a committed row before its message is sent: when the broker is unreachable
the row stays queued and the periodic sweep (services.jobs.jobs_sweep, services.round_recovery)
sends it once the broker is back, so starting work never fails on the broker.
"""
from __future__ import annotations

import logging

log = logging.getLogger("reviewapp.queueing")
ROUNDS_QUEUE = "rounds"


def job_send(job_id: int, expires: float | None = None) -> bool:
    """Send the job's task; False when the broker is unreachable (the job stays queued)."""
    from .tasks import run_job_task

    try:
        run_job_task.apply_async(kwargs={"job_id": job_id}, expires=expires)
    except Exception as exc:  # kombu's OperationalError, a refused or reset connection, ...
        log.warning("job %s stays queued, the broker is unreachable (%s); the sweep sends it later", job_id, exc)
        return False
    return True


def round_send(round_id: int, countdown: float | None = None, expires: float | None = None) -> None:
    """Send the round's task to the rounds queue; raises when the broker is unreachable."""
    from .tasks_rounds import run_round_task

    run_round_task.apply_async(kwargs={"round_id": round_id}, queue=ROUNDS_QUEUE, countdown=countdown,
                               expires=expires)


def round_try_send(round_id: int) -> bool:
    """Send a new round's task; False when the broker is unreachable (the round stays queued)."""
    try:
        round_send(round_id)
    except Exception as exc:  # kombu's OperationalError, a refused or reset connection, ...
        log.warning("round %s stays queued, the broker is unreachable (%s); the sweep sends it later", round_id, exc)
        return False
    return True
