"""The one way to reach a dataset's objects from a request: every lookup goes through an
access function that checks the user's membership, so a view cannot forget the check.

An object the user may not see is reported as missing (404), never as forbidden, so that
ids of other datasets leak nothing. `admin=True` asks for the dataset's admin role (start
and cancel rounds, import, export, manage members): a reviewer gets 404 there too.
"""
from django.db.models import OuterRef, Subquery
from django.http import Http404

from .models import Dataset, Decision, Face, Flag, Identity, Job, Membership, Round


def dataset_role(user, dataset_id: int) -> str | None:
    """The user's role in the dataset ('admin' or 'reviewer'), or None without access."""
    if not user.is_authenticated or not user.is_active:
        return None
    if user.is_staff:
        return Membership.Role.ADMIN
    return (
        Membership.objects.filter(user=user, dataset_id=dataset_id)
        .values_list("role", flat=True)
        .first()
    )


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
    if not user.is_authenticated or not user.is_active:
        raise Http404(f"No such {what}")
    if not user.is_staff:
        role = Membership.objects.filter(user_id=user.pk, dataset_id=OuterRef(dataset)).values("role")[:1]
        queryset = queryset.annotate(viewer_role=Subquery(role))
    obj = queryset.first()
    role = Membership.Role.ADMIN if user.is_staff else getattr(obj, "viewer_role", None)
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
    job = Job.objects.filter(pk=job_id).first()
    if job is not None and job.dataset_id is None:
        if user.is_authenticated and (user.is_staff or job.created_by_id == user.pk):
            return job
        raise Http404("No such job")
    return _checked(job, user, admin, "job")
