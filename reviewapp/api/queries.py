"""The API's reads: querysets limited to the datasets the user may see.

Non-staff users see the datasets they are members of; staff see all (as in
reviewapp.access). Membership is a subquery, so lists stay one query on the object's table
whatever the number of datasets."""
from django.db.models import CharField, OuterRef, Q, QuerySet, Subquery, Value

from ..models import Dataset, Decision, Face, Flag, Identity, Job, Membership, Round
from ..services.jobs import REVIEW_KINDS


def _member_of(user, *, admin: bool = False) -> QuerySet | None:
    """Dataset ids the user may see (admin=True: administer), or None for 'every dataset'."""
    if user.is_staff:
        return None
    memberships = Membership.objects.filter(user=user)
    if admin:
        memberships = memberships.filter(role=Membership.Role.ADMIN)
    return memberships.values("dataset_id")


def _limited(queryset: QuerySet, user, field: str = "dataset_id", *, admin: bool = False) -> QuerySet:
    allowed = _member_of(user, admin=admin)
    return queryset if allowed is None else queryset.filter(**{f"{field}__in": allowed})


def datasets_visible(*, user) -> QuerySet:
    """With the user's role in each (`role`)."""
    if user.is_staff:
        role = Value(Membership.Role.ADMIN.value, output_field=CharField())
    else:
        role = Subquery(Membership.objects.filter(user=user, dataset=OuterRef("pk")).values("role")[:1])
    return _limited(Dataset.objects.all(), user, "id").annotate(role=role)


def identities_visible(*, user) -> QuerySet:
    return _limited(Identity.objects.all(), user)


def faces_visible(*, user) -> QuerySet:
    return _limited(Face.objects.all(), user)


def flags_visible(*, user) -> QuerySet:
    return _limited(Flag.objects.select_related("round"), user, "round__dataset_id")


def decisions_visible(*, user) -> QuerySet:
    return _limited(Decision.objects.all(), user)


def rounds_visible(*, user) -> QuerySet:
    return _limited(Round.objects.all(), user)


def jobs_visible(*, user) -> QuerySet:
    """Jobs are admin work: those of datasets the user administers, and the user's own
    imports that have no dataset yet; and reviewers' work (services.jobs.REVIEW_KINDS: bulk
    decisions, batch undos) of every dataset the user is a member of."""
    jobs = Job.objects.all()
    if user.is_staff:
        return jobs
    administered = _member_of(user, admin=True)
    return jobs.filter(Q(dataset_id__in=administered) | Q(dataset__isnull=True, created_by=user)
                       | Q(kind__in=REVIEW_KINDS, dataset_id__in=_member_of(user)))
