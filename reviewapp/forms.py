"""What each page POST carries, as Django forms: the views read `form.cleaned_data`, never
request.POST. (The queue-wide bulk form is checked by the API's own BulkRequest serializer, see
views_bulk; the history filters are the API's, api.filters.HistoryFilter.)

Ids are read the pages' way: a positive integer a database column can hold, else none given,
so that a stale or hand-edited page gets the view's message about what is missing rather than
a form error. Which object an id names, and whether the user may touch it, the view asks
reviewapp.access; what an action means the service decides.
"""
import json

from django import forms

from .json_bounds import JSONTooDeep, loads_bounded
from .models import Flag, Membership, Round
from .request_args import positive_int
from .services.faces import ACTIONS as FACE_ACTIONS
from .services.flags import ACTIONS as FLAG_ACTIONS
from .services.round_data import default_round_method

MAX_BULK = 500  # faces or flags one request decides


# -- fields ---------------------------------------------------------------------------------------

class IdField(forms.Field):
    """An object id, or None when absent or unreadable (never a form error)."""

    def __init__(self, **kwargs):
        super().__init__(required=False, **kwargs)

    def to_python(self, value):
        return positive_int(value)


class IdListField(forms.Field):
    """Every readable id of a repeated field (checked boxes named ids), in order."""

    widget = forms.MultipleHiddenInput

    def __init__(self, **kwargs):
        super().__init__(required=False, **kwargs)

    def to_python(self, value):
        return [i for i in (positive_int(v) for v in value or []) if i is not None]


class TextField(forms.Field):
    """The posted text as is (`missing` when absent): the service judges it and words the refusal."""

    def __init__(self, *, missing: str = "", **kwargs):
        super().__init__(required=False, **kwargs)
        self.missing = missing

    def to_python(self, value):
        return self.missing if value is None else value


class CheckField(forms.Field):
    """True when the page posted "1" (a hidden flag such as large=1)."""

    def __init__(self, **kwargs):
        super().__init__(required=False, **kwargs)

    def to_python(self, value):
        return value == "1"


def first_error(form: forms.Form) -> str:
    """The form's one message: its checks stop at the first thing wrong, in the order a page asks."""
    return next(str(message) for messages in form.errors.values() for message in messages)


# -- datasets, rounds, exports, members (views_manage) --------------------------------------------

class RoundStartForm(forms.Form):
    method = forms.ChoiceField(choices=Round.Method.choices)
    epochs = forms.IntegerField(required=False, min_value=1, max_value=1000,
                                widget=forms.NumberInput(attrs={"placeholder": "method default"}))
    batch_size = forms.IntegerField(required=False, min_value=1, max_value=8192,
                                    widget=forms.NumberInput(attrs={"placeholder": "method default"}))
    embeddings = forms.CharField(required=False, max_length=1000,
                                 widget=forms.TextInput(attrs={"placeholder": "e.g. lfw/embeddings.npz"}))
    paths = forms.CharField(required=False, max_length=1000,
                            widget=forms.TextInput(attrs={"placeholder": "e.g. lfw/paths.txt (with an .npy)"}))
    norms = forms.CharField(required=False, max_length=1000)
    config = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}), max_length=20_000,
                             help_text='more settings as a JSON object, e.g. {"mining": {"open_set_angle": 75}}')

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Preselected: the host's default (pretrained without a GPU, the GPU preset with one).
        self.fields["method"].initial = default_round_method()

    def clean_config(self):
        text = self.cleaned_data["config"].strip()
        if not text:
            return {}
        try:
            value = loads_bounded(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
        except JSONTooDeep as exc:
            raise forms.ValidationError(f"JSON {exc}")
        if not isinstance(value, dict):
            raise forms.ValidationError("the settings must be a JSON object { ... }")
        return value

    def round_config(self) -> dict:
        """The number and path fields laid over the JSON settings."""
        config = dict(self.cleaned_data["config"])
        for key in ("epochs", "batch_size", "embeddings", "paths", "norms"):
            value = self.cleaned_data.get(key)
            if value not in (None, ""):
                config[key] = value
        return config


class ExportForm(forms.Form):
    format = forms.ChoiceField(choices=[("list", "file list (.txt)"), ("recordio", "RecordIO (.rec)")],
                               initial="list")


class ImportForm(forms.Form):
    path = forms.CharField(max_length=1000, help_text="inside the data root; relative paths start there")
    name = forms.CharField(max_length=200, label="Dataset name")
    format = forms.ChoiceField(choices=[("folder", "folder: <identity>/<image>"),
                                        ("list", "file list: path label"),
                                        ("recordio", "InsightFace RecordIO (.rec)")])


class MemberForm(forms.Form):
    """Add a member, or change one's role."""

    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Membership.Role.choices)


class MemberRemoveForm(forms.Form):
    """The members page's Remove buttons post action=remove and the membership's id."""

    action = TextField()
    membership = IdField()

    @property
    def removing(self) -> bool:
        return self.cleaned_data["action"] == "remove"


# -- review queues and flags (views_review, views_team) -------------------------------------------

