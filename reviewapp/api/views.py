"""API views: validate, call one selector (queries.py / reviewapp.access) or service, serialize.

Single objects come through reviewapp.access, so an object of a dataset the user is not a
member of is a 404, as on the pages; admin actions ask access for the admin role."""
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.parsers import FormParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from .. import access
from ..models import Dataset, Decision, Face, Flag, Identity, Job, Round
from ..selectors import bulk as bulk_selectors
from ..services.bulk import BulkRefused, PreviewOutdated, bulk_start
from ..services.flags import flag_decide
from ..rules import REVIEW_KINDS
from ..services.jobs import job_export_start
from ..services.labels import LabelConflict
from ..services.rounds import RoundConflict, round_cancel, round_start
from ..services.undo import batch_undo_start, decision_undo
from . import filters, queries
from .pagination import HighestScoreFirst, NewestFirst
from .parsers import BoundedJSONParser
from .authentication import API_AUTHENTICATION
from .serializers import (
    BulkPreviewResponse, BulkRequest, ConflictResponse, DatasetSerializer, DecideRequest, DecisionSerializer, ErrorResponse, ExportStartRequest,
    FaceSerializer, FlagSerializer, IdentitySerializer, JobSerializer, RoundSerializer,
    RoundStartRequest,
)

_NOT_FOUND = OpenApiResponse(ErrorResponse, description="No such object, or not yours to see (or administer).")
_CONFLICT = OpenApiResponse(ConflictResponse, description="The object moved on; nothing was written.")


class ApiViewSet(viewsets.GenericViewSet):
    """Authentication is DRF's (session or token), so LoginRequiredMiddleware, which sees only
    the session, stands aside; IsAuthenticated refuses anonymous requests instead."""

    authentication_classes = API_AUTHENTICATION  # token first: no credentials is a 401 (see there)
    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer]
    # No multipart: the API takes no uploads. DRF reads these two through request.body, so
    # DATA_UPLOAD_MAX_MEMORY_SIZE applies (a larger body is a 400); JSON nesting is bounded too.
    parser_classes = [BoundedJSONParser, FormParser]
    filter_backends = [DjangoFilterBackend]
    pagination_class = NewestFirst
    lookup_value_regex = r"[0-9]+"
    access_function = None  # reviewapp.access.access_<thing>: (user, id) -> object or Http404
    visible = None  # queries.<things>_visible: (user=) -> queryset

    @classmethod
    def as_view(cls, actions=None, **initkwargs):
        return login_not_required(super().as_view(actions, **initkwargs))

    def get_queryset(self):
        return self.visible(user=self.request.user)

    def get_object(self):
        obj = self.access_function(self.request.user, int(self.kwargs["pk"]))
        self.check_object_permissions(self.request, obj)
        return obj


class ReadOnlyApiViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    pass


def _conflict(exc, current) -> Response:
    return Response({"detail": str(exc), "current": current}, status=status.HTTP_409_CONFLICT)


def _bad_request(exc) -> Response:
    return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)


@extend_schema_view(list=extend_schema(summary="Datasets you are a member of"),
                    retrieve=extend_schema(responses={200: DatasetSerializer, 404: _NOT_FOUND}))
class DatasetViewSet(ReadOnlyApiViewSet):
    queryset = Dataset.objects.none()  # the schema's model; requests use get_queryset
    serializer_class = DatasetSerializer
    filter_backends = []
    access_function = staticmethod(access.access_dataset)
    visible = staticmethod(queries.datasets_visible)


@extend_schema_view(retrieve=extend_schema(responses={200: IdentitySerializer, 404: _NOT_FOUND}))
class IdentityViewSet(ReadOnlyApiViewSet):
    queryset = Identity.objects.none()
    serializer_class = IdentitySerializer
    filterset_class = filters.IdentityFilter
    access_function = staticmethod(access.access_identity)
    visible = staticmethod(queries.identities_visible)


@extend_schema_view(retrieve=extend_schema(responses={200: FaceSerializer, 404: _NOT_FOUND}))
class FaceViewSet(ReadOnlyApiViewSet):
    queryset = Face.objects.none()
    serializer_class = FaceSerializer
    filterset_class = filters.FaceFilter
    access_function = staticmethod(access.access_face)
    visible = staticmethod(queries.faces_visible)


@extend_schema_view(list=extend_schema(summary="Flags, highest score first"),
                    retrieve=extend_schema(responses={200: FlagSerializer, 404: _NOT_FOUND}))
