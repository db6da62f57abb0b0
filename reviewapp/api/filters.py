"""Query-string filters of the API's lists (django-filter), and the history page's (HistoryFilter).
Ids are plain numbers: a filter never looks an object up, so it cannot tell whether an id of
another dataset exists; the list is already limited to the user's datasets (queries.py)."""
import django_filters as filters
from django import forms
from django.db.models import Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from ..models import Decision, Face, Flag, Identity, Job, Round
from ..request_args import BIGINT_MAX


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(filters.NumberFilter):
    """An object id: a whole number (anything else is a 400)."""

    field_class = forms.IntegerField


class IdentityFilter(filters.FilterSet):
    dataset = IdFilter(field_name="dataset_id")
    name = filters.CharFilter(field_name="name", help_text="Exact identity name.")
    merged = filters.BooleanFilter(field_name="merged_into", lookup_expr="isnull", exclude=True,
                                   help_text="true: only identities merged into another; false: only survivors.")

    class Meta:
        model = Identity
        fields = ["dataset", "name", "merged"]


class FaceFilter(filters.FilterSet):
    dataset = IdFilter(field_name="dataset_id")
    identity = IdFilter(field_name="identity_id")
    status = filters.ChoiceFilter(choices=Face.Status.choices)

    class Meta:
        model = Face
        fields = ["dataset", "identity", "status"]


class FlagFilter(filters.FilterSet):
    dataset = IdFilter(field_name="round__dataset_id")
    round = IdFilter(field_name="round_id")
    kind = filters.ChoiceFilter(choices=Flag.Kind.choices)
    state = filters.ChoiceFilter(choices=Flag.State.choices)
    face = IdFilter(field_name="face_id")
    identity = IdFilter(method="filter_identity",
                                    help_text="Flags about this identity: its faces or its pairs.")

    class Meta:
        model = Flag
        fields = ["dataset", "round", "kind", "state", "face", "identity"]

    def filter_identity(self, queryset, name, value):
        return queryset.filter(Q(face__identity_id=value) | Q(identity_a_id=value) | Q(identity_b_id=value))


class DecisionFilter(filters.FilterSet):
    dataset = IdFilter(field_name="dataset_id")
    round = IdFilter(field_name="round_id")
    flag = IdFilter(field_name="flag_id")
    face = IdFilter(field_name="face_id")
    identity = IdFilter(field_name="identity_id")
    user = IdFilter(field_name="user_id")
    action = filters.ChoiceFilter(choices=Decision.Action.choices)

    class Meta:
        model = Decision
        fields = ["dataset", "round", "flag", "face", "identity", "user", "action"]


class HistoryFilter(DecisionFilter):
    """The history page's filters (its form, and the links that page on): the API's decision
    filters by reviewer and action, the round by its number as the page names rounds, and a
    batch. The page ignores a value it cannot read, where the API answers 400: a filter that is
    not valid is left out of `filter_queryset` and reads as not chosen."""

    user = IdFilter(field_name="user_id", min_value=1, max_value=BIGINT_MAX)
    round = IdFilter(field_name="round__number", min_value=1, max_value=BIGINT_MAX)
    batch = filters.UUIDFilter()
    dataset = flag = face = identity = None  # one dataset's page: the view picks its decisions

    class Meta(DecisionFilter.Meta):
        fields = ["user", "round", "action", "batch"]

    def __getitem__(self, name: str):
        """A filter's chosen value (None or "" when none): what the template shows selected."""
        if name not in self.filters:
            raise KeyError(name)
        self.errors  # noqa: B018 (validates the form once, as django-filter's qs does)
        value = self.form.cleaned_data.get(name)
        if name in ("action", "batch"):
            return str(value) if value else ""
        return value

    def as_query(self) -> dict:
        """The chosen filters as query parameters, for the links that keep them."""
        return {name: self[name] for name in self._meta.fields if self[name]}


class RoundFilter(filters.FilterSet):
    dataset = IdFilter(field_name="dataset_id")
    status = filters.ChoiceFilter(choices=Round.Status.choices)

    class Meta:
        model = Round
        fields = ["dataset", "status"]


class JobFilter(filters.FilterSet):
    dataset = IdFilter(field_name="dataset_id")
    kind = filters.ChoiceFilter(choices=Job.Kind.choices)
    status = filters.ChoiceFilter(choices=Job.Status.choices)

    class Meta:
        model = Job
        fields = ["dataset", "kind", "status"]
