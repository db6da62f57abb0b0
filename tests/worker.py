"""A real Celery worker for tests, in its own process, on the test database and the
configured broker (Redis in CI, the filesystem transport otherwise), under this run's names
(config/settings_test.py): its broker key prefix and var dir."""
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def _database_url() -> str:
    """The URL of the test database this process is using (pytest-django renamed it)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@contextmanager
def celery_worker(queues="default,rounds", extra_env=None):
    """Yield a running worker process; stops it (and waits) on exit."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings_test",
        DATABASE_URL=_database_url(),
        FACECLEAN_TEST_RUN=settings.TEST_RUN,
        FACECLEAN_VAR_DIR=str(settings.VAR_DIR),
        FACECLEAN_MEDIA_ROOT=str(settings.MEDIA_ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    log = open(settings.VAR_DIR / f"worker-{time.time_ns()}.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo",
         "--loglevel", "INFO", "-Q", queues, "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.seek(0)
        process.log_text = log.read()
        log.close()


def wait_for(predicate, timeout=60.0, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def purge_queues() -> None:
    """Drop the messages waiting on the rounds and default queues: ones left by an earlier
    session (a killed worker's, say) must not reach this test's worker or counts."""
    from config.celery import app
    from reviewapp.services.rounds import ROUNDS_QUEUE

    with app.connection_for_write() as conn:
        for queue in (ROUNDS_QUEUE, "default"):
            try:
                conn.default_channel.queue_purge(queue)
            except Exception:  # the queue does not exist yet
                pass
