"""Deciding review flags, alone or in bulk, and claiming batches of a queue.

A decision locks the flag row first: of two reviewers on one flag the second finds it no
longer open and gets LabelConflict, and nothing of theirs is written. Label changes go
through services.labels (which appends the Decision row); a "keep" changes no label, so its
Decision row is written here. The flag's new state is saved in the same transaction.

What "confirm" does follows the flag's suggestion (remove, relabel, merge or keep); an
identity pair (duplicate_identity) can only be merged or kept apart.

A near-duplicate pair (face, other_face) shows one picture twice. Its evidence names the copy a
removal takes out ("remove": "other_index" or "index"); across two identities it names none
when the mining could not tell which label is right ("remove": null), and then "remove" needs
the reviewer's choice (remove_face_id, either copy). The reviewer may always pick either copy.
"""
import uuid
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..models import Decision, Face, Flag, Identity
from ..rules import claim_cutoff, named_removal
from . import claims, double_review, labels
from .labels import LabelConflict

ACTIONS = ("confirm", "reject", "relabel", "remove", "low_quality")
FACE_ACTIONS = ("relabel", "remove", "low_quality")
MAX_CLAIM = 500

__all__ = ["ACTIONS", "BulkResult", "LabelConflict", "flag_decide", "flags_claim",
           "flags_decide_bulk", "flags_release"]


@dataclass
class BulkResult:
    decided: list[int] = field(default_factory=list)
    conflicts: list[tuple[int, str]] = field(default_factory=list)
    # The id every Decision row of this action carries (Decision.batch): undone as one.
    batch: uuid.UUID | None = None


# -- one flag -------------------------------------------------------------------------------------

@transaction.atomic
def flag_decide(*, flag_id: int, action: str, user, identity_id: int | None = None,
                survivor_id: int | None = None, remove_face_id: int | None = None,
                batch: uuid.UUID | None = None) -> Decision:
    """Act on one open flag; see the module docstring. ValueError for an action the flag does
    not allow (relabel without a target, remove on an identity pair, a foreign survivor, a
    remove_face_id that is not one of a near-duplicate's two faces)."""
    if action not in ACTIONS:
        raise ValueError(f"Unknown action {action!r}")
    # of=("self",): lock the flag only; the round row is shared by every flag of the queue.
    # The dataset comes along for its claims mode and double-review share.
    flag = Flag.objects.select_for_update(of=("self",)).select_related("round__dataset").get(pk=flag_id)
    if flag.state != Flag.State.OPEN:
        current = _flag_current(flag)
        who = f" by {current['decided_by']}" if current["decided_by"] else ""
        raise LabelConflict(f"This flag was already decided{who} ({flag.get_state_display()}).", current=current)
    claims.claim_check(flag=flag, user=user)  # refuses only where the dataset enforces claims
    is_pair = flag.kind == Flag.Kind.DUPLICATE_IDENTITY or flag.face_id is None
    if is_pair and action in FACE_ACTIONS:
        raise ValueError("An identity pair can only be merged (confirm) or kept apart (reject)")
    decision, state = _ACTIONS[action](flag, user=user, identity_id=identity_id, survivor_id=survivor_id,
                                       is_pair=is_pair, remove_face_id=remove_face_id, batch=batch)
    flag.state = state
    # A decided flag leaves its batch: claims stay few, so the claimed_by index stays small.
    flag.claimed_by, flag.claimed_at = None, None
    flag.save(update_fields=["state", "claimed_by", "claimed_at"])
    double_review.second_review_sample(flag=flag, decision=decision)
    return decision


