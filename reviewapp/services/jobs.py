"""Background jobs started from the browser: importing a dataset from a server path, and
exporting the cleaned dataset (list or RecordIO) with its decisions for download.

A Job row is the source of truth. The Celery task (reviewapp.tasks.run_job_task) claims a
queued job with a conditional update, so a duplicate delivery does nothing; while it works, a
thread writes a heartbeat (and the import's progress) into Job.result. A running job whose
heartbeat is older than rules.job_stale_seconds() lost its worker: the sweep every worker runs
(jobs_sweep, every sweep_seconds()) marks it failed with a message saying so, instead of showing
it running forever, and sends again a queued job whose message was lost (the broker was down).
A failed job's folder loses its temporary files, and the sweep removes any temporary export
file nothing has written to for part_idle_seconds() (left by a worker killed mid-write).

Paths: an import reads only under settings.DATA_ROOT (path_under_root: no "..", symlinks
resolved, the result inside the root); an export writes only to EXPORT_ROOT/<job id>/, and a
download is found from the job id alone.
"""
from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from pathlib import Path, PurePath

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from .. import queueing
from ..models import Dataset, Job, Membership
from ..rules import heartbeat_age, job_stale_seconds, setting_seconds
from .workers import HeartbeatThread, beat_seconds, sweep_seconds

log = logging.getLogger("reviewapp.jobs")
IMPORT_FORMATS = ("folder", "list", "recordio")
EXPORT_FORMATS = ("list", "recordio")
NAME_MAX = 200


def heartbeat_seconds() -> float:
    return beat_seconds(job_stale_seconds(), at_most=5.0)


def data_root() -> Path:
    return Path(os.path.realpath(settings.DATA_ROOT))


def export_root() -> Path:
    return Path(os.path.realpath(settings.EXPORT_ROOT))


# -- paths ----------------------------------------------------------------------------------------

def path_under_root(path: str, root, *, what: str = "path") -> Path:
    """The existing file or folder `path` names inside `root` (a relative path is taken from
    root), symlinks resolved. ValueError with a reason a person can act on when the path has
    a ".." part, is absolute elsewhere, escapes through a symlink, or does not exist."""
    text = str(path or "").strip()
    root = Path(os.path.realpath(root))
    if not text:
        raise ValueError(f"{what}: give a path inside the data root {root}")
    if "\x00" in text:
        raise ValueError(f"{what}: the path holds a NUL character")
    if ".." in PurePath(text).parts:
        raise ValueError(f"{what}: '..' is not allowed; give a path inside the data root {root}")
    candidate = Path(text) if os.path.isabs(text) else root / text
    resolved = Path(os.path.realpath(candidate))
    if resolved != root and root not in resolved.parents:
        if Path(os.path.abspath(candidate)).is_relative_to(root):
            raise ValueError(f"{what}: {text} leads through a symbolic link to {resolved}, outside the data "
                             f"root {root}")
        raise ValueError(f"{what}: {text} is outside the data root {root}; only paths inside it can be used")
    if not resolved.exists():
        raise ValueError(f"{what}: {text} does not exist inside the data root {root}")
    return resolved


def export_file(job: Job, part: int = 0) -> Path | None:
    """The file `part` of a finished export job (0: the dataset file), only if it lies in the
    job's own folder under EXPORT_ROOT and exists; else None."""
    files = (job.result or {}).get("files") or ([job.file] if job.file else [])
    if job.kind != Job.Kind.EXPORT or job.status != Job.Status.DONE or not 0 <= part < len(files):
        return None
    folder = export_root() / str(job.pk)
    path = Path(os.path.realpath(export_root() / str(files[part])))
    if folder not in path.parents or not path.is_file():
        return None
    return path


# -- starting ---------------------------------------------------------------------------------------

def part_idle_seconds() -> float:
    """How long a temporary export file (ml.io.atomic's ".<name>.<pid>-<hex>.part") may
    go unwritten before the sweep removes it. An hour by default, which is safe because a live
    export writes its file as the rows stream in: the longest pause is the query before the first
    row (seconds on a million faces, see exports._snapshot). And were a live writer's file
    removed, it fails on its final rename and the job is failed; no half file is ever published."""
    return setting_seconds("EXPORT_PART_IDLE_SECONDS", 3600)


def _partial_files(folder: Path):
    return (path for path in folder.rglob(".*.part") if path.is_file() or path.is_symlink())


