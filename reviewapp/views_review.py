"""Review queues, face cards and flag decisions.

Decisions come as htmx POSTs and answer with the card in its new state; a conflict (another
reviewer was first) answers 200 with the card as it now stands and a message swapped out of
band into #messages, never an error page. Without htmx the same POSTs redirect back with a
flash message, so the pages work without JavaScript too.
"""
from functools import lru_cache
from html import escape

from django.contrib import messages
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import get_script_prefix, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET, require_POST

from .access import access_dataset, access_flag, access_identity
from .forms import ClaimForm, FlagDecideForm, FlagsBulkForm, QueueForm, first_error
from .kinds import kind_choices, kind_title
from .models import Dataset, Flag
from .selectors.review import (
    CARD_REFERENCES, PAGE_REFERENCES, InvalidCursor, cards_for_flags, decided_card, flag_card, queue_round,
    review_queue,
)
from .selectors.team import flag_hold, queue_holds
from .rules import claim_seconds
from .services.flags import flag_decide, flags_claim, flags_decide_bulk, flags_release
from .services.images import image_pixel_size
from .services.labels import LabelConflict

CLAIM_SIZE = 50


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


# Bits of card HTML built here rather than in the template: a queue page shows 16 cards with
# up to eight reference faces each, and template loops and tags cost more than the rest of the
# card. Every text from the data goes through escape(); URLs are built from integer ids.
_REF = '<span class="face-thumb small"><img src="{}" alt="" loading="lazy" width="64" height="64"></span>'
_NO_REFS = SafeString('<span class="fc-none">no other faces</span>')


def _refs(thumb: str, face_ids) -> SafeString:
    """A row of reference thumbnails (thumb: the thumbnail URL pattern)."""
    if not face_ids:
        return _NO_REFS
    return SafeString("".join(_REF.format(thumb.format(i)) for i in face_ids))


