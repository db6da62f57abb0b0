"""Queue-wide bulk decisions: one action on every open flag a FlagSelection matches, run as a
background job (Job.Kind.BULK_DECIDE) because at a million faces it outlasts any request.

Who may start one: the dataset's admins and reviewers. Reviewers decide flags one by one and
page by page already; a queue-wide action is the same decisions, audited row by row under one
batch id and undone as one batch, so it needs no higher role.

The job walks the matching flags in keyset chunks of CHUNK flags, highest score first (the
queue's index order), and commits each chunk: no transaction ever holds thousands of row
locks, and a worker killed mid-way loses at most one chunk's work, rolled back whole. Each flag
is decided by services.flags.flag_decide in its own savepoint, so a flag someone else decided
meanwhile (or one the action does not fit) is reported and skipped while the rest go through.
Within a chunk flags are locked in ascending id order, as flags_decide_bulk locks a page's, so
a page's bulk action and this job wait for each other instead of deadlocking.

Resuming: every Decision row carries the job's batch id and a decided flag is no longer open,
so running the job again (services.jobs requeues a BULK_DECIDE job whose worker died) walks
only what is left; what was done before is counted from the batch's rows.
"""
import math
import uuid
from collections import defaultdict
from dataclasses import dataclass

from django.db import transaction

from ..models import Dataset, Decision, Face, Flag, Job
from ..selectors.bulk import FlagSelection, not_held_by_others, selection_flags
from . import claims, double_review, labels
from . import flags as flag_services
from .jobs import job_queue
from .labels import LabelConflict

CHUNK = 500
CONFLICT_SAMPLE = 20
# A preview's count may grow by this share before starting is refused (see bulk_start).
GROWTH_ALLOWED = 0.10
ACTIONS = ("confirm", "reject", "remove", "low_quality", "relabel")
PAIR_ACTIONS = ("confirm", "reject")
ACTION_WORDS = {"confirm": "confirmed", "reject": "kept as they are", "remove": "removed",
                "low_quality": "marked low quality", "relabel": "relabelled"}


class BulkRefused(Exception):
    """The job was not started; the message says why and what to do."""


class PreviewOutdated(BulkRefused):
    """Far more flags match now than the user previewed (see bulk_start)."""

    def __init__(self, message: str, count: int):
        super().__init__(message)
        self.count = count


def _check_action(selection: FlagSelection, action: str, identity_id: int | None) -> None:
    if action not in ACTIONS:
        raise BulkRefused(f"Unknown action {action!r}; choose one of {', '.join(ACTIONS)}.")
    if selection.kind == Flag.Kind.DUPLICATE_IDENTITY and action not in PAIR_ACTIONS:
        raise BulkRefused("Identity pairs can only be merged (confirm) or kept apart (reject).")
    if action == "relabel" and identity_id is None:
        raise BulkRefused("Choose the identity to relabel to.")


@transaction.atomic
def bulk_start(*, dataset: Dataset, selection: FlagSelection, action: str, user, identity_id: int | None = None,
               expected_count: int | None = None) -> Job:
    """Queue one BULK_DECIDE job with a fresh batch id. The caller checked that `user` is an
    admin or reviewer of `dataset` and that `identity_id` is one of its identities.

    Refused (BulkRefused, nothing created) when nothing matches, or when `expected_count` (the
    count the user previewed) grew by more than GROWTH_ALLOWED: the user agreed to act on that
    many, and a much larger set (flags reopened by undos, claims expired) deserves a second
    look. A smaller one is fine: others decided some meanwhile, and the job skips those anyway."""
    _check_action(selection, action, identity_id)
    if selection.dataset_id != dataset.pk:
        raise BulkRefused("The filter is not about this dataset.")
    count = selection_flags(selection).count()
    if count == 0:
        raise BulkRefused("No open flag matches this filter: there is nothing to decide.")
    if expected_count is not None and count > math.ceil(expected_count * (1 + GROWTH_ALLOWED)):
        raise PreviewOutdated(f"{count:,} open flags match now, not the {expected_count:,} you previewed: "
                              "preview again before you start.", count)
    params = {"selection": selection.params(), "action": action, "identity_id": identity_id,
              "batch": str(uuid.uuid4()), "previewed": expected_count, "matched": count}
    return job_queue(kind=Job.Kind.BULK_DECIDE, dataset=dataset, user=user, params=params)


