"""Reads for the identity pages, duplicate pairs, relabel search and the history.

Every list is keyset-paginated on id (no OFFSET, no COUNT over a dataset's faces), and each
page costs a fixed number of queries however many rows it shows. Nearest identities come
from the latest published round's identity index (ml.api): its centres are written once, when
the round publishes, and searched with faiss (never a faces x identities matrix).
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import numpy as np
from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, IntegerField, OuterRef, Q, Subquery
from django_filters import FilterSet

from ml.api import IdentityIndex, face_query, identity_index_load

from ..evidence import main_numbers
from ..evidence import summary as evidence_summary
from ..kinds import KIND_ORDER, kind_title
from ..access import may_see
from ..models import Decision, Face, Flag, Identity, Round
from ..runs import round_key, round_run_folder, round_search_embeddings
from .undo import SHORT_REASONS, UNDOABLE, undo_blockers, undo_links

log = logging.getLogger("reviewapp.identities")

FACE_PAGE = 60
PAIR_FACES = 12
HISTORY_PAGE = 50
SEARCH_LIMIT = 20
# The box a flag draws on a face card (faceclean.css): noisy red, hard yellow.
BOX_CLASS = {Flag.Kind.NOISY: "box-noisy", Flag.Kind.HARD: "box-hard"}


# -- identities and their faces --------------------------------------------------------------------

def latest_published_round(*, dataset_id: int) -> Round | None:
    return (Round.objects.filter(dataset_id=dataset_id, status=Round.Status.PUBLISHED)
            .order_by("-number").first())


def _active_count(outer: str = "pk"):
    faces = (Face.objects.filter(identity_id=OuterRef(outer), status=Face.Status.ACTIVE).order_by()
             .values("identity_id").annotate(n=Count("pk")).values("n"))
    return Subquery(faces, output_field=IntegerField())


def _reference_face(outer: str = "pk"):
    faces = Face.objects.filter(identity_id=OuterRef(outer), status=Face.Status.ACTIVE).order_by("pk")
    return Subquery(faces.values("pk")[:1], output_field=IntegerField())


def identity_counts(*, identity: Identity) -> dict:
    """Active and removed faces of one identity (its face_identity index rows only)."""
    rows = dict(Face.objects.filter(identity=identity).order_by().values_list("status").annotate(n=Count("pk")))
    return {"active": rows.get(Face.Status.ACTIVE, 0), "removed": rows.get(Face.Status.REMOVED, 0)}


def identity_merged_from(*, identity: Identity, limit: int = 20) -> list[Identity]:
    return list(Identity.objects.filter(merged_into=identity).order_by("name")[:limit])


def identity_duplicate_flags(*, identity: Identity, round_: Round | None, limit: int = 5) -> list[Flag]:
    """Open duplicate-identity flags of `round_` (the latest published one) naming this
    identity, most likely first, with the other identity loaded (links to the pair page)."""
    if round_ is None:
        return []
    flags = list(Flag.objects.filter(round=round_, kind=Flag.Kind.DUPLICATE_IDENTITY, state=Flag.State.OPEN)
                 .filter(Q(identity_a=identity) | Q(identity_b=identity))
                 .select_related("identity_a", "identity_b").order_by("-score")[:limit])
    for flag in flags:
        flag.other = flag.identity_b if flag.identity_a_id == identity.pk else flag.identity_a
    return flags


@dataclass
class FaceCard:
    face: Face
    box: str = ""          # "box-noisy" / "box-hard" / ""
    flag_id: int | None = None
    flag_kind: str = ""
    flag_score: float | None = None


def _cards(faces: list[Face], round_: Round | None, face_filter: "FaceFilter | None" = None) -> list[FaceCard]:
    """Face cards with the box of each face's open flag in `round_` (one query); with a
    filter, the tag names the flag that matched it."""
    flags: dict[int, Flag] = {}
    if round_ is not None and faces:
        open_flags = (Flag.objects.filter(round=round_, state=Flag.State.OPEN, face_id__in=[f.pk for f in faces])
                      .order_by("-score").only("pk", "face_id", "kind", "score"))
        if face_filter and face_filter.kind and face_filter.kind != "any":
            open_flags = open_flags.filter(kind=face_filter.kind)
        for flag in open_flags:
            # The noisy box wins over the hard one when a face has both.
            current = flags.get(flag.face_id)
            if current is None or (flag.kind in BOX_CLASS and current.kind not in BOX_CLASS) \
                    or (flag.kind == Flag.Kind.NOISY and current.kind != Flag.Kind.NOISY):
                flags[flag.face_id] = flag
    cards = []
    for face in faces:
        flag = flags.get(face.pk)
        cards.append(FaceCard(face, BOX_CLASS.get(flag.kind, "") if flag else "",
                              flag.pk if flag else None, flag.kind if flag else "",
                              flag.score if flag else None))
    return cards


@dataclass
class FaceFilter:
    """The identity page's filter: faces with an open flag of the latest published round, of
    `kind` ("any" for any kind) scoring at least `min_score`. Neither set: every face."""
    kind: str = ""
    min_score: float | None = None

    def __bool__(self) -> bool:
        return bool(self.kind) or self.min_score is not None

    def as_query(self) -> dict:
        query = {"kind": self.kind} if self.kind else {}
        if self.min_score is not None:
            query["min_score"] = f"{self.min_score:g}"
        return query


def identity_faces_page(*, identity: Identity, round_: Round | None, after: int | None = None,
                        include_removed: bool = False, limit: int = FACE_PAGE,
                        face_filter: FaceFilter | None = None) -> tuple[list[FaceCard], int | None]:
    """One page of the identity's faces in id order after `after`, as cards boxed by the
    open flags of `round_` (the latest published one); and the cursor of the next page.
    With a filter, only faces with a matching open flag of `round_` (none without a round)."""
    faces = Face.objects.filter(identity=identity)
    if not include_removed:
        faces = faces.filter(status=Face.Status.ACTIVE)
    if face_filter:
        flags = Flag.objects.filter(round=round_, state=Flag.State.OPEN, face_id=OuterRef("pk"))
        if face_filter.kind and face_filter.kind != "any":
            flags = flags.filter(kind=face_filter.kind)
        if face_filter.min_score is not None:
            flags = flags.filter(score__gte=face_filter.min_score)
        faces = faces.filter(Exists(flags)) if round_ is not None else faces.none()
    if after is not None:
        faces = faces.filter(pk__gt=after)
    rows = list(faces.order_by("pk").only("pk", "status", "identity_id", "dataset_id")[:limit + 1])
    next_after = rows[limit - 1].pk if len(rows) > limit else None
    return _cards(rows[:limit], round_, face_filter), next_after


def face_cards(*, face_ids: list[int], dataset_id: int) -> list[FaceCard]:
    """Cards of the given faces (after a bulk action), boxed like on the identity page."""
    faces = list(Face.objects.filter(pk__in=face_ids, dataset_id=dataset_id).order_by("pk")
                 .only("pk", "status", "identity_id", "dataset_id"))
    return _cards(faces, latest_published_round(dataset_id=dataset_id))


@dataclass
class PairSide:
    identity: Identity
    counts: dict
    cards: list[FaceCard]


def pair_side(*, identity: Identity, round_: Round | None, limit: int = PAIR_FACES) -> PairSide:
    faces = list(Face.objects.filter(identity=identity, status=Face.Status.ACTIVE).order_by("pk")
                 .only("pk", "status", "identity_id", "dataset_id")[:limit])
    return PairSide(identity, identity_counts(identity=identity), _cards(faces, round_))


def duplicate_flag_evidence(flag: Flag) -> list[tuple[str, str]]:
    """The duplicate-identity flag's numbers, as (label, value) pairs for the pair page."""
    return main_numbers(flag.evidence, kind=flag.kind)