def job_remove_partials(*, job_id: int) -> int:
    """Remove the temporary files left in the job's export folder; returns how many."""
    removed = 0
    for path in _partial_files(export_root() / str(int(job_id))):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def exports_remove_abandoned() -> int:
    """Remove every temporary export file nothing has written to for part_idle_seconds();
    returns how many. Finished files are never touched."""
    root, oldest = export_root(), time.time() - part_idle_seconds()
    removed = 0
    if not root.is_dir():
        return 0
    for path in _partial_files(root):
        try:
            if path.lstat().st_mtime < oldest:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # renamed into place or removed meanwhile
            continue
    return removed


def job_queue(*, kind: str, dataset: Dataset | None, user, params: dict) -> Job:
    """Create a queued job of `kind`, sent to a worker once the caller's transaction commits
    (reviewapp.queueing: with the broker unreachable it stays queued for the sweep)."""
    job = Job.objects.create(kind=kind, dataset=dataset, created_by=user, params=params)
    transaction.on_commit(lambda: queueing.job_send(job.pk))
    return job


@transaction.atomic
def job_import_start(*, path: str, name: str, fmt: str, user) -> Job:
    """Queue the import of `path` (inside settings.DATA_ROOT) as a new dataset `name`.
    ValueError (nothing created) for a bad format, name or path, or a name already taken."""
    if fmt not in IMPORT_FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(IMPORT_FORMATS)}")
    name = (name or "").strip()
    if not name:
        raise ValueError("give the new dataset a name")
    if len(name) > NAME_MAX:
        raise ValueError(f"the dataset name is longer than {NAME_MAX} characters")
    resolved = path_under_root(path, settings.DATA_ROOT)
    if fmt == "folder" and not resolved.is_dir():
        raise ValueError(f"path: {path} is not a folder (format folder wants <identity>/<image> folders)")
    if fmt == "list" and not resolved.is_file():
        raise ValueError(f"path: {path} is not a file (format list wants a file list)")
    if Dataset.objects.filter(name=name).exists():
        raise ValueError(f"a dataset named {name!r} already exists; choose another name")
    job = Job.objects.create(kind=Job.Kind.IMPORT, created_by=user,
                             params={"path": str(resolved), "name": name, "format": fmt})
    transaction.on_commit(lambda: queueing.job_send(job.pk))
    return job


@transaction.atomic
def job_export_start(*, dataset: Dataset, user, fmt: str = "list") -> Job:
    """Queue an export of the cleaned dataset (and its decisions CSV) for download."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    job = Job.objects.create(kind=Job.Kind.EXPORT, dataset=dataset, created_by=user, params={"format": fmt})
    transaction.on_commit(lambda: queueing.job_send(job.pk))
    return job


# -- the life cycle ---------------------------------------------------------------------------------

def _now_text() -> str:
    return timezone.now().isoformat()


def job_claim(*, job_id: int, worker: str) -> Job | None:
    """Take a queued job; None when it is not queued any more (a duplicate delivery). A
    resumed job keeps its count of attempts."""
    earlier = Job.objects.filter(pk=job_id).values_list("result", flat=True).first() or {}
    result = {"worker": worker, "started_at": _now_text(), "heartbeat_at": _now_text()}
    if earlier.get("attempts"):
        result["attempts"] = earlier["attempts"]
    taken = Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(status=Job.Status.RUNNING, result=result)
    return Job.objects.get(pk=job_id) if taken else None


def job_heartbeat(*, job_id: int, worker: str, progress: dict | None = None) -> bool:
    """Record that `worker` still runs the job (and how far it got). False when the job is no
    longer this worker's running job (it was failed as stale meanwhile)."""
    job = Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).values("result").first()
    if job is None or (job["result"] or {}).get("worker") != worker:
        return False
    result = {**job["result"], "heartbeat_at": _now_text()}
    if progress is not None:
        result["progress"] = progress
    return bool(Job.objects.filter(pk=job_id, status=Job.Status.RUNNING, result__worker=worker)
                .update(result=result))


def job_finish(*, job_id: int, worker: str, result: dict, file: str = "", dataset: Dataset | None = None) -> bool:
    fields = {"status": Job.Status.DONE, "result": result, "file": file, "finished_at": timezone.now()}
    if dataset is not None:
        fields["dataset"] = dataset
    return bool(Job.objects.filter(pk=job_id, status=Job.Status.RUNNING, result__worker=worker).update(**fields))


