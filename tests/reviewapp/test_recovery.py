"""Nothing is stranded: a live idle worker takes over a dead worker's round and fails a dead
worker's job on its own periodic sweep (not only when a worker starts or finishes a round), and
a start during a broker outage answers normally, keeps its row queued and is sent by the sweep
once the broker is back."""
import json
from datetime import timedelta

import numpy as np
import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from config.celery import app
from reviewapp.models import Job, Round
from reviewapp.services import jobs
from reviewapp.services.rounds import ROUNDS_QUEUE, round_start
from reviewapp.services import round_recovery
from tests.factories import FaceFactory, IdentityFactory, jpeg_bytes
from tests.worker import celery_worker, purge_queues, wait_for

# A sweep every second, a round stale after 2 s and a job after 2 s: a take-over in seconds.
SWEEPING = {"RECOVERY_SWEEP_SECONDS": "1", "ROUND_STALE_SECONDS": "2", "JOB_STALE_SECONDS": "2"}
CLOSED_PORT = "redis://127.0.0.1:1/0"  # nothing listens there


def _drain(queue: str) -> list[tuple[str, dict]]:
    """(task name, kwargs) of every message waiting in `queue`, taken off it."""
    found = []
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            args, kwargs, _ = json.loads(message.body) if isinstance(message.body, (str, bytes)) else message.body
            found.append((message.headers["task"], kwargs))
    return found


@pytest.fixture(autouse=True)
def empty_queues():
    purge_queues()


def _reset_producers() -> None:
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def broker_down():
    """The app publishes to a port nothing listens on until the test calls the returned function."""
    real = app.conf.broker_write_url
    app.conf.broker_write_url = CLOSED_PORT
    _reset_producers()

    def back_up():
        app.conf.broker_write_url = real
        _reset_producers()

    yield back_up
    back_up()


def _newest_worker_log() -> str:
    logs = sorted(settings.VAR_DIR.glob("worker-*.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1].read_text(encoding="utf-8", errors="replace") if logs else ""


def _ready(worker) -> bool:
    """Once ready, the worker's start-up recovery has run: what appears later only a sweep finds."""
    return wait_for(lambda: " ready." in _newest_worker_log(), timeout=60)


# -- item 1: a dead worker's round -------------------------------------------------------------------

@pytest.mark.worker
def test_a_live_idle_worker_takes_over_a_dead_workers_round(transactional_db, tmp_path):
    identity = IdentityFactory()
    for _ in range(4):
        FaceFactory(identity=identity, dataset=identity.dataset)
    FaceFactory(identity=IdentityFactory(source=identity.source))
    embeddings = tmp_path / "emb.npy"
    np.save(embeddings, np.eye(5, 8, dtype=np.float32) + 0.1)
    with celery_worker(extra_env=SWEEPING) as worker:
        assert _ready(worker), _newest_worker_log()
        round_ = round_start(dataset=identity.dataset, method="embeddings",
                             config={"embeddings": str(embeddings)}, enqueue=False)
        # Its worker was killed mid-round: no message left, a heartbeat that stopped long ago.
        Round.objects.filter(pk=round_.pk).update(status=Round.Status.MINING, worker="dead-host:1",
                                                  heartbeat_at=timezone.now() - timedelta(minutes=5),
                                                  progress={"attempt": 1})
        assert wait_for(lambda: Round.objects.get(pk=round_.pk).status == "published", timeout=60), \
            _newest_worker_log()
    round_.refresh_from_db()
    assert round_.worker != "dead-host:1" and round_.progress["attempt"] == 2


# -- item 8: a dead worker's job, as the API reports it -------------------------------------------------

@pytest.mark.worker
def test_the_api_reports_a_dead_workers_job_failed_after_the_sweep(transactional_db, client, staff):
    client.force_login(staff)
    with celery_worker(extra_env=SWEEPING) as worker:
        assert _ready(worker), _newest_worker_log()
        job = Job.objects.create(kind=Job.Kind.EXPORT, dataset=IdentityFactory().dataset)
        jobs.job_claim(job_id=job.pk, worker="dead-host:2")
        old = (timezone.now() - timedelta(minutes=5)).isoformat()
        Job.objects.filter(pk=job.pk).update(result={"worker": "dead-host:2", "heartbeat_at": old})
        assert wait_for(lambda: client.get(f"/api/jobs/{job.pk}/").json()["status"] == "failed", timeout=30), \
            _newest_worker_log()
    body = client.get(f"/api/jobs/{job.pk}/").json()
    assert body["status"] == "failed" and "stopped reporting" in body["error"]


def test_the_sweep_fails_stale_jobs_and_reading_the_api_writes_nothing(db, client, staff, settings):
    settings.JOB_STALE_SECONDS = 30
    client.force_login(staff)
    job = Job.objects.create(kind=Job.Kind.EXPORT, dataset=IdentityFactory().dataset)
    jobs.job_claim(job_id=job.pk, worker="dead-host:3")
    old = (timezone.now() - timedelta(seconds=300)).isoformat()
    Job.objects.filter(pk=job.pk).update(result={"worker": "dead-host:3", "heartbeat_at": old})

    assert client.get(f"/api/jobs/{job.pk}/").json()["status"] == "running"  # a GET changes nothing
    assert jobs.jobs_sweep()["failed"] == 1
    body = client.get(f"/api/jobs/{job.pk}/").json()
    assert body["status"] == "failed" and "stopped reporting" in body["error"]


# -- item 7: the broker is down --------------------------------------------------------------------

def test_starts_during_a_broker_outage_stay_queued_and_the_sweep_sends_them_later(
        transactional_db, client, staff, settings, tmp_path, broker_down):
    settings.DATA_ROOT = tmp_path / "data"
    (tmp_path / "data" / "faces" / "ann").mkdir(parents=True)
    (tmp_path / "data" / "faces" / "ann" / "0.jpg").write_bytes(jpeg_bytes())
    dataset = IdentityFactory().dataset
    client.force_login(staff)

    export = client.post("/api/jobs/export/", {"dataset": dataset.pk}, content_type="application/json")
    started = client.post("/api/rounds/", {"dataset": dataset.pk, "method": "arcface", "config": {"epochs": 1}},
                          content_type="application/json")
    imported = client.post(reverse("dataset-import"), {"path": "faces", "name": "web", "format": "folder"})

    assert export.status_code == 202 and export.json()["status"] == "queued"
    assert started.status_code == 201 and started.json()["status"] == "queued"
    assert imported.status_code == 302
    job_ids = set(Job.objects.filter(status="queued").values_list("pk", flat=True))
    round_id = Round.objects.get(dataset=dataset, status="queued").pk
    assert len(job_ids) == 2
    assert jobs.jobs_sweep()["queued"] == 0 and round_recovery.rounds_sweep() == 0  # the broker is still down: no error

    broker_down()  # the broker is back
    long_ago = timezone.now() - timedelta(minutes=5)
    Job.objects.filter(pk__in=job_ids).update(created_at=long_ago)
    Round.objects.filter(pk=round_id).update(created_at=long_ago)
    assert jobs.jobs_sweep()["queued"] == 2 and round_recovery.rounds_sweep() == 1

    sent = _drain("default") + _drain(ROUNDS_QUEUE)
    assert sorted(kwargs.get("job_id", 0) for task, kwargs in sent if task.endswith("run_job_task")) == \
        sorted(job_ids)
    assert [kwargs["round_id"] for task, kwargs in sent if task.endswith("run_round_task")] == [round_id]
