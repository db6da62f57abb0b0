"""The team view: holds, throughput and agreement (the team page and the dataset page's panel),
the claims mode and double-review share (admins), the blind second-look queue (reviewers other
than the first), and the disagreement queue (admins).

Every object comes through reviewapp.access; admin pages ask for admin=True, so a reviewer gets
404 there as everywhere else. The one 403: the first reviewer answering their own second look.
"""
from django.contrib import messages
from django.http import Http404, HttpResponseBadRequest, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from . import views_review
from .access import access_dataset, dataset_role
from .forms import ClaimsModeForm, FlagDecideForm, ResolveForm, ShareForm, first_error
from .models import Membership
from .selectors.team import (
    blind_cards, dataset_holds, disagreements, double_review_counts, second_look, second_look_queue, team_panel,
    throughput,
)
from .services.claims import dataset_claims_set
from .services.double_review import (
    MAX_SHARE, NotYourSecondLook, dataset_double_review_set, second_review_answer, second_review_resolve,
)
from .services.labels import LabelConflict


def _is_admin(user, dataset_id: int) -> bool:
    return dataset_role(user, dataset_id) == Membership.Role.ADMIN


# -- the team page and the settings ---------------------------------------------------------------

@require_GET
def team_page(request, dataset_id: int):
    dataset = access_dataset(request.user, dataset_id)
    return render(request, "team/team.html", {
        "dataset": dataset, "is_admin": _is_admin(request.user, dataset.pk),
        "team": team_panel(dataset=dataset, user=request.user),
        "holds": dataset_holds(dataset_id=dataset.pk, user=request.user),
        "throughput": throughput(dataset_id=dataset.pk),
    })


@require_POST
def team_claims_post(request, dataset_id: int):
    dataset = access_dataset(request.user, dataset_id, admin=True)
    form = ClaimsModeForm(request.POST)
    form.is_valid()  # always: the service judges the mode
    try:
        dataset_claims_set(dataset=dataset, mode=form.cleaned_data["claims"], by=request.user)
    except ValueError as error:
        messages.error(request, f"Claims not changed: {error}.")
    else:
        messages.success(request, f"Claims are {dataset.claims} now.")
    return redirect(form.back_url_name, dataset_id=dataset.pk)


@require_POST
def team_share_post(request, dataset_id: int):
    dataset = access_dataset(request.user, dataset_id, admin=True)
    form = ShareForm(request.POST, max_share=MAX_SHARE)
    try:
        if not form.is_valid():
            raise ValueError(first_error(form))
        sampled = dataset_double_review_set(dataset=dataset, share=form.cleaned_data["share"], by=request.user)
    except ValueError as error:
        messages.error(request, f"Double review not changed: {error}.")
    else:
        percent = f"{dataset.double_review_share * 100:g}"
        messages.success(request, f"Double review asks {percent} % of decided flags again."
                         if dataset.double_review_share else "Double review is off.")
        if sampled:
            messages.info(request, f"{sampled} flags decided before were sampled for a second look.")
    return redirect(form.back_url_name, dataset_id=dataset.pk)


# -- the second-look queue ------------------------------------------------------------------------

def _looks(looks, dataset_id: int):
    """The review queue's card links (views_review._linked, so that the cards stay in step with
    review/_card.html), answering here instead of deciding. The card's own flag page is not
    linked: it would show the first answer."""
    views_review._linked([look.card for look in looks], dataset_id)
    for look in looks:
        answer = reverse("second-look-answer", args=[dataset_id, look.review.pk])
        look.card.links.update(open=answer, decide=answer)
    return looks


@require_GET
def second_look_page(request, dataset_id: int):
    dataset = access_dataset(request.user, dataset_id)
    looks = second_look_queue(dataset_id=dataset.pk, user=request.user)
    return render(request, "team/second_look.html", {
        "dataset": dataset, "dataset_id": dataset.pk, "looks": _looks(looks, dataset.pk),
        "counts": double_review_counts(dataset_id=dataset.pk, user=request.user),
    })


@require_POST
def second_look_answer_post(request, dataset_id: int, review_id: int):
    dataset = access_dataset(request.user, dataset_id)
    review = second_look(dataset_id=dataset.pk, review_id=review_id)
    if review is None:
        raise Http404("No such second look")
    form = FlagDecideForm(request.POST)  # the card's buttons post what they post on a flag
    if not form.is_valid():
        return HttpResponseBadRequest(first_error(form))
    data = form.cleaned_data
    notice, level = "Answer recorded.", messages.SUCCESS
    try:
        second_review_answer(review_id=review.pk, user=request.user, action=data["action"],
                             identity_id=data["identity_id"], remove_face_id=data["remove_face"])
    except NotYourSecondLook as refused:
        return HttpResponseForbidden(str(refused))
    except LabelConflict as conflict:
        notice, level = str(conflict), messages.WARNING
    except ValueError as error:
        notice, level = str(error), messages.ERROR
    if not (request.htmx and not request.htmx.history_restore_request):
        messages.add_message(request, level, notice)
        return redirect("second-look", dataset_id=dataset.pk)
    tag = messages.DEFAULT_TAGS.get(level, "info")
    context = {"dataset": dataset, "dataset_id": dataset.pk, "notices": [(tag, notice)], "large": True,
               "review": review}
    if level == messages.ERROR:  # the answer was not taken: the same card again, still open
        review.refresh_from_db()
        context["look"] = _looks(blind_cards([review], dataset_id=dataset.pk), dataset.pk)[0]
    return render(request, "team/_answered.html", context)


# -- disagreements --------------------------------------------------------------------------------

@require_GET
def disagreement_list_page(request, dataset_id: int):
    dataset = access_dataset(request.user, dataset_id, admin=True)
    return render(request, "team/disagreements.html", {
        "dataset": dataset, "items": disagreements(dataset_id=dataset.pk),
    })


@require_POST
def disagreement_resolve_post(request, dataset_id: int, review_id: int):
    dataset = access_dataset(request.user, dataset_id, admin=True)
    review = second_look(dataset_id=dataset.pk, review_id=review_id)
    if review is None:
        raise Http404("No such second look")
    form = ResolveForm(request.POST)
    form.is_valid()  # always: the service judges which to keep
    keep = form.cleaned_data["keep"]
    try:
        second_review_resolve(review_id=review.pk, user=request.user, keep=keep)
    except LabelConflict as conflict:
        messages.warning(request, str(conflict))
    except ValueError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Kept the first decision." if keep == "first"
                         else "Applied the second answer: the first decision was undone and the flag decided again.")
    return redirect("disagreements", dataset_id=dataset.pk)


__all__ = ["disagreement_list_page", "disagreement_resolve_post", "second_look_answer_post", "second_look_page",
           "team_claims_post", "team_page", "team_share_post"]
