"""Dataset page, rounds (start, cancel, progress, charts), background jobs and members.

Every object comes through reviewapp.access; admin actions ask for admin=True, so a reviewer
gets 404 there. Forms are plain POSTs that redirect (they work without JavaScript); the round
progress and job fragments are polled by htmx while their work runs and answer without
hx-trigger once it has ended, which stops the polling.
"""
import json

from django.conf import settings
from django.contrib import messages
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .access import access_dataset, access_job, access_round, dataset_role
from .forms import ExportForm, ImportForm, MemberForm, MemberRemoveForm, RoundStartForm
from .models import Job, Membership, Round
from .selectors.charts import CHARTS, round_chart_svg
from .selectors.manage import (
    active_round, can_import, dataset_jobs, dataset_memberships, dataset_rounds, dataset_stats, import_jobs,
    job_view, latest_round, round_flag_notes, round_flag_rows, round_neighbours, round_progress,
)
from .selectors.team import team_panel
from .services.jobs import export_file, job_export_start, job_import_start
from .services.members import membership_remove, membership_set
from .rules import ROUND_ACTIVE
from .services.rounds import RoundConflict, round_cancel, round_start


# -- helpers ----------------------------------------------------------------------------------------

def _is_admin(user, dataset_id: int) -> bool:
    return dataset_role(user, dataset_id) == Membership.Role.ADMIN


def _dataset_context(request, dataset, *, watched=None) -> dict:
    """What the dataset page and its live fragment show. `watched` is the round the live panel
    follows: the running one, else (for a poll) the one that just ended."""
    active = active_round(dataset=dataset)
    watched = active or watched
    return {
        "dataset": dataset,
        "is_admin": _is_admin(request.user, dataset.pk),
        "stats": dataset_stats(dataset=dataset),
        "rounds": dataset_rounds(dataset=dataset),
        "active_round": active,
        "live": round_progress(round_=watched) if watched else None,
        "round_form": RoundStartForm(),
        "data_root": settings.DATA_ROOT,
    }


def _render_dataset(request, dataset, *, round_form=None, export_form=None, status=200):
    context = _dataset_context(request, dataset)
    context.update(
        jobs=([job_view(job=job) for job in dataset_jobs(dataset=dataset, kind=Job.Kind.EXPORT)]
              if context["is_admin"] else []),
        round_form=round_form or context["round_form"], export_form=export_form or ExportForm(),
        team=team_panel(dataset=dataset, user=request.user))
    return render(request, "manage/dataset.html", context, status=status)


def _redirect(request, url: str):
    """A redirect that htmx follows as a page load (HX-Redirect) and browsers as a 302."""
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


# -- datasets ---------------------------------------------------------------------------------------

@require_GET
def dataset_page(request, dataset_id: int):
    return _render_dataset(request, access_dataset(request.user, dataset_id))


@require_GET
def dataset_live_page(request, dataset_id: int):
    """The dataset page's running-round panel, polled while the round runs (see _dataset_live.html)."""
    dataset = access_dataset(request.user, dataset_id)
    context = _dataset_context(request, dataset, watched=latest_round(dataset=dataset)) | {"oob": True}
    return render(request, "manage/_dataset_live.html", context)


@require_http_methods(["GET", "POST"])
def dataset_import_page(request):
    if not can_import(request.user):
        raise Http404("No such page")
    form = ImportForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                job = job_import_start(path=form.cleaned_data["path"], name=form.cleaned_data["name"],
                                       fmt=form.cleaned_data["format"], user=request.user)
            except ValueError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Import of {job.params['name']} queued.")
                return redirect("job-detail", job_id=job.pk)
        status = 400
    jobs = [job_view(job=job) for job in import_jobs(user=request.user)]
    return render(request, "manage/import.html",
                  {"form": form, "data_root": settings.DATA_ROOT, "jobs": jobs}, status=status)


def _with_article(label: str) -> str:
    """A role's display label as a noun after "is now": "a reviewer", "an admin"."""
    label = label.lower()
    return f"{'an' if label[:1] in 'aeiou' else 'a'} {label}"


@require_http_methods(["GET", "POST"])
def dataset_members_page(request, dataset_id: int):
    dataset = access_dataset(request.user, dataset_id, admin=True)
    if request.method == "POST":
        removal = MemberRemoveForm(request.POST)
        removal.is_valid()  # always: a missing or unreadable id is none
        try:
            if removal.removing:
                if removal.cleaned_data["membership"] is None:
                    raise Membership.DoesNotExist
                membership_remove(dataset=dataset, membership_id=removal.cleaned_data["membership"], by=request.user)
                messages.success(request, "Member removed.")
            else:
                form = MemberForm(request.POST)
                if not form.is_valid():
                    raise ValueError("give a user name and a role")
                membership = membership_set(
                    dataset=dataset, username=form.cleaned_data["username"], role=form.cleaned_data["role"],
                    by=request.user)
                role = _with_article(membership.get_role_display())
                messages.success(request, f"{membership.user.get_username()} is now {role}.")
        except (TypeError, Membership.DoesNotExist):  # no or a foreign membership id
            messages.error(request, "That member is not in this dataset.")
        except ValueError as exc:  # unknown user or role, the last admin
            messages.error(request, str(exc))
        return redirect("dataset-members", dataset_id=dataset.pk)
    return render(request, "manage/members.html", {
        "dataset": dataset, "memberships": dataset_memberships(dataset=dataset),
        "form": MemberForm(initial={"role": Membership.Role.REVIEWER}), "roles": Membership.Role.choices,
    })


