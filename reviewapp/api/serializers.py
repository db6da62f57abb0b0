"""What the API returns and accepts. Names are returned as they are (JSON strings; whoever
puts them in HTML escapes them); faces carry the URLs of their image views, never bytes
or server paths outside the dataset."""
from functools import lru_cache

from django.urls import get_script_prefix, reverse
from rest_framework import serializers

from ..access import dataset_role
from ..models import Dataset, Decision, Face, Flag, Identity, Job, Round

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
    class Meta:
        model = Decision
        fields = ["id", "dataset", "created_at", "user", "actor", "round", "flag", "action", "face", "identity",
                  "before", "after", "evidence"]


class RoundSerializer(serializers.ModelSerializer):
    """With `summary`, what the round page charts (written when the round publishes)."""

    class Meta:
        model = Round
        fields = ["id", "dataset", "number", "status", "method", "config", "progress", "error", "created_by",
                  "created_at", "started_at", "finished_at", "summary"]


class JobSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField(help_text="Set once an export is done.")

    class Meta:
        model = Job
        fields = ["id", "kind", "status", "dataset", "params", "result", "error", "created_by", "created_at",
                  "finished_at", "download_url"]

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


class ConflictResponse(serializers.Serializer):
    """409: the object moved on; nothing was written. `current` is its state now."""

    detail = serializers.CharField()
    current = serializers.JSONField()


class ErrorResponse(serializers.Serializer):
    detail = serializers.CharField()
