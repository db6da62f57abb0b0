"""The one way to reach a dataset's objects from a request: every lookup goes through an
access function that checks the user's membership, so a view cannot forget the check.

An object the user may not see is reported as missing (404), never as forbidden, so that
ids of other datasets leak nothing. `admin=True` asks for the dataset's admin role (start
and cancel rounds, import, export, manage members): a reviewer gets 404 there too.

The rule itself, written once here and read by every page, list and the API: an active
signed-in user sees the datasets they are a member of, with their membership's role; staff
see every dataset, as admins. Lists filter by `visible`, single objects go through the
access_* functions, `role_of` puts the role in a query.
"""
from django.db.models import CharField, OuterRef, Q, QuerySet, Subquery, Value
from django.http import Http404

from .models import Dataset, Decision, Face, Flag, Identity, Job, Membership, Round


def _signed_in(user) -> bool:
    return user.is_authenticated and user.is_active


def _memberships(user, *, admin: bool = False) -> QuerySet:
    memberships = Membership.objects.filter(user_id=user.pk)
    return memberships.filter(role=Membership.Role.ADMIN) if admin else memberships


def visible_dataset_ids(user, *, admin: bool = False) -> QuerySet | None:
    """The ids of the datasets the user may see (admin=True: administer) as a subquery, or None
    for every dataset (staff)."""
    if not _signed_in(user):
        return Dataset.objects.none().values("pk")
    if user.is_staff:
        return None
    return _memberships(user, admin=admin).values("dataset_id")


def visible(queryset: QuerySet, user, *, dataset: str = "dataset_id", admin: bool = False) -> QuerySet:
    """`queryset` limited to the objects of datasets the user may see (admin=True: administer);
    `dataset` is the path to their dataset id. A subquery, so a list stays one query on the
    object's table however many datasets there are."""
    ids = visible_dataset_ids(user, admin=admin)
    return queryset if ids is None else queryset.filter(**{f"{dataset}__in": ids})


def role_of(user, dataset: str = "dataset_id"):
    """The user's role in the dataset at `dataset` (the path to a dataset id from the query's
    rows), as an expression to annotate with: 'admin' for staff, NULL without access."""
    if user.is_staff:
        return Value(Membership.Role.ADMIN.value, output_field=CharField())
    return Subquery(_memberships(user).filter(dataset_id=OuterRef(dataset)).values("role")[:1])


def dataset_role(user, dataset_id: int) -> str | None:
    """The user's role in the dataset ('admin' or 'reviewer'), or None without access."""
    if not _signed_in(user):
        return None
    if user.is_staff:
        return Membership.Role.ADMIN
    return _memberships(user).filter(dataset_id=dataset_id).values_list("role", flat=True).first()


def administers_any(user) -> bool:
    """Staff, or an admin of some dataset (who may import a new one)."""
    return _signed_in(user) and (user.is_staff or _memberships(user, admin=True).exists())


def may_see(dataset_id: int) -> Q:
    """The users who may see the dataset, as a filter on the user model."""
    return Q(pk__in=Membership.objects.filter(dataset_id=dataset_id).values("user_id")) | Q(is_staff=True)


def _allowed(user, dataset_id, admin: bool) -> bool:
    role = dataset_role(user, dataset_id)
    return role is not None and (not admin or role == Membership.Role.ADMIN)


def _checked(obj, user, admin: bool, what: str):
    if obj is None or not _allowed(user, obj.dataset_id, admin):
        raise Http404(f"No such {what}")
    return obj


def _first_allowed(queryset, user, admin: bool, what: str, dataset: str = "dataset_id"):
    """The first object of `queryset` if the user may see its dataset (`dataset`: the path to
    the dataset id), read with the user's role in one query: a page or a decision asks this
    once per request, and the separate membership query was a tenth of a decision's time."""
    if not _signed_in(user):
        raise Http404(f"No such {what}")
    obj = queryset.annotate(viewer_role=role_of(user, dataset)).first()
    role = getattr(obj, "viewer_role", None)
    if obj is None or role is None or (admin and role != Membership.Role.ADMIN):
        raise Http404(f"No such {what}")
    return obj


def access_dataset(user, dataset_id: int, *, admin: bool = False) -> Dataset:
    return _first_allowed(Dataset.objects.filter(pk=dataset_id), user, admin, "dataset", dataset="pk")


def access_face(user, face_id: int, *, admin: bool = False) -> Face:
    return _first_allowed(Face.objects.select_related("source", "identity").filter(pk=face_id), user, admin, "face")


def access_identity(user, identity_id: int, *, admin: bool = False) -> Identity:
    return _first_allowed(Identity.objects.select_related("merged_into").filter(pk=identity_id), user, admin,
                          "identity")


def access_round(user, round_id: int, *, admin: bool = False) -> Round:
    return _first_allowed(Round.objects.select_related("dataset").filter(pk=round_id), user, admin, "round")


def access_flag(user, flag_id: int, *, admin: bool = False) -> Flag:
    # Only the round (for its dataset): callers that show the flag load what they show in
    # one selector query; joining six relations here cost more to plan than to run.
    return _first_allowed(Flag.objects.select_related("round").filter(pk=flag_id), user, admin, "flag",
                          dataset="round__dataset_id")


def access_decision(user, decision_id: int, *, admin: bool = False) -> Decision:
    return _first_allowed(Decision.objects.filter(pk=decision_id), user, admin, "decision")


def access_job(user, job_id: int, *, admin: bool = True) -> Job:
    """Jobs are admin work; an import job without a dataset yet is its creator's or staff's."""
    job = Job.objects.select_related("created_by").filter(pk=job_id).first()  # the job page names its starter
    if job is not None and job.dataset_id is None:
        if user.is_authenticated and (user.is_staff or job.created_by_id == user.pk):
            return job
        raise Http404("No such job")
    return _checked(job, user, admin, "job")
