"""The API's reads: querysets limited to the datasets the user may see (access.visible, the
rule the pages follow too)."""
from django.db.models import Q, QuerySet

from ..access import role_of, visible, visible_dataset_ids
from ..models import Dataset, Decision, Face, Flag, Identity, Job, Round
from ..rules import REVIEW_KINDS


def datasets_visible(*, user) -> QuerySet:
    """With the user's role in each (`role`)."""
    return visible(Dataset.objects.all(), user, dataset="id").annotate(role=role_of(user, "pk"))


def identities_visible(*, user) -> QuerySet:
    return visible(Identity.objects.all(), user)


def faces_visible(*, user) -> QuerySet:
    return visible(Face.objects.all(), user)


def flags_visible(*, user) -> QuerySet:
    return visible(Flag.objects.select_related("round"), user, dataset="round__dataset_id")


def decisions_visible(*, user) -> QuerySet:
    return visible(Decision.objects.all(), user)


def rounds_visible(*, user) -> QuerySet:
    return visible(Round.objects.all(), user)


def jobs_visible(*, user) -> QuerySet:
    """Jobs are admin work: those of datasets the user administers, and the user's own
    imports that have no dataset yet; and reviewers' work (rules.REVIEW_KINDS: bulk
    decisions, batch undos) of every dataset the user is a member of."""
    jobs = Job.objects.all()
    if user.is_staff:
        return jobs
    administered = visible_dataset_ids(user, admin=True)
    return jobs.filter(Q(dataset_id__in=administered) | Q(dataset__isnull=True, created_by=user)
                       | Q(kind__in=REVIEW_KINDS, dataset_id__in=visible_dataset_ids(user)))
