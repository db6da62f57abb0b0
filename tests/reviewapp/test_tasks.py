"""Import and export run as Celery tasks in a real worker process, through the real broker
(Redis in CI, the filesystem transport on a bare machine)."""
import pytest

from reviewapp.models import Dataset, Decision, Face
from reviewapp.tasks import export_dataset_task, import_dataset_task
from tests.factories import jpeg_bytes
from tests.worker import celery_worker, wait_for

pytestmark = pytest.mark.worker


def test_worker_imports_then_exports(transactional_db, tmp_path):
    for name in ("ann", "bob"):
        (tmp_path / "faces" / name).mkdir(parents=True)
        for j in range(2):
            (tmp_path / "faces" / name / f"{j}.jpg").write_bytes(jpeg_bytes(color=(j * 90, 10, 10)))
    out = tmp_path / "clean.txt"
    with celery_worker() as worker:
        import_dataset_task.delay(path=str(tmp_path / "faces"), name="queued", fmt="folder")
        imported = wait_for(lambda: Face.objects.filter(dataset__name="queued").count() == 4, timeout=90)
        assert imported, getattr(worker, "log_text", "")
        dataset = Dataset.objects.get(name="queued")
        export_dataset_task.delay(dataset_id=dataset.pk, out=str(out))
        assert wait_for(out.exists, timeout=60)
    lines = out.read_text().splitlines()
    assert sorted(line.split("\t")[2] for line in lines) == ["ann", "ann", "bob", "bob"]
    assert Decision.objects.filter(dataset=dataset, action="import", actor="worker").count() == 1
