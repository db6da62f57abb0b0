"""The one way to reach a dataset's objects from a request: every lookup goes through an
access function that checks the user's membership, so a view cannot forget the check.

An object the user may not see is reported as missing (404), never as forbidden, so that
ids of other datasets leak nothing. `admin=True` asks for the dataset's admin role (start
and cancel rounds, import, export, manage members): a reviewer gets 404 there too.
"""
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


def access_dataset(user, dataset_id: int, *, admin: bool = False) -> Dataset:
    if not _allowed(user, dataset_id, admin):
        raise Http404("No such dataset")
    try:
        return Dataset.objects.get(pk=dataset_id)
    except Dataset.DoesNotExist:
        raise Http404("No such dataset") from None


def access_face(user, face_id: int, *, admin: bool = False) -> Face:
    face = Face.objects.select_related("source", "identity").filter(pk=face_id).first()
    return _checked(face, user, admin, "face")


def access_identity(user, identity_id: int, *, admin: bool = False) -> Identity:
    identity = Identity.objects.select_related("merged_into").filter(pk=identity_id).first()
    return _checked(identity, user, admin, "identity")


def access_round(user, round_id: int, *, admin: bool = False) -> Round:
    round_ = Round.objects.select_related("dataset").filter(pk=round_id).first()
    return _checked(round_, user, admin, "round")


def access_flag(user, flag_id: int, *, admin: bool = False) -> Flag:
    # Only the round (for its dataset): callers that show the flag load what they show in
    # one selector query; joining six relations here cost more to plan than to run.
    flag = Flag.objects.select_related("round").filter(pk=flag_id).first()
    if flag is None or not _allowed(user, flag.round.dataset_id, admin):
        raise Http404("No such flag")
    return flag


def access_decision(user, decision_id: int, *, admin: bool = False) -> Decision:
    decision = Decision.objects.filter(pk=decision_id).first()
    return _checked(decision, user, admin, "decision")


def access_job(user, job_id: int, *, admin: bool = True) -> Job:
    """Jobs are admin work; an import job without a dataset yet is its creator's or staff's."""
    job = Job.objects.filter(pk=job_id).first()
    if job is not None and job.dataset_id is None:
        if user.is_authenticated and (user.is_staff or job.created_by_id == user.pk):
            return job
        raise Http404("No such job")
    return _checked(job, user, admin, "job")
