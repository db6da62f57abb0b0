"""Every change to a face's label or status, and every identity merge.

Each function is one transaction that locks the rows it changes, applies the change and
appends the Decision row that records it, so the audit can never disagree with the data.
A change that would do nothing (removing a removed face) raises LabelConflict instead of
writing a second row: two reviewers on the same face get one decision and one conflict.

Lock order, the same everywhere so that concurrent decisions wait instead of deadlocking:
flag (services.flags), then identities, then faces. Django's foreign keys are checked only
at commit, so a reference to a row does not lock it in time: a relabel locks its target
identity itself before it looks at whether that identity was merged.

`batch`: the id shared by every decision of one multi-flag or multi-face action (a page's bulk
action, a queue-wide job), written on the Decision row so the action can be undone as one.
"""
import uuid

from django.db import connection, transaction

from ..models import Decision, Face, Flag, Identity


class LabelConflict(Exception):
    """The object is no longer in the state the change assumed; nothing was written."""

    def __init__(self, message, current=None):
        super().__init__(message)
        self.current = current or {}


def _actor(user, actor):
    if actor:
        return actor
    return user.get_username() if user is not None else "system"


def _face_state(face: Face) -> dict:
    return {"identity": face.identity_id, "status": face.status}


def _lock_face(face_id: int) -> Face:
    return Face.objects.select_for_update().get(pk=face_id)


def _hold_identity(identity_id: int, dataset_id: int) -> Identity | None:
    """Read the identity as committed now and keep a merge of it from committing until this
    transaction ends. FOR KEY SHARE conflicts with the merge's FOR UPDATE but not with other
    relabels, so relabels into one identity do not queue behind each other. Other databases
    (SQLite) have one writer at a time and no row locks."""
    if connection.vendor != "postgresql":
        return Identity.objects.filter(pk=identity_id, dataset_id=dataset_id).first()
    table, pk = connection.ops.quote_name(Identity._meta.db_table), Identity._meta.pk.column
    dataset = Identity._meta.get_field("dataset").column
    sql = f"SELECT * FROM {table} WHERE {pk} = %s AND {dataset} = %s FOR KEY SHARE"
    return next(iter(Identity.objects.raw(sql, [identity_id, dataset_id])), None)


def relabel_targets_hold(*, identity_ids, dataset_id: int) -> dict:
    """face_relabel's target check for many targets at once: each id maps to the identity a
    relabel to it lands on (its survivor, held as _hold_identity holds it), or to the
    ValueError / LabelConflict face_relabel would raise. Lock order: call it after locking the
    flags and before locking the faces."""
    out = {}
    for identity_id in sorted(set(identity_ids)):
        try:
            target, seen = _hold_identity(identity_id, dataset_id), set()
            if target is None:
                raise ValueError("The target identity is not in this face's dataset")
            while target.merged_into_id is not None:
                # Once an unmerged target is held no merge of it can commit before this transaction.
                seen.add(target.pk)
                target = _hold_identity(target.merged_into_id, dataset_id)
                if target is None or target.pk in seen:
                    raise LabelConflict("The target identity's merges form a loop; ask an admin to check it")
            out[identity_id] = target
        except (ValueError, LabelConflict) as error:
            out[identity_id] = error
    return out


def _root(identity: Identity) -> Identity:
    """The identity that survives a chain of merges. Merges keep chains one step long
    (see identity_merge), so this loop runs at most once in practice."""
    seen = set()
    while identity.merged_into_id is not None and identity.pk not in seen:
        seen.add(identity.pk)
        identity = identity.merged_into
    return identity


def _record(*, face=None, identity=None, dataset_id, action, before, after, user, actor, flag, batch=None):
    return Decision.objects.create(
        dataset_id=dataset_id,
        user=user,
        actor=_actor(user, actor),
        round_id=flag.round_id if flag is not None else None,
        flag=flag,
        evidence=flag.evidence if flag is not None else {},
        action=action,
        face=face,
        identity=identity,
        before=before,
        after=after,
        batch=batch,
    )


def _set_face(face_id, *, action, user, actor, flag, expected, batch=None, **changes) -> Decision:
    face = _lock_face(face_id)
    before = _face_state(face)
    if expected is not None and any(before[k] != v for k, v in expected.items()):
        raise LabelConflict("This face was changed by someone else", current=before)
    if all(getattr(face, k) == v for k, v in changes.items()):
        raise LabelConflict("This face is already in that state", current=before)
    for field, value in changes.items():
        setattr(face, field, value)
    face.save(update_fields=list(changes))
    return _record(
        face=face, dataset_id=face.dataset_id, action=action, before=before,
        after=_face_state(face), user=user, actor=actor, flag=flag, batch=batch,
    )


