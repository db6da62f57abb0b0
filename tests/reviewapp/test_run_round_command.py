"""run_round from the command line: --cancel stops a dataset's active round, and an --inline
round stopped by SIGTERM or Ctrl-C (SIGINT) is cancelled, so it no longer blocks the dataset."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from reviewapp.models import Dataset, Round
from reviewapp.services.imports import dataset_import
from reviewapp.services.rounds import round_start
from tests.factories import DatasetFactory
from tests.worker import ROOT, _database_url, wait_for

# Many epochs: the round is still training when the signal comes.
LONG = {"epochs": 200, "batch_size": 16, "num_workers": 0, "log_every": 1, "device": "cpu",
        "data": {"transform": {"crop": None, "size": 32}}}


def test_cancel_stops_the_active_round(db):
    dataset = DatasetFactory(name="cancel-me")
    round_ = round_start(dataset=dataset, method="robustface", config={}, enqueue=False)
    call_command("run_round", "--dataset", "cancel-me", "--cancel")
    round_.refresh_from_db()
    assert round_.status == Round.Status.CANCELLED and "cancelled by" in round_.error
    with pytest.raises(CommandError, match="no active round"):
        call_command("run_round", "--dataset", "cancel-me", "--cancel")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_cancels_an_inline_round(sig, att_root, tmp_path, transactional_db):
    root = tmp_path / "att"
    for subject in ("s1", "s2"):
        shutil.copytree(att_root / subject, root / subject)
    dataset_import(path=root, name="inline", fmt="folder")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test", "DATABASE_URL": _database_url(),
           "FACECLEAN_VAR_DIR": str(settings.VAR_DIR), "FACECLEAN_MEDIA_ROOT": str(settings.MEDIA_ROOT),
           "PYTHONUNBUFFERED": "1"}
    command = subprocess.Popen(
        [sys.executable, "manage.py", "run_round", "--dataset", "inline", "--method", "robustface",
         "--config", json.dumps(LONG), "--inline"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: Round.objects.filter(status=Round.Status.TRAINING).exists(), timeout=120)
        command.send_signal(sig)
        output, _ = command.communicate(timeout=60)
    finally:
        command.kill()
    round_ = Round.objects.get(dataset=Dataset.objects.get(name="inline"))
    assert round_.status == Round.Status.CANCELLED, output
    assert command.returncode == 1 and "round cancelled" in output, output
