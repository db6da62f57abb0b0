"""Imports never fail as a whole on one bad item (issue 10, items 4, 5, 6, 12): names that
are not UTF-8, symlink loops, names and paths too long for an index, lines too long to hold
in memory; and a failed browser import job leaves no dataset behind."""
import os
import random
import string

import pytest
from django.urls import reverse

from ml.io.filelist import MAX_LINE_BYTES
from ml.io.scan import MAX_NAME_BYTES, MAX_PATH_BYTES
from reviewapp.models import Dataset, Face, Job, Membership
from reviewapp.services import jobs
from reviewapp.services.imports import dataset_import
from tests.factories import jpeg_bytes
from tests.worker import celery_worker, wait_for


def _faces(root, names=("alice",), per=2):
    for name in names:
        (root / name).mkdir(parents=True)
        for j in range(per):
            (root / name / f"{j}.jpg").write_bytes(jpeg_bytes(color=(j * 90, 10, 10)))


def _incompressible(length: int) -> str:
    # Postgres compresses long index entries; random letters do not shrink below the limit.
    return "".join(random.Random(length).choices(string.ascii_letters, k=length))


@pytest.mark.django_db
def test_list_lines_with_a_label_or_path_too_long_to_index_are_refused_by_line(tmp_path):
    _faces(tmp_path, per=3)
    long_label = _incompressible(3000)
    long_path = f"alice/{_incompressible(3000)}.jpg"
    (tmp_path / "list.txt").write_text(
        f"alice/0.jpg alice\nalice/1.jpg\t{long_label}\n{long_path} bob\nalice/2.jpg alice\n"
    )

    report = dataset_import(path=tmp_path / "list.txt", name="long", fmt="list")

    assert report.faces == 2
    rejected = dict(report.rejected)
    assert rejected["line 2"] == f"malformed line: label longer than {MAX_NAME_BYTES} bytes"
    assert [reason for where, reason in report.rejected if where.startswith("line 3: alice/")] == [
        f"path longer than {MAX_PATH_BYTES} bytes"
    ]
    assert len(report.text()) < 2000  # the refused path is shown shortened
    assert sorted(Face.objects.values_list("path", flat=True)) == ["alice/0.jpg", "alice/2.jpg"]


@pytest.mark.django_db
def test_a_line_longer_than_the_bound_is_refused_by_number_and_the_rest_imported(tmp_path):
    _faces(tmp_path, per=2)
    huge = b"alice/x.jpg " + b"y" * (MAX_LINE_BYTES * 4)
    (tmp_path / "list.txt").write_bytes(b"alice/0.jpg alice\n" + huge + b"\nalice/1.jpg alice\n" + huge)

    report = dataset_import(path=tmp_path / "list.txt", name="huge", fmt="list")

    assert report.faces == 2
    assert report.rejected == [
        ("line 2", f"line longer than {MAX_LINE_BYTES} bytes"),
        ("line 4", f"line longer than {MAX_LINE_BYTES} bytes"),
    ]


@pytest.mark.django_db
def test_a_folder_import_counts_and_skips_symlink_loops(tmp_path):
    root = tmp_path / "d"
    _faces(root, names=("alice", "bob"))
    os.symlink("loop.jpg", root / "alice" / "loop.jpg")
    os.symlink("loop", root / "loop")

    report = dataset_import(path=root, name="loops", fmt="folder")

    assert report.faces == 4
    assert sorted(report.rejected) == [("alice/loop.jpg", "symlink loop"), ("loop", "symlink loop")]


@pytest.mark.django_db(transaction=True)
def test_a_failed_import_job_leaves_no_dataset_behind_and_can_be_retried(tmp_path, settings, monkeypatch,
                                                                         django_user_model):
    settings.DATA_ROOT = tmp_path
    _faces(tmp_path / "faces")
    boss = django_user_model.objects.create_user(username="importer", password="pw-importer-1")
    finish = jobs.job_finish

    def broken_finish(**kwargs):
        # the shape of the original failure: an error whose text is no valid UTF-8 either
        raise RuntimeError("cannot store bad\udcff.pgm")

    monkeypatch.setattr(jobs, "job_finish", broken_finish)
    job = jobs.job_import_start(path="faces", name="web", fmt="folder", user=boss)
    assert jobs.job_execute(job_id=job.pk, worker="w1") == "failed"

    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error == "RuntimeError: cannot store bad\\udcff.pgm"
    assert not Dataset.objects.filter(name="web").exists()
    assert not Face.objects.exists()

    monkeypatch.setattr(jobs, "job_finish", finish)
    retry = jobs.job_import_start(path="faces", name="web", fmt="folder", user=boss)
    assert jobs.job_execute(job_id=retry.pk, worker="w2") == "done"
    dataset = Dataset.objects.get(name="web")
    assert Membership.objects.get(user=boss, dataset=dataset).role == Membership.Role.ADMIN
    assert dataset.faces.count() == 2


@pytest.mark.worker
def test_browser_import_skips_a_name_that_is_not_utf8(transactional_db, client, settings, tmp_path,
                                                      django_user_model):
    settings.DATA_ROOT = tmp_path / "data"
    _faces(tmp_path / "data" / "faces")
    with open(os.fsencode(tmp_path / "data" / "faces" / "alice") + b"/bad\xff.pgm", "wb") as out:
        out.write(jpeg_bytes())
    boss = django_user_model.objects.create_user(username="importer", password="pw-importer-1", is_staff=True)
    client.force_login(boss)
    with celery_worker() as worker:
        response = client.post(reverse("dataset-import"), {"path": "faces", "name": "web", "format": "folder"})
        assert response.status_code == 302
        job = Job.objects.get(kind="import")
        assert wait_for(lambda: Job.objects.get(pk=job.pk).status in ("done", "failed"), timeout=90), \
            getattr(worker, "log_text", "")
    job.refresh_from_db()
    assert job.status == Job.Status.DONE, job.error
    assert job.result["faces"] == 2 and job.result["rejected"] == 1
    assert job.result["problems"] == ["alice/bad\\xff.pgm: name is not valid UTF-8"]
    assert Membership.objects.get(user=boss, dataset=job.dataset).role == Membership.Role.ADMIN
