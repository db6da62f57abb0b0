"""The page forms read ids the pages' way (unreadable = none given), stop at the first thing
wrong in the order a page asks, and the history page's filters leave out what they cannot read."""
import uuid

import pytest

from reviewapp.api.filters import HistoryFilter
from reviewapp.forms import MAX_BULK, FacesBulkForm, FlagDecideForm, IdentityMergeForm, first_error


def _clean(form):
    assert form.is_valid(), form.errors
    return form.cleaned_data


def test_unreadable_ids_are_none_and_a_copy_to_remove_means_remove():
    data = _clean(FlagDecideForm({"action": "confirm", "identity_id": "x", "survivor_id": "0", "remove_face": "7"}))
    assert (data["action"], data["identity_id"], data["survivor_id"], data["remove_face"]) == ("remove", None, None, 7)
    assert not _clean(FlagDecideForm({"action": "reject", "large": "yes"}))["large"]
    assert first_error(FlagDecideForm({"action": "explode"})) == "Unknown action"
    assert first_error(FlagDecideForm({})) == "Unknown action"


@pytest.mark.parametrize("data, message", [
    ({"ids": ["1"]}, "Choose an action."),
    ({"action": "remove", "ids": ["x", "0"]}, "Select one or more faces first."),
    ({"action": "remove", "ids": [str(i) for i in range(1, MAX_BULK + 2)]}, f"At most {MAX_BULK} faces at a time."),
    ({"action": "relabel", "ids": ["1"]}, "Choose the identity to relabel to."),
])
def test_the_faces_form_says_the_first_thing_missing(data, message):
    assert first_error(FacesBulkForm(data)) == message


def test_the_merge_form_reads_other_as_the_identity_merged_with():
    class Other:
        pk = 42

    form = IdentityMergeForm({"other_id": "42", "survivor_id": "other"})
    assert _clean(form)["verdict"] == "same" and form.survivor(Other) == 42


@pytest.mark.django_db
def test_history_filters_leave_out_what_they_cannot_read():
    batch = uuid.uuid4()
    filters = HistoryFilter({"user": "abc", "round": "0", "action": "explode", "batch": str(batch)})
    assert (filters["user"], filters["round"], filters["action"], filters["batch"]) == (None, None, "", str(batch))
    assert filters.as_query() == {"batch": str(batch)}
    chosen = HistoryFilter({"user": "3", "round": "2", "action": "undo", "batch": "nope"})
    assert chosen.as_query() == {"user": 3, "round": 2, "action": "undo"}
    with pytest.raises(KeyError):
        chosen["as_query"]