def bulk_run(*, job: Job, worker: str, progress=None) -> dict:
    """Decide the job's flags (see the module docstring), report (stage, done, total) through
    `progress` after each chunk and return the job's result (services.jobs finishes it). Stops after the chunk
    in which the job stopped being this worker's (failed as stale, cancelled)."""
    selection = FlagSelection.from_params(job.params["selection"])
    action, identity_id = job.params["action"], job.params.get("identity_id")
    batch, user = uuid.UUID(job.params["batch"]), job.created_by
    flags = selection_flags(selection)
    matching = flags.count()
    flags = not_held_by_others(flags, user)
    remaining = flags.count()
    held = matching - remaining
    earlier = Decision.objects.filter(dataset_id=selection.dataset_id, batch=batch).values("flag_id").distinct().count()
    total = earlier + remaining
    decided, conflicts, sample = 0, 0, []
    after = None  # (score, id) of the last flag walked
    while True:
        chunk = _next_chunk(flags, after)
        if not chunk:
            break
        after = chunk[-1]
        done = flags_decide_chunk(flag_ids=[pk for _, pk in chunk], action=action, user=user,
                                  identity_id=identity_id, batch=batch)
        decided, conflicts = decided + len(done.decided), conflicts + len(done.conflicts)
        sample += [[pk, message] for pk, message in done.conflicts[:CONFLICT_SAMPLE - len(sample)]]
        if progress is not None:
            progress("deciding", earlier + decided + conflicts, total)
        if not Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, result__worker=worker).exists():
            raise RuntimeError("the job was taken away from this worker")
    result = {"decided": earlier + decided, "conflicts": conflicts, "conflict_sample": sample, "batch": str(batch),
              "held_by_others": held, "summary": _summary(action, earlier + decided, conflicts, held)}
    if (job.result or {}).get("attempts"):  # resumed after a worker died: say so on the job page
        result["attempts"] = job.result["attempts"]
    return result


# -- one chunk ------------------------------------------------------------------------------------
# flag_decide costs about ten statements a flag (two savepoints, the flag, the face, their
# updates, the audit row, the double-review check): 10K flags took over a minute here. A chunk
# is decided with the same rules and the same locks, in the same order (flags by id, then the
# relabel targets, then the faces by id), but read and written a few statements at a time.
# Every check runs before anything is written, so a conflict needs no savepoint: the flag is
# reported and left out. Identity pairs (merges) go through flag_decide one by one.

@dataclass
class _Plan:
    flag: Flag
    op: str  # "keep", "remove", "low_quality" or "relabel"
    face_id: int
    target: int | None = None  # relabel: the identity asked for
    state: str = ""  # the flag's new state (a relabel's is settled once its target is known)


def _plan(flag: Flag, action: str, identity_id: int | None) -> _Plan:
    """What flag_decide's action functions would do to a face flag; ValueError as they raise it."""
    if action == "reject":
        return _Plan(flag, "keep", flag.face_id, state=Flag.State.REJECTED)
    if action == "confirm":
        if flag.suggestion == Flag.Suggestion.REMOVE:
            return _Plan(flag, "remove", flag_services._removal_target(flag), state=Flag.State.CONFIRMED)
        if flag.suggestion == Flag.Suggestion.RELABEL:
            if flag.suggested_identity_id is None:
                raise ValueError("This flag suggests no identity to relabel to")
            return _Plan(flag, "relabel", flag.face_id, target=flag.suggested_identity_id, state=Flag.State.CONFIRMED)
        return _Plan(flag, "keep", flag.face_id, state=Flag.State.CONFIRMED)
    if action == "relabel":
        if identity_id is None:
            raise ValueError("Choose the identity to relabel to")
        return _Plan(flag, "relabel", flag.face_id, target=identity_id)
    target = flag_services._removal_target(flag)
    return _Plan(flag, action, target, state=flag_services._removal_state(flag, target))


_DECISION_ACTIONS = {"keep": Decision.Action.KEEP, "remove": Decision.Action.REMOVE,
                     "low_quality": Decision.Action.LOW_QUALITY, "relabel": Decision.Action.RELABEL}


def _apply(plan: _Plan, faces: dict, targets: dict) -> tuple[dict, dict]:
    """(before, after) of the plan's face, updating `faces` (face id -> current state) as
    labels._set_face would; LabelConflict / ValueError as it raises them."""
    before = dict(faces[plan.face_id])
    if plan.op == "keep":
        return before, before
    if plan.op == "relabel":
        target = targets[plan.target]
        if isinstance(target, Exception):
            raise target
        after = {**before, "identity": target.pk}
        if not plan.state:  # a relabel chosen by the reviewer: as suggested, or decided otherwise
            suggested = plan.flag.suggestion == Flag.Suggestion.RELABEL and target.pk == plan.flag.suggested_identity_id
            plan.state = Flag.State.CONFIRMED if suggested else Flag.State.OVERRIDDEN
    else:
        after = {**before, "status": Face.Status.REMOVED}
    if after == before:
        raise LabelConflict("This face is already in that state", current=before)
    faces[plan.face_id] = after
    return before, after


