"""Review queues, face cards and flag decisions.

Decisions come as htmx POSTs and answer with the card in its new state; a conflict (another
reviewer was first) answers 200 with the card as it now stands and a message swapped out of
band into #messages, never an error page. Without htmx the same POSTs redirect back with a
flash message, so the pages work without JavaScript too.
"""
from functools import lru_cache

from django.contrib import messages
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import get_script_prefix, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from .access import access_dataset, access_flag, access_identity
from .models import Flag
from .request_args import positive_int
from .selectors import review as review_selectors
from .services import flags as flag_services
from .services.labels import LabelConflict

KIND_TITLES = {
    Flag.Kind.NOISY: "Noisy",
    Flag.Kind.HARD: "Hard",
    Flag.Kind.LOW_NORM: "Low quality",
    Flag.Kind.NEAR_DUPLICATE: "Near duplicates",
    Flag.Kind.DUPLICATE_IDENTITY: "Duplicate identities",
}
CLAIM_SIZE = 50
MAX_BULK = 500


# -- links ----------------------------------------------------------------------------------------

_MARKS = (2147480001, 2147480002)


@lru_cache(maxsize=32)
def _pattern(name: str, arity: int, prefix: str) -> str:
    # Reversed once, then formatted: a queue page links each card a dozen times, and {% url %}
    # was most of the page's time.
    url = reverse(name, args=list(_MARKS[:arity]))
    for i, mark in enumerate(_MARKS[:arity]):
        url = url.replace(str(mark), "{%d}" % i)
    return url


def _url(name: str, *ids) -> str:
    return _pattern(name, len(ids), get_script_prefix()).format(*(int(i) for i in ids))


def _thumbs(face_ids) -> list[str]:
    return [_url("face-thumbnail", i) for i in face_ids]


def _linked(cards, dataset_id: int):
    """Give each card the URLs its template shows."""
    search = _url("identity-search", dataset_id)
    for card in cards:
        flag = card.flag
        links = {"open": _url("flag-card", flag.pk), "decide": _url("flag-decide", flag.pk),
                 "refs_current": _thumbs(card.refs_current), "refs_suggested": _thumbs(card.refs_suggested)}
        if card.last_decision is not None:
            links["undo"] = _url("decision-undo", card.last_decision.pk)
            # What the card reloads after an undo: itself at queue size.
            links["reload"] = links["open"] + "?size=card"
        if card.current is not None:
            links["current"] = _url("identity-detail", card.current.pk)
        if card.suggested is not None:
            links["suggested"] = _url("identity-detail", card.suggested.pk)
        if card.is_pair:
            links["pair"] = _url("pair-detail", flag.identity_a_id, flag.identity_b_id) + f"?flag={flag.pk}"
        else:
            duplicate = card.removal_face if card.is_near_duplicate else None
            links["faces"] = [{"id": face.pk, "thumb": _url("face-thumbnail", face.pk),
                               "image": _url("face-image", face.pk), "css": card.thumb_css(face),
                               "removed": face.status == "removed", "duplicate": face == duplicate,
                               "name": face.identity.name if card.is_near_duplicate else ""}
                              for face in card.faces_shown]
            links["search"] = f"{search}?face={flag.face_id}"
        card.links = links
    return cards


def _kind_or_404(kind: str) -> str:
    if kind not in Flag.Kind.values:
        raise Http404("No such queue")
    return kind


def _round_number(request) -> int | None:
    raw = request.GET.get("round") or request.POST.get("round")
    if raw in (None, ""):
        return None
    number = positive_int(raw, limit=2**31 - 1)
    if number is None:
        raise Http404("No such round")
    return number


def _queue_url(dataset_id: int, kind: str, round_number: int | None = None, after: str | None = None) -> str:
    url = reverse("review-queue", args=[dataset_id, kind])
    params = [f"round={round_number}"] if round_number else []
    if after:
        params.append(f"after={after}")
    return url + ("?" + "&".join(params) if params else "")


def _same_dataset_identity(request, identity_id: int | None, dataset_id: int):
    """A relabel target or merge survivor from the request: 404 unless it is the flag's dataset's."""
    if identity_id is None:
        return None
    identity = access_identity(request.user, identity_id)
    if identity.dataset_id != dataset_id:
        raise Http404("No such identity")
    return identity


