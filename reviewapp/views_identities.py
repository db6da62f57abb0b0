"""Identity pages, duplicate-identity pairs, relabel search, history and undo.

Views validate, call one selector or service, and render. htmx requests get fragments and
out-of-band messages; a conflict (someone else changed the data first) is a message in the
page, never an error page, and nothing of the losing request is written.
"""
import math
import uuid
from urllib.parse import urlencode

from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from .access import access_dataset, access_decision, access_face, access_flag, access_identity
from .api.filters import HistoryFilter
from .forms import FacesBulkForm, IdentityMergeForm, UndoForm, first_error
from .kinds import KIND_ORDER
from .models import Decision, Face, Flag, Job
from .request_args import positive_int
from .selectors.identities import (
    FaceFilter, history_view, identities_by_name, identity_bulk_updates, identity_page, nearest_identities, pair_page,
)
from .selectors.identity_list import FIND_LIMIT, face_find, identity_list
from .services.faces import faces_bulk_action
from .services.flags import flag_decide
from .services.labels import LabelConflict, identity_merge
from .services.undo import UndoRefused, batch_undo_start, decision_undo

BULK_DONE = {"remove": "Removed", "low_quality": "Marked low quality", "restore": "Restored",
             "relabel": "Relabelled"}


# -- helpers ---------------------------------------------------------------------------------------

def _notice_html(request, notices: list[tuple[str, str]]) -> str:
    """The #messages box, swapped in out of band."""
    return render_to_string("_messages.html", {"notices": notices}, request=request)


def _notice(request, text: str, level: str = "info", fallback: str = "/") -> HttpResponse:
    """A message alone: out of band for htmx (nothing else swapped), else via the session."""
    if request.htmx:
        response = HttpResponse(_notice_html(request, [(level, text)]))
        response["HX-Reswap"] = "none"
        return response
    getattr(messages, level if level in ("info", "warning", "error", "success") else "info")(request, text)
    return redirect(fallback)


def _with_notices(request, template: str, context: dict, notices: list[tuple[str, str]]) -> HttpResponse:
    body = render_to_string(template, context, request=request)
    return HttpResponse(body + _notice_html(request, notices))


def _same_dataset(*identities):
    if len({i.dataset_id for i in identities}) != 1:
        raise Http404("No such identity")


# -- identity page ---------------------------------------------------------------------------------

def _face_filter(params) -> FaceFilter:
    """?kind= (a face flag kind, or "any") and ?min_score= (a finite number); others ignored."""
    kind = params.get("kind", "")
    kind = kind if kind == "any" or (kind in KIND_ORDER and kind != Flag.Kind.DUPLICATE_IDENTITY) else ""
    try:
        min_score = float(params.get("min_score", ""))
    except ValueError:
        min_score = None
    return FaceFilter(kind=kind, min_score=min_score if min_score is not None and math.isfinite(min_score)
                      else None)


@require_GET
def identity_detail_page(request, identity_id: int):
    """The identity's faces, keyset-paged; ?kind=&min_score= keep faces with such an open flag
    of the latest round; ?at=<face id> starts the page at that face (where face find leads)."""
    identity = access_identity(request.user, identity_id)
    include_removed = request.GET.get("removed") == "1"
    after = positive_int(request.GET.get("after"))
    at = positive_int(request.GET.get("at"))
    if after is None and at is not None:
        after = at - 1 if at > 1 else None
    face_filter = _face_filter(request.GET)
    is_more = bool(request.htmx and request.GET.get("after"))
    context = {"identity": identity, "include_removed": include_removed, "at": at,
               "bulk_url": reverse("identity-bulk", args=[identity.pk]),
               "filter_query": urlencode(face_filter.as_query()),
               **identity_page(identity=identity, after=after, include_removed=include_removed, full=not is_more,
                               face_filter=face_filter)}
    if is_more:
        return render(request, "identities/_face_page.html", context)
    return render(request, "identities/identity_detail.html", context)


