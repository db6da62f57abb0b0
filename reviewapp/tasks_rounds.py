"""The rounds queue's Celery tasks: load the id, call the service (services.round_pipeline runs
a round, services.round_recovery sends the rounds a dead worker left). Work reaches these tasks
through reviewapp.queueing only.

ROUNDS_QUEUE names the queue; a route (task_routes) sends this module's tasks there for any
other caller.
"""
from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.db import connection

from .queueing import ROUNDS_QUEUE
from .services.round_pipeline import execute_round
from .services.round_recovery import rounds_centres_backfill, rounds_recover
from .services.workers import worker_name

log = logging.getLogger("reviewapp.rounds")


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


@worker_ready.connect
def _recover_on_worker_start(sender=None, **kwargs) -> None:
    if ROUNDS_QUEUE not in consumed_queues(sender):
        return
    try:
        rounds_recover()
        rounds_centres_backfill()
    except Exception:  # never keep a worker from starting
        log.exception("could not re-queue unfinished rounds")
    finally:
        connection.close()


def consumed_queues(consumer) -> set[str]:
    try:
        return {q.name for q in consumer.task_consumer.queues}
    except AttributeError:
        return {ROUNDS_QUEUE}
