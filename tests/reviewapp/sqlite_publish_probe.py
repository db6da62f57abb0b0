"""Run by test_sqlite_publish.py in a process of its own, on the embedded SQLite default: a round
publishes FLAGS flags while its heartbeat thread writes the round row every few milliseconds,
as a worker's does. Prints "published N" or the error."""
import os
import sys
import threading
import time

import django

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from ml.evidence import HardEvidence  # noqa: E402
from ml.mining import FlagCandidate  # noqa: E402
from reviewapp.models import Dataset, Face, Identity, Round, Source  # noqa: E402
from reviewapp.services.rounds import round_heartbeat, round_publish  # noqa: E402

FLAGS = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000

call_command("migrate", verbosity=0)
dataset = Dataset.objects.create(name="probe")
source = Source.objects.create(dataset=dataset, name="main", format="folder", root="/nowhere")
identities = Identity.objects.bulk_create([Identity(dataset=dataset, source=source, name=f"p{i}") for i in range(100)])
Face.objects.bulk_create([Face(dataset=dataset, source=source, identity=identities[i % 100],
                               original_identity=identities[i % 100], path=f"p{i % 100}/{i}.jpg", size=1000)
                          for i in range(FLAGS)], batch_size=5000)
face_ids = list(Face.objects.order_by("pk").values_list("pk", flat=True))
round_ = Round.objects.create(dataset=dataset, number=1, method="arcface", status=Round.Status.MINING,
                              worker="probe", started_at=django.utils.timezone.now())


def evidence(i: int) -> HardEvidence:
    return HardEvidence(reason="margin_band", band="hard", theta_y_deg=60.0, theta_1_deg=59.0, margin_deg=1.0,
                        nearest_identity=(i + 1) % 100, reference_faces={"own": [i % 100], "nearest": []},
                        geometry="embedding", centre="normalised mean embedding", search="exact",
                        score_rule="theta_y - theta_1 - hard_margin_low (degrees)")


candidates = [FlagCandidate(kind="hard", score=1.0 + i / FLAGS, index=i, label=i % 100, suggestion="keep",
                            evidence=evidence(i)) for i in range(FLAGS)]
stop = threading.Event()
beats = []


def heartbeat() -> None:
    try:
        while not stop.is_set():
            round_heartbeat(round_id=round_.pk, worker="probe", progress={"stage": "mining", "beat": len(beats)})
            beats.append(time.monotonic())
            time.sleep(0.002)
    except Exception as exc:  # the worker's heartbeat logs and goes on; here it is a finding
        print(f"heartbeat error {type(exc).__name__}: {exc}", flush=True)
    finally:
        connection.close()


thread = threading.Thread(target=heartbeat)
thread.start()
time.sleep(0.05)
try:
    published = round_publish(round_id=round_.pk, worker="probe", candidates=candidates, index_to_face=face_ids,
                              class_to_identity=[i.pk for i in identities])
    print(f"published {published}", flush=True)
except Exception as exc:
    print(f"error {type(exc).__name__}: {exc}", flush=True)
finally:
    stop.set()
    thread.join()
