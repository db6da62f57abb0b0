"""Background jobs: paths confined to the data root, the claim, a worker that died, and
imports and exports run by a real Celery worker on the real broker, downloaded over HTTP."""
import os
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from reviewapp.models import Dataset, Job, Membership
from reviewapp.services import jobs
from reviewapp.services.exports import dataset_export
from reviewapp.services.labels import face_remove
from tests.factories import DatasetFactory, MembershipFactory, jpeg_bytes
from tests.worker import celery_worker, wait_for


def test_paths_resolve_inside_the_root_only(tmp_path):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "out")
    os.symlink(root / "a" / "b", root / "inside")  # a link that stays inside is fine
    assert jobs.path_under_root("a/b", root) == (root / "a" / "b").resolve()
    assert jobs.path_under_root(str(root / "a"), root) == (root / "a").resolve()
    assert jobs.path_under_root("inside", root) == (root / "a" / "b").resolve()
    for path, reason in (("../elsewhere", "'..' is not allowed"), ("a/../../elsewhere", "'..' is not allowed"),
                         (str(tmp_path / "elsewhere"), "outside the data root"), ("out", "symbolic link"),
                         ("nope", "does not exist"), ("", "give a path"), ("a\x00", "NUL")):
        with pytest.raises(ValueError, match=reason):
            jobs.path_under_root(path, root)


def test_a_job_is_claimed_once(db):
    job = Job.objects.create(kind=Job.Kind.EXPORT, dataset=DatasetFactory())
    assert jobs.job_claim(job_id=job.pk, worker="w1").status == Job.Status.RUNNING
    assert jobs.job_claim(job_id=job.pk, worker="w2") is None
    assert jobs.job_heartbeat(job_id=job.pk, worker="w1", progress={"stage": "faces"})
    assert not jobs.job_heartbeat(job_id=job.pk, worker="w2")
    assert jobs.job_execute(job_id=job.pk, worker="w3") == "not claimed"


def test_a_job_whose_worker_died_shows_as_failed_with_the_reason(client, db, staff, settings):
    settings.JOB_STALE_SECONDS = 30
    dataset = DatasetFactory()
    job = Job.objects.create(kind=Job.Kind.EXPORT, dataset=dataset)
    jobs.job_claim(job_id=job.pk, worker="gone")
    fresh = Job.objects.create(kind=Job.Kind.EXPORT, dataset=dataset)
    jobs.job_claim(job_id=fresh.pk, worker="alive")
    old = (timezone.now() - timedelta(seconds=300)).isoformat()
    Job.objects.filter(pk=job.pk).update(result={"worker": "gone", "heartbeat_at": old})
    client.force_login(staff)
    url = reverse("job-detail", args=[job.pk])

    # A GET only reads: the page says the worker is silent, and the job stays as it is.
    html = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and not job.error and job.finished_at is None
    assert "No word from its worker for 5 min" in html

    # The worker sweep fails it; then the page shows why and stops polling.
    assert jobs.jobs_sweep()["failed"] == 1
    html = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "stopped reporting" in job.error
    assert "stopped reporting" in html and "hx-trigger" not in html  # no more polling
    assert jobs.jobs_fail_stale() == 0  # the live one stays running
    fresh.refresh_from_db()
    assert fresh.status == Job.Status.RUNNING
    assert not jobs.job_finish(job_id=job.pk, worker="gone", result={})  # too late for the dead worker


def test_an_export_writes_only_in_its_job_folder_and_a_failure_is_recorded(db, settings, tmp_path):
    settings.EXPORT_ROOT = tmp_path / "exports"
    dataset = DatasetFactory(name="../../etc/passwd <x>")
    job = jobs.job_export_start(dataset=dataset, user=None)
    assert jobs.job_execute(job_id=job.pk, worker="here") == "done"
    job.refresh_from_db()
    assert job.file == f"{job.pk}/etcpasswd-x.txt"
    assert job.result["files"] == [job.file, f"{job.pk}/etcpasswd-x-decisions.csv"]
    assert jobs.export_file(job, 0) == (tmp_path / "exports" / job.file).resolve()
    assert jobs.export_file(job, 2) is None

    broken = jobs.job_export_start(dataset=dataset, user=None, fmt="list")
    settings.EXPORT_ROOT = "/proc/no-such-place"
    assert jobs.job_execute(job_id=broken.pk, worker="here") == "failed"
    broken.refresh_from_db()
    assert broken.status == Job.Status.FAILED and broken.error


