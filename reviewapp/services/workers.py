"""Who a worker is, how it proves it is alive and how often it sweeps: one definition for jobs
and rounds.

A worker writes a heartbeat into the row of the work it holds (Job.result, Round.heartbeat_at)
from a thread of its own, so it proves it is alive however long one step of the work takes. A
row whose heartbeat is older than its stale limit (JOB_STALE_SECONDS, ROUND_STALE_SECONDS) lost
its worker: every worker's periodic sweep (RECOVERY_SWEEP_SECONDS, reviewapp.tasks) fails the
job or lets another worker take the round over.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Callable

from django.db import connection

from ..rules import setting_seconds

log = logging.getLogger("reviewapp.workers")


def worker_name(hostname: str | None = None) -> str:
    """Unique per process: a restarted worker must not pass for the one that died."""
    return f"{hostname or socket.gethostname()}:{os.getpid()}"


def sweep_seconds() -> float:
    """How often each worker sweeps (reviewapp.tasks): fails jobs whose worker died, sends
    queued jobs whose message was lost, lets a live worker take a dead one's round over."""
    return setting_seconds("RECOVERY_SWEEP_SECONDS", 30)


def beat_seconds(stale_seconds: float, *, at_most: float) -> float:
    """How often to beat: four beats within the stale limit, so a slow beat or two never makes a
    live worker look dead; at least 0.2 s apart (a zero stale limit must not spin)."""
    return max(0.2, min(at_most, stale_seconds / 4))


class HeartbeatThread:
    """Calls beat() every every() seconds from a thread while the `with` block runs. beat()
    returning False means the work is no longer this worker's: `lost` is set and the beats stop.
    An exception in beat() (a database hiccup) is logged and the next beat tries again."""

    def __init__(self, name: str, beat: Callable[[], bool], every: Callable[[], float]) -> None:
        self.name, self._beat, self._every = name, beat, every
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{name}-heartbeat", daemon=True)

    def __enter__(self) -> "HeartbeatThread":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self._every()):
                try:
                    alive = self._beat()
                except Exception:  # a database hiccup: the next beat tries again
                    log.exception("%s: heartbeat failed", self.name)
                    continue
                if alive is False:
                    self.lost.set()
                    return
        finally:
            connection.close()  # this thread's own connection