@require_POST
def export_start_post(request, dataset_id: int):
    dataset = access_dataset(request.user, dataset_id, admin=True)
    form = ExportForm(request.POST)
    if not form.is_valid():
        return _render_dataset(request, dataset, export_form=form, status=400)
    job = job_export_start(dataset=dataset, user=request.user, fmt=form.cleaned_data["format"])
    if request.htmx:
        return render(request, "manage/_job.html", {"view": job_view(job=job)})
    return redirect("job-detail", job_id=job.pk)


# -- rounds -----------------------------------------------------------------------------------------

@require_POST
def round_start_post(request, dataset_id: int):
    dataset = access_dataset(request.user, dataset_id, admin=True)
    form = RoundStartForm(request.POST)
    if not form.is_valid():
        return _render_dataset(request, dataset, round_form=form, status=400)
    try:
        round_ = round_start(dataset=dataset, method=form.cleaned_data["method"], config=form.round_config(),
                             user=request.user, data_root=settings.DATA_ROOT)
    except ValueError as exc:
        form.add_error(None, str(exc))
        return _render_dataset(request, dataset, round_form=form, status=400)
    except RoundConflict as exc:
        messages.error(request, f"A round is already under way, so none was started: {exc}.")
        return _render_dataset(request, dataset, round_form=form, status=409)
    messages.success(request, f"Round {round_.number} queued.")
    return _redirect(request, reverse("round-detail", args=[round_.pk]))


def _round_context(round_, *, oob: bool = False) -> dict:
    return {"round": round_, "progress": round_progress(round_=round_), "oob": oob,
            "charts": CHARTS, "flag_rows": round_flag_rows(round_=round_),
            "flag_notes": round_flag_notes(round_=round_)}


@require_GET
def round_page(request, round_id: int):
    round_ = access_round(request.user, round_id)
    previous, following = round_neighbours(round_=round_)
    context = _round_context(round_) | {
        "dataset": round_.dataset, "is_admin": _is_admin(request.user, round_.dataset_id),
        "previous": previous, "following": following,
        "config_text": json.dumps(round_.config, indent=2, sort_keys=True),
    }
    return render(request, "manage/round.html", context)


@require_GET
def round_progress_page(request, round_id: int):
    round_ = access_round(request.user, round_id)
    context = _round_context(round_, oob=round_.status not in ROUND_ACTIVE)
    context["is_admin"] = _is_admin(request.user, round_.dataset_id)
    return render(request, "manage/_round_progress.html", context)


@require_POST
def round_cancel_post(request, round_id: int):
    round_ = access_round(request.user, round_id, admin=True)
    try:
        round_ = round_cancel(round_id=round_.pk, user=request.user)
        messages.success(request, f"Round {round_.number} cancelled.")
    except RoundConflict as exc:
        messages.warning(request, f"Nothing to cancel: {exc}.")
        round_.refresh_from_db()
    if request.htmx:
        context = _round_context(round_, oob=True) | {"is_admin": True, "messages_oob": True}
        return render(request, "manage/_round_progress.html", context)
    return redirect("round-detail", round_id=round_.pk)


@require_GET
def round_chart_file(request, round_id: int, chart: str):
    round_ = access_round(request.user, round_id)
    if chart not in CHARTS:
        raise Http404("No such chart")
    response = HttpResponse(round_chart_svg(round_=round_, chart=chart), content_type="image/svg+xml")
    # An SVG opened on its own must not run anything.
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    published = round_.status == Round.Status.PUBLISHED
    response["Cache-Control"] = "private, max-age=86400" if published else "no-cache"
    return response


# -- jobs -------------------------------------------------------------------------------------------

@require_GET
def job_page(request, job_id: int):
    job = access_job(request.user, job_id)
    # Read only: a job whose worker went silent is shown as such here and failed by the worker
    # sweep (services.jobs.jobs_sweep), never by a GET.
    view = job_view(job=job)
    template = "manage/_job.html" if request.htmx else "manage/job.html"
    return render(request, template, {"view": view, "dataset": view.job.dataset})


@require_GET
def job_download_file(request, job_id: int):
    job = access_job(request.user, job_id)
    try:
        part = int(request.GET.get("part", 0))
    except ValueError:
        raise Http404("No such file") from None
    path = export_file(job, part)
    if path is None:
        raise Http404("No such file")
    return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name)