@require_POST
def identity_bulk_post(request, identity_id: int):
    identity = access_identity(request.user, identity_id)
    back = reverse("identity-detail", args=[identity.pk])
    form = FacesBulkForm(request.POST)
    if not form.is_valid():
        return _notice(request, first_error(form), "warning", back)
    action = form.cleaned_data["action"]
    target = None
    if action == "relabel":
        target = access_identity(request.user, form.cleaned_data["identity_id"])
        _same_dataset(identity, target)
    result = faces_bulk_action(face_ids=form.cleaned_data["ids"], action=action, user=request.user,
                               dataset=identity.dataset, identity_id=target.pk if target else None,
                               from_identity_id=identity.pk)
    notices = []
    if result.decided:
        to = f" to {target.name}" if target else ""
        decided = len(result.decided)
        notices.append(("success", f"{BULK_DONE[action]} {decided} face{pluralize(decided)}{to}."))
    if result.conflicts:
        first = result.conflicts[0][1]
        skipped = len(result.conflicts)
        notices.append(("warning", f"{skipped} face{pluralize(skipped)} skipped: {first}"))
    if not request.htmx:
        for level, text in notices:
            getattr(messages, level)(request, text)
        return redirect(back)
    include_removed = form.cleaned_data["removed"]
    touched = result.decided + [face_id for face_id, _ in result.conflicts]
    context = {"identity": identity, "include_removed": include_removed,
               "bulk_url": reverse("identity-bulk", args=[identity.pk]),
               **identity_bulk_updates(identity=identity, face_ids=touched, include_removed=include_removed)}
    return _with_notices(request, "identities/_bulk_result.html", context, notices)


# -- merges ----------------------------------------------------------------------------------------

def _pair_flag(request, flag_id, a, b) -> Flag:
    flag = access_flag(request.user, flag_id)
    if flag.kind != Flag.Kind.DUPLICATE_IDENTITY or {flag.identity_a_id, flag.identity_b_id} != {a.pk, b.pk}:
        raise Http404("No such flag")
    return flag


@require_POST
def identity_merge_post(request, identity_id: int):
    """Merge this identity and `other_id` keeping `survivor_id`; with `flag`, decide that
    duplicate-identity flag instead (verdict "same" merges, "different" keeps them apart)."""
    identity = access_identity(request.user, identity_id)
    form = IdentityMergeForm(request.POST)
    form.is_valid()  # always: an unreadable id is none, which is answered below
    data = form.cleaned_data
    if data["other_id"] is None:
        return _notice(request, "Choose the identity to merge with.", "warning",
                       reverse("identity-detail", args=[identity.pk]))
    other = access_identity(request.user, data["other_id"])
    _same_dataset(identity, other)
    back = reverse("pair-detail", args=[identity.pk, other.pk])
    flag = _pair_flag(request, data["flag"], identity, other) if data["flag"] else None
    verdict = data["verdict"]
    survivor_id = form.survivor(other)
    if verdict == "same" and survivor_id not in (identity.pk, other.pk):
        return _notice(request, "Choose which identity survives the merge.", "warning", back)
    if verdict not in ("same", "different") or (verdict == "different" and flag is None):
        return HttpResponseBadRequest("Unknown verdict")
    try:
        if flag is not None:
            action = "confirm" if verdict == "same" else "reject"
            decision = flag_decide(flag_id=flag.pk, action=action, user=request.user, survivor_id=survivor_id)
        else:
            merged_id = other.pk if survivor_id == identity.pk else identity.pk
            decision = identity_merge(identity_id=merged_id, into_id=survivor_id, user=request.user)
    except LabelConflict as conflict:
        return _notice(request, f"Nothing changed: {conflict}", "warning", back)
    except ValueError as error:
        return _notice(request, str(error), "error", back)
    if decision.action == Decision.Action.MERGE:
        survivor = identity if decision.after["merged_into"] == identity.pk else other
        merged = other if survivor is identity else identity
        text = f"Merged {merged.name} into {survivor.name} ({decision.after['faces_moved']} faces moved)."
    else:
        survivor = merged = None
        text = f"Kept {identity.name} and {other.name} apart."
    if not request.htmx:
        messages.success(request, text)
        return redirect(reverse("identity-detail", args=[survivor.pk]) if survivor else back)
    context = {"decision": decision, "survivor": survivor, "merged": merged, "text": text}
    return _with_notices(request, "identities/_merge_result.html", context, [("success", text)])