# -- name search -----------------------------------------------------------------------------------

def _options(ids: list[int], dataset_id: int, exclude: set[int]) -> list[Identity]:
    """The identities of `ids` in that order, merged ones replaced by their survivor, with a
    reference face and an active face count (two subqueries, one query)."""
    if not ids:
        return []
    parents = dict(Identity.objects.filter(pk__in=ids, dataset_id=dataset_id).values_list("pk", "merged_into_id"))
    ordered = []
    for pk in ids:
        if pk not in parents:
            continue
        root = parents[pk] or pk
        if root not in exclude and root not in ordered:
            ordered.append(root)
    rows = (Identity.objects.filter(pk__in=ordered, merged_into__isnull=True)
            .annotate(reference_face=_reference_face(), active_faces=_active_count()).in_bulk())
    return [rows[pk] for pk in ordered if pk in rows]


def identities_by_name(*, dataset_id: int, q: str, exclude: set[int] = frozenset(),
                       limit: int = SEARCH_LIMIT) -> list[Identity]:
    """Identities whose name contains q (any case): exact-case prefix matches first (a range
    scan of identity_dataset_name), then other matches, merged identities left out."""
    q = q.strip()
    if not q:
        return []
    base = Identity.objects.filter(dataset_id=dataset_id, merged_into__isnull=True).exclude(pk__in=exclude)
    prefix = list(base.filter(name__gte=q, name__lt=q + "\U0010ffff", name__startswith=q)
                  .order_by("name").values_list("pk", flat=True)[:limit])
    rest = []
    if len(prefix) < limit:
        rest = list(base.filter(name__icontains=q).exclude(pk__in=prefix).order_by("name")
                    .values_list("pk", flat=True)[:limit - len(prefix)])
    return _options(prefix + rest, dataset_id, set(exclude))


