"""Reads. Views call these; nothing here writes. One module per area: review (queues,
face cards), identities (identity pages, search, history), manage (dataset stats, rounds, jobs)."""
from django.db.models import Count

from ..models import Dataset, Face, Round


def dataset_list(*, user):
    """The datasets the user may see, each with active_faces, removed_faces and latest_round
    (or None): one GROUP BY over the faces of all of them, one query for their rounds."""
    datasets = Dataset.objects.all()
    if not user.is_staff:
        datasets = datasets.filter(memberships__user=user)
    datasets = list(datasets.order_by("name"))
    ids = [d.pk for d in datasets]
    counts = {}
    for row in (Face.objects.filter(dataset_id__in=ids).values("dataset_id", "status")
                .annotate(n=Count("pk")).order_by()):
        counts[(row["dataset_id"], row["status"])] = row["n"]
    latest = {}
    rounds = Round.objects.filter(dataset_id__in=ids).only("pk", "dataset_id", "number", "status")
    rounds = (rounds.order_by("dataset_id", "-number").distinct("dataset_id") if _distinct_on()
              else rounds.order_by("-number"))
    for round_ in rounds:
        latest.setdefault(round_.dataset_id, round_)
    for d in datasets:
        d.active_faces = counts.get((d.pk, Face.Status.ACTIVE), 0)
        d.removed_faces = counts.get((d.pk, Face.Status.REMOVED), 0)
        d.latest_round = latest.get(d.pk)
    return datasets


def _distinct_on() -> bool:
    from django.db import connection

    return connection.features.can_distinct_on_fields
