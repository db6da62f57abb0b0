"""Undoing one's own decisions: any of them, not only the latest, and whole batches.

What may be undone is decided in selectors.undo (undo_blockers): the decision's own, not undone
yet, not itself made by an undo, and nothing changed its face (or, for a merge, the merged
faces and the merged identity) since. Face decisions are reversed through labels.py, which
writes its own restore/relabel/remove row (the "reversal"); a merge is reversed here, since
labels.py has no un-merge. Either way one more row, action "undo", points at the undone
decision (Decision.undoes, and after={"undoes": <id>, "reversal": <labels row id or None>}
for older readers), and the decision's flag is open again unless a later round superseded it.

The decision row is locked first: two clicks on Undo queue, and the second finds it undone.
Then the flag, then identities and faces, the order every label change follows.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.db import transaction

from .. import queueing
from ..models import Decision, Face, Flag, Identity, Job
from ..selectors.undo import REFUSALS, UNDOABLE, undo_blockers
from . import labels
from .labels import LabelConflict

__all__ = ["UNDOABLE", "BATCH_IN_REQUEST", "BatchUndoResult", "LabelConflict", "UndoRefused", "batch_undo",
           "batch_undo_run", "batch_undo_start", "decision_reverse", "decision_undo"]

OWN_ONLY = "Only your own decisions can be undone"
# A batch of at most this many decisions is undone in the request; a larger one as a Job.
BATCH_IN_REQUEST = 500
# A batch-undo job commits (and reports progress) after each chunk of this many decisions.
BATCH_CHUNK = 200
CONFLICT_SAMPLE = 10


class UndoRefused(LabelConflict):
    """The decision cannot be undone by this user (not theirs, not undoable, already undone);
    nothing was written. A kind of LabelConflict, so that callers that answer conflicts (the
    API) answer this too."""


def _reverse_face(decision: Decision, user, batch) -> Decision:
    """Put the face back as `decision.before` had it, if it is still as `decision.after` left it."""
    before, after = decision.before, decision.after
    expected = {key: after[key] for key in ("identity", "status") if key in after}
    common = {"face_id": decision.face_id, "user": user, "expected": expected, "batch": batch}
    if before.get("identity") != after.get("identity"):
        return labels.face_relabel(identity_id=before["identity"], **common)
    if before.get("status") == Face.Status.ACTIVE:
        return labels.face_restore(**common)
    return labels.face_remove(**common)


def _unmerge(decision: Decision) -> dict:
    """Move exactly the faces the merge moved back to the merged identity, clear its
    merged_into and re-point identities the merge had re-pointed. Returns the changed state."""
    merged_id, survivor_id = decision.identity_id, decision.after["merged_into"]
    face_ids = [int(i) for i in decision.before.get("faces", [])]
    locked = {i.pk: i for i in Identity.objects.select_for_update().filter(pk__in=[merged_id, survivor_id])
              .order_by("pk")}
    merged = locked.get(merged_id)
    if merged is None or survivor_id not in locked or merged.merged_into_id != survivor_id:
        raise LabelConflict("The merged identity was merged elsewhere or split since",
                            current={"merged_into": merged.merged_into_id if merged else None})
    faces = list(Face.objects.select_for_update().filter(pk__in=face_ids).order_by("pk")
                 .values_list("pk", "identity_id"))
    moved_on = [pk for pk, identity_id in faces if identity_id != survivor_id]
    if len(faces) != len(face_ids) or moved_on:
        raise LabelConflict("Some of the merged faces were changed since the merge",
                            current={"faces_moved_on": moved_on})
    Face.objects.filter(pk__in=face_ids).update(identity_id=merged_id)
    # Identities once merged into `merged` were re-pointed to the survivor by the merge.
    earlier = (Decision.objects.filter(dataset_id=decision.dataset_id, action=Decision.Action.MERGE,
                                       after__merged_into=merged_id, id__lt=decision.pk)
               .values_list("identity_id", flat=True))
    repointed = Identity.objects.filter(pk__in=list(earlier), merged_into_id=survivor_id).update(
        merged_into_id=merged_id)
    merged.merged_into = None
    merged.save(update_fields=["merged_into"])
    return {"merged_into": None, "faces": face_ids, "identities_repointed": repointed}


@transaction.atomic
def decision_undo(*, decision_id: int, user, batch: uuid.UUID | None = None) -> Decision:
    """Undo one of `user`'s own decisions; returns the "undo" row (with `batch` on it and on
    the reversal, when a batch undo asks). UndoRefused when the decision is not theirs, not
    undoable or already undone; LabelConflict (nothing written) when its face or merge was
    changed since."""
    # Locking the decision row serialises undos of it: a second click waits, then sees the undo.
    decision = Decision.objects.select_for_update().filter(pk=decision_id).first()
    if decision is None:
        raise UndoRefused("No such decision")
    if decision.user_id is None or decision.user_id != getattr(user, "pk", None):
        raise UndoRefused(OWN_ONLY)
    return decision_reverse(decision=decision, user=user, batch=batch)


def decision_reverse(*, decision: Decision, user, batch: uuid.UUID | None = None,
                     note: dict | None = None) -> Decision:
    """Undo `decision` as `user`, whoever made it: the rule behind decision_undo, also used by an
    admin settling a double-review disagreement (services.double_review). The caller runs in a
    transaction and holds the decision row's lock. `note` is added to the undo row's `after`."""
    reason = undo_blockers([decision])[decision.pk]
    if reason is not None:
        raise (UndoRefused if reason in REFUSALS or decision.action not in UNDOABLE else LabelConflict)(reason)
    if decision.flag_id is not None:
        Flag.objects.select_for_update().filter(pk=decision.flag_id).first()

    reversal, after = None, {}
    if decision.action == Decision.Action.MERGE:
        after = _unmerge(decision)
    elif decision.action != Decision.Action.KEEP:
        reversal = _reverse_face(decision, user, batch)
        after = dict(reversal.after)
    if decision.flag_id is not None:
        # A superseded flag stays so: the later round's flag is the one to answer.
        Flag.objects.filter(pk=decision.flag_id).exclude(state=Flag.State.SUPERSEDED).update(state=Flag.State.OPEN)
    return Decision.objects.create(
        dataset_id=decision.dataset_id, user=user, actor=user.get_username(), round_id=decision.round_id,
        flag_id=decision.flag_id, action=Decision.Action.UNDO, face_id=decision.face_id,
        identity_id=decision.identity_id, before=dict(decision.after), undoes=decision, batch=batch,
        after={**after, "undoes": decision.pk, "reversal": reversal.pk if reversal else None, **(note or {})},
        evidence=decision.evidence,
    )


# -- batches -----------------------------------------------------------------------------------------

@dataclass
class BatchUndoResult:
    undone: int = 0
    skipped: int = 0                      # already undone, or actions undo does not reverse
    conflicts: int = 0
    conflict_sample: list[str] = field(default_factory=list)
    undo_batch: str = ""                  # the batch id the undo rows share

    def add_conflict(self, decision_id: int, reason: str) -> None:
        self.conflicts += 1
        if len(self.conflict_sample) < CONFLICT_SAMPLE:
            self.conflict_sample.append(f"decision #{decision_id}: {reason}")

    @property
    def summary(self) -> str:
        parts = [f"Undid {self.undone} decision{'s' if self.undone != 1 else ''}"]
        if self.conflicts:
            parts.append(f"{self.conflicts} could not be undone (changed since)")
        if self.skipped:
            parts.append(f"{self.skipped} already undone or not undoable")
        return "; ".join(parts) + "."

    def as_dict(self) -> dict:
        return {"undone": self.undone, "skipped": self.skipped, "conflicts": self.conflicts,
                "conflict_sample": self.conflict_sample, "summary": self.summary, "undo_batch": self.undo_batch}


def _batch_rows(*, dataset_id: int, batch: uuid.UUID, user):
    """The user's decisions of the batch, newest first: a later decision of a batch may build
    on an earlier one (the same face twice), so it is undone first."""
    return (Decision.objects.filter(dataset_id=dataset_id, batch=batch, user=user)
            .exclude(action=Decision.Action.UNDO).order_by("-pk"))


def _undo_each(ids: list[int], *, user, result: BatchUndoResult, undo_batch: uuid.UUID) -> None:
    for decision_id in ids:
        try:
            with transaction.atomic():
                decision_undo(decision_id=decision_id, user=user, batch=undo_batch)
        except UndoRefused:
            result.skipped += 1
        except LabelConflict as conflict:
            result.add_conflict(decision_id, str(conflict))
        else:
            result.undone += 1


def batch_undo(*, dataset_id: int, batch: uuid.UUID, user, progress=None) -> BatchUndoResult:
    """Undo every decision `user` took in `batch` of the dataset, each in its own savepoint:
    one changed since is reported and skipped, the others go through (their flags reopen).
    Commits after each chunk of BATCH_CHUNK decisions, calling progress(done, total)."""
    ids = list(_batch_rows(dataset_id=dataset_id, batch=batch, user=user).values_list("pk", flat=True))
    undo_batch = uuid.uuid4()
    result = BatchUndoResult(undo_batch=str(undo_batch))
    for start in range(0, len(ids), BATCH_CHUNK):
        with transaction.atomic():
            _undo_each(ids[start:start + BATCH_CHUNK], user=user, result=result, undo_batch=undo_batch)
        if progress is not None:
            progress(min(start + BATCH_CHUNK, len(ids)), len(ids))
    return result


def batch_undo_start(*, dataset, batch: uuid.UUID, user) -> BatchUndoResult | Job:
    """Undo a batch now when it is small (<= BATCH_IN_REQUEST of the user's decisions), else
    queue a BATCH_UNDO job (services.jobs runs it with batch_undo_run). ValueError when the
    user took no decision in that batch."""
    count = _batch_rows(dataset_id=dataset.pk, batch=batch, user=user).count()
    if count == 0:
        raise ValueError("You took no decision in this batch")
    if count <= BATCH_IN_REQUEST:
        return batch_undo(dataset_id=dataset.pk, batch=batch, user=user)
    with transaction.atomic():
        job = Job.objects.create(kind=Job.Kind.BATCH_UNDO, dataset=dataset, created_by=user,
                                 params={"batch": str(batch), "decisions": count})
        transaction.on_commit(lambda: queueing.job_send(job.pk))
    return job


def batch_undo_run(job: Job, worker: str, heartbeat) -> dict:
    """The BATCH_UNDO job's work (services.jobs.job_execute dispatches here): returns the
    result to record, {"undone", "conflicts", "conflict_sample", "summary", ...}."""
    if job.created_by is None:
        raise ValueError("the user who asked for this batch undo no longer exists")
    result = batch_undo(dataset_id=job.dataset_id, batch=uuid.UUID(job.params["batch"]), user=job.created_by,
                        progress=lambda done, total: heartbeat.report("undoing", done, total))
    return result.as_dict()