class FlagViewSet(ReadOnlyApiViewSet):
    queryset = Flag.objects.none()
    serializer_class = FlagSerializer
    filterset_class = filters.FlagFilter
    pagination_class = HighestScoreFirst
    access_function = staticmethod(access.access_flag)
    visible = staticmethod(queries.flags_visible)

    @extend_schema(
        summary="Decide a flag",
        description="confirm does what the flag suggests, reject keeps things as they are, relabel moves "
                    "the face to identity_id, remove and low_quality remove the face. A flag that is no "
                    "longer open is a 409 with its current state.",
        request=DecideRequest,
        responses={201: DecisionSerializer, 400: ErrorResponse, 404: _NOT_FOUND, 409: _CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def decide(self, request, pk=None):
        flag = self.get_object()
        body = DecideRequest(data=request.data)
        body.is_valid(raise_exception=True)
        identity_id = body.validated_data.get("identity_id")
        if identity_id is not None:
            # Only an identity of the flag's own dataset, and one the user may see.
            target = access.access_identity(request.user, identity_id)
            if target.dataset_id != flag.round.dataset_id:
                return Response({"identity_id": ["not an identity of this flag's dataset"]},
                                status=status.HTTP_400_BAD_REQUEST)
        try:
            decision = flag_decide(flag_id=flag.pk, user=request.user, **body.validated_data)
        except LabelConflict as exc:
            return _conflict(exc, exc.current)
        except ValueError as exc:
            return _bad_request(exc)
        return Response(DecisionSerializer(decision).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Decide every open flag a filter matches, in the background (reviewers and admins)",
        description="One action on every open flag of one queue (dataset, kind, round: by default the latest "
                    "published) that the filter matches. preview=true answers the count, how many other "
                    "reviewers hold (the job skips those) and the highest-scoring few, and starts nothing. "
                    "Otherwise one job starts (202; poll its url): flags decided by someone else meanwhile "
                    "are skipped and reported in its result, and every decision carries the result's batch "
                    "id, so the whole action can be undone as one. Passing the previewed expected_count "
                    "makes a start refused (409) when over 10% more flags match by then.",
        request=BulkRequest,
        responses={200: BulkPreviewResponse, 202: JobSerializer, 400: ErrorResponse, 404: _NOT_FOUND,
                   409: _CONFLICT},
    )
    @action(detail=False, methods=["post"])
    def bulk(self, request):
        body = BulkRequest(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        dataset = access.access_dataset(request.user, data["dataset"])
        try:
            selection = bulk_selectors.selection_resolve(
                dataset_id=dataset.pk, kind=data["kind"], round_id=data.get("round"), min_score=data.get("min_score"),
                max_score=data.get("max_score"), identity_id=data.get("identity"),
                suggested_identity_id=data.get("suggested_identity"))
        except ValueError as exc:
            return Response(exc.args[0], status=status.HTTP_400_BAD_REQUEST)
        if data["preview"]:
            preview = bulk_selectors.bulk_preview(selection=selection, user=request.user)
            return Response(BulkPreviewResponse(preview).data)
        identity_id = data.get("identity_id")
        if identity_id is not None and not Identity.objects.filter(pk=identity_id, dataset=dataset).exists():
            return Response({"identity_id": ["not an identity of this dataset"]}, status=status.HTTP_400_BAD_REQUEST)
        try:
            job = bulk_start(dataset=dataset, selection=selection, action=data["action"], user=request.user,
                             identity_id=identity_id, expected_count=data.get("expected_count"))
        except PreviewOutdated as exc:
            return _conflict(exc, {"count": exc.count})
        except BulkRefused as exc:
            return _bad_request(exc)
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(list=extend_schema(summary="The audit log, newest first"),
                    retrieve=extend_schema(responses={200: DecisionSerializer, 404: _NOT_FOUND}))
class DecisionViewSet(ReadOnlyApiViewSet):
    queryset = Decision.objects.none()
    serializer_class = DecisionSerializer
    filterset_class = filters.DecisionFilter
    access_function = staticmethod(access.access_decision)
    visible = staticmethod(queries.decisions_visible)

    @extend_schema(
        summary="Undo one of your decisions",
        description="Any of your own decisions whose face (or merge) nothing changed since, not undone yet. "
                    "201 with the undo row; 409 saying why it cannot be undone, nothing written.",
        request=None,
        responses={201: DecisionSerializer, 404: _NOT_FOUND, 409: _CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def undo(self, request, pk=None):
        decision = self.get_object()
        try:
            undo = decision_undo(decision_id=decision.pk, user=request.user)
        except LabelConflict as exc:  # UndoRefused too
            return _conflict(exc, exc.current)
        return Response(DecisionSerializer(undo).data, status=status.HTTP_201_CREATED)


class BatchUndoView(ApiViewSet):
    """POST /api/batches/<uuid>/undo/: every decision of yours in the batch that can still be
    undone. 200 with {"undone", "conflicts", "conflict_sample", "summary"} when done in the request,
    202 with the job for a large batch, 404 when you took no decision in it."""

    queryset = Decision.objects.none()
    lookup_value_regex = r"[0-9a-fA-F-]{36}"

    @extend_schema(summary="Undo a batch of your decisions", request=None,
                   responses={200: OpenApiResponse(description="the batch undo's result"), 202: JobSerializer,
                              404: _NOT_FOUND})
    def undo(self, request, batch=None):
        dataset_id = (Decision.objects.filter(batch=batch, user=request.user)
                      .values_list("dataset_id", flat=True).first())
        if dataset_id is None:
            return Response({"detail": "You took no decision in this batch."}, status=status.HTTP_404_NOT_FOUND)
        dataset = access.access_dataset(request.user, dataset_id)
        outcome = batch_undo_start(dataset=dataset, batch=batch, user=request.user)
        if isinstance(outcome, Job):
            return Response(JobSerializer(outcome).data, status=status.HTTP_202_ACCEPTED)
        return Response(outcome.as_dict(), status=status.HTTP_200_OK)


@extend_schema_view(retrieve=extend_schema(responses={200: RoundSerializer, 404: _NOT_FOUND}))
class RoundViewSet(mixins.CreateModelMixin, ReadOnlyApiViewSet):
    queryset = Round.objects.none()
    serializer_class = RoundSerializer
    filterset_class = filters.RoundFilter
    access_function = staticmethod(access.access_round)
    visible = staticmethod(queries.rounds_visible)

    @extend_schema(
        summary="Start a round (dataset admins)",
        request=RoundStartRequest,
        responses={201: RoundSerializer, 400: ErrorResponse, 404: _NOT_FOUND, 409: _CONFLICT},
    )
    def create(self, request):
        body = RoundStartRequest(data=request.data)
        body.is_valid(raise_exception=True)
        dataset = access.access_dataset(request.user, body.validated_data["dataset"], admin=True)
        try:
            # Files a round reads (user embeddings) must lie under DATA_ROOT, as in the browser.
            round_ = round_start(dataset=dataset, method=body.validated_data["method"],
                                 config=body.validated_data["config"], user=request.user,
                                 data_root=settings.DATA_ROOT)
        except RoundConflict as exc:
            return _conflict(exc, {"dataset": dataset.pk})
        except ValueError as exc:
            return _bad_request(exc)
        return Response(RoundSerializer(round_).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Cancel a queued or running round (dataset admins)",
        request=None,
        responses={200: RoundSerializer, 404: _NOT_FOUND, 409: _CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        round_ = access.access_round(request.user, int(pk), admin=True)
        try:
            round_ = round_cancel(round_id=round_.pk, user=request.user)
        except RoundConflict as exc:
            round_.refresh_from_db()
            return _conflict(exc, RoundSerializer(round_).data)
        return Response(RoundSerializer(round_).data)


def _access_job(user, job_id: int) -> Job:
    """access.access_job (admins), except that reviewers' work (bulk decisions, batch undos) is
    every member's to see, as the job page shows it (views_bulk.bulk_job_page)."""
    kind, dataset_id = Job.objects.filter(pk=job_id).values_list("kind", "dataset_id").first() or (None, None)
    if kind in REVIEW_KINDS and dataset_id is not None:
        access.access_dataset(user, dataset_id)
        return Job.objects.get(pk=job_id)
    return access.access_job(user, job_id)


@extend_schema_view(list=extend_schema(summary="Imports and exports of datasets you administer, and bulk "
                                               "decisions and batch undos of datasets you review"),
                    retrieve=extend_schema(responses={200: JobSerializer, 404: _NOT_FOUND}))
class JobViewSet(ReadOnlyApiViewSet):
    queryset = Job.objects.none()
    serializer_class = JobSerializer
    filterset_class = filters.JobFilter
    access_function = staticmethod(_access_job)
    visible = staticmethod(queries.jobs_visible)

    @extend_schema(
        summary="Export a dataset's cleaned list in the background (dataset admins)",
        description="Returns the queued job; its download_url is set once it is done.",
        request=ExportStartRequest,
        responses={202: JobSerializer, 400: ErrorResponse, 404: _NOT_FOUND},
    )
    @action(detail=False, methods=["post"])
    def export(self, request):
        body = ExportStartRequest(data=request.data)
        body.is_valid(raise_exception=True)
        dataset = access.access_dataset(request.user, body.validated_data["dataset"], admin=True)
        try:
            job = job_export_start(dataset=dataset, user=request.user, fmt=body.validated_data["format"])
        except ValueError as exc:
            return _bad_request(exc)
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
