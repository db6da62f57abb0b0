"""Which decisions can be undone now: for one decision (services.undo checks it under a lock)
or for a page of them at once (history rows, review cards), in a fixed handful of queries.

A decision can be undone while
- its action is one that undo reverses (not an import, a role change or an undo),
- no undo row points at it yet (Decision.undoes, or after["undoes"] on rows older than that column),
- it is not itself the change an undo made (the "reversal" an undo row names),
- nothing changed what it changed since: its face still has the identity and status it left,
  and no later label change of that face stands (one later undone counts for nothing); for a
  merge, the merged identity still points at the survivor and every face it moved is still there;
- for a "keep", its flag was not superseded by a later round (undoing would reopen nothing).
Who may undo is the caller's question: only a decision's own author (services.undo).
"""
from __future__ import annotations

from django.db.models import Q

from ..models import Decision, Face, Flag, Identity

UNDOABLE = frozenset({
    Decision.Action.REMOVE, Decision.Action.LOW_QUALITY, Decision.Action.RESTORE,
    Decision.Action.RELABEL, Decision.Action.MERGE, Decision.Action.KEEP,
})
FACE_CHANGES = (Decision.Action.REMOVE, Decision.Action.LOW_QUALITY, Decision.Action.RESTORE,
                Decision.Action.RELABEL)

# The reasons, word for word as the pages and the API show them.
ALREADY_UNDONE = "This decision was already undone"
MADE_BY_UNDO = "This change was made by an undo and cannot be undone itself"
FACE_CHANGED = "The face was changed since this decision"
MERGE_MOVED = "The merged identity was merged elsewhere or split since"
MERGE_FACES_MOVED = "Some of the merged faces were changed since the merge"
FLAG_SUPERSEDED = "A later round superseded this decision's flag"
# The same, short, for the history's undo column (the whole reason is its tooltip).
SHORT_REASONS = {
    ALREADY_UNDONE: "already undone", MADE_BY_UNDO: "made by an undo", FACE_CHANGED: "face changed since",
    MERGE_MOVED: "identity moved since", MERGE_FACES_MOVED: "faces changed since", FLAG_SUPERSEDED: "flag superseded",
}
# Reasons that are about the decision itself rather than about data that moved on since.
REFUSALS = frozenset({ALREADY_UNDONE, MADE_BY_UNDO, FLAG_SUPERSEDED})


def not_undoable(decision: Decision) -> str:
    action = decision.get_action_display().lower()
    return f"{'An' if action[:1] in 'aeiou' else 'A'} {action} decision cannot be undone"


def undo_links(decisions: list[Decision]) -> tuple[set[int], dict[int, int]]:
    """(ids undone, {reversal id: id of the decision its undo undid}) among the undo rows that
    can concern these decisions: an undo row names the face or identity of what it undid, and
    comes after it (the face, identity and undoes indexes find them however old the page)."""
    ids = [d.pk for d in decisions]
    faces = {d.face_id for d in decisions if d.face_id is not None}
    identities = {d.identity_id for d in decisions if d.identity_id is not None}
    rows = (Decision.objects.filter(action=Decision.Action.UNDO, pk__gt=min(ids))
            .filter(Q(undoes_id__in=ids) | Q(face_id__in=faces) | Q(identity_id__in=identities))
            .values_list("undoes_id", "after"))
    undone: set[int] = set()
    reversals: dict[int, int] = {}
    for undoes_id, after in rows:
        target = undoes_id if undoes_id is not None else (after or {}).get("undoes")
        if isinstance(target, int):
            undone.add(target)
            reversal = (after or {}).get("reversal")
            if isinstance(reversal, int):
                reversals[reversal] = target
    return undone, reversals


def undo_blockers(decisions: list[Decision]) -> dict[int, str | None]:
    """For each decision, why it cannot be undone now, or None when it can."""
    if not decisions:
        return {}
    undone, reversals = undo_links(decisions)
    out: dict[int, str | None] = {}
    candidates = []
    for d in decisions:
        if d.action not in UNDOABLE:
            out[d.pk] = not_undoable(d)
        elif d.pk in undone:
            out[d.pk] = ALREADY_UNDONE
        elif d.pk in reversals:
            out[d.pk] = MADE_BY_UNDO
        else:
            out[d.pk] = None
            candidates.append(d)
    face_rows = [d for d in candidates if d.action in FACE_CHANGES]
    merges = [d for d in candidates if d.action == Decision.Action.MERGE]
    keeps = [d for d in candidates if d.action == Decision.Action.KEEP and d.flag_id is not None]
    if face_rows:
        _check_faces(face_rows, undone, reversals, out)
    if merges:
        _check_merges(merges, out)
    if keeps:
        states = dict(Flag.objects.filter(pk__in={d.flag_id for d in keeps}).values_list("pk", "state"))
        for d in keeps:
            if states.get(d.flag_id) == Flag.State.SUPERSEDED:
                out[d.pk] = FLAG_SUPERSEDED
    return out


def _check_faces(decisions: list[Decision], undone: set[int], reversals: dict[int, int], out: dict) -> None:
    faces = {d.face_id for d in decisions}
    now = {pk: {"identity": identity_id, "status": status}
           for pk, identity_id, status in Face.objects.filter(pk__in=faces).values_list("pk", "identity_id", "status")}
    later = list(Decision.objects.filter(face_id__in=faces, action__in=FACE_CHANGES,
                                         pk__gt=min(d.pk for d in decisions)).values_list("pk", "face_id"))
    for d in decisions:
        left = {key: d.after.get(key) for key in ("identity", "status")}
        if now.get(d.face_id) != left:
            out[d.pk] = FACE_CHANGED
            continue
        for pk, face_id in later:
            # A later change that was undone, or the reversal an undo of such a change made,
            # leaves the face as this decision left it.
            if face_id != d.face_id or pk <= d.pk or pk in undone or reversals.get(pk, 0) > d.pk:
                continue
            out[d.pk] = FACE_CHANGED
            break


def _check_merges(decisions: list[Decision], out: dict) -> None:
    pointers = dict(Identity.objects.filter(pk__in={d.identity_id for d in decisions})
                    .values_list("pk", "merged_into_id"))
    moved = {int(f) for d in decisions for f in d.before.get("faces", [])}
    where = dict(Face.objects.filter(pk__in=moved).values_list("pk", "identity_id")) if moved else {}
    for d in decisions:
        survivor = d.after.get("merged_into")
        if pointers.get(d.identity_id) != survivor:
            out[d.pk] = MERGE_MOVED
        elif any(where.get(int(f)) != survivor for f in d.before.get("faces", [])):
            out[d.pk] = MERGE_FACES_MOVED


def undoable_ids(decisions: list[Decision], *, user) -> set[int]:
    """The ids among `decisions` that `user` may undo now (their own, and nothing blocks it)."""
    user_id = getattr(user, "pk", None)
    own = [d for d in decisions if user_id is not None and d.user_id == user_id]
    return {pk for pk, reason in undo_blockers(own).items() if reason is None}