class RoundNumberField(forms.Field):
    """?round= (or the posted round): a round's number; None when not given. Anything else is
    an error, which the view answers with 404 (no such round)."""

    def __init__(self, **kwargs):
        super().__init__(required=False, **kwargs)

    def to_python(self, value):
        if value in (None, ""):
            return None
        number = positive_int(value, limit=2**31 - 1)
        if number is None:
            raise forms.ValidationError("No such round")
        return number


class QueueForm(forms.Form):
    """Which round's queue: the page's ?round=, or the round a claim form posts."""

    round = RoundNumberField()


class ClaimForm(forms.Form):
    """Take a batch of the queue (size flags), or give it back (action=release)."""

    action = TextField()
    size = IdField()

    @property
    def releasing(self) -> bool:
        return self.cleaned_data["action"] == "release"


class FlagDecideForm(forms.Form):
    """A decision on one flag from its card; a second look's answer posts the same."""

    action = TextField()
    # A near-duplicate card's "Remove the copy under X" buttons name the copy to take out.
    remove_face = IdField()
    identity_id = IdField()
    survivor_id = IdField()
    large = CheckField()  # the flag page's large card, not the queue's

    def clean(self):
        data = super().clean()
        if data.get("remove_face") is not None:
            data["action"] = "remove"
        if data.get("action") not in FLAG_ACTIONS:
            raise forms.ValidationError("Unknown action")
        return data


class FlagsBulkForm(forms.Form):
    """The same decision on the checked cards of a queue page (at most MAX_BULK of them)."""

    action = TextField()
    ids = IdListField()
    identity_id = IdField()
    kind = TextField()  # the queue's kind, so that the cards come back as that queue shows them

    def clean_kind(self) -> str | None:
        kind = self.cleaned_data["kind"]
        return kind if kind in Flag.Kind.values else None

    def clean_ids(self):
        return self.cleaned_data["ids"][:MAX_BULK]

    def clean(self):
        data = super().clean()
        if data.get("action") not in FLAG_ACTIONS:
            raise forms.ValidationError("Unknown action")
        return data


class TeamSettingForm(forms.Form):
    """A team setting's form, posted from the team page or the dataset page's panel (back=dataset)."""

    back = TextField()

    @property
    def back_url_name(self) -> str:
        return "dataset-detail" if self.cleaned_data["back"] == "dataset" else "team-page"


class ClaimsModeForm(TeamSettingForm):
    claims = TextField()


class ShareForm(TeamSettingForm):
    """The double-review share as a percentage, 0 to `max_percent`."""

    share = TextField()

    def __init__(self, *args, max_share: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_share = max_share

    def clean_share(self) -> float:
        try:
            percent = float(self.cleaned_data["share"].strip().rstrip("%"))
        except ValueError:
            raise forms.ValidationError(f"give the share as a number of percent, 0 to {100 * self.max_share:g}") from None
        if not 0 <= percent <= 100 * self.max_share:
            raise forms.ValidationError(f"the share must be between 0 and {100 * self.max_share:g} %")
        return round(percent / 100, 4)


class ResolveForm(forms.Form):
    keep = TextField()  # "first" or "second": services.double_review judges it


# -- identities, merges, undo (views_identities) --------------------------------------------------

class FacesBulkForm(forms.Form):
    """One action on the checked faces of an identity page. Its messages, in the order the page
    asks, are the view's answer (a warning, nothing written)."""

    action = TextField()
    ids = IdListField()
    identity_id = IdField()  # relabel: the identity to move the faces to
    removed = CheckField()   # the page shows removed faces too

    def clean(self):
        data = super().clean()
        if data.get("action") not in FACE_ACTIONS:
            raise forms.ValidationError("Choose an action.")
        if not data.get("ids"):
            raise forms.ValidationError("Select one or more faces first.")
        if len(data["ids"]) > MAX_BULK:
            raise forms.ValidationError(f"At most {MAX_BULK} faces at a time.")
        if data["action"] == "relabel" and data.get("identity_id") is None:
            raise forms.ValidationError("Choose the identity to relabel to.")
        return data


class SurvivorField(forms.Field):
    """The identity that survives a merge: an id, or "other" for the one merged with."""

    def __init__(self, **kwargs):
        super().__init__(required=False, **kwargs)

    def to_python(self, value):
        return "other" if value == "other" else positive_int(value)


class IdentityMergeForm(forms.Form):
    """Merge the page's identity and other_id keeping survivor_id; with `flag`, decide that
    duplicate-identity flag instead (verdict "same" merges, "different" keeps them apart)."""

    other_id = IdField()
    flag = IdField()
    verdict = TextField(missing="same")
    survivor_id = SurvivorField()

    def survivor(self, other) -> int | None:
        """The survivor's id as posted ("other": the identity merged with)."""
        chosen = self.cleaned_data["survivor_id"]
        return other.pk if chosen == "other" else chosen


class UndoForm(forms.Form):
    """An Undo button; history=1 when it sits on the history page (whose filters it posts too,
    so that the list comes back as filtered)."""

    history = CheckField()