# -- nearest identities ----------------------------------------------------------------------------

def _round_index(round_: Round) -> IdentityIndex | None:
    """The round's identity index, written when the round published (services.round_pipeline);
    None when this machine holds no centres file of this round. Read only: a GET never writes."""
    return identity_index_load(round_run_folder(round_.pk).identity_centres, key=round_key(round_))


def _face_query(round_: Round, index: IdentityIndex, face_id: int) -> np.ndarray | None:
    row = index.face_row(face_id)
    return None if row is None else face_query(round_search_embeddings(round_), row)


def _flag_suggestions(round_: Round, face_id: int, class_identities: np.ndarray | None) -> list[int]:
    """Identities the round's flags on this face already name: the suggested one, then the
    evidence's nearest identity: an identity id (nearest_identity_id[s]) or, as mining writes
    it, a class index of the round (nearest_identity) mapped through the round's snapshot."""
    out = []
    flags = Flag.objects.filter(round=round_, face_id=face_id).order_by("-score").only(
        "suggested_identity_id", "evidence")
    for flag in flags:
        if flag.suggested_identity_id:
            out.append(flag.suggested_identity_id)
        evidence = flag.evidence or {}
        # Identity ids where the publisher wrote them, else the round's class index.
        out.extend(i for i in [evidence.get("nearest_identity_id"), *evidence.get("nearest_identity_ids", [])]
                   if isinstance(i, int))
        nearest = evidence.get("nearest_identity")
        if isinstance(nearest, int) and class_identities is not None and 0 <= nearest < len(class_identities):
            out.append(int(class_identities[nearest]))
    return out


@dataclass
class Nearest:
    identities: list[Identity]
    scores: dict[int, float]
    note: str = ""


def nearest_identities(*, dataset_id: int, face: Face | None = None, identity: Identity | None = None,
                       limit: int = SEARCH_LIMIT) -> Nearest:
    """Identities nearest to a face's embedding (or to an identity's centre) in the latest
    published round, nearest first, the face's or the identity's own left out."""
    round_ = latest_published_round(dataset_id=dataset_id)
    if round_ is None:
        return Nearest([], {}, "No published round yet: nearest identities need one.")
    exclude = {face.identity_id} if face is not None else {identity.pk}
    loaded = _round_index(round_)
    ranked: list[int] = []
    scores: dict[int, float] = {}
    if loaded is not None:
        query = _face_query(round_, loaded, face.pk) if face is not None else loaded.centre_of(identity.pk)
        if query is not None:
            for identity_id, similarity in loaded.nearest(query, limit + len(exclude) + 1):
                ranked.append(identity_id)
                scores.setdefault(identity_id, similarity)
    class_identities = loaded.identity_ids if loaded is not None else None
    suggested = _flag_suggestions(round_, face.pk, class_identities) if face is not None else []
    options = _options(suggested + ranked, dataset_id, exclude)[:limit]
    note = "" if options else f"Round {round_.number} holds no embedding for this {'face' if face else 'identity'}."
    return Nearest(options, scores, note)


# -- history ---------------------------------------------------------------------------------------

def _evidence_summary(evidence: dict) -> str:
    # The review cards' wording (reviewapp.evidence), first sentence and main numbers.
    return evidence_summary(evidence)


