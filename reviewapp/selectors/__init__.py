"""Reads. Views call these; nothing here writes. One module per area: review (queues,
face cards), identities (identity pages, search, history), manage (dataset stats, rounds, jobs)."""
from django.db.models import Count

from ..access import visible
from ..kinds import KIND_ORDER, kind_title
from ..models import Dataset, Face, Flag, Round
from ..rules import ROUND_ACTIVE, claim_cutoff


def dataset_list(*, user):
    """The datasets the user may see, each with active_faces, removed_faces, latest_round (or
    None), running_round (a queued or running one, or None), open_flags (the latest published
    round's open flags: (kind, title, count) in page order, kinds with none left out) and
    held (the user's unexpired batch: (kind, title, count)). Five queries however many datasets:
    one GROUP BY each over their faces, open flags and the user's claims, one for the datasets
    and one for their rounds."""
    datasets = list(visible(Dataset.objects.all(), user, dataset="pk").order_by("name"))
    ids = [d.pk for d in datasets]
    counts = {}
    for row in (Face.objects.filter(dataset_id__in=ids).values("dataset_id", "status")
                .annotate(n=Count("pk")).order_by()):
        counts[(row["dataset_id"], row["status"])] = row["n"]
    latest, published, running = {}, {}, {}
    # A dataset has a round every few hours at most: all of them are few rows.
    for round_ in (Round.objects.filter(dataset_id__in=ids).order_by("dataset_id", "-number")
                   .only("pk", "dataset_id", "number", "status", "progress")):
        latest.setdefault(round_.dataset_id, round_)
        if round_.status == Round.Status.PUBLISHED:
            published.setdefault(round_.dataset_id, round_)
        elif round_.status in ROUND_ACTIVE:
            running.setdefault(round_.dataset_id, round_)
    open_flags = _per_dataset(
        Flag.objects.filter(round_id__in=[r.pk for r in published.values()], state=Flag.State.OPEN))
    held = _per_dataset(
        Flag.objects.filter(round__dataset_id__in=ids, state=Flag.State.OPEN, claimed_by=user,
                            claimed_at__gte=claim_cutoff()))
    for d in datasets:
        d.active_faces = counts.get((d.pk, Face.Status.ACTIVE), 0)
        d.removed_faces = counts.get((d.pk, Face.Status.REMOVED), 0)
        d.latest_round = latest.get(d.pk)
        d.published_round = published.get(d.pk)
        d.running_round = running.get(d.pk)
        d.open_flags = open_flags.get(d.pk, [])
        d.held = held.get(d.pk, [])
    return datasets


def _per_dataset(flags) -> dict[int, list[tuple[str, str, int]]]:
    """dataset id -> [(kind, title, count)] in page order, from one GROUP BY over `flags`."""
    found: dict[int, dict[str, int]] = {}
    for row in flags.values("round__dataset_id", "kind").annotate(n=Count("pk")).order_by():
        found.setdefault(row["round__dataset_id"], {})[row["kind"]] = row["n"]
    return {dataset_id: [(kind, kind_title(kind, by_kind[kind]), by_kind[kind])
                         for kind in KIND_ORDER if by_kind.get(kind)]
            for dataset_id, by_kind in found.items()}