def _bytes(size) -> str:
    if not isinstance(size, int) or size < 0:
        return ""
    for unit, scale in (("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def middle_truncated(text: str, keep: int = 44) -> str:
    """A long path cut in its middle: the folder it starts with and the file name both show."""
    if len(text) <= keep:
        return text
    head = keep * 2 // 5
    return text[:head] + "…" + text[-(keep - head - 1):]


def _face_file(face, pixels=None) -> SafeString:
    """"path · 12.3 KB · 250×250 px · source X", the path isolated and cut in the middle with
    the whole of it in the title."""
    details = [_bytes(face.size)]
    if pixels:
        details.append(f"{pixels[0]}×{pixels[1]} px")
    details.append(f"source {face.source.name}")
    return SafeString(f'<bdi class="fc-path" title="{escape(face.path)}">{escape(middle_truncated(face.path))}</bdi>'
                      f' · {escape(" · ".join(d for d in details if d))}')


def _who(identity, merged_from, size: str) -> SafeString:
    """"name (merged from X) · 12 faces", the names isolated."""
    if identity is None:
        return SafeString("")
    html = f"<bdi>{escape(identity.name)}</bdi>"
    if merged_from is not None:
        html += f' <span class="fc-merged">(merged from <bdi>{escape(merged_from.name)}</bdi>)</span>'
    if size:
        html += f' <span class="fc-size">· {escape(size)}</span>'
    return SafeString(html)


def _figures(faces: list[dict], large: bool) -> SafeString:
    """The flagged face (a near duplicate's two copies): the thumbnail on a queue card, the
    whole image on the flag page; a copy's identity or "removed" under it."""
    html = []
    for face in faces:
        if large:
            html.append(f'<figure><a class="{face["css"]} large" href="{face["image"]}" tabindex="-1" title="full image">'
                        f'<img src="{face["image"]}" alt="the flagged face" width="224" height="224"></a>')
        else:
            html.append(f'<figure><span class="{face["css"]}"><img src="{face["thumb"]}" alt="the flagged face" '
                        f'width="112" height="112"></span>')
        if face["name"]:
            mark = "<b>duplicate</b> · " if face["duplicate"] else ""
            html.append(f'<figcaption>{mark}<bdi>{escape(face["name"])}</bdi></figcaption>')
        elif face["removed"]:
            html.append("<figcaption><b>removed</b></figcaption>")
        html.append("</figure>")
    return SafeString("".join(html))


def _raw(card) -> SafeString:
    return SafeString("".join(f"<dt>{escape(label)}</dt><dd>{escape(value)}</dd>"
                              for label, value in card.raw_numbers))


def _linked(cards, dataset_id: int, pixels: dict | None = None, large: bool = False):
    """Give each card the URLs and the ready-made bits of HTML its template shows. `large`: the
    flag page's card (whole images, every line of evidence); `pixels` ({face id: (w, h)}) where
    the page read the images' sizes."""
    prefix = get_script_prefix()
    thumb, image = _pattern("face-thumbnail", 1, prefix), _pattern("face-image", 1, prefix)
    opened, decide, undo = (_pattern(n, 1, prefix) for n in ("flag-card", "flag-decide", "decision-undo"))
    identity = _pattern("identity-detail", 1, prefix)
    search = _url("identity-search", dataset_id)
    pixels = pixels or {}
    for card in cards:
        flag = card.flag
        links = {"open": opened.format(flag.pk), "decide": decide.format(flag.pk),
                 "refs_current": _refs(thumb, card.refs_current), "refs_suggested": _refs(thumb, card.refs_suggested),
                 "who_current": _who(card.current, card.current_from, card.size_text(card.current)),
                 "who_suggested": _who(card.suggested, card.suggested_from, card.size_text(card.suggested)),
                 "raw": _raw(card),
                 "evidence": SafeString("".join(f"<p>{escape(line)}</p>" for line in (
                     card.evidence_lines if large else card.evidence_short)))}
        if card.last_decision is not None:
            links["undo"] = undo.format(card.last_decision.pk)
            # What the card reloads after an undo: itself at queue size.
            links["reload"] = links["open"] + "?size=card"
        if card.current is not None:
            links["current"] = identity.format(card.current.pk)
        if card.suggested is not None:
            links["suggested"] = identity.format(card.suggested.pk)
        if card.is_pair:
            links["pair"] = _url("pair-detail", flag.identity_a_id, flag.identity_b_id) + f"?flag={flag.pk}"
        else:
            duplicate = card.removal_face if card.is_near_duplicate else None
            links["faces"] = [{"id": face.pk, "thumb": thumb.format(face.pk),
                               "image": image.format(face.pk), "css": card.thumb_css(face),
                               "removed": face.status == "removed", "duplicate": face == duplicate,
                               "name": face.identity.name if card.is_near_duplicate else "",
                               "file": _face_file(face, pixels.get(face.pk))}
                              for face in card.faces_shown]
            links["figures"] = _figures(links["faces"], large)
            links["files"] = SafeString("".join(f"<span>{f['file']}</span>" for f in links["faces"]))
            links["search"] = f"{search}?face={flag.face_id}"
        card.links = links
    return cards


def _kind_or_404(kind: str) -> str:
    if kind not in Flag.Kind.values:
        raise Http404("No such queue")
    return kind


def _round_number(params) -> int | None:
    """The round number ?round= (or a claim form) names; None for the latest published round."""
    form = QueueForm(params)
    if not form.is_valid():
        raise Http404("No such round")
    return form.cleaned_data["round"]


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
def review_queue_page(request, dataset_id: int, kind: str):
    dataset = access_dataset(request.user, dataset_id)
    kind = _kind_or_404(kind)
    number = _round_number(request.GET)
    round_ = queue_round(dataset_id=dataset.pk, number=number)
    if number is not None and round_ is None:
        raise Http404("No such round")
    page = holds = None
    if round_ is not None:
        # The whole page shows who holds flags here; its count of the reviewer's own spares the
        # selector looking for them. A "Load more" fragment shows no holds.
        if not _wants_fragment(request):
            holds = queue_holds(round_id=round_.pk, kind=kind, user=request.user)
        try:
            page = review_queue(round_=round_, kind=kind, user=request.user, after=request.GET.get("after"),
                                own_held=holds.own_count if holds else None)
        except InvalidCursor as error:
            return HttpResponseBadRequest(str(error))
    context = {
        "dataset": dataset, "dataset_id": dataset.pk, "kind": kind, "kind_title": kind_title(kind),
        "kinds": _tabs(dataset.pk, round_), "round": round_, "page": page, "urls": _toolbar_urls(dataset.pk, kind),
        "cards": _linked(page.cards, dataset.pk) if page is not None else [],
        "next_url": _queue_url(dataset.pk, kind, round_.number, page.next_cursor)
        if page is not None and page.next_cursor else None,
        "claim_size": CLAIM_SIZE, "holds": holds,
        "bulk_identities": _page_identities(page) if page is not None else [],
    }
    if _wants_fragment(request):
        return render(request, "review/_queue_page.html", context)
    return render(request, "review/queue.html", context)


def _tabs(dataset_id: int, round_) -> list[tuple[str, str, str]]:
    """(kind, plural title, URL) of every queue, in the one order all pages use."""
    query = f"?round={round_.number}" if round_ is not None else ""
    queue = _pattern("review-queue", 2, get_script_prefix())
    return [(kind, title, queue.format(dataset_id, kind) + query)
            for kind, title in kind_choices()]


def _toolbar_urls(dataset_id: int, kind: str) -> dict:
    claim = _pattern("review-claim", 2, get_script_prefix()).format(dataset_id, kind)
    return {"claim": claim, "bulk": _url("flags-bulk", dataset_id),
            "search": _url("identity-search", dataset_id)}


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
def review_claim_post(request, dataset_id: int, kind: str):
    """Take a batch of the queue (or give it back with action=release), then show the queue."""
    dataset = access_dataset(request.user, dataset_id)
    kind = _kind_or_404(kind)
    number = _round_number(request.GET) or _round_number(request.POST)
    round_ = queue_round(dataset_id=dataset.pk, number=number)
    if round_ is None:
        raise Http404("No such round")
    form = ClaimForm(request.POST)
    form.is_valid()  # always: an unreadable size is the default one
    if form.releasing:
        count = flags_release(round_id=round_.pk, kind=kind, user=request.user)
        messages.info(request, f"Released {count} flag{pluralize(count)}.")
    else:
        size = form.cleaned_data["size"] or CLAIM_SIZE
        count = flags_claim(round_id=round_.pk, kind=kind, user=request.user, size=size)
        minutes = round(claim_seconds() / 60)
        messages.success(request, f"You hold {count} flag{pluralize(count)} for {minutes} minute{pluralize(minutes)}."
                         if count
                         else "Nothing left to take: every open flag is held by someone.")
    return redirect(_queue_url(dataset.pk, kind, round_.number))


# -- one flag -------------------------------------------------------------------------------------

@require_GET
def flag_card_page(request, flag_id: int):
    flag = access_flag(request.user, flag_id)
    dataset = access_dataset(request.user, flag.round.dataset_id)
    # ?size=card: the queue's small card (a card reloading itself after an undo).
    large = not (_wants_fragment(request) and request.GET.get("size") == "card")
    references = PAGE_REFERENCES if large else CARD_REFERENCES
    card = flag_card(flag_id=flag.pk, dataset_id=dataset.pk, kind=flag.kind, references=references)
    # Pixel sizes on the flag page only: reading image headers on every queue card would cost
    # a file open per card.
    pixels = {face.pk: image_pixel_size(face=face) for face in card.faces_shown} if large else None
    _linked([card], dataset.pk, pixels, large=large)
    # Another reviewer's hold: the page's banner names it; where claims are enforced the card's
    # buttons show disabled too.
    hold = flag_hold(flag=card.flag, user=request.user) if large else None
    context = {"card": card, "dataset": dataset, "dataset_id": dataset.pk, "large": large, "hold": hold,
               "held": hold if dataset.claims == Dataset.Claims.ENFORCED else None,
               "kind_title": kind_title(flag.kind, 1), "queue_title": kind_title(flag.kind), "round": flag.round,
               "queue_url": _queue_url(dataset.pk, flag.kind, flag.round.number)}
    if _wants_fragment(request):
        return render(request, "review/_card.html", context)
    return render(request, "review/flag.html", context)


@require_POST
def flag_decide_post(request, flag_id: int):
    flag = access_flag(request.user, flag_id)
    dataset_id = flag.round.dataset_id
    form = FlagDecideForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest(first_error(form))
    data = form.cleaned_data
    identity = _same_dataset_identity(request, data["identity_id"], dataset_id)
    survivor = _same_dataset_identity(request, data["survivor_id"], dataset_id)
    notice, level, decision, held = None, messages.SUCCESS, None, None
    large = data["large"]
    try:
        decision = flag_decide(flag_id=flag.pk, action=data["action"], user=request.user,
                               identity_id=identity.pk if identity else None,
                               survivor_id=survivor.pk if survivor else None, remove_face_id=data["remove_face"])
    except LabelConflict as conflict:
        notice, level = str(conflict), messages.WARNING
        # Refused for an enforced hold on the flag page: the page says so (the holds banner, the
        # card's disabled form), so no message repeats it.
        if large and "held_by" in conflict.current:
            held = flag_hold(flag=flag, user=request.user)
    except ValueError as error:
        notice, level = str(error), messages.ERROR
    if not _wants_fragment(request):
        if not held:
            messages.add_message(request, level, notice or "Decision saved.")
        return _back(request, reverse("flag-card", args=[flag.pk]))
    if decision is not None:
        # Decided here: only the card's head and foot change, the rest stays on the page.
        card = decided_card(flag=flag, decision=decision)
        card.links = _decided_links(card)
    else:
        # Refused or beaten to it: the card as it stands now, whatever changed.
        references = PAGE_REFERENCES if large else CARD_REFERENCES
        card = flag_card(flag_id=flag.pk, dataset_id=dataset_id, references=references, kind=flag.kind)
        _linked([card], dataset_id, large=large)
    return render(request, "review/_decided.html", {
        "card": card, "dataset_id": dataset_id, "large": large, "kept": decision is not None, "held": held,
        "notices": [(_level_tag(level), notice)] if notice and not held else [],
    })


def _decided_links(card) -> dict:
    opened = _url("flag-card", card.flag.pk)
    return {"open": opened, "reload": opened + "?size=card", "undo": _url("decision-undo", card.last_decision.pk)}


def _level_tag(level: int) -> str:
    return messages.DEFAULT_TAGS.get(level, "info")


# -- many flags -----------------------------------------------------------------------------------

@require_POST
def flags_bulk_post(request, dataset_id: int):
    dataset = access_dataset(request.user, dataset_id)
    form = FlagsBulkForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest(first_error(form))
    ids = form.cleaned_data["ids"]
    identity = _same_dataset_identity(request, form.cleaned_data["identity_id"], dataset.pk)
    result, notices = None, []
    if not ids:
        notices.append(("warning", "Select some cards first."))
    else:
        try:
            result = flags_decide_bulk(flag_ids=ids, action=form.cleaned_data["action"], user=request.user,
                                       identity_id=identity.pk if identity else None, dataset_id=dataset.pk)
        except ValueError as error:
            notices.append(("error", str(error)))
    if result is not None:
        notices.append(("success" if not result.conflicts else "warning", _bulk_summary(result)))
        notices += [("warning", f"Flag {flag_id}: {reason}") for flag_id, reason in result.conflicts[:5]]
    if not _wants_fragment(request):
        for tag, text in notices:
            messages.add_message(request, {v: k for k, v in messages.DEFAULT_TAGS.items()}[tag], text)
        return _back(request, reverse("dataset-detail", args=[dataset.pk]))
    cards = cards_for_flags(flag_ids=ids, dataset_id=dataset.pk, with_decision=True,
                            kind=form.cleaned_data["kind"]) if result else []
    return render(request, "review/_bulk_result.html", {
        "cards": _linked(cards, dataset.pk), "dataset_id": dataset.pk, "notices": notices, "result": result,
    })


def _bulk_summary(result) -> str:
    decided, conflicts = len(result.decided), len(result.conflicts)
    text = f"Decided {decided} flag{'s' if decided != 1 else ''}"
    if conflicts:
        text += f"; {conflicts} conflict{'s' if conflicts != 1 else ''} skipped"
    return text + "."
