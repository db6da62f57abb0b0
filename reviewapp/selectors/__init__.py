"""Reads. Views call these; nothing here writes. One module per area: review (queues,
face cards), identities (identity pages, search, history), manage (dataset stats, rounds, jobs)."""
from django.db.models import Count, Q

from ..models import Dataset


def dataset_list(*, user):
    """The datasets the user may see, with their active and removed face counts."""
    datasets = Dataset.objects.all()
    if not user.is_staff:
        datasets = datasets.filter(memberships__user=user)
    return datasets.annotate(
        active_faces=Count("faces", filter=Q(faces__status="active"), distinct=True),
        removed_faces=Count("faces", filter=Q(faces__status="removed"), distinct=True),
    ).order_by("name")