@require_GET
def pair_detail_page(request, identity_a: int, identity_b: int):
    a = access_identity(request.user, identity_a)
    b = access_identity(request.user, identity_b)
    _same_dataset(a, b)
    if a.pk == b.pk:
        raise Http404("An identity is not a pair")
    flag_id = positive_int(request.GET.get("flag"))
    flag = _pair_flag(request, flag_id, a, b) if flag_id else None
    return render(request, "identities/pair_detail.html", pair_page(a=a, b=b, flag=flag))


# -- the identity list and face finder ------------------------------------------------------------

@require_GET
def identity_list_page(request, dataset_id: int):
    """Every identity of the dataset: ?q= (name contains, any case), ?sort=name|size|flags|noise,
    ?merged=1 (merged-away ones too), keyset-paged by ?after=<identity id>."""
    dataset = access_dataset(request.user, dataset_id)
    q = request.GET.get("q", "")[:200].replace("\x00", "")  # PostgreSQL text cannot hold NUL
    merged = request.GET.get("merged") == "1"
    page = identity_list(dataset=dataset, q=q, sort=request.GET.get("sort", "name"),
                         after=positive_int(request.GET.get("after")), merged=merged)
    query = {k: v for k, v in (("q", page["q"]), ("sort", page["sort"] if page["sort"] != "name" else ""),
                               ("merged", "1" if merged else "")) if v}
    context = {"dataset": dataset, "page_query": urlencode(query), **page}
    if request.htmx and request.GET.get("after"):
        return render(request, "identities/_identity_rows.html", context)
    if request.htmx and request.headers.get("HX-Target") == "identity-table":
        return render(request, "identities/_identity_table.html", context)
    return render(request, "identities/identity_list.html", context)


def face_anchor_url(face: Face) -> str:
    """The face on its identity's page: the page starts at it, removed faces shown when it is."""
    query = {"at": face.pk, **({"removed": "1"} if face.status == Face.Status.REMOVED else {})}
    return f"{reverse('identity-detail', args=[face.identity_id])}?{urlencode(query)}#face-{face.pk}"


@require_GET
def face_find_page(request, dataset_id: int):
    """?q= a face id or a path (exact, a prefix or a suffix of it): one match goes to the face on
    its identity's page, several are listed."""
    dataset = access_dataset(request.user, dataset_id)
    q = request.GET.get("q", "")[:2048].replace("\x00", "")
    faces = face_find(dataset_id=dataset.pk, q=q)
    if len(faces) == 1:
        return redirect(face_anchor_url(faces[0]))
    matches = [(face, face_anchor_url(face)) for face in faces]
    return render(request, "identities/face_find.html", {"dataset": dataset, "q": q.strip(), "matches": matches,
                                                         "limit": FIND_LIMIT})


# -- search ----------------------------------------------------------------------------------------

def _search_subject(request, dataset):
    """The face (or identity) nearest identities are asked for: ?face=, else the first of the
    checked ?ids= (flag ids, as a review queue sends them; face ids with ?selected=faces),
    else ?identity=."""
    face_id = positive_int(request.GET.get("face"))
    first = next((i for i in (positive_int(v) for v in request.GET.getlist("ids")) if i), None)
    if face_id is None and first is not None:
        if request.GET.get("selected") == "faces":
            face_id = first
        else:
            flag = access_flag(request.user, first)
            if flag.face_id is None:
                return None, flag.identity_a
            face_id = flag.face_id
    if face_id is not None:
        return access_face(request.user, face_id), None
    identity_id = positive_int(request.GET.get("identity"))
    return None, access_identity(request.user, identity_id) if identity_id else None


