"""What a round publishes, checked against the data as it is when it publishes, and the older
rounds' open flags that it supersedes. Both run inside round_publish's transaction.

A round mines the training set it froze when it first started (round_data, faces.npz) while the
reviewers go on deciding for the hour it may train. Its candidates are therefore about faces and
identities as they were then. Before they become flags:
- a face removed or marked low quality since then gets no flag ("face_removed");
- a relabel to the identity the face has now, merges followed, asks what is already true
  ("already_true"): the defect was "NOW person_013 · SUGGESTED person_013";
- a face the reviewers decided anything about after the snapshot (relabel, keep, restore, ...)
  has just been looked at: the round asks nothing more about it ("changed_during_round"). Its
  evidence was computed under the old label anyway;
- identities merged away since are replaced by their survivor; a duplicate-identity pair that
  is one identity now asks nothing ("merged").

Superseding: a round's flag replaces the older rounds' still-open flags on the same subject (one
face and kind, one face pair, one identity pair and kind), which leave the queues as "superseded"
and name the round (Flag.superseded_by). That column and the round's summary count are the audit:
nobody decided anything, so no Decision row is written (Decision rows record changes of labels
and reviewers' answers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Sequence

from ..models import Decision, Face, Flag, Round
from ..selectors.active_faces import merge_survivors

DROP_REASONS = ("face_removed", "already_true", "changed_during_round", "merged")
_CHUNK = 10_000  # ids per IN (...): SQLite's variable limit, and short statements on Postgres


@dataclass
class Checked:
    kept: list[Flag]
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))


def snapshot_time(round_: Round) -> datetime:
    """When the round froze its training set, at the latest.

    round_claim stamps started_at on the round's first claim and never again (a worker taking over
    a stale round keeps it), and round_pipeline._training_set freezes faces.npz right after that
    first claim (after a later one only if the first worker died before writing it). So started_at
    is durable across resumes and never after the snapshot: whatever a reviewer decided at or
    after it may be missing from the snapshot. Rounds put straight into a stage (no claim) fall
    back to created_at, which is earlier still."""
    return round_.started_at or round_.created_at


def snapshot_identities(candidates: Iterable[Any], index_to_face: Sequence[int],
                        class_to_identity: Sequence[int]) -> dict[int, int]:
    """Face id -> its identity in the round's snapshot, for the faces the candidates name (mining
    gives each face candidate the face's label, and a near-duplicate's other face's)."""
    seen: dict[int, int] = {}
    for candidate in candidates:
        if str(candidate.kind) == Flag.Kind.DUPLICATE_IDENTITY:
            continue
        for index, label in ((candidate.index, candidate.label),
                             (getattr(candidate, "other_index", None), getattr(candidate, "other_label", None))):
            if index is not None and label is not None and int(label) >= 0:
                seen[int(index_to_face[int(index)])] = int(class_to_identity[int(label)])
    return seen


def _chunks(ids: list[int]):
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


def _faces_now(face_ids: set[int]) -> dict[int, tuple[int, str]]:
    now: dict[int, tuple[int, str]] = {}
    for chunk in _chunks(sorted(face_ids)):
        for pk, identity_id, status in Face.objects.filter(pk__in=chunk).values_list("pk", "identity_id", "status"):
            now[pk] = (identity_id, status)
    return now


def _decided_since(dataset_id: int, since: datetime, face_ids: set[int]) -> set[int]:
    """Faces named by a Decision taken at or after `since`: few rows (what reviewers did while
    the round ran), found through the created_at index."""
    rows = (Decision.objects.filter(dataset_id=dataset_id, created_at__gte=since, face__isnull=False)
            .values_list("face_id", flat=True).distinct())
    return {face_id for face_id in rows.iterator(chunk_size=10_000) if face_id in face_ids}