@dataclass
class HistoryRow:
    decision: Decision
    from_identity: Identity | None = None
    to_identity: Identity | None = None
    evidence_summary: str = ""
    undone: bool = False
    reversal_of_undo: bool = False
    undoable: bool = False        # the viewer's own, and undo would work now
    undo_blocked: str = ""        # why the viewer's own decision cannot be undone now
    batch_undoable: bool = False  # first row of its batch on the page, and Undo batch would undo some
    batch_size: int = 0           # decisions in its batch (the undo rows of a batch undo not counted)

    @property
    def undo_blocked_short(self) -> str:
        return SHORT_REASONS.get(self.undo_blocked, self.undo_blocked)


def history_page(*, dataset_id: int, filters: FilterSet, before: int | None = None,
                 limit: int = HISTORY_PAGE, user=None) -> tuple[list[HistoryRow], int | None]:
    """Decisions newest first (decision_dataset index), before the id `before`, filtered by
    `filters` (the page's, api.filters.HistoryFilter); each row says whether `user` can undo it
    now, and the first row of each batch whether `user` can still undo some of the batch (a few
    queries for the page, however deep)."""
    filters.is_valid()  # an unreadable filter is left out, not refused
    rows = filters.filter_queryset(Decision.objects.filter(dataset_id=dataset_id))
    if before is not None:
        rows = rows.filter(pk__lt=before)
    decisions = list(rows.select_related("round", "identity", "face").order_by("-pk")[:limit + 1])
    next_before = decisions[limit - 1].pk if len(decisions) > limit else None
    decisions = decisions[:limit]

    wanted: set[int] = set()
    for d in decisions:
        for state in (d.before, d.after):
            for key in ("identity", "merged_into"):
                if isinstance(state.get(key), int):
                    wanted.add(state[key])
    names = Identity.objects.in_bulk(list(wanted)) if wanted else {}
    undone, reversals = undo_links(decisions) if decisions else (set(), {})
    blockers = undo_blockers([d for d in decisions if user is not None and d.user_id == user.pk])
    batches = {d.batch for d in decisions if d.batch}
    sizes = dict(Decision.objects.filter(dataset_id=dataset_id, batch__in=batches).exclude(action=Decision.Action.UNDO)
                 .order_by().values_list("batch").annotate(n=Count("pk"))) if batches else {}
    # A batch of one decision is that decision: its own Undo says it all.
    open_batches = batches_undoable(dataset_id=dataset_id, user=user,
                                    batches={b for b in batches if sizes.get(b, 0) > 1})
    out, seen_batches = [], set()
    for d in decisions:
        row = HistoryRow(d, evidence_summary=_evidence_summary(d.evidence), undone=d.pk in undone,
                         reversal_of_undo=d.pk in reversals)
        if d.pk in blockers:
            row.undoable = blockers[d.pk] is None
            # Why not, for the kinds of decision undo reverses (an import or an undo goes without saying).
            row.undo_blocked = (blockers[d.pk] or "") if d.action in UNDOABLE and not row.undone else ""
        row.batch_size = sizes.get(d.batch, 0) if d.batch else 0
        if d.batch and d.batch not in seen_batches:
            seen_batches.add(d.batch)
            row.batch_undoable = d.batch in open_batches
        if d.action == Decision.Action.MERGE:
            row.to_identity = names.get(d.after.get("merged_into"))
        elif d.face_id is not None:
            row.from_identity = names.get(d.before.get("identity"))
            row.to_identity = names.get(d.after.get("identity"))
        out.append(row)
    return out, next_before


def batches_undoable(*, dataset_id: int, batches: set, user, sample: int = 500) -> set:
    """The batches among `batches` in which `user` can still undo at least one decision. Exact
    for the first `sample` not-undone decisions of theirs; a batch larger than that counts as
    undoable when any of its decisions is not undone yet (batch undo reports the rest)."""
    if not batches or user is None or not user.is_authenticated:
        return set()
    rows = list(Decision.objects.filter(dataset_id=dataset_id, batch__in=batches, user=user, undone_by__isnull=True)
                .exclude(action=Decision.Action.UNDO).order_by("-pk")[:sample + 1])
    if len(rows) > sample:
        return {d.batch for d in rows}
    blockers = undo_blockers(rows)
    return {d.batch for d in rows if blockers[d.pk] is None}


