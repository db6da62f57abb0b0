"""What the API returns and accepts. Names are returned as they are (JSON strings; whoever
puts them in HTML escapes them); faces carry the URLs of their image views, never bytes
or server paths outside the dataset."""
import math
from functools import lru_cache

from django.urls import get_script_prefix, reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..access import dataset_role
from ..models import Dataset, Decision, Face, Flag, Identity, Job, Round
from ..request_args import BIGINT_MAX

EXPORT_FORMATS = ("list", "recordio")
DECIDE_ACTIONS = ("confirm", "reject", "relabel", "remove", "low_quality")


class DatasetSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="Your role in the dataset: admin or reviewer.")

    class Meta:
        model = Dataset
        fields = ["id", "name", "created_at", "role"]

    def get_role(self, dataset) -> str:
        role = getattr(dataset, "role", None)  # annotated on lists (queries.datasets_visible)
        return role or dataset_role(self.context["request"].user, dataset.pk)


class IdentitySerializer(serializers.ModelSerializer):
    class Meta:
        model = Identity
        fields = ["id", "dataset", "source", "name", "merged_into", "created_at"]


_ID = 987654321  # stands for the face id in a reversed URL


@lru_cache(maxsize=16)
def _url_pattern(name: str, script_prefix: str) -> str:
    return reverse(name, args=[_ID])


def _face_url(name: str, face_id: int | None) -> str | None:
    """reverse(name, args=[face_id]), reversed once per process (lists have hundreds of rows)."""
    if face_id is None:
        return None
    return _url_pattern(name, get_script_prefix()).replace(str(_ID), str(int(face_id)))


class FaceSerializer(serializers.ModelSerializer):
    image_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()

    class Meta:
        model = Face
        fields = ["id", "dataset", "source", "path", "identity", "original_identity", "status", "size",
                  "image_url", "thumbnail_url"]
        extra_kwargs = {"path": {"help_text": "Relative to its source's root (rec:<key> for RecordIO)."}}

    def get_image_url(self, face) -> str:
        return _face_url("face-image", face.pk)

    def get_thumbnail_url(self, face) -> str:
        return _face_url("face-thumbnail", face.pk)


class FlagSerializer(serializers.ModelSerializer):
    dataset = serializers.IntegerField(source="round.dataset_id", read_only=True)
    face_thumbnail_url = serializers.SerializerMethodField()
    other_face_thumbnail_url = serializers.SerializerMethodField()

    class Meta:
        model = Flag
        fields = ["id", "dataset", "round", "kind", "face", "other_face", "identity_a", "identity_b", "score",
                  "evidence", "suggestion", "suggested_identity", "state", "claimed_by", "claimed_at",
                  "face_thumbnail_url", "other_face_thumbnail_url"]

    def get_face_thumbnail_url(self, flag) -> str | None:
        return _face_url("face-thumbnail", flag.face_id)

    def get_other_face_thumbnail_url(self, flag) -> str | None:
        return _face_url("face-thumbnail", flag.other_face_id)


class DecisionSerializer(serializers.ModelSerializer):
    # Decision.identity names only the identity an identity-level decision changed (a merge's
    # merged one); a face decision keeps the face's label in before/after. Reading the column
    # alone answered a relabel with "identity": null.
    identity = serializers.SerializerMethodField(
        help_text="The identity the decision is about: a merge's merged identity; for a face decision, the "
                  "face's identity after it (a relabel's new identity).")

    class Meta:
        model = Decision
        fields = ["id", "dataset", "created_at", "user", "actor", "round", "flag", "action", "face", "identity",
                  "before", "after", "evidence", "batch"]
        extra_kwargs = {"batch": {"help_text": "Shared by every decision of one bulk action; null for a single one."}}

    def get_identity(self, decision) -> int | None:
        if decision.identity_id is not None or decision.face_id is None:
            return decision.identity_id
        after = decision.after.get("identity") if isinstance(decision.after, dict) else None
        return after if isinstance(after, int) else None


class RoundSerializer(serializers.ModelSerializer):
    """With `summary`, what the round page charts (written when the round publishes)."""

    class Meta:
        model = Round
        fields = ["id", "dataset", "number", "status", "method", "config", "progress", "error", "created_by",
                  "created_at", "started_at", "finished_at", "summary"]


class JobSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField(help_text="Set once an export is done.")
    url = serializers.SerializerMethodField(help_text="This job in the API: poll it for its status and result.")

    class Meta:
        model = Job
        fields = ["id", "kind", "status", "dataset", "params", "result", "error", "created_by", "created_at",
                  "finished_at", "download_url", "url"]

    def get_url(self, job) -> str:
        return reverse("api-job-detail", args=[job.pk])

    def get_download_url(self, job) -> str | None:
        if job.kind == Job.Kind.EXPORT and job.status == Job.Status.DONE and job.file:
            return reverse("job-download", args=[job.pk])
        return None


