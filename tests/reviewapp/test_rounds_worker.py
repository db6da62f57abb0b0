"""Cleaning rounds in a real Celery worker on the real broker: a round runs end to end and is
published once despite a duplicate delivery, a cancelled round stops its training, and a
round whose worker is killed mid-training resumes from its checkpoint in the next worker."""
import json
import os
import shutil
import signal

import pytest
from django.conf import settings

from reviewapp import tasks
from reviewapp.models import Dataset, Flag, Round
from reviewapp.services.imports import dataset_import
from reviewapp.services.rounds import question_key, round_cancel, round_start
from reviewapp.queueing import round_send
from reviewapp.runs import round_run_folder
from tests.worker import celery_worker, purge_queues, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.slow]

# 4 stale seconds: a killed worker's round is taken over within seconds, yet heartbeats
# (every second) keep a live one safe even on a loaded machine.
WORKER_ENV = {"ROUND_STALE_SECONDS": "4"}
TINY = {"epochs": 1, "batch_size": 16, "num_workers": 0, "log_every": 1, "device": "cpu",
        "data": {"transform": {"crop": None, "size": 32}}}


@pytest.fixture(autouse=True)
def rounds_wired():
    # Celery's autodiscovery loads reviewapp.tasks only: it must import the round tasks.
    assert hasattr(tasks, "run_round_task"), "reviewapp/tasks.py must import reviewapp.tasks_rounds"


@pytest.fixture
def att_dataset(att_root, tmp_path, transactional_db):
    root = tmp_path / "att"
    for subject in ("s1", "s2", "s3", "s4"):
        shutil.copytree(att_root / subject, root / subject)
    dataset_import(path=root, name="att-worker", fmt="folder")
    return Dataset.objects.get(name="att-worker")


@pytest.fixture
def worker_log():
    """The text the newest worker has logged so far."""
    def read() -> str:
        logs = sorted(settings.VAR_DIR.glob("worker-*.log"), key=lambda p: p.stat().st_mtime)
        return logs[-1].read_text(encoding="utf-8", errors="replace") if logs else ""
    return read


@pytest.fixture(autouse=True)
def empty_rounds_queue():
    purge_queues()


def _status(round_id: int) -> str:
    return Round.objects.values_list("status", flat=True).get(pk=round_id)


def _ended(round_id: int) -> bool:
    return _status(round_id) in ("published", "failed", "cancelled")


def _assert_published_once(round_: Round) -> None:
    round_.refresh_from_db()
    assert round_.status == "published", round_.error
    flags = list(Flag.objects.filter(round=round_))
    assert len(flags) == round_.progress["flags"] > 0
    assert len({question_key(flag) for flag in flags}) == len(flags)  # no flag twice


def _checkpoint_steps(round_id: int) -> list[int]:
    """The first fold model's checkpoints (a training round trains one model per fold, ml.crossfit)."""
    folder = round_run_folder(round_id).root / "fold-0" / "checkpoints"
    return sorted(int(p.stem.split("_")[1]) for p in folder.glob("step_*.pt")) if folder.exists() else []


def test_round_is_published_once_despite_a_duplicate_delivery(att_dataset, worker_log):
    with celery_worker(extra_env=WORKER_ENV) as worker:
        round_ = round_start(dataset=att_dataset, method="arcface", config=TINY)  # queued on commit
        round_send(round_.pk)  # the same task delivered a second time
        assert wait_for(lambda: _ended(round_.pk), timeout=120), worker_log()
        _assert_published_once(round_)
        finished = Round.objects.get(pk=round_.pk).finished_at
        flags = Flag.objects.filter(round=round_).count()
        assert wait_for(lambda: f"round {round_.pk}: not claimed" in worker_log(), timeout=30), worker_log()
    assert Flag.objects.filter(round=round_).count() == flags
    assert Round.objects.get(pk=round_.pk).finished_at == finished
    assert "Traceback" not in worker.log_text


def test_cancel_stops_a_training_round(att_dataset, worker_log):
    with celery_worker(extra_env=WORKER_ENV):
        round_ = round_start(dataset=att_dataset, method="robustface", config={**TINY, "epochs": 200})
        assert wait_for(lambda: Round.objects.get(pk=round_.pk).progress.get("step", 0) >= 1, timeout=90), worker_log()
        round_cancel(round_id=round_.pk)
        assert wait_for(lambda: f"round {round_.pk}: stopped" in worker_log(), timeout=30), worker_log()
    round_.refresh_from_db()
    assert round_.status == "cancelled" and not Flag.objects.filter(round=round_).exists()
    # Two fold models, each on 20 of the 40 faces, 16 a batch: 1 step an epoch, 400 in all.
    trained = 0
    for metrics in round_run_folder(round_.pk).root.glob("fold-*/metrics.jsonl"):
        trained += json.loads(metrics.read_text().splitlines()[-1])["step"]
    assert 1 <= trained < 2 * 200


def test_killed_worker_round_resumes_from_its_checkpoint(att_dataset, worker_log):
    # 40 faces, two folds: each model trains on 20, 16 a batch (the partial batch dropped): 1 step
    # an epoch, 6 in all.
    config = {**TINY, "epochs": 6, "checkpoint_every": 2}
    with celery_worker(extra_env=WORKER_ENV) as first:
        round_ = round_start(dataset=att_dataset, method="arcface", config=config)
        assert wait_for(lambda: _checkpoint_steps(round_.pk), timeout=90, interval=0.05), worker_log()
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    killed = Round.objects.get(pk=round_.pk)
    assert killed.status == "training" and max(_checkpoint_steps(round_.pk)) < 6

    with celery_worker(extra_env=WORKER_ENV):
        assert wait_for(lambda: _ended(round_.pk), timeout=120), worker_log()
    _assert_published_once(round_)
    round_.refresh_from_db()
    assert round_.progress["attempt"] == 2 and round_.worker != killed.worker
    assert 2 <= round_.progress["resumed_from_step"] < 6
    assert "resumed from step_" in (round_run_folder(round_.pk).root / "fold-0" / "train.log").read_text()
