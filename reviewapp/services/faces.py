"""Bulk decisions on faces picked by hand (the identity page): remove, mark low quality,
restore, relabel. Built on labels.py; each face gets its own savepoint so that a face
someone else changed meanwhile is reported as a conflict while the others go through."""
import uuid
from dataclasses import dataclass, field

from django.db import transaction

from ..models import Decision, Face
from . import labels
from .labels import LabelConflict

ACTIONS = ("remove", "low_quality", "restore", "relabel")


@dataclass
class BulkResult:
    decided: list[int] = field(default_factory=list)
    conflicts: list[tuple[int, str]] = field(default_factory=list)
    # The id every Decision row of this action carries (Decision.batch): undone as one.
    batch: uuid.UUID | None = None


def _apply(action: str, face_id: int, *, user, identity_id: int | None, expected: dict | None,
           batch: uuid.UUID | None) -> Decision:
    if action == "remove":
        return labels.face_remove(face_id=face_id, user=user, expected=expected, batch=batch)
    if action == "low_quality":
        return labels.face_mark_low_quality(face_id=face_id, user=user, expected=expected, batch=batch)
    if action == "restore":
        return labels.face_restore(face_id=face_id, user=user, expected=expected, batch=batch)
    return labels.face_relabel(face_id=face_id, identity_id=identity_id, user=user, expected=expected, batch=batch)


@transaction.atomic
def faces_bulk_action(*, face_ids: list[int], action: str, user, dataset, identity_id: int | None = None,
                      from_identity_id: int | None = None) -> BulkResult:
    """Apply `action` to each face of `dataset` in face_ids. `identity_id` is the relabel
    target; `from_identity_id`, when given, is the identity the faces were shown under: a
    face that left it since is a conflict. Faces of other datasets are conflicts too."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; choose from {', '.join(ACTIONS)}")
    if action == "relabel" and identity_id is None:
        raise ValueError("relabel needs a target identity")
    ids = list(dict.fromkeys(int(i) for i in face_ids))
    ours = set(Face.objects.filter(pk__in=ids, dataset=dataset).values_list("pk", flat=True))
    expected = {"identity": from_identity_id} if from_identity_id is not None else None
    result = BulkResult(batch=uuid.uuid4())
    for face_id in ids:
        if face_id not in ours:
            result.conflicts.append((face_id, "not a face of this dataset"))
            continue
        try:
            with transaction.atomic():
                _apply(action, face_id, user=user, identity_id=identity_id, expected=expected, batch=result.batch)
        except LabelConflict as conflict:
            result.conflicts.append((face_id, str(conflict)))
        else:
            result.decided.append(face_id)
    return result