def _faces(root, names=("ann", "bob"), per=2):
    for name in names:
        (root / name).mkdir(parents=True)
        for j in range(per):
            (root / name / f"{j}.jpg").write_bytes(jpeg_bytes(color=(j * 90, 10, 10)))


@pytest.mark.worker
def test_worker_imports_from_the_data_root_then_exports_for_download(transactional_db, client, settings,
                                                                    tmp_path, django_user_model):
    settings.DATA_ROOT = tmp_path / "data"
    _faces(tmp_path / "data" / "faces")
    boss = django_user_model.objects.create_user(username="importer", password="pw-importer-1")
    MembershipFactory(user=boss, dataset=DatasetFactory(name="older"), role=Membership.Role.ADMIN)
    client.force_login(boss)
    with celery_worker() as worker:
        response = client.post(reverse("dataset-import"), {"path": "faces", "name": "web", "format": "folder"})
        job = Job.objects.get(kind="import")
        assert wait_for(lambda: Job.objects.get(pk=job.pk).status in ("done", "failed"), timeout=90), \
            getattr(worker, "log_text", "")
        job.refresh_from_db()
        assert job.status == "done", job.error
        dataset = Dataset.objects.get(name="web")
        assert job.dataset == dataset and job.result["faces"] == 4
        # The importer administers the new dataset.
        assert Membership.objects.get(user=boss, dataset=dataset).role == Membership.Role.ADMIN
        assert dataset.name in client.get(response["Location"]).content.decode()

        face_remove(face_id=dataset.faces.order_by("pk").first().pk, user=boss)
        client.post(reverse("export-start", args=[dataset.pk]), {"format": "list"})
        export = Job.objects.get(kind="export")
        assert wait_for(lambda: Job.objects.get(pk=export.pk).status in ("done", "failed"), timeout=90), \
            getattr(worker, "log_text", "")
    export.refresh_from_db()
    assert export.status == "done", export.error
    page = client.get(reverse("job-detail", args=[export.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert reverse("job-download", args=[export.pk]) in page and "hx-trigger" not in page

    download = client.get(reverse("job-download", args=[export.pk]))
    assert download.status_code == 200 and "attachment" in download["Content-Disposition"]
    assert "web.txt" in download["Content-Disposition"]
    lines = b"".join(download.streaming_content).decode().splitlines()
    expected = tmp_path / "expected.txt"
    dataset_export(dataset=dataset, out=expected)
    assert lines == expected.read_text().splitlines() and len(lines) == 3
    decisions = client.get(reverse("job-download", args=[export.pk]) + "?part=1")
    csv_text = b"".join(decisions.streaming_content).decode()
    assert csv_text.startswith("id,created_at") and "remove" in csv_text and "import" in csv_text


def _part(folder, name="data.txt", age=0.0):
    """A temporary export file named as ml.io.atomic names them, last written `age` s ago."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.4242-deadbeef.part"
    path.write_bytes(b"x" * 10)
    if age:
        stamp = path.stat().st_mtime - age
        os.utime(path, (stamp, stamp))
    return path


def test_the_sweep_removes_partial_export_files_nothing_writes_any_more(db, settings, tmp_path):
    settings.EXPORT_ROOT = tmp_path / "exports"
    settings.EXPORT_PART_IDLE_SECONDS = 600
    abandoned = _part(tmp_path / "exports" / "7", age=601)
    writing = _part(tmp_path / "exports" / "8", age=5)
    finished = tmp_path / "exports" / "7" / "data.txt"
    finished.write_text("kept\n")

    assert jobs.jobs_sweep()["partials"] == 1

    assert not abandoned.exists() and writing.exists() and finished.read_text() == "kept\n"


def test_a_job_failed_for_a_dead_worker_loses_its_partial_files(db, settings, tmp_path):
    settings.EXPORT_ROOT = tmp_path / "exports"
    settings.JOB_STALE_SECONDS = 30
    job = Job.objects.create(kind=Job.Kind.EXPORT, dataset=DatasetFactory())
    jobs.job_claim(job_id=job.pk, worker="gone")
    old = (timezone.now() - timedelta(seconds=300)).isoformat()
    Job.objects.filter(pk=job.pk).update(result={"worker": "gone", "heartbeat_at": old})
    partial = _part(tmp_path / "exports" / str(job.pk), age=1)  # fresh: only the failure removes it
    other = _part(tmp_path / "exports" / str(job.pk + 1), age=1)

    assert jobs.jobs_sweep()["failed"] == 1

    assert Job.objects.get(pk=job.pk).status == Job.Status.FAILED
    assert not partial.exists() and other.exists()
