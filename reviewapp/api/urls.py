"""/api/: one router for the objects, the OpenAPI schema at /api/schema/ (?format=json).

Reads (cursor-paginated lists, newest first; flags highest score first):
    datasets/ identities/ faces/ flags/ decisions/ rounds/ jobs/   and <name>/<id>/
    filters: ?dataset= ?round= ?kind= ?state= ?identity= ?user= ?action= ?status= (per list)
Writes:
    POST flags/<id>/decide/   {action, identity_id?, survivor_id?}   201 decision, 409 conflict
    POST rounds/              {dataset, method, config?}  (admins)   201 round, 409 one is active
    POST rounds/<id>/cancel/                              (admins)   200 round, 409 already ended
    POST jobs/export/         {dataset, format?}          (admins)   202 job
    POST decisions/<id>/undo/                                        201 undo row, 409 cannot undo
    POST batches/<uuid>/undo/                                        200 result, 202 job (large batch)
    POST flags/bulk/          {dataset, kind, round?, min_score?, max_score?, identity?, suggested_identity?,
                               action, identity_id?, preview?, expected_count?}
                              preview: 200 count and sample; else 202 the queue-wide job (reviewers too)
Authentication: the session (with the X-CSRFToken header on writes) or
`Authorization: Token <key>` (rest_framework.authtoken; an admin makes a user's key with
`manage.py drf_create_token <username>` or in the Django admin); without either, a 401 with
`WWW-Authenticate: Token`."""
from django.contrib.auth.decorators import login_not_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.routers import DefaultRouter

from . import views
from .authentication import API_AUTHENTICATION


class ApiRoot(DefaultRouter.APIRootView):
    authentication_classes = API_AUTHENTICATION
    permission_classes = [IsAuthenticated]

    @classmethod
    def as_view(cls, **initkwargs):
        return login_not_required(super().as_view(**initkwargs))


class Router(DefaultRouter):
    APIRootView = ApiRoot
    include_format_suffixes = False


class SchemaView(SpectacularAPIView):
    """The OpenAPI 3 schema (YAML, or JSON with ?format=json); for signed-in users, like the rest."""

    authentication_classes = API_AUTHENTICATION
    permission_classes = [IsAuthenticated]

    @classmethod
    def as_view(cls, **initkwargs):
        return login_not_required(super().as_view(**initkwargs))


router = Router()
router.register("datasets", views.DatasetViewSet, basename="api-dataset")
router.register("identities", views.IdentityViewSet, basename="api-identity")
router.register("faces", views.FaceViewSet, basename="api-face")
router.register("flags", views.FlagViewSet, basename="api-flag")
router.register("decisions", views.DecisionViewSet, basename="api-decision")
router.register("rounds", views.RoundViewSet, basename="api-round")
router.register("jobs", views.JobViewSet, basename="api-job")

urlpatterns = [
    path("schema/", SchemaView.as_view(), name="api-schema"),
    path("batches/<uuid:batch>/undo/", views.BatchUndoView.as_view({"post": "undo"}), name="api-batch-undo"),
    *router.urls,
]