def flags_as_of_now(*, round_: Round, flags: list[Flag], snapshot_identity: dict[int, int]) -> Checked:
    """The flags still worth asking, with merged-away identities replaced by their survivors, and
    how many were dropped for each of DROP_REASONS (see the module docstring)."""
    merged = merge_survivors(dataset_id=round_.dataset_id)

    def root(identity_id: int | None) -> int | None:
        return None if identity_id is None else merged.get(identity_id, identity_id)

    face_ids = {f for flag in flags for f in (flag.face_id, flag.other_face_id) if f is not None}
    now = _faces_now(face_ids)
    decided = _decided_since(round_.dataset_id, snapshot_time(round_), face_ids)
    # Label changed since the snapshot without a Decision seen after it (one committed around the
    # snapshot's read): merges are followed, so only a relabel (or an unmerge) shows here.
    moved = {face_id for face_id, identity_id in snapshot_identity.items()
             if face_id in now and root(now[face_id][0]) != root(identity_id)}
    checked = Checked(kept=[])
    for flag in flags:
        reason = _drop_reason(flag, now, decided | moved, root)
        if reason is None:
            checked.kept.append(flag)
        else:
            checked.dropped[reason] += 1
    return checked


def _drop_reason(flag: Flag, now: dict, changed: set[int], root) -> str | None:
    """None to keep the flag (its identities mapped to survivors in place), else why not."""
    flag.suggested_identity_id = root(flag.suggested_identity_id)
    if flag.face_id is None:  # an identity pair
        flag.identity_a_id, flag.identity_b_id = root(flag.identity_a_id), root(flag.identity_b_id)
        return "merged" if flag.identity_a_id == flag.identity_b_id else None
    faces = [f for f in (flag.face_id, flag.other_face_id) if f is not None]
    if any(f not in now or now[f][1] != Face.Status.ACTIVE for f in faces):
        return "face_removed"
    if flag.suggestion == Flag.Suggestion.RELABEL and flag.suggested_identity_id == root(now[flag.face_id][0]):
        return "already_true"
    if any(f in changed for f in faces):
        return "changed_during_round"
    return None


# -- superseding ----------------------------------------------------------------------------------

def _subject(kind: str, face_id, other_face_id, identity_a_id, identity_b_id, root) -> tuple:
    """What a flag is about, whatever it suggests: one face and the kind of doubt, one face pair
    (either order), or one identity pair (either order, merges followed) and kind."""
    if face_id is None:
        a, b = sorted((root(identity_a_id), root(identity_b_id)))
        return ("identities", kind, a, b)
    if other_face_id is not None:
        return ("faces", *sorted((face_id, other_face_id)))
    return ("face", kind, face_id)


def flags_supersede(*, round_: Round, flags: list[Flag]) -> dict[str, int]:
    """Mark the open flags of the dataset's earlier rounds whose subject one of `flags` (the
    round's new ones) names as superseded by `round_`, and release their claims. Returns how many
    per kind. Called inside the publish transaction; the rows are locked in id order (as bulk
    decisions lock them) and only those still open are changed, so a reviewer's decision that
    commits first wins and is never overwritten."""
    merged = merge_survivors(dataset_id=round_.dataset_id)

    def root(identity_id):
        return merged.get(identity_id, identity_id)

    subjects = {_subject(f.kind, f.face_id, f.other_face_id, f.identity_a_id, f.identity_b_id, root)
                for f in flags}
    counts = dict.fromkeys(Flag.Kind.values, 0)
    if not subjects:
        return counts
    earlier = list(Round.objects.filter(dataset_id=round_.dataset_id, number__lt=round_.number)
                   .values_list("pk", flat=True))
    rows = (Flag.objects.filter(round_id__in=earlier, state=Flag.State.OPEN)
            .values_list("pk", "kind", "face_id", "other_face_id", "identity_a_id", "identity_b_id"))
    ids = sorted(pk for pk, *subject in rows.iterator(chunk_size=10_000) if _subject(*subject, root) in subjects)
    for chunk in _chunks(ids):
        locked = list(Flag.objects.select_for_update(of=("self",)).filter(pk__in=chunk, state=Flag.State.OPEN)
                      .order_by("pk").values_list("pk", "kind"))
        Flag.objects.filter(pk__in=[pk for pk, _ in locked]).update(
            state=Flag.State.SUPERSEDED, superseded_by=round_, claimed_by=None, claimed_at=None)
        for _, kind in locked:
            counts[kind] += 1
    return counts