def _back(request, fallback: str):
    referer = request.META.get("HTTP_REFERER", "")
    if referer and url_has_allowed_host_and_scheme(referer, {request.get_host()}, request.is_secure()):
        return redirect(referer)
    return redirect(fallback)


def _wants_fragment(request) -> bool:
    return bool(request.htmx) and not request.htmx.history_restore_request


# -- the queue ------------------------------------------------------------------------------------

@require_GET
def review_queue(request, dataset_id: int, kind: str):
    dataset = access_dataset(request.user, dataset_id)
    kind = _kind_or_404(kind)
    number = _round_number(request)
    round_ = review_selectors.queue_round(dataset_id=dataset.pk, number=number)
    if number is not None and round_ is None:
        raise Http404("No such round")
    page = None
    if round_ is not None:
        try:
            page = review_selectors.review_queue(round_=round_, kind=kind, user=request.user,
                                                 after=request.GET.get("after"))
        except review_selectors.InvalidCursor as error:
            return HttpResponseBadRequest(str(error))
    context = {
        "dataset": dataset, "dataset_id": dataset.pk, "kind": kind, "kind_title": KIND_TITLES[kind],
        "kinds": list(KIND_TITLES.items()), "round": round_, "page": page,
        "cards": _linked(page.cards, dataset.pk) if page is not None else [],
        "next_url": _queue_url(dataset.pk, kind, round_.number, page.next_cursor)
        if page is not None and page.next_cursor else None,
        "claim_size": CLAIM_SIZE,
        "bulk_identities": _page_identities(page) if page is not None else [],
    }
    if _wants_fragment(request):
        return render(request, "review/_queue_page.html", context)
    return render(request, "review/queue.html", context)


def _page_identities(page) -> list:
    """Relabel targets offered before any search: the identities already on the page."""
    seen = {}
    for card in page.cards:
        if card.is_pair:
            continue
        for identity in (card.suggested, card.current):
            if identity is not None:
                seen.setdefault(identity.pk, identity)
    return sorted(seen.values(), key=lambda i: (i.name.lower(), i.pk))


@require_POST
def review_claim(request, dataset_id: int, kind: str):
    """Take a batch of the queue (or give it back with action=release), then show the queue."""
    dataset = access_dataset(request.user, dataset_id)
    kind = _kind_or_404(kind)
    round_ = review_selectors.queue_round(dataset_id=dataset.pk, number=_round_number(request))
    if round_ is None:
        raise Http404("No such round")
    if request.POST.get("action") == "release":
        count = flag_services.flags_release(round_id=round_.pk, kind=kind, user=request.user)
        messages.info(request, f"Released {count} flags.")
    else:
        size = positive_int(request.POST.get("size")) or CLAIM_SIZE
        count = flag_services.flags_claim(round_id=round_.pk, kind=kind, user=request.user, size=size)
        minutes = round(flag_services.claim_seconds() / 60)
        messages.success(request, f"You hold {count} flags for {minutes} minutes." if count
                         else "Nothing left to take: every open flag is held by someone.")
    return redirect(_queue_url(dataset.pk, kind, round_.number))


# -- one flag -------------------------------------------------------------------------------------

@require_GET
def flag_card(request, flag_id: int):
    flag = access_flag(request.user, flag_id)
    dataset = access_dataset(request.user, flag.round.dataset_id)
    # ?size=card: the queue's small card (a card reloading itself after an undo).
    large = not (_wants_fragment(request) and request.GET.get("size") == "card")
    references = review_selectors.PAGE_REFERENCES if large else review_selectors.CARD_REFERENCES
    card = review_selectors.flag_card(flag_id=flag.pk, dataset_id=dataset.pk, kind=flag.kind, references=references)
    _linked([card], dataset.pk)
    context = {"card": card, "dataset": dataset, "dataset_id": dataset.pk, "large": large,
               "kind_title": KIND_TITLES.get(flag.kind, flag.kind), "round": flag.round,
               "queue_url": _queue_url(dataset.pk, flag.kind, flag.round.number)}
    if _wants_fragment(request):
        return render(request, "review/_card.html", context)
    return render(request, "review/flag.html", context)


