"""Reads for the dataset page, rounds, jobs and members.

Counts stay cheap on a million faces: one aggregate query per table, cached under a key that
changes whenever they can change (the dataset's latest Decision id, since every label and
flag decision appends one, plus its latest round's id and status), so a page view normally
costs a couple of index lookups.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from django.core.cache import cache
from django.db.models import Count, F, Q
from django.urls import reverse
from django.utils import timezone

from ..access import administers_any
from ..models import Dataset, Decision, Face, Flag, Identity, Job, Membership, Round
from ..kinds import KIND_ORDER, kind_title
from .active_faces import merge_survivors
from ..rules import REVIEW_KINDS, ROUND_ACTIVE, heartbeat_age, job_stale_seconds

STATS_CACHE_SECONDS = 600
STAGES = (Round.Status.QUEUED, Round.Status.TRAINING, Round.Status.EXTRACTING, Round.Status.MINING,
          Round.Status.PUBLISHED)


@dataclass
class DatasetStats:
    faces: int = 0
    active: int = 0
    removed: int = 0
    relabelled: int = 0
    identities: int = 0
    merged_identities: int = 0
    latest_round: int | None = None       # number of the latest published round
    open_flags: dict = field(default_factory=dict)   # kind -> open flags in that round
    noisy_confirmed: int = 0              # decided noisy flags (all rounds) that were noise
    noisy_rejected: int = 0
    confirmation_rate: float | None = None
    estimated_noisy: float = 0.0
    noise_rate: float | None = None

    @property
    def open_flag_rows(self) -> list[tuple[str, str, int]]:
        return [(kind, kind_title(kind, self.open_flags.get(kind, 0)), self.open_flags.get(kind, 0))
                for kind in KIND_ORDER]

    @property
    def noise_percent(self) -> float | None:
        return None if self.noise_rate is None else 100.0 * self.noise_rate

    @property
    def noisy_decided(self) -> int:
        return self.noisy_confirmed + self.noisy_rejected


def _stats_key(dataset: Dataset) -> str:
    """Changes with every decision (the latest Decision id) and every round status change;
    created_at tells a dataset from an earlier one that had the same id."""
    last_decision = (Decision.objects.filter(dataset_id=dataset.pk).order_by("-id")
                     .values_list("id", flat=True).first())
    latest = Round.objects.filter(dataset_id=dataset.pk).order_by("-number").values_list("pk", "status").first()
    latest = "-".join(map(str, latest)) if latest else "none"
    return f"faceclean:dataset-stats:v2:{dataset.pk}:{dataset.created_at.timestamp()}:{last_decision}:{latest}"


def dataset_stats(*, dataset: Dataset) -> DatasetStats:
    key = _stats_key(dataset)
    stats = cache.get(key)
    if stats is None:
        stats = _compute_stats(dataset.pk)
        cache.set(key, stats, STATS_CACHE_SECONDS)
    return stats


def _compute_stats(dataset_id: int) -> DatasetStats:
    s = DatasetStats()
    faces = Face.objects.filter(dataset_id=dataset_id).aggregate(
        faces=Count("pk"),
        removed=Count("pk", filter=Q(status=Face.Status.REMOVED)),
        unmerged_relabelled=Count("pk", filter=Q(status=Face.Status.ACTIVE) & ~Q(identity_id=F("original_identity_id"))
                                  & Q(original_identity__merged_into__isnull=True)),
    )
    s.faces, s.removed = faces["faces"], faces["removed"]
    s.relabelled = faces["unmerged_relabelled"] + _relabelled_from_merged(dataset_id)
    s.active = s.faces - s.removed
    identities = Identity.objects.filter(dataset_id=dataset_id).aggregate(
        total=Count("pk"), merged=Count("pk", filter=Q(merged_into__isnull=False)))
    s.identities, s.merged_identities = identities["total"] - identities["merged"], identities["merged"]
    latest = (Round.objects.filter(dataset_id=dataset_id, status=Round.Status.PUBLISHED)
              .order_by("-number").values("pk", "number").first())
    if latest is not None:
        s.latest_round = latest["number"]
        rows = (Flag.objects.filter(round_id=latest["pk"], state=Flag.State.OPEN)
                .values("kind").annotate(n=Count("pk")).order_by())
        s.open_flags = {row["kind"]: row["n"] for row in rows}
    decided = (Flag.objects.filter(round__dataset_id=dataset_id, kind=Flag.Kind.NOISY)
               .exclude(state__in=(Flag.State.OPEN, Flag.State.SUPERSEDED))  # superseded: nobody answered
               .values("state").annotate(n=Count("pk")).order_by())
    for row in decided:
        if row["state"] == Flag.State.REJECTED:
            s.noisy_rejected += row["n"]
        else:  # confirmed, or decided otherwise (relabelled elsewhere, removed): noise either way
            s.noisy_confirmed += row["n"]
    if s.noisy_decided:
        s.confirmation_rate = s.noisy_confirmed / s.noisy_decided
    rate = 1.0 if s.confirmation_rate is None else s.confirmation_rate
    s.estimated_noisy = s.open_flags.get(Flag.Kind.NOISY, 0) * rate + s.removed + s.relabelled
    # Before a round has published, nobody has looked for noise: no estimate, not 0 %.
    s.noise_rate = s.estimated_noisy / s.faces if s.faces and s.latest_round is not None else None
    return s


def _relabelled_from_merged(dataset_id: int) -> int:
    """Active faces whose original identity was merged away and that now sit under another
    identity than its survivor: relabelled by a reviewer (before or after the merge), not moved
    by it. Merged identities are few, so this groups few faces."""
    survivor = merge_survivors(dataset_id=dataset_id)
    if not survivor:
        return 0
    rows = (Face.objects.filter(dataset_id=dataset_id, status=Face.Status.ACTIVE,
                                original_identity__merged_into__isnull=False)
            .values("original_identity_id", "identity_id").annotate(n=Count("pk")).order_by())
    return sum(row["n"] for row in rows
               if survivor.get(row["original_identity_id"], row["original_identity_id"]) != row["identity_id"])


def dataset_rounds(*, dataset: Dataset, limit: int = 20) -> list[Round]:
    return list(Round.objects.filter(dataset=dataset).order_by("-number")
                .only("pk", "number", "status", "method", "created_at", "finished_at", "progress", "dataset_id")
                [:limit])


def active_round(*, dataset: Dataset) -> Round | None:
    return Round.objects.filter(dataset=dataset, status__in=ROUND_ACTIVE).order_by("number").first()


def latest_round(*, dataset: Dataset) -> Round | None:
    """The dataset's newest round, whatever its status: the one the dataset page watches."""
    return Round.objects.filter(dataset=dataset).order_by("-number").first()