@transaction.atomic
def face_remove(*, face_id: int, user=None, actor: str = "", flag: Flag | None = None,
                expected: dict | None = None, batch: uuid.UUID | None = None) -> Decision:
    """Take a face out of the cleaned set (open-set noise, junk). Reversible by face_restore."""
    return _set_face(face_id, action=Decision.Action.REMOVE, user=user, actor=actor, flag=flag,
                     expected=expected, batch=batch, status=Face.Status.REMOVED)


@transaction.atomic
def face_mark_low_quality(*, face_id: int, user=None, actor: str = "", flag: Flag | None = None,
                          expected: dict | None = None, batch: uuid.UUID | None = None) -> Decision:
    """Take a blurred or junk face out of the cleaned set, recorded as "low_quality" so the
    audit tells it from a wrong-identity removal. Reversible by face_restore."""
    return _set_face(face_id, action=Decision.Action.LOW_QUALITY, user=user, actor=actor, flag=flag,
                     expected=expected, batch=batch, status=Face.Status.REMOVED)


@transaction.atomic
def face_restore(*, face_id: int, user=None, actor: str = "", flag: Flag | None = None,
                 expected: dict | None = None, batch: uuid.UUID | None = None) -> Decision:
    return _set_face(face_id, action=Decision.Action.RESTORE, user=user, actor=actor, flag=flag,
                     expected=expected, batch=batch, status=Face.Status.ACTIVE)


@transaction.atomic
def face_relabel(*, face_id: int, identity_id: int, user=None, actor: str = "",
                 flag: Flag | None = None, expected: dict | None = None,
                 batch: uuid.UUID | None = None) -> Decision:
    """Move a face to another identity of its dataset (closed-set noise). A target that is
    merged, also one merged while this waited for it, is replaced by its survivor: the
    reviewer meant that person, and a face left on a merged identity would be exported under
    the survivor while every page still showed the merged name."""
    dataset_id = Face.objects.values_list("dataset_id", flat=True).get(pk=face_id)  # never changes
    target = relabel_targets_hold(identity_ids=[identity_id], dataset_id=dataset_id)[identity_id]
    if isinstance(target, Exception):
        raise target
    return _set_face(face_id, action=Decision.Action.RELABEL, user=user, actor=actor, flag=flag,
                     expected=expected, batch=batch, identity_id=target.pk)


@transaction.atomic
def identity_merge(*, identity_id: int, into_id: int, user=None, actor: str = "",
                   flag: Flag | None = None, batch: uuid.UUID | None = None) -> Decision:
    """Join two identities that are one person: `identity_id` is merged into `into_id`.

    Its faces move to the survivor, and identities earlier merged into it are re-pointed
    to the survivor, so merged_into never forms chains and exports map in one step.
    """
    # FOR UPDATE waits for relabels holding either identity (see _hold_identity); id order
    # keeps two merges over the same identities from deadlocking.
    locked = {
        i.pk: i
        for i in Identity.objects.select_for_update().filter(pk__in=[identity_id, into_id]).order_by("pk")
    }
    if len(locked) != 2:
        raise ValueError("Both identities must exist and differ")
    merged, survivor = locked[identity_id], _root(locked[into_id])
    if merged.dataset_id != survivor.dataset_id:
        raise ValueError("Identities of different datasets cannot be merged")
    if merged.merged_into_id is not None:
        raise LabelConflict("This identity was already merged", current={"merged_into": merged.merged_into_id})
    if survivor.pk == merged.pk:
        raise LabelConflict("An identity cannot be merged into itself")
    # The moved face ids go into the audit row so that the merge can be undone exactly.
    # Locking the faces re-checks each one a concurrent relabel held: a face relabelled away
    # meanwhile is neither moved nor listed.
    moved_ids = list(Face.objects.select_for_update().filter(identity_id=merged.pk).order_by("pk")
                     .values_list("pk", flat=True))
    Face.objects.filter(pk__in=moved_ids).update(identity_id=survivor.pk)
    repointed = Identity.objects.filter(merged_into_id=merged.pk).update(merged_into_id=survivor.pk)
    merged.merged_into = survivor
    merged.save(update_fields=["merged_into"])
    return _record(
        identity=merged, dataset_id=merged.dataset_id, action=Decision.Action.MERGE,
        before={"identity": merged.pk, "merged_into": None, "faces": moved_ids},
        after={"merged_into": survivor.pk, "faces_moved": len(moved_ids), "identities_repointed": repointed},
        user=user, actor=actor, flag=flag, batch=batch,
    )
