"""Reads for queue-wide bulk decisions: which open flags a filter matches, and the preview a
reviewer sees before starting the job that decides them (services.bulk).

The filter (FlagSelection) is defined once here; the page, the API and the job all build one
and ask this module for its flags, so what was previewed is what the job walks. Its round is
always explicit (the caller resolves "latest published"), so every query runs on the
flag_open_queue partial index (round, kind, -score, -id WHERE state = 'open'): a COUNT over
200K open flags of one queue stays an index-only scan, never a walk over the whole table.
"""
from dataclasses import asdict, dataclass, field

from django.db.models import Q, QuerySet

from ..models import Face, Flag, Identity, Round
from ..rules import claim_cutoff

SAMPLE_SIZE = 12


@dataclass(frozen=True)
class FlagSelection:
    """Every open flag of one queue (round, kind) whose score lies in [min_score, max_score],
    whose face (either face of a near-duplicate, either side of an identity pair) is now filed
    under `identity_id`, and whose suggestion names `suggested_identity_id`; None: any."""

    dataset_id: int
    round_id: int
    kind: str
    min_score: float | None = None
    max_score: float | None = None
    identity_id: int | None = None
    suggested_identity_id: int | None = None

    def params(self) -> dict:
        """As stored in a job's params (JSON)."""
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict) -> "FlagSelection":
        return cls(**{name: params.get(name) for name in cls.__dataclass_fields__})


def selection_resolve(*, dataset_id: int, kind: str, round_id: int | None = None, min_score: float | None = None,
                      max_score: float | None = None, identity_id: int | None = None,
                      suggested_identity_id: int | None = None) -> FlagSelection:
    """A FlagSelection of the dataset from request values already typed (ints, floats). The
    round defaults to the dataset's latest published one. ValueError({field: message}) when a
    round or identity is not the dataset's, or the score range is empty: ids of other datasets
    are reported as unknown, never as someone else's."""
    errors = {}
    if kind not in Flag.Kind.values:
        errors["kind"] = f"Unknown flag kind {kind!r}."
    rounds = Round.objects.filter(dataset_id=dataset_id, status=Round.Status.PUBLISHED)
    if round_id is None:
        round_id = rounds.order_by("-number").values_list("pk", flat=True).first()
        if round_id is None:
            errors["round"] = "This dataset has no published round yet."
    elif not rounds.filter(pk=round_id).exists():
        errors["round"] = "Not a published round of this dataset."
    for name, value in (("identity", identity_id), ("suggested_identity", suggested_identity_id)):
        if value is not None and not Identity.objects.filter(pk=value, dataset_id=dataset_id).exists():
            errors[name] = "Not an identity of this dataset."
    if min_score is not None and max_score is not None and min_score > max_score:
        errors["max_score"] = "The highest score must not be below the lowest."
    if errors:
        raise ValueError(errors)
    return FlagSelection(dataset_id=dataset_id, round_id=round_id, kind=kind, min_score=min_score,
                         max_score=max_score, identity_id=identity_id, suggested_identity_id=suggested_identity_id)


def selection_flags(selection: FlagSelection) -> QuerySet:
    """The open flags the selection matches (unordered)."""
    flags = Flag.objects.filter(round_id=selection.round_id, kind=selection.kind, state=Flag.State.OPEN)
    if selection.min_score is not None:
        flags = flags.filter(score__gte=selection.min_score)
    if selection.max_score is not None:
        flags = flags.filter(score__lte=selection.max_score)
    if selection.suggested_identity_id is not None:
        flags = flags.filter(suggested_identity_id=selection.suggested_identity_id)
    if selection.identity_id is not None:
        # Subqueries on face.identity_id (indexed) rather than joins: the planner keeps
        # walking the queue's index and probes the face set.
        faces = Face.objects.filter(identity_id=selection.identity_id).values("pk")
        flags = flags.filter(Q(face_id__in=faces) | Q(other_face_id__in=faces)
                             | Q(identity_a_id=selection.identity_id) | Q(identity_b_id=selection.identity_id))
    return flags


def held_by_others(flags: QuerySet, user) -> QuerySet:
    """Those of `flags` another reviewer holds in an unexpired batch: a bulk job skips them."""
    return flags.filter(claimed_by__isnull=False, claimed_at__gte=claim_cutoff()).exclude(claimed_by=user)


def not_held_by_others(flags: QuerySet, user) -> QuerySet:
    return flags.exclude(Q(claimed_by__isnull=False) & Q(claimed_at__gte=claim_cutoff()) & ~Q(claimed_by=user))


@dataclass
class SampleFlag:
    flag: int
    face: int | None
    other_face: int | None
    score: float
    names: tuple = ()  # an identity pair's two names (untrusted text: templates escape them)


@dataclass
class BulkPreview:
    selection: FlagSelection
    count: int
    held_by_others: int
    sample: list[SampleFlag] = field(default_factory=list)

    @property
    def to_decide(self) -> int:
        return self.count - self.held_by_others


def bulk_preview(*, selection: FlagSelection, user, sample_size: int = SAMPLE_SIZE) -> BulkPreview:
    """How many open flags the selection matches, how many of them other reviewers hold (the
    job skips those), and the highest-scoring few (the queue's own order)."""
    flags = selection_flags(selection)
    rows = list(flags.order_by("-score", "-id").values_list("pk", "face_id", "other_face_id", "score",
                                                            "identity_a_id", "identity_b_id")[:sample_size])
    pair_ids = {i for row in rows for i in row[4:] if i is not None and row[1] is None}
    names = dict(Identity.objects.filter(pk__in=pair_ids).values_list("pk", "name")) if pair_ids else {}
    sample = [SampleFlag(flag=pk, face=face, other_face=other, score=score,
                         names=(names.get(a, ""), names.get(b, "")) if face is None else ())
              for pk, face, other, score, a, b in rows]
    return BulkPreview(selection=selection, count=flags.count(), held_by_others=held_by_others(flags, user).count(),
                       sample=sample)
