"""Reads. Views call these; nothing here writes."""
from django.db.models import Count, Q

from .models import Dataset, Membership


def dataset_list(*, user):
    """The datasets the user may see, with face and identity counts."""
    datasets = Dataset.objects.all()
    if not user.is_staff:
        datasets = datasets.filter(memberships__user=user)
    return datasets.annotate(
        active_faces=Count("faces", filter=Q(faces__status="active"), distinct=True),
        removed_faces=Count("faces", filter=Q(faces__status="removed"), distinct=True),
    ).order_by("name")


def user_is_admin(*, user, dataset_id: int) -> bool:
    if user.is_staff:
        return True
    return Membership.objects.filter(user=user, dataset_id=dataset_id, role=Membership.Role.ADMIN).exists()
