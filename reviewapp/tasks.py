"""Celery tasks: thin wrappers that load ids and call one service."""
import logging
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.db import connection

from .queueing import ROUNDS_QUEUE
from .services.jobs import job_execute, jobs_sweep
from .services.round_recovery import rounds_sweep
from .services.workers import sweep_seconds, worker_name

log = logging.getLogger("reviewapp.jobs")


@shared_task(bind=True, acks_late=True, ignore_result=True)
def run_job_task(self, job_id: int) -> str:
    """A browser-started import or export (services.jobs): claims the Job row, so a duplicate
    delivery does nothing, and records the result or the error on it."""
    return job_execute(job_id=job_id, worker=worker_name(self.request.hostname))


# -- the periodic sweep ---------------------------------------------------------------------------
# Every worker sweeps on a timer thread of its own rather than on `celery beat`: a beat is one
# more process to start and keep alive (when it dies nothing sweeps, the very stranding this
# prevents), while a worker that can take work over is by definition alive to sweep; the thread
# runs while a solo pool's task trains for hours, and works the same on the filesystem broker
# and on Redis. Each worker sweeps what its queues serve; several workers sweeping send
# duplicate messages, which the Job/Round claim turns into no-ops and which expire.

class _Sweeper:
    def __init__(self, queues: set[str]) -> None:
        self.queues = queues
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="recovery-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def sweep(self) -> None:
        try:
            if "default" in self.queues:
                done = jobs_sweep()
                if done["failed"] or done["queued"]:
                    log.warning("sweep: %d job(s) failed (their worker stopped reporting), %d sent again",
                                done["failed"], done["queued"])
            if ROUNDS_QUEUE in self.queues:
                rounds_sweep()
        except Exception:  # the database or the broker is down: the next sweep tries again
            log.exception("the recovery sweep failed")
        finally:
            connection.close()  # this thread's own connection

    def _loop(self) -> None:
        while not self._stop.wait(sweep_seconds()):
            self.sweep()


_sweeper: _Sweeper | None = None


@worker_ready.connect
def _start_sweeping(sender=None, **kwargs) -> None:
    """Recover at once (a job or round left by a worker that died), then every sweep_seconds()."""
    global _sweeper
    _sweeper = _Sweeper(consumed_queues(sender))
    _sweeper.sweep()
    _sweeper.start()


@worker_shutdown.connect
def _stop_sweeping(**kwargs) -> None:
    if _sweeper is not None:
        _sweeper.stop()


# Celery's autodiscovery loads this module only: the round tasks live beside it.
from .tasks_rounds import consumed_queues, recover_rounds_task, run_round_task  # noqa: E402,F401