@require_GET
def identity_search_page(request, dataset_id: int):
    """Options a relabel or merge form posts: by name (?q=), else nearest to a face or an
    identity (see _search_subject). ?exclude= leaves one identity out; ?field= names the
    radio (identity_id for relabels, other_id for merges)."""
    dataset = access_dataset(request.user, dataset_id)
    field = request.GET.get("field", "identity_id")
    if field not in ("identity_id", "other_id"):
        field = "identity_id"
    exclude_id = positive_int(request.GET.get("exclude"))
    exclude = {exclude_id} if exclude_id else set()
    q = request.GET.get("q", "")[:200].replace("\x00", "")  # PostgreSQL text cannot hold NUL
    scores, note, mode = {}, "", "name"
    face, identity = (None, None) if q.strip() else _search_subject(request, dataset)
    if q.strip():
        options = identities_by_name(dataset_id=dataset.pk, q=q, exclude=exclude)
        if not options:
            note = "No identity name contains that text."
    elif face or identity:
        if (face or identity).dataset_id != dataset.pk:
            raise Http404("No such face")
        nearest = nearest_identities(dataset_id=dataset.pk, face=face, identity=identity)
        options = [o for o in nearest.identities if o.pk not in exclude]
        scores, note, mode = nearest.scores, nearest.note, "nearest"
    else:
        options, note = [], "Type a name, or ask for the nearest identities."
    for option in options:
        option.score = scores.get(option.pk)
    return render(request, "identities/_search_results.html",
                  {"options": options, "note": note, "field": field, "mode": mode})


# -- history and undo ------------------------------------------------------------------------------

@require_GET
def decision_history_page(request, dataset_id: int):
    dataset = access_dataset(request.user, dataset_id)
    filters = HistoryFilter(request.GET)
    before = positive_int(request.GET.get("before"))
    fragment = request.htmx and (before is not None or request.headers.get("HX-Target") == "history-list")
    context = history_view(dataset=dataset, user=request.user, filters=filters, before=before,
                           with_choices=not fragment)
    if request.htmx and before is not None:
        return render(request, "identities/_history_rows.html", context)
    if fragment:
        return render(request, "identities/_history_list.html", context)
    return render(request, "identities/history.html", context)


@require_POST
def decision_undo_post(request, decision_id: int):
    decision = access_decision(request.user, decision_id)
    back = reverse("history", args=[decision.dataset_id])
    try:
        undo = decision_undo(decision_id=decision.pk, user=request.user)
    except UndoRefused as refused:
        return _notice(request, str(refused), "warning", back)
    except LabelConflict as conflict:
        return _notice(request, f"Cannot undo: {conflict}. Nothing was changed.", "warning", back)
    text = f"Undid your {decision.get_action_display().lower()} decision #{decision.pk}."
    if not request.htmx:
        messages.success(request, text)
        return redirect(back)
    form = UndoForm(request.POST)
    form.is_valid()  # always
    if form.cleaned_data["history"]:
        context = history_view(dataset=decision.dataset, user=request.user, filters=HistoryFilter(request.POST))
        return _with_notices(request, "identities/_history_list.html", context, [("success", text)])
    return _with_notices(request, "identities/_undone.html", {"undo": undo, "decision": decision, "text": text},
                         [("success", text)])


@require_POST
def batch_undo_post(request, dataset_id: int, batch: uuid.UUID):
    """Undo every decision of the batch that the user took: a small batch now (conflicts
    reported and skipped), a large one as a job."""
    dataset = access_dataset(request.user, dataset_id)
    back = f"{reverse('history', args=[dataset.pk])}?batch={batch}"
    try:
        outcome = batch_undo_start(dataset=dataset, batch=batch, user=request.user)
    except ValueError as error:
        return _notice(request, f"{error}.", "warning", back)
    if isinstance(outcome, Job):
        text = (f"Undoing {outcome.params['decisions']} decisions in the background (job #{outcome.pk}); "
                "the history shows them undone as it goes.")
        level = "info"
    else:
        text = outcome.summary
        if outcome.conflict_sample:
            text += " First: " + outcome.conflict_sample[0] + "."
        level = "success" if outcome.undone and not outcome.conflicts else "warning"
    if not request.htmx:
        getattr(messages, level)(request, text)
        return redirect(back)
    context = history_view(dataset=dataset, user=request.user, filters=HistoryFilter(request.POST))
    return _with_notices(request, "identities/_history_list.html", context, [(level, text)])