def _confirm(flag, *, user, survivor_id, is_pair, batch, **_):
    if is_pair or flag.suggestion == Flag.Suggestion.MERGE:
        return _merge(flag, user=user, survivor_id=survivor_id, batch=batch), Flag.State.CONFIRMED
    if flag.suggestion == Flag.Suggestion.REMOVE:
        decision = labels.face_remove(face_id=_removal_target(flag), user=user, flag=flag, batch=batch)
        return decision, Flag.State.CONFIRMED
    if flag.suggestion == Flag.Suggestion.RELABEL:
        if flag.suggested_identity_id is None:
            raise ValueError("This flag suggests no identity to relabel to")
        decision = labels.face_relabel(face_id=flag.face_id, identity_id=flag.suggested_identity_id,
                                       user=user, flag=flag, batch=batch)
        return decision, Flag.State.CONFIRMED
    return _keep(flag, user=user, batch=batch), Flag.State.CONFIRMED


def _reject(flag, *, user, batch, **_):
    return _keep(flag, user=user, batch=batch), Flag.State.REJECTED


def _relabel(flag, *, user, identity_id, batch, **_):
    if identity_id is None:
        raise ValueError("Choose the identity to relabel to")
    decision = labels.face_relabel(face_id=flag.face_id, identity_id=identity_id, user=user, flag=flag, batch=batch)
    as_suggested = (flag.suggestion == Flag.Suggestion.RELABEL
                    and decision.after.get("identity") == flag.suggested_identity_id)
    return decision, Flag.State.CONFIRMED if as_suggested else Flag.State.OVERRIDDEN


def _remove(flag, *, user, batch, remove_face_id=None, **_):
    target = _removal_target(flag, remove_face_id)
    decision = labels.face_remove(face_id=target, user=user, flag=flag, batch=batch)
    return decision, _removal_state(flag, target)


def _low_quality(flag, *, user, batch, remove_face_id=None, **_):
    target = _removal_target(flag, remove_face_id)
    decision = labels.face_mark_low_quality(face_id=target, user=user, flag=flag, batch=batch)
    return decision, _removal_state(flag, target)


_ACTIONS = {"confirm": _confirm, "reject": _reject, "relabel": _relabel, "remove": _remove,
            "low_quality": _low_quality}


def _removal_target(flag, chosen: int | None = None) -> int:
    """The face a removal takes out: the reviewer's choice of a near-duplicate's two copies,
    else the one the flag names (ValueError where it names none)."""
    if chosen is not None:
        if chosen not in (flag.face_id, flag.other_face_id) or flag.other_face_id is None:
            raise ValueError("Choose one of the two copies to remove")
        return chosen
    target = named_removal(flag)
    if target is None:
        raise ValueError("This picture is filed under two identities: choose which copy to remove")
    return target


def _removal_state(flag, target: int) -> str:
    as_suggested = flag.suggestion == Flag.Suggestion.REMOVE and target == named_removal(flag)
    return Flag.State.CONFIRMED if as_suggested else Flag.State.OVERRIDDEN


def _merge(flag, *, user, survivor_id, batch=None):
    pair = (flag.identity_a_id, flag.identity_b_id)
    if None in pair:
        raise ValueError("This flag names no identity pair to merge")
    # A side merged away since the round stands for the identity it was merged into (the card
    # shows that one): merges keep merged_into one step long.
    live = {pk: into or pk for pk, into in Identity.objects.filter(pk__in=pair).values_list("pk", "merged_into_id")}
    survivor = survivor_id or flag.suggested_identity_id or flag.identity_b_id
    if survivor not in pair and survivor not in (live.get(pair[0]), live.get(pair[1])):
        raise ValueError("The surviving identity must be one of the pair")
    survivor = live.get(survivor, survivor)
    sides = (live.get(pair[0], pair[0]), live.get(pair[1], pair[1]))
    if sides[0] == sides[1]:
        # Merged into one since the round: what the flag asked is done; record the agreement.
        return _keep(flag, user=user, batch=batch)
    merged = sides[0] if survivor == sides[1] else sides[1]
    return labels.identity_merge(identity_id=merged, into_id=survivor, user=user, flag=flag, batch=batch)