def history_filter_choices(*, dataset_id: int) -> dict:
    """The reviewers (members and staff who decided here), round numbers and actions."""
    users = get_user_model().objects.filter(
        may_see(dataset_id)
    ).order_by("username").only("pk", "username")[:500]
    rounds = list(Round.objects.filter(dataset_id=dataset_id).order_by("-number").values_list("number", flat=True))
    return {"users": list(users), "rounds": rounds, "actions": Decision.Action.choices}


# -- whole pages: what each view renders, from one call ----------------------------------------

def identity_page(*, identity: Identity, after: int | None = None, include_removed: bool = False,
                  full: bool = True, face_filter: FaceFilter | None = None) -> dict:
    """The identity page's context: a page of face cards (filtered), and with `full` the
    header (counts, merges, possible duplicates, the filter's kinds)."""
    round_ = latest_published_round(dataset_id=identity.dataset_id)
    cards, next_after = identity_faces_page(identity=identity, round_=round_, after=after,
                                            include_removed=include_removed, face_filter=face_filter)
    page = {"cards": cards, "next_after": next_after, "face_filter": face_filter or FaceFilter(),
            "latest_round": round_}
    if full:
        page.update(counts=identity_counts(identity=identity), merged_from=identity_merged_from(identity=identity),
                    duplicates=identity_duplicate_flags(identity=identity, round_=round_), dataset=identity.dataset,
                    kinds=[(kind, kind_title(kind, 2)) for kind in KIND_ORDER if kind != Flag.Kind.DUPLICATE_IDENTITY])
    return page


def identity_bulk_updates(*, identity: Identity, face_ids: list[int], include_removed: bool) -> dict:
    """After a bulk action: each touched face's card and whether it still belongs on the
    page (same identity, and active unless removed faces are shown), and the new counts."""
    cards = face_cards(face_ids=face_ids, dataset_id=identity.dataset_id)
    updates = [(card, card.face.identity_id == identity.pk
                and (include_removed or card.face.status == Face.Status.ACTIVE)) for card in cards]
    return {"updates": updates, "counts": identity_counts(identity=identity)}


def pair_page(*, a: Identity, b: Identity, flag: Flag | None) -> dict:
    """Two identities side by side; the survivor offered first is the flag's suggestion,
    else the identity with more faces."""
    round_ = latest_published_round(dataset_id=a.dataset_id)
    side_a, side_b = pair_side(identity=a, round_=round_), pair_side(identity=b, round_=round_)
    suggested = flag.suggested_identity_id if flag and flag.suggested_identity_id in (a.pk, b.pk) else None
    return {
        "a": side_a, "b": side_b, "flag": flag, "dataset": a.dataset,
        "default_survivor": suggested or (a.pk if side_a.counts["active"] >= side_b.counts["active"] else b.pk),
        "evidence": duplicate_flag_evidence(flag) if flag else [],
        "merged": a.merged_into_id is not None or b.merged_into_id is not None,
        "flag_open": flag is None or flag.state == Flag.State.OPEN,
    }


def batch_summary(*, dataset_id: int, batch: str, user) -> dict:
    """The batch filter's line: how many decisions, who took them, and whether the user can
    still undo some of them."""
    rows = Decision.objects.filter(dataset_id=dataset_id, batch=batch).exclude(action=Decision.Action.UNDO)
    actors = list(rows.order_by().values_list("actor", flat=True).distinct()[:5])
    return {"id": batch, "count": rows.count(), "actors": actors,
            "undoable": bool(batches_undoable(dataset_id=dataset_id, batches={uuid.UUID(batch)}, user=user))}


def history_view(*, dataset, user, filters: FilterSet, before: int | None = None,
                 with_choices: bool = False) -> dict:
    """The history's context: a page of rows (each saying whether the user can undo it now),
    with a batch filter the batch's own line, and with `with_choices` the filter form's options."""
    rows, next_before = history_page(dataset_id=dataset.pk, filters=filters, before=before, user=user)
    view = {"dataset": dataset, "rows": rows, "next_before": next_before, "filters": filters}
    if filters["batch"] and before is None:
        view["batch"] = batch_summary(dataset_id=dataset.pk, batch=filters["batch"], user=user)
    if with_choices:
        view["choices"] = history_filter_choices(dataset_id=dataset.pk)
    return view