def _storable(text: str) -> str:
    # Text from the file system may hold lone surrogates (bytes that are not UTF-8), which no
    # database column or JSON value accepts: they are written as \\udcNN instead.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def job_fail(*, job_id: int, error: str, worker: str | None = None) -> bool:
    jobs = Job.objects.filter(pk=job_id, status__in=(Job.Status.QUEUED, Job.Status.RUNNING))
    if worker is not None:
        jobs = jobs.filter(result__worker=worker)
    failed = bool(jobs.update(status=Job.Status.FAILED, error=_storable(error)[:4000], finished_at=timezone.now()))
    if failed:
        job_remove_partials(job_id=job_id)
    return failed


def _stale_message(age: float) -> str:
    return (f"The worker running this job stopped reporting {age:.0f} s ago (it died or was restarted), so "
            "the job was marked failed. Nothing was half-written: start it again.")


# Jobs that pick up where a dead worker left them when run again (services.bulk: decided
# flags are no longer open), and how many workers they may outlive before they are failed.
RESUMABLE = (Job.Kind.BULK_DECIDE,)
RESUME_ATTEMPTS = 3


def job_check(*, job_id: int) -> Job:
    """The job, after failing it when it runs without a heartbeat for job_stale_seconds() (a
    resumable one is queued again instead, RESUME_ATTEMPTS times; jobs_requeue_lost sends it)."""
    job = Job.objects.get(pk=job_id)
    age = heartbeat_age(job)
    attempts = int((job.result or {}).get("attempts") or 1)
    if age is not None and age > job_stale_seconds() and job.kind in RESUMABLE and attempts < RESUME_ATTEMPTS:
        log.warning("job %s: its worker stopped reporting %.0f s ago; queued again to resume", job_id, age)
        Job.objects.filter(pk=job_id, status=Job.Status.RUNNING, result__heartbeat_at=job.result["heartbeat_at"]).update(
            status=Job.Status.QUEUED, result={"attempts": attempts + 1, "progress": job.result.get("progress")})
        job.refresh_from_db()
    elif age is not None and age > job_stale_seconds():
        if Job.objects.filter(pk=job_id, status=Job.Status.RUNNING,
                              result__heartbeat_at=job.result["heartbeat_at"]).update(
                status=Job.Status.FAILED, error=_stale_message(age), finished_at=timezone.now()):
            # Its dead worker's temporary files. Should that worker live on after all, its
            # final rename fails and it fails the job itself: nothing half-written is published.
            job_remove_partials(job_id=job_id)
        job.refresh_from_db()
    return job


def jobs_fail_stale() -> int:
    """Fail every running job whose worker stopped reporting; returns how many."""
    failed = 0
    for job_id in Job.objects.filter(status=Job.Status.RUNNING).values_list("pk", flat=True):
        failed += job_check(job_id=job_id).status == Job.Status.FAILED
    return failed


def jobs_requeue_lost() -> int:
    """Send again every job queued for longer than a sweep period: its message may have been
    lost (the broker was down when it was started, or went down with it). A copy that finds
    the job taken does nothing (job_claim), and one not taken within two periods expires, so
    copies do not pile up behind a busy worker. Returns how many were sent."""
    period = sweep_seconds()
    waiting = Job.objects.filter(status=Job.Status.QUEUED,
                                 created_at__lt=timezone.now() - timedelta(seconds=period))
    sent = 0
    for job_id in waiting.values_list("pk", flat=True):
        if not queueing.job_send(job_id, expires=2 * period):
            break  # the broker is down: the next sweep tries again
        sent += 1
    return sent


def jobs_sweep() -> dict:
    """The periodic sweep of jobs, run by every worker that serves them: a running job whose
    worker stopped reporting is failed (so the API and the page both say so), a queued job
    whose message may be lost is sent again, and temporary export files that nothing writes
    any more (a worker killed mid-export) are removed."""
    return {"failed": jobs_fail_stale(), "queued": jobs_requeue_lost(), "partials": exports_remove_abandoned()}


class _Heartbeat:
    """Writes the job's heartbeat (and latest progress) from a thread while the work runs
    (services.workers). A job taken away meanwhile finds out when it finishes (job_finish)."""

    def __init__(self, job_id: int, worker: str) -> None:
        self.job_id, self.worker, self.progress = job_id, worker, None
        self._thread = HeartbeatThread(f"job-{job_id}", self._beat, heartbeat_seconds)

    def __enter__(self):
        self._thread.__enter__()
        return self

    def __exit__(self, *exc):
        self._thread.__exit__(*exc)

    def report(self, stage: str, done: int, total: int | None) -> None:
        self.progress = {"stage": stage, "done": int(done), "total": None if total is None else int(total)}

    def _beat(self) -> bool:
        job_heartbeat(job_id=self.job_id, worker=self.worker, progress=self.progress)
        return True


