"""The one way to reach a dataset's objects from a request: every lookup goes through an
access function that checks the user's membership, so a view cannot forget the check.

An object the user may not see is reported as missing (404), never as forbidden, so that
ids of other datasets leak nothing.
"""
from django.http import Http404

from .models import Dataset, Face, Membership


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


def access_dataset(user, dataset_id: int, *, admin: bool = False) -> Dataset:
    role = dataset_role(user, dataset_id)
    if role is None or (admin and role != Membership.Role.ADMIN):
        raise Http404("No such dataset")
    try:
        return Dataset.objects.get(pk=dataset_id)
    except Dataset.DoesNotExist:
        raise Http404("No such dataset") from None


def access_face(user, face_id: int) -> Face:
    face = Face.objects.select_related("source").filter(pk=face_id).first()
    if face is None or dataset_role(user, face.dataset_id) is None:
        raise Http404("No such face")
    return face