@transaction.atomic
def flags_decide_chunk(*, flag_ids, action: str, user, identity_id: int | None = None,
                       batch: uuid.UUID | None = None) -> flag_services.BulkResult:
    """flag_decide(action) on each flag of a chunk (a few hundred), with its outcomes: the same
    Decision rows, flag states and conflicts, in a few statements (see above)."""
    result = flag_services.BulkResult(batch=batch)
    ids = sorted({int(i) for i in flag_ids})
    # The dataset comes along: its claims mode (claims.claim_check) and double-review share are
    # read per flag, and one join spares a query each.
    flags = list(Flag.objects.select_for_update(of=("self",)).select_related("round__dataset").filter(pk__in=ids)
                 .order_by("pk"))
    result.conflicts += [(pk, "No such flag") for pk in sorted(set(ids) - {f.pk for f in flags})]
    plans, pairs = [], []
    for flag in flags:
        try:
            if flag.state != Flag.State.OPEN or flag.face_id is None or flag.kind == Flag.Kind.DUPLICATE_IDENTITY \
                    or (action == "confirm" and flag.suggestion == Flag.Suggestion.MERGE):
                pairs.append(flag)  # flag_decide says why a decided flag is one, and merges
                continue
            claims.claim_check(flag=flag, user=user)
            plans.append(_plan(flag, action, identity_id))
        except (LabelConflict, ValueError) as error:
            result.conflicts.append((flag.pk, str(error)))
    for flag in pairs:
        try:
            flag_services.flag_decide(flag_id=flag.pk, action=action, user=user, identity_id=identity_id, batch=batch)
        except (LabelConflict, ValueError) as error:
            result.conflicts.append((flag.pk, str(error)))
        else:
            result.decided.append(flag.pk)
    if plans:
        _decide_faces(plans, user=user, batch=batch, result=result)
    result.conflicts.sort()
    return result


def _decide_faces(plans: list[_Plan], *, user, batch, result) -> None:
    dataset_id = plans[0].flag.round.dataset_id
    wanted = {p.target for p in plans if p.target is not None}
    targets = labels.relabel_targets_hold(identity_ids=wanted, dataset_id=dataset_id) if wanted else {}
    locked = (Face.objects.select_for_update().filter(pk__in={p.face_id for p in plans}).order_by("pk")
              .values_list("pk", "identity_id", "status"))
    faces = {pk: {"identity": identity, "status": status} for pk, identity, status in locked}
    actor = user.get_username() if user is not None else "system"
    rows, decided = [], []
    for plan in plans:
        try:
            before, after = _apply(plan, faces, targets)
        except (LabelConflict, ValueError) as error:
            result.conflicts.append((plan.flag.pk, str(error)))
            continue
        flag = plan.flag
        rows.append(Decision(dataset_id=dataset_id, user=user, actor=actor, round_id=flag.round_id, flag=flag,
                             evidence=flag.evidence, action=_DECISION_ACTIONS[plan.op], face_id=plan.face_id,
                             before=before, after=after, batch=batch))
        decided.append(plan)
    changed = defaultdict(list)
    for face_id, state in faces.items():
        changed[(state["identity"], state["status"])].append(face_id)
    for (identity, status), face_ids in changed.items():
        Face.objects.filter(pk__in=face_ids).exclude(identity_id=identity, status=status).update(
            identity_id=identity, status=status)
    Decision.objects.bulk_create(rows)
    by_state = defaultdict(list)
    for plan in decided:
        by_state[plan.state].append(plan.flag.pk)
        plan.flag.state, plan.flag.claimed_by, plan.flag.claimed_at = plan.state, None, None
    for state, flag_ids in by_state.items():
        Flag.objects.filter(pk__in=flag_ids).update(state=state, claimed_by=None, claimed_at=None)
    # double_review.second_review_sample checks the share itself; checked once here, the usual
    # dataset that asks for no second looks costs no call a flag.
    if decided and decided[0].flag.round.dataset.double_review_share > 0:
        for plan, row in zip(decided, rows):
            double_review.second_review_sample(flag=plan.flag, decision=row)
    result.decided += [plan.flag.pk for plan in decided]


def _next_chunk(flags, after) -> list[tuple[float, int]]:
    """The next CHUNK (score, id) pairs below `after` in (score desc, id desc) order. The
    score bound is the index range; the id test only sorts out ties at that score."""
    if after is not None:
        score, pk = after
        flags = flags.filter(score__lte=score).exclude(score=score, id__gte=pk)
    return list(flags.order_by("-score", "-id").values_list("score", "id")[:CHUNK])


def _summary(action: str, decided: int, conflicts: int, held: int) -> str:
    text = f"{decided:,} flag{'s' if decided != 1 else ''} {ACTION_WORDS.get(action, action)}"
    skipped = []
    if conflicts:
        skipped.append(f"{conflicts:,} skipped as conflicts")
    if held:
        skipped.append(f"{held:,} held by other reviewers left alone")
    return text + ("; " + ", ".join(skipped) if skipped else "") + "."