def _keep(flag, *, user, batch=None) -> Decision:
    """Record that a reviewer looked and kept things as they are. The face is locked (after
    the flag, the order labels.py follows) so that a relabel committing meanwhile either
    waits for this row or is what this row records."""
    state = {}
    if flag.face_id is not None:
        face = (Face.objects.select_for_update().filter(pk=flag.face_id)
                .values("identity_id", "status").first() or {})
        state = {"identity": face.get("identity_id"), "status": face.get("status")}
    else:
        state = {"identity_a": flag.identity_a_id, "identity_b": flag.identity_b_id}
    return Decision.objects.create(
        dataset_id=flag.round.dataset_id, user=user,
        actor=user.get_username() if user is not None else "system",
        round_id=flag.round_id, flag=flag, evidence=flag.evidence, action=Decision.Action.KEEP,
        face_id=flag.face_id, identity_id=flag.identity_a_id if flag.face_id is None else None,
        before=state, after=state, batch=batch,
    )


def _flag_current(flag) -> dict:
    last = Decision.objects.filter(flag_id=flag.pk).order_by("-id").values("actor", "action").first() or {}
    return {"flag": flag.pk, "state": flag.state, "decided_by": last.get("actor", ""),
            "action": last.get("action", "")}


# -- many flags -----------------------------------------------------------------------------------

@transaction.atomic
def flags_decide_bulk(*, flag_ids: list[int], action: str, user, identity_id: int | None = None,
                      dataset_id: int | None = None) -> BulkResult:
    """The same action on many flags, each in its own savepoint: a conflict (or a flag the
    action does not fit) is reported and skipped, the others are decided. With dataset_id,
    flags of other datasets count as missing. Every Decision row it writes carries one fresh
    batch id (result.batch), so the whole action can be found and undone as one."""
    if action not in ACTIONS:
        raise ValueError(f"Unknown action {action!r}")
    if action == "relabel" and identity_id is None:
        raise ValueError("Choose the identity to relabel to")
    # Ascending ids: two bulk decisions over overlapping flags lock them in the same order.
    ids = sorted({int(i) for i in flag_ids})
    found = Flag.objects.filter(pk__in=ids)
    if dataset_id is not None:
        found = found.filter(round__dataset_id=dataset_id)
    known = set(found.values_list("pk", flat=True))
    result = BulkResult(batch=uuid.uuid4())
    for flag_id in ids:
        if flag_id not in known:
            result.conflicts.append((flag_id, "No such flag"))
            continue
        try:
            flag_decide(flag_id=flag_id, action=action, user=user, identity_id=identity_id, batch=result.batch)
        except (LabelConflict, ValueError) as error:
            result.conflicts.append((flag_id, str(error)))
        else:
            result.decided.append(flag_id)
    return result


# -- claims ---------------------------------------------------------------------------------------

@transaction.atomic
def flags_claim(*, round_id: int, kind: str, user, size: int = 50) -> int:
    """Take the next `size` open flags of a queue that nobody else holds: the reviewer's own
    earlier batch is given back first, so a new batch replaces it. SKIP LOCKED lets two
    reviewers claim at the same moment and get disjoint batches. Returns how many were taken."""
    size = max(1, min(int(size), MAX_CLAIM))
    now = timezone.now()
    _own_claims(round_id, kind, user).update(claimed_by=None, claimed_at=None)
    free = (
        Flag.objects.filter(round_id=round_id, kind=kind, state=Flag.State.OPEN)
        .filter(Q(claimed_by__isnull=True) | Q(claimed_at__lt=claim_cutoff(now)))
        .order_by("-score", "-id")
        .select_for_update(skip_locked=True)
    )
    ids = list(free.values_list("pk", flat=True)[:size])
    return Flag.objects.filter(pk__in=ids).update(claimed_by=user, claimed_at=now)


@transaction.atomic
def flags_release(*, round_id: int, kind: str, user) -> int:
    """Give back the reviewer's batch of a queue; returns how many flags were released."""
    return _own_claims(round_id, kind, user).update(claimed_by=None, claimed_at=None)


def _own_claims(round_id, kind, user):
    return Flag.objects.filter(round_id=round_id, kind=kind, state=Flag.State.OPEN, claimed_by=user)
