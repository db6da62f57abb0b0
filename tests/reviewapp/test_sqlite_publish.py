"""The embedded SQLite default holds a whole round: 20,000 flags published while the round's
heartbeat thread writes the same row every few milliseconds (issue 10, item 14). It runs in a
process of its own on a fresh SQLite file, whatever database the suite itself uses."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("sqlite_publish_probe.py")


@pytest.mark.slow
def test_a_round_of_20000_flags_publishes_on_sqlite_beside_its_heartbeat(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(FACECLEAN_VAR_DIR=str(tmp_path), DEBUG="1", DJANGO_SETTINGS_MODULE="config.settings")
    done = subprocess.run([sys.executable, str(PROBE), "20000"], env=env, capture_output=True, text=True,
                          timeout=600, cwd=PROBE.parents[2])
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 0, done.stderr[-2000:]
    assert lines[-1] == "published 20000", done.stdout + done.stderr[-2000:]
    assert not [line for line in lines if line.startswith("heartbeat error")], lines