# -- running ------------------------------------------------------------------------------------------

def job_execute(*, job_id: int, worker: str) -> str:
    """Claim and run a job to its end in this process: "done", "failed" or "not claimed"."""
    job = job_claim(job_id=job_id, worker=worker)
    if job is None:
        return "not claimed"
    try:
        with _Heartbeat(job.pk, worker) as heartbeat:
            if job.kind == Job.Kind.IMPORT:
                _run_import(job, worker, heartbeat)
            elif job.kind == Job.Kind.BATCH_UNDO:
                _run_batch_undo(job, worker, heartbeat)
            elif job.kind == Job.Kind.BULK_DECIDE:
                _run_bulk_decide(job, worker, heartbeat)
            else:
                _run_export(job, worker)
    except Exception as exc:
        log.exception("job %s failed", job_id)
        job_fail(job_id=job_id, worker=worker, error=f"{type(exc).__name__}: {exc}")
        return "failed"
    return "done"


def _run_import(job: Job, worker: str, heartbeat: _Heartbeat) -> None:
    from .imports import dataset_import
    from .members import membership_set

    params = job.params
    if Dataset.objects.filter(name=params["name"]).exists():
        raise ValueError(f"a dataset named {params['name']!r} was created meanwhile; choose another name")
    user = job.created_by

    def finish(dataset: Dataset, report) -> None:
        # Runs in the import's transaction: a job that fails here (or whose worker dies) leaves
        # no dataset behind, so a retry under the same name works.
        result = {**report.summary(), "problems": [_storable(f"{where}: {reason}") for where, reason in
                                                   (report.unreadable + report.rejected)[:20]]}
        if user is not None:  # the importer administers the new dataset
            membership_set(dataset=dataset, username=user.get_username(), role=Membership.Role.ADMIN, by=user)
        if not job_finish(job_id=job.pk, worker=worker, result=result, dataset=dataset):
            raise RuntimeError("the job was taken away from this worker")

    dataset_import(path=params["path"], name=params["name"], fmt=params["format"], user=user,
                   actor=user.get_username() if user else "worker", progress=heartbeat.report, then=finish)


def _run_batch_undo(job: Job, worker: str, heartbeat: _Heartbeat) -> None:
    from .undo import batch_undo_run

    result = batch_undo_run(job, worker, heartbeat)
    if not job_finish(job_id=job.pk, worker=worker, result=result):
        raise RuntimeError("the job was taken away from this worker")


def _run_bulk_decide(job: Job, worker: str, heartbeat: _Heartbeat) -> None:
    from .bulk import bulk_run

    result = bulk_run(job=job, worker=worker, progress=heartbeat.report)
    if not job_finish(job_id=job.pk, worker=worker, result=result):
        raise RuntimeError("the job was taken away from this worker")


def export_names(dataset: Dataset, fmt: str) -> tuple[str, str]:
    """(dataset file, decisions file) names inside the job's folder: the dataset's name made
    safe for a file name (untrusted text never becomes a path)."""
    safe = slugify(dataset.name)[:80].strip("-_") or f"dataset-{dataset.pk}"
    return f"{safe}.{'txt' if fmt == 'list' else 'rec'}", f"{safe}-decisions.csv"


def _run_export(job: Job, worker: str) -> None:
    from .exports import dataset_export, decisions_export

    dataset, fmt = job.dataset, job.params.get("format", "list")
    folder = export_root() / str(job.pk)
    main, decisions = export_names(dataset, fmt)
    summary = dataset_export(dataset=dataset, out=folder / main, fmt=fmt)
    rows = decisions_export(dataset=dataset, out=folder / decisions)
    files = [str(Path(p).relative_to(export_root())) for p in summary.paths]
    files.append(str((folder / decisions).relative_to(export_root())))
    result = {"faces": summary.faces, "identities": summary.identities, "decisions": rows, "format": fmt,
              "seconds": summary.seconds, "files": files}
    if not job_finish(job_id=job.pk, worker=worker, result=result, file=files[0]):
        raise RuntimeError("the job was taken away from this worker")
