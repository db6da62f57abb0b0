"""bench/web.py end to end on a tiny dataset: seeds its own Postgres database, serves the app
with gunicorn, drives two locust clients for a few seconds, and prints the promised JSON."""
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("queue", "face_card", "decision", "thumbnail", "identities")

pytestmark = pytest.mark.slow


def test_tiny_web_bench_prints_latencies_without_errors():
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        pytest.skip("bench/web.py needs Postgres (DATABASE_URL)")
    # Its own database next to this run's, so parallel runs on one server do not collide.
    database = (urlsplit(url).path.lstrip("/") or "faceclean") + "_webbench_smoke"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "bench/web.py", "--faces", "2000", "--identities", "100", "--flags", "400",
         "--clients", "2", "--seconds", "4", "--stress-seconds", "3", "--think-ms-min", "0", "--think-ms-max", "20",
         "--warmup-seconds", "1", "--bulk-flags", "30",
         "--workers", "1", "--threads", "2", "--database", database],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for phase in (report, report["stress"]):  # the paced run, then the closed loop
        for kind in KINDS:
            figures = phase[kind]
            assert figures["requests"] > 0, kind
            assert 0 < figures["p50"] <= figures["p95"] <= figures["p99"], (kind, figures)
            assert figures["errors"] == 0, (kind, figures)
        assert phase["errors"] == 0
        assert phase["requests"] == sum(phase[kind]["requests"] for kind in KINDS)
        assert phase["decided"] == phase["decision"]["requests"]  # each client owns its flags
        assert phase["conflicts"] == 0
    assert report["setup"]["queue_pages_after_cursor"] + report["stress"]["setup"]["queue_pages_after_cursor"] > 0
    assert report["setup"]["think_ms"] == [0, 20] and report["stress"]["setup"]["think_ms"] == [0, 0]
    # The queue-wide bulk job after the load: about 30 flags rejected through the API's job.
    bulk = report["bulk_decide"]
    assert 25 <= bulk["decisions"] + bulk["conflicts"] <= 40 and bulk["decisions"] >= 25, bulk
    assert 0 < bulk["seconds"] < 120, bulk
    # The throw-away database is gone afterwards.
    listing = subprocess.run(
        [sys.executable, "-c", "import psycopg2,sys; c=psycopg2.connect(sys.argv[1]); k=c.cursor(); "
         "k.execute('select 1 from pg_database where datname=%s', (sys.argv[2],)); print(k.fetchone())",
         url.rsplit("/", 1)[0] + "/postgres", database],
        capture_output=True, text=True, timeout=60,
    )
    assert listing.stdout.strip() == "None", listing.stderr