def dataset_jobs(*, dataset: Dataset, kind: str | None = None, limit: int = 5) -> list[Job]:
    jobs = Job.objects.filter(dataset=dataset).select_related("created_by")  # each row names its starter
    if kind is not None:
        jobs = jobs.filter(kind=kind)
    return list(jobs.order_by("-id")[:limit])


def import_jobs(*, user, limit: int = 10) -> list[Job]:
    """The user's latest imports (staff see everyone's)."""
    jobs = Job.objects.filter(kind=Job.Kind.IMPORT).select_related("dataset", "created_by").order_by("-id")
    if not user.is_staff:
        jobs = jobs.filter(created_by=user)
    return list(jobs[:limit])


def can_import(user) -> bool:
    """Staff, or an admin of some dataset, may import a new dataset from the data root."""
    return administers_any(user)


def dataset_memberships(*, dataset: Dataset) -> list[Membership]:
    return list(Membership.objects.filter(dataset=dataset).select_related("user")
                .order_by("role", "user__username"))


# -- rounds -----------------------------------------------------------------------------------------

def _duration(seconds) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(float(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


@dataclass
class RoundProgress:
    round: Round
    active: bool
    stage: str
    percent: float
    eta: str
    samples_per_s: str
    heartbeat: str
    stages: list = field(default_factory=list)   # (name, state: done|current|todo)
    stalled: bool = False


def round_progress(*, round_: Round) -> RoundProgress:
    progress = round_.progress or {}
    active = round_.status in ROUND_ACTIVE
    stage = progress.get("stage") or round_.status
    percent = float(progress.get("percent") or 0.0)
    if round_.status == Round.Status.PUBLISHED:
        percent = 100.0
    rate = progress.get("samples_per_s")
    heartbeat, stalled = "—", False
    if round_.heartbeat_at is not None:
        age = (timezone.now() - round_.heartbeat_at).total_seconds()
        heartbeat = f"{_duration(max(age, 0))} ago"
        stalled = active and round_.status != Round.Status.QUEUED and age > 30
    order = [str(s) for s in STAGES]
    current = order.index(round_.status) if round_.status in order else None
    if current is None:  # failed or cancelled: where it was when it ended
        current = order.index(stage) if stage in order else 0
    stages = []
    first = order.index(round_.first_stage)
    for i, name in enumerate(order):
        state = "done" if i < current else "current" if i == current else "todo"
        if name == Round.Status.PUBLISHED and round_.status == Round.Status.PUBLISHED:
            state = "done"
        if 0 < i < first:  # a pretrained model trains nothing; user embeddings extract nothing
            state = "skipped"
        stages.append((name, state))
    return RoundProgress(
        round=round_, active=active, stage=stage, percent=round(min(max(percent, 0.0), 100.0), 1),
        eta=_duration(progress.get("eta_s")) if active else "—",
        samples_per_s=f"{float(rate):,.1f}" if isinstance(rate, (int, float)) and active else "—",
        heartbeat=heartbeat, stages=stages, stalled=stalled,
    )


def round_neighbours(*, round_: Round) -> tuple[Round | None, Round | None]:
    """(previous, next) rounds of the same dataset."""
    rounds = Round.objects.filter(dataset_id=round_.dataset_id)
    previous = rounds.filter(number__lt=round_.number).order_by("-number").first()
    following = rounds.filter(number__gt=round_.number).order_by("number").first()
    return previous, following


def round_flag_rows(*, round_: Round) -> list[dict]:
    """Per kind: the candidates mining found (None for rounds published before that was kept),
    how many of them were not asked, the flags published, the previous round's and the change."""
    summary = round_.summary or {}
    published = summary.get("flags") or {}
    mined = summary.get("mined")
    previous = (summary.get("previous") or {}).get("flags")
    rows = []
    for kind in KIND_ORDER:
        now = int(published.get(kind, 0))
        found = None if mined is None else int(mined.get(kind, 0))
        before = None if previous is None else int(previous.get(kind, 0))
        rows.append({"kind": kind, "label": kind_title(kind), "mined": found,
                     "not_asked": None if found is None else found - now, "flags": now, "previous": before,
                     "change": None if before is None else now - before})
    return rows


# Why a mined candidate was not published (services.publish_checks.DROP_REASONS), in words.
DROP_WORDS = {
    "face_removed": "their face was removed or marked low quality while the round ran",
    "already_true": "they suggested the label the face already had",
    "changed_during_round": "a reviewer decided about their face while the round ran",
    "merged": "their two identities were merged while the round ran",
}


@dataclass
class FlagNotes:
    """What the round page says about its counts: mined against published, and what the angle
    chart's bands are."""
    mined: int | None
    published: int
    already_decided: int
    dropped: list            # (count, words) for each reason with a count
    bands: dict              # easy/hard/noisy -> faces in that band of the angle chart


def round_flag_notes(*, round_: Round) -> FlagNotes:
    summary = round_.summary or {}
    mined = summary.get("mined")
    dropped = summary.get("dropped") or {}
    return FlagNotes(
        mined=None if mined is None else sum(int(n) for n in mined.values()),
        published=sum(int(n) for n in (summary.get("flags") or {}).values()),
        already_decided=int(summary.get("already_decided") or 0),
        dropped=[(int(dropped[reason]), words) for reason, words in DROP_WORDS.items() if dropped.get(reason)],
        bands=(summary.get("angles") or {}).get("counts") or {},
    )


# -- jobs -------------------------------------------------------------------------------------------

@dataclass
class JobView:
    job: Job
    active: bool
    message: str
    files: list = field(default_factory=list)  # (part index, file name)
    # Where the job's fragment is polled: the admins' job page, or for reviewers' work
    # (bulk decisions, batch undos) the dataset's bulk job page, which every member may see.
    url: str = ""
    progress: dict | None = None  # {"done", "total", "percent"} while it runs, when known
    what: str = ""  # a bulk decision: "Remove every open Noisy flag of round 3 scoring at least 0.8"
    batch: str = ""  # a finished bulk decision's batch id, when something can be undone


def job_view(*, job: Job) -> JobView:
    view = _job_view(job=job)
    if job.kind in REVIEW_KINDS and job.dataset_id is not None:
        view.url = reverse("bulk-job", args=[job.dataset_id, job.pk])
    else:
        view.url = reverse("job-detail", args=[job.pk])
    if job.kind == Job.Kind.BULK_DECIDE:
        view.what = bulk_job_title(job)
        result = job.result or {}
        if job.status == Job.Status.DONE and result.get("decided") and result.get("batch"):
            view.batch = result["batch"]
    return view


BULK_VERBS = {"confirm": "Confirm", "reject": "Keep", "remove": "Remove", "low_quality": "Mark low quality",
              "relabel": "Relabel"}


def bulk_job_title(job: Job) -> str:
    """What a BULK_DECIDE job does, in words (ids as numbers: the page names nothing untrusted)."""
    params, selection = job.params or {}, (job.params or {}).get("selection") or {}
    text = f"{BULK_VERBS.get(params.get('action'), params.get('action'))} every open "
    text += f"{kind_title(selection.get('kind', ''), 1).lower()} flag"
    number = Round.objects.filter(pk=selection.get("round_id")).values_list("number", flat=True).first()
    if number is not None:
        text += f" of round {number}"
    if selection.get("min_score") is not None:
        text += f" scoring at least {selection['min_score']:g}"
    if selection.get("max_score") is not None:
        text += f"{' and' if selection.get('min_score') is not None else ' scoring'} at most {selection['max_score']:g}"
    if selection.get("identity_id"):
        text += f", on identity #{selection['identity_id']}"
    if selection.get("suggested_identity_id"):
        text += f", suggesting identity #{selection['suggested_identity_id']}"
    if params.get("action") == "relabel" and params.get("identity_id"):
        text += f", to identity #{params['identity_id']}"
    return text


def _job_view(*, job: Job) -> JobView:
    result = job.result or {}
    active = job.status in (Job.Status.QUEUED, Job.Status.RUNNING)
    message, bar = "", None
    if job.status == Job.Status.QUEUED:
        waited = (timezone.now() - job.created_at).total_seconds()
        message = "Waiting for a worker."
        if waited > job_stale_seconds():
            message = (f"Still waiting for a worker after {_duration(waited)}: is a Celery worker serving the "
                       "default queue running?")
    elif job.status == Job.Status.RUNNING:
        progress = result.get("progress") or {}
        message = "Running."
        if progress.get("total"):
            bar = {"done": progress.get("done", 0), "total": progress["total"]}
            bar["percent"] = min(100.0, 100.0 * bar["done"] / bar["total"])
        if progress.get("stage"):
            total = progress.get("total")
            message = f"Running: {progress['stage']} {progress.get('done', 0):,}" + (
                f" of {total:,}" if total else "")
        age = heartbeat_age(job)
        if age is not None and age > job_stale_seconds() / 2:
            message += f" No word from its worker for {_duration(age)}."
    files = [(i, str(name).rsplit("/", 1)[-1]) for i, name in enumerate(result.get("files") or [])]
    return JobView(job=job, active=active, message=message, files=files, progress=bar)
