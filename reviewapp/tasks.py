"""Celery tasks: thin wrappers that load ids and call one service."""
import logging
import os
import socket

from celery import shared_task
from celery.signals import worker_ready
from django.contrib.auth import get_user_model
from django.db import connection

from .models import Dataset
from .services.exports import dataset_export
from .services.imports import dataset_import
from .services.jobs import job_execute, jobs_fail_stale

log = logging.getLogger("reviewapp.jobs")


def _user(user_id):
    return get_user_model().objects.filter(pk=user_id).first() if user_id else None


@shared_task
def import_dataset_task(*, path: str, name: str, fmt: str, root: str | None = None, user_id: int | None = None) -> dict:
    user = _user(user_id)
    report = dataset_import(path=path, name=name, fmt=fmt, root=root, user=user,
                            actor=user.get_username() if user else "worker")
    return report.summary()


@shared_task
def export_dataset_task(*, dataset_id: int, out: str, fmt: str = "list") -> dict:
    summary = dataset_export(dataset=Dataset.objects.get(pk=dataset_id), out=out, fmt=fmt)
    return {"faces": summary.faces, "identities": summary.identities, "out": out}


def worker_name(hostname: str | None = None) -> str:
    """Unique per process: a restarted worker must not pass for the one that died."""
    return f"{hostname or socket.gethostname()}:{os.getpid()}"


@shared_task(bind=True, acks_late=True, ignore_result=True)
def run_job_task(self, job_id: int) -> str:
    """A browser-started import or export (services.jobs): claims the Job row, so a duplicate
    delivery does nothing, and records the result or the error on it."""
    return job_execute(job_id=job_id, worker=worker_name(self.request.hostname))


@worker_ready.connect
def _fail_stale_jobs_on_worker_start(sender=None, **kwargs) -> None:
    try:
        failed = jobs_fail_stale()
        if failed:
            log.warning("marked %d job(s) failed: their worker stopped reporting", failed)
    except Exception:  # never keep a worker from starting
        log.exception("could not check for stale jobs")
    finally:
        connection.close()


# Celery's autodiscovery loads this module only: the round tasks live beside it.
from .tasks_rounds import recover_rounds_task, run_round_task  # noqa: E402,F401
