"""Queue-wide bulk decisions in the browser: the filter, its preview, the start, and the job
page every member of the dataset may see (services.bulk; the API does the same at
/api/flags/bulk/).

The page is a GET form: its filter is in the address, so a preview can be reloaded and shared.
htmx swaps just the preview while the filter changes. The preview carries the start form, whose
hidden fields repeat the filter exactly as previewed (with its round resolved) and the count the
user saw, so what starts is what was shown. Both forms are checked by the API's BulkRequest.
"""
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from .access import access_dataset
from .api.serializers import BulkRequest
from .kinds import kind_choices, kind_title
from .models import Identity, Job, Round
from .selectors.bulk import bulk_preview, selection_resolve
from .selectors.manage import bulk_job_title, job_view
from .services.bulk import GROWTH_ALLOWED, PAIR_ACTIONS, BulkRefused, PreviewOutdated, bulk_start
from .rules import REVIEW_KINDS

ACTION_CHOICES = [("confirm", "Confirm (do what each flag suggests)"), ("reject", "Keep (nothing changes)"),
                  ("remove", "Remove the faces"), ("low_quality", "Mark the faces low quality"),
                  ("relabel", "Relabel the faces to…")]


def _errors(errors: dict) -> list[str]:
    """Field messages as sentences: 'min_score: A valid number is required.'"""
    out = []
    for name, value in errors.items():
        for message in value if isinstance(value, list) else [value]:
            out.append(str(message) if name == "non_field_errors" else f"{name.replace('_', ' ')}: {message}")
    return out


def _form_data(params, dataset, *, preview: bool) -> dict:
    """The form's fields as BulkRequest reads them: an empty field is one not given."""
    data = {name: value for name, value in params.items() if value.strip() and name in BulkRequest().fields}
    return {**data, "dataset": dataset.pk, "preview": preview}


def _selection(dataset, data: dict):
    return selection_resolve(
        dataset_id=dataset.pk, kind=data["kind"], round_id=data.get("round"), min_score=data.get("min_score"),
        max_score=data.get("max_score"), identity_id=data.get("identity"),
        suggested_identity_id=data.get("suggested_identity"))


def _context(request, dataset, params, *, errors=(), refusal: str = "") -> dict:
    """The page: the filter as given, and the preview of it when it is valid."""
    body = BulkRequest(data=_form_data(params, dataset, preview=True))
    preview, errors = None, list(errors)
    if body.is_valid():
        try:
            preview = bulk_preview(selection=_selection(dataset, body.validated_data), user=request.user)
        except ValueError as error:
            errors += _errors(error.args[0])
    elif "kind" in params:
        errors += _errors(body.errors)
    kind = params.get("kind") or "noisy"
    rounds = list(Round.objects.filter(dataset=dataset, status=Round.Status.PUBLISHED).order_by("-number")
                  .values_list("pk", "number"))
    described = {}
    if preview is not None:
        s = preview.selection
        names = dict(Identity.objects.filter(pk__in=[s.identity_id, s.suggested_identity_id]).values_list("pk", "name"))
        described = {"round": dict(rounds).get(s.round_id), "identity": names.get(s.identity_id),
                     "suggested": names.get(s.suggested_identity_id)}
    return {
        "dataset": dataset, "params": params, "kind": kind, "kind_title": kind_title(kind), "kinds": kind_choices(),
        "rounds": rounds, "preview": preview, "errors": errors, "refusal": refusal, "described": described,
        "actions": [a for a in ACTION_CHOICES if kind != "duplicate_identity" or a[0] in PAIR_ACTIONS],
        "growth": int(GROWTH_ALLOWED * 100),
    }


@require_GET
def bulk_page(request, dataset_id: int):
    """The filter (?kind=&round=&min_score=&max_score=&identity=&suggested_identity=) and its preview."""
    dataset = access_dataset(request.user, dataset_id)
    context = _context(request, dataset, request.GET)
    if request.htmx and not request.htmx.history_restore_request:
        return render(request, "review/_bulk_preview.html", context)
    return render(request, "review/bulk_form.html", context)


@require_POST
def bulk_start_post(request, dataset_id: int):
    """Start the job (admins and reviewers, see services.bulk) and go to its page; a refusal
    shows the page again with the reason and a fresh preview."""
    dataset = access_dataset(request.user, dataset_id)
    body = BulkRequest(data=_form_data(request.POST, dataset, preview=False))
    status, errors, refusal = 400, [], ""
    if not body.is_valid():
        errors = _errors(body.errors)
    else:
        data = body.validated_data
        try:
            selection = _selection(dataset, data)
            if data.get("identity_id") is not None and not Identity.objects.filter(pk=data["identity_id"],
                                                                                    dataset=dataset).exists():
                raise ValueError({"identity_id": "Not an identity of this dataset."})
            job = bulk_start(dataset=dataset, selection=selection, action=data["action"], user=request.user,
                             identity_id=data.get("identity_id"), expected_count=data.get("expected_count"))
        except ValueError as error:
            errors = _errors(error.args[0])
        except PreviewOutdated as outdated:
            status, refusal = 409, str(outdated)
        except BulkRefused as refused:
            refusal = str(refused)
        else:
            messages.success(request, f"Started: {bulk_job_title(job)}.")
            return redirect("bulk-job", dataset_id=dataset.pk, job_id=job.pk)
    context = _context(request, dataset, request.POST, errors=errors, refusal=refusal)
    return render(request, "review/bulk_form.html", context, status=status)


@require_GET
def bulk_job_page(request, dataset_id: int, job_id: int):
    """A bulk decision or batch undo of the dataset, for any member (the admins' job page,
    views_manage.job_page, shows imports and exports); polled by htmx while it runs."""
    dataset = access_dataset(request.user, dataset_id)
    job = Job.objects.filter(pk=job_id, dataset=dataset, kind__in=REVIEW_KINDS).select_related("created_by").first()
    if job is None:
        raise Http404("No such job")
    view = job_view(job=job)
    template = "manage/_job.html" if request.htmx else "manage/job.html"
    return render(request, template, {"view": view, "dataset": dataset})