# -- requests ---------------------------------------------------------------------------------------

class DecideRequest(serializers.Serializer):
    action = serializers.ChoiceField(choices=DECIDE_ACTIONS)
    identity_id = serializers.IntegerField(required=False, allow_null=True,
                                           help_text="relabel: the identity to move the face to.")
    survivor_id = serializers.IntegerField(required=False, allow_null=True,
                                           help_text="confirm of a merge: the identity that stays.")

    def validate(self, data):
        if data["action"] == "relabel" and data.get("identity_id") is None:
            raise serializers.ValidationError({"identity_id": "relabel needs the identity to move the face to"})
        return data


class RoundStartRequest(serializers.Serializer):
    dataset = serializers.IntegerField()
    method = serializers.ChoiceField(choices=Round.Method.choices)
    config = serializers.JSONField(required=False, default=dict)


class ExportStartRequest(serializers.Serializer):
    dataset = serializers.IntegerField()
    format = serializers.ChoiceField(choices=EXPORT_FORMATS, default="list")


# Kinds and actions written inline: drf-spectacular names a shared enum after the one
# component using it, and with one more (BulkRequest) only by a hash, which --fail-on-warn
# refuses. (The actions go under allOf, where its enum pass leaves them alone.)
@extend_schema_field({"type": "string", "enum": list(Flag.Kind.values)})
class _KindField(serializers.ChoiceField):
    pass


@extend_schema_field({"allOf": [{"type": "string", "enum": list(DECIDE_ACTIONS)}]})
class _ActionField(serializers.ChoiceField):
    pass


def _id(help_text: str, **kwargs):
    return serializers.IntegerField(min_value=1, max_value=BIGINT_MAX, help_text=help_text, **kwargs)


def _optional_id(help_text: str):
    return _id(help_text, required=False, allow_null=True)


def _score(help_text: str):
    return serializers.FloatField(required=False, allow_null=True, help_text=help_text)


class BulkRequest(serializers.Serializer):
    """A queue-wide decision (or its preview): the filter over open flags
    (selectors.bulk.FlagSelection), the action, and the count the caller previewed. The review
    page's bulk form posts the same fields and is checked by this serializer too."""

    dataset = _id("The dataset whose open flags to decide.")
    kind = _KindField(choices=Flag.Kind.choices, help_text="The queue: one kind of flag.")
    round = _optional_id("A published round's id; by default the dataset's latest published round.")
    min_score = _score("Only flags scoring at least this.")
    max_score = _score("Only flags scoring at most this.")
    identity = _optional_id("Only flags whose face is now filed under this identity (either face of a "
                            "near-duplicate, either side of an identity pair).")
    suggested_identity = _optional_id("Only flags suggesting this identity.")
    action = _ActionField(choices=DECIDE_ACTIONS, required=False,
                                     help_text="What to do with every matching flag (required unless preview).")
    identity_id = _optional_id("relabel: the identity to move the faces to.")
    preview = serializers.BooleanField(default=False, help_text="true: count and sample only, start nothing.")
    expected_count = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=BIGINT_MAX,
        help_text="The count you previewed: starting is refused (409) when over 10% more flags match now.")

    def validate(self, data):
        errors = {}
        for name in ("min_score", "max_score"):
            if data.get(name) is not None and not math.isfinite(data[name]):
                errors[name] = "A finite number is required."
        if not data["preview"] and not data.get("action"):
            errors["action"] = "Choose what to do with the matching flags."
        if data.get("action") == "relabel" and data.get("identity_id") is None:
            errors["identity_id"] = "relabel needs the identity to move the faces to"
        if errors:
            raise serializers.ValidationError(errors)
        return data


class BulkSampleFlag(serializers.Serializer):
    flag = serializers.IntegerField()
    face = serializers.IntegerField(allow_null=True, help_text="null for an identity pair")
    other_face = serializers.IntegerField(allow_null=True, help_text="a near-duplicate's second face")
    score = serializers.FloatField()
    face_thumbnail_url = serializers.SerializerMethodField()

    def get_face_thumbnail_url(self, sample) -> str | None:
        return _face_url("face-thumbnail", sample.face)


class BulkPreviewResponse(serializers.Serializer):
    round = serializers.IntegerField(source="selection.round_id", help_text="The round the filter applies to.")
    count = serializers.IntegerField(help_text="Open flags matching the filter.")
    held_by_others = serializers.IntegerField(help_text="Of those, held by other reviewers: the job skips them.")
    sample = BulkSampleFlag(many=True, help_text="The highest-scoring matches (at most 12).")


class ConflictResponse(serializers.Serializer):
    """409: the object moved on; nothing was written. `current` is its state now."""

    detail = serializers.CharField()
    current = serializers.JSONField()


class ErrorResponse(serializers.Serializer):
    detail = serializers.CharField()
