"""Undoing a reviewer's own latest decision.

Face decisions are reversed through labels.py (which writes its own restore/relabel/remove
row); a merge is reversed here, since labels.py has no un-merge. Either way one more row,
action "undo" with after={"undoes": <id>, "reversal": <labels row id or None>}, says what
was undone, so that neither the undone row nor its reversal is offered for undo again.
The reversal checks the state the decision left behind: if anyone changed the face or
identity since, LabelConflict is raised and nothing is written.
"""
from django.db import transaction

from ..models import Decision, Face, Flag, Identity
from . import labels
from .labels import LabelConflict

# Actions that can be undone; an import or an undo cannot.
UNDOABLE = frozenset({
    Decision.Action.REMOVE, Decision.Action.LOW_QUALITY, Decision.Action.RESTORE,
    Decision.Action.RELABEL, Decision.Action.MERGE, Decision.Action.KEEP,
})
# How many of a user's latest rows are looked at to find the undoable one: each undo hides
# two rows (the undone one and its reversal) behind one, so a long chain of undos still fits.
_LOOKBACK = 300


class UndoRefused(LabelConflict):
    """The decision is not the user's own latest undoable one; nothing was written. A kind of
    LabelConflict, so that callers that answer conflicts (the API) answer this too."""


def undoable_decision_id(*, user, dataset_id: int) -> int | None:
    """The id of the user's latest decision in the dataset that may still be undone."""
    if user is None or not user.is_authenticated:
        return None
    # A membership change (action "role") is audit only, not a review decision: it neither is
    # undone here nor hides the reviewer's latest decision from undo.
    rows = (Decision.objects.filter(dataset_id=dataset_id, user=user).exclude(action=Decision.Action.ROLE)
            .order_by("-id").values_list("pk", "action", "after")[:_LOOKBACK])
    hidden: set[int] = set()
    for pk, action, after in rows:
        if action == Decision.Action.UNDO:
            hidden.update(v for v in (after.get("undoes"), after.get("reversal")) if v is not None)
            continue
        if pk in hidden:
            continue
        return pk if action in UNDOABLE else None
    return None


def _reverse_face(decision: Decision, user) -> Decision:
    """Put the face back as `decision.before` had it, if it is still as `decision.after` left it."""
    before, after = decision.before, decision.after
    expected = {key: after[key] for key in ("identity", "status") if key in after}
    if before.get("identity") != after.get("identity"):
        return labels.face_relabel(face_id=decision.face_id, identity_id=before["identity"], user=user,
                                   expected=expected)
    if before.get("status") == Face.Status.ACTIVE:
        return labels.face_restore(face_id=decision.face_id, user=user, expected=expected)
    return labels.face_remove(face_id=decision.face_id, user=user, expected=expected)


def _unmerge(decision: Decision) -> dict:
    """Move exactly the faces the merge moved back to the merged identity, clear its
    merged_into and re-point identities the merge had re-pointed. Returns the changed state."""
    merged_id, survivor_id = decision.identity_id, decision.after["merged_into"]
    face_ids = [int(i) for i in decision.before.get("faces", [])]
    locked = {i.pk: i for i in Identity.objects.select_for_update().filter(pk__in=[merged_id, survivor_id])}
    merged = locked.get(merged_id)
    if merged is None or survivor_id not in locked or merged.merged_into_id != survivor_id:
        raise LabelConflict("This identity was merged elsewhere or split since",
                            current={"merged_into": merged.merged_into_id if merged else None})
    faces = list(Face.objects.select_for_update().filter(pk__in=face_ids).values_list("pk", "identity_id"))
    moved_on = [pk for pk, identity_id in faces if identity_id != survivor_id]
    if len(faces) != len(face_ids) or moved_on:
        raise LabelConflict(f"{len(moved_on) or 'Some'} of the merged faces were changed since the merge",
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


def _reopen(flag_id: int | None) -> None:
    if flag_id is not None:
        Flag.objects.filter(pk=flag_id).update(state=Flag.State.OPEN)


@transaction.atomic
def decision_undo(*, decision_id: int, user) -> Decision:
    """Undo `user`'s own latest decision; returns the "undo" row. UndoRefused when it is not
    theirs, not their latest, already undone or not undoable; LabelConflict when the data
    has moved on since."""
    decision = Decision.objects.select_related("flag").get(pk=decision_id)
    if decision.user_id is None or decision.user_id != getattr(user, "pk", None):
        raise UndoRefused("Only your own decisions can be undone")
    if decision.action not in UNDOABLE:
        raise UndoRefused(f"A {decision.get_action_display().lower()} decision cannot be undone")
    # Serialise undos per user and dataset by locking the user's newest row: two clicks on
    # Undo must not both pass the "latest" check.
    list(Decision.objects.select_for_update().filter(dataset_id=decision.dataset_id, user=user)
         .order_by("-id").values_list("pk", flat=True)[:1])
    if undoable_decision_id(user=user, dataset_id=decision.dataset_id) != decision.pk:
        raise UndoRefused("Only your latest decision that is not undone yet can be undone")
    if decision.flag_id is not None:
        Flag.objects.select_for_update().filter(pk=decision.flag_id).first()

    reversal, before, after = None, dict(decision.after), {}
    if decision.action == Decision.Action.MERGE:
        after = _unmerge(decision)
    elif decision.action != Decision.Action.KEEP:
        reversal = _reverse_face(decision, user)
        after = dict(reversal.after)
    _reopen(decision.flag_id)
    return Decision.objects.create(
        dataset_id=decision.dataset_id, user=user, actor=user.get_username(), round_id=decision.round_id,
        flag_id=decision.flag_id, action=Decision.Action.UNDO, face_id=decision.face_id,
        identity_id=decision.identity_id, before=before,
        after={**after, "undoes": decision.pk, "reversal": reversal.pk if reversal else None},
        evidence=decision.evidence,
    )