@require_POST
def flag_decide(request, flag_id: int):
    flag = access_flag(request.user, flag_id)
    dataset_id = flag.round.dataset_id
    action = request.POST.get("action", "")
    # A near-duplicate card's "Remove the copy under X" buttons name the copy to take out.
    remove_face = positive_int(request.POST.get("remove_face"))
    if remove_face is not None:
        action = "remove"
    if action not in flag_services.ACTIONS:
        return HttpResponseBadRequest("Unknown action")
    identity = _same_dataset_identity(request, positive_int(request.POST.get("identity_id")), dataset_id)
    survivor = _same_dataset_identity(request, positive_int(request.POST.get("survivor_id")), dataset_id)
    notice, level = None, messages.SUCCESS
    try:
        flag_services.flag_decide(flag_id=flag.pk, action=action, user=request.user,
                                  identity_id=identity.pk if identity else None,
                                  survivor_id=survivor.pk if survivor else None, remove_face_id=remove_face)
    except LabelConflict as conflict:
        notice, level = str(conflict), messages.WARNING
    except ValueError as error:
        notice, level = str(error), messages.ERROR
    if not _wants_fragment(request):
        messages.add_message(request, level, notice or "Decision saved.")
        return _back(request, reverse("flag-card", args=[flag.pk]))
    large = request.POST.get("large") == "1"
    references = review_selectors.PAGE_REFERENCES if large else review_selectors.CARD_REFERENCES
    card = review_selectors.flag_card(flag_id=flag.pk, dataset_id=dataset_id, references=references, kind=flag.kind)
    _linked([card], dataset_id)
    return render(request, "review/_decided.html", {
        "card": card, "dataset_id": dataset_id, "large": large,
        "notices": [(_level_tag(level), notice)] if notice else [],
    })


def _level_tag(level: int) -> str:
    return messages.DEFAULT_TAGS.get(level, "info")


# -- many flags -----------------------------------------------------------------------------------

@require_POST
def flags_bulk(request, dataset_id: int):
    dataset = access_dataset(request.user, dataset_id)
    action = request.POST.get("action", "")
    if action not in flag_services.ACTIONS:
        return HttpResponseBadRequest("Unknown action")
    ids = [i for i in (positive_int(v) for v in request.POST.getlist("ids")) if i is not None][:MAX_BULK]
    identity = _same_dataset_identity(request, positive_int(request.POST.get("identity_id")), dataset.pk)
    result, notices = None, []
    if not ids:
        notices.append(("warning", "Select some cards first."))
    else:
        try:
            result = flag_services.flags_decide_bulk(flag_ids=ids, action=action, user=request.user,
                                                     identity_id=identity.pk if identity else None,
                                                     dataset_id=dataset.pk)
        except ValueError as error:
            notices.append(("error", str(error)))
    if result is not None:
        notices.append(("success" if not result.conflicts else "warning", _bulk_summary(result)))
        notices += [("warning", f"Flag {flag_id}: {reason}") for flag_id, reason in result.conflicts[:5]]
    if not _wants_fragment(request):
        for tag, text in notices:
            messages.add_message(request, {v: k for k, v in messages.DEFAULT_TAGS.items()}[tag], text)
        return _back(request, reverse("dataset-detail", args=[dataset.pk]))
    kind = request.POST.get("kind") if request.POST.get("kind") in Flag.Kind.values else None
    cards = review_selectors.cards_for_flags(flag_ids=ids, dataset_id=dataset.pk, with_decision=True,
                                             kind=kind) if result else []
    return render(request, "review/_bulk_result.html", {
        "cards": _linked(cards, dataset.pk), "dataset_id": dataset.pk, "notices": notices, "result": result,
    })


def _bulk_summary(result) -> str:
    decided, conflicts = len(result.decided), len(result.conflicts)
    text = f"Decided {decided} flag{'s' if decided != 1 else ''}"
    if conflicts:
        text += f"; {conflicts} conflict{'s' if conflicts != 1 else ''} skipped"
    return text + "."
