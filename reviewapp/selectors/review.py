"""Reads for the review pages: a queue of flags and the face cards that show them.

A queue page costs the same few queries whatever its size: the reviewer's own batch (by the
claimed_by index), the flags with their faces and identities joined in (only the columns a card
shows), then every reference face of the page in one go (and the nearest identities that only
the evidence names, when there are any).
Pagination is a keyset on (score, id), walked down the partial index flag_open_queue: no
OFFSET and no COUNT(*), so page 1,000 costs what page 1 does. The cursor is opaque to clients.

A reviewer who holds a batch (services.flags.flags_claim) sees it first; flags that someone
else holds are skipped until the claim expires.
"""
from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import Count, F, Q, Window
from django.db.models.functions import RowNumber

from .. import evidence
from ..kinds import kind_title
from ..models import Decision, Face, Flag, Identity, Round
from ..rules import claim_cutoff, named_removal
from .undo import undo_blockers

PAGE_SIZE = 16
MAX_PAGE_SIZE = 100
# Reference faces per identity: on a queue card, on the flag page.
CARD_REFERENCES = 3
PAIR_REFERENCES = 4
PAGE_REFERENCES = 8
FACE_KINDS = (Flag.Kind.NOISY, Flag.Kind.HARD, Flag.Kind.LOW_NORM, Flag.Kind.NEAR_DUPLICATE)

_FLAG_COLUMNS = ("id", "round_id", "kind", "score", "evidence", "suggestion", "state", "claimed_by_id", "claimed_at",
                 "face", "other_face", "suggested_identity", "identity_a", "identity_b")
# What each joined relation contributes to a card: names, merged_into (a merged-away identity
# shows its survivor), and a face's file: path, bytes, source.
_FACE_COLUMNS = ("identity", "status", "path", "size", "source", "identity__name", "identity__merged_into",
                 "source__name")
_IDENTITY_COLUMNS = ("name", "merged_into")
_RELATION_COLUMNS = {
    "face__identity": tuple(f"face__{c}" for c in _FACE_COLUMNS),
    "other_face__identity": tuple(f"other_face__{c}" for c in _FACE_COLUMNS),
    "suggested_identity": tuple(f"suggested_identity__{c}" for c in _IDENTITY_COLUMNS),
    "identity_a": tuple(f"identity_a__{c}" for c in _IDENTITY_COLUMNS),
    "identity_b": tuple(f"identity_b__{c}" for c in _IDENTITY_COLUMNS),
}
# select_related paths per relation (a face brings its identity and its source).
_RELATION_JOINS = {"face__identity": ("face__identity", "face__source"),
                   "other_face__identity": ("other_face__identity", "other_face__source")}
# Only the joins a kind needs: planning a seven-way outer join costs Postgres more (10+ ms)
# than running it does.
_KIND_RELATIONS = {
    Flag.Kind.NOISY: ("face__identity", "suggested_identity"),
    Flag.Kind.HARD: ("face__identity", "suggested_identity"),
    Flag.Kind.LOW_NORM: ("face__identity", "suggested_identity"),
    Flag.Kind.NEAR_DUPLICATE: ("face__identity", "other_face__identity"),
    Flag.Kind.DUPLICATE_IDENTITY: ("identity_a", "identity_b"),
}
# An identity's size is counted up to this many active faces ("10,000+" beyond): a count is a
# walk of face_identity, bounded so that a card never waits on a huge identity.
SIZE_CAP = 10_000


class InvalidCursor(ValueError):
    pass


# -- rounds ---------------------------------------------------------------------------------------

def queue_round(*, dataset_id: int, number: int | None = None) -> Round | None:
    """The round whose flags a queue shows: the given number, else the latest published."""
    rounds = Round.objects.filter(dataset_id=dataset_id).only("id", "number", "status", "dataset_id",
                                                              "finished_at")
    if number is not None:
        return rounds.filter(number=number).first()
    return rounds.filter(status=Round.Status.PUBLISHED).order_by("-number").first()


# -- cursors --------------------------------------------------------------------------------------

def _cursor(phase: str, flag: Flag | None = None) -> str:
    # repr() keeps every bit of the float score, so the next page starts exactly after it.
    raw = phase if flag is None else f"{phase}{flag.score!r}:{flag.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, float | None, int | None]:
    """(phase, score, id) of a cursor; phase "c" walks the reviewer's own batch, "q" the queue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        phase, rest = raw[0], raw[1:]
        if phase not in "cq":
            raise ValueError(phase)
        if not rest:
            return phase, None, None
        score, flag_id = rest.rsplit(":", 1)
        score, flag_id = float(score), int(flag_id)
        if not math.isfinite(score) or flag_id < 1:
            raise ValueError(rest)
        return phase, score, flag_id
    except (ValueError, IndexError, UnicodeDecodeError, binascii.Error):
        raise InvalidCursor("This page link is not valid") from None


# -- cards ----------------------------------------------------------------------------------------

@dataclass
class FlagCard:
    """What a face card (or an identity pair card) shows."""

    flag: Flag
    face: Face | None = None
    other_face: Face | None = None
    current: Identity | None = None
    # The suggested identity, else the nearest identity named by the evidence.
    suggested: Identity | None = None
    # Where current or suggested was merged away: the identity the flag named (the card shows
    # the survivor, "merged from" this one).
    current_from: Identity | None = None
    suggested_from: Identity | None = None
    refs_current: list[int] = field(default_factory=list)
    refs_suggested: list[int] = field(default_factory=list)
    refs_other: list[int] = field(default_factory=list)
    # Active faces per identity id shown (at most SIZE_CAP).
    sizes: dict[int, int] = field(default_factory=dict)
    evidence_lines: list[str] = field(default_factory=list)
    last_decision: Decision | None = None
    # URLs the templates show, filled in by the view.
    links: dict = field(default_factory=dict)

    @property
    def score_text(self) -> str:
        return f"{self.flag.score:.2f}"

    @property
    def css(self) -> str:
        """The card's classes (one template variable instead of four conditions)."""
        classes = ["face-card", f"fc-kind-{self.flag.kind}"]
        if not self.is_open:
            classes.append("decided")
        if self.is_pair:
            classes.append("pair-card")
        return " ".join(classes)

    def thumb_css(self, face: Face) -> str:
        removed = "removed" if face.status == Face.Status.REMOVED else ""
        return " ".join(c for c in ("face-thumb", self.box, removed) if c)

    @property
    def evidence_short(self) -> list[str]:
        return self.evidence_lines[:2]

    @property
    def kind_label(self) -> str:
        return kind_title(self.flag.kind, 1)

    @property
    def raw_numbers(self) -> list[tuple[str, str]]:
        return evidence.raw_numbers(self.flag.evidence)

    def size_text(self, identity: Identity | None) -> str:
        """"12 faces" for an identity the card shows ("" when not counted)."""
        if identity is None or identity.pk not in self.sizes:
            return ""
        n = self.sizes[identity.pk]
        if n >= SIZE_CAP:
            return f"{SIZE_CAP:,}+ faces"
        return "1 face" if n == 1 else f"{n:,} faces"

    @property
    def is_merged_pair(self) -> bool:
        """Both sides of an identity pair are one identity now (a merge since the round)."""
        return self.is_pair and self.current is not None and self.current == self.suggested

    @property
    def is_pair(self) -> bool:
        return self.flag.face_id is None

    @property
    def is_near_duplicate(self) -> bool:
        return self.flag.kind == Flag.Kind.NEAR_DUPLICATE and self.other_face is not None

    @property
    def is_open(self) -> bool:
        return self.flag.state == Flag.State.OPEN

    @property
    def box(self) -> str:
        return {Flag.Kind.NOISY: "box-noisy", Flag.Kind.HARD: "box-hard"}.get(self.flag.kind, "")

    @property
    def removal_face(self) -> Face | None:
        """The copy a removal takes out by default (rules.named_removal); None for a
        picture under two identities whose right label the mining could not tell."""
        target = named_removal(self.flag)
        if self.other_face is not None and target == self.flag.other_face_id:
            return self.other_face
        return self.face if target == self.flag.face_id else None

    @property
    def survivor(self) -> Identity | None:
        """The identity a confirmed pair merge keeps (services.flags._merge's default)."""
        if not self.is_pair:
            return None
        return self.current if self.flag.suggested_identity_id == self.flag.identity_a_id else self.suggested

    @property
    def faces_shown(self) -> list[Face]:
        return [f for f in (self.face, self.other_face if self.is_near_duplicate else None) if f is not None]

    @property
    def confirm_label(self) -> str:
        flag = self.flag
        if self.is_pair or flag.suggestion == Flag.Suggestion.MERGE:
            return "Merge"
        if flag.suggestion == Flag.Suggestion.RELABEL:
            return "Accept relabel"
        if flag.suggestion == Flag.Suggestion.REMOVE:
            return "Remove duplicate" if self.is_near_duplicate else "Remove"
        return "Keep both" if self.is_near_duplicate else "Keep"

    @property
    def decided_label(self) -> str:
        """What the decided card says happened, in one phrase (its template adds "by" whom)."""
        action = getattr(self.last_decision, "action", None)
        if action == Decision.Action.KEEP and not self.is_pair:
            return "kept as is"
        if action == Decision.Action.KEEP and self.flag.state == Flag.State.REJECTED:
            return "kept apart"  # "different people"; a pair merged already is kept "as suggested"
        return _DONE.get(action) or self.state_label

    @property
    def state_label(self) -> str:
        return {Flag.State.CONFIRMED: "done as suggested", Flag.State.REJECTED: "kept as is",
                Flag.State.OVERRIDDEN: "decided otherwise",
                Flag.State.SUPERSEDED: "superseded by a later round"}.get(self.flag.state, "open")


_DONE = {Decision.Action.REMOVE: "removed", Decision.Action.LOW_QUALITY: "marked low quality",
         Decision.Action.RELABEL: "relabelled", Decision.Action.MERGE: "merged"}


def _card_flags(kind: str | None = None):
    """Flags with what their cards show joined in; for one kind only the joins it needs
    (a relation left out still loads lazily, so a wrong kind costs queries, not errors)."""
    relations = _KIND_RELATIONS.get(kind, tuple(_RELATION_COLUMNS))
    columns = _FLAG_COLUMNS + sum((_RELATION_COLUMNS[r] for r in relations), ())
    joins = sum((_RELATION_JOINS.get(r, (r,)) for r in relations), ())
    return Flag.objects.select_related(*joins).only(*columns)


def cards_for_flags(*, flag_ids, dataset_id: int, references: int = CARD_REFERENCES,
                    with_decision: bool = False, kind: str | None = None) -> list[FlagCard]:
    """Cards of the given flags of a dataset, in the order of flag_ids (missing ones left out).
    `kind`, when all of them are of one kind, trims the joins."""
    flag_ids = list(flag_ids)
    flags = {f.pk: f for f in _card_flags(kind).filter(pk__in=flag_ids, round__dataset_id=dataset_id)}
    cards = build_cards([flags[i] for i in flag_ids if i in flags], dataset_id=dataset_id, references=references)
    if with_decision:
        _attach_decisions(cards)
    return cards


def flag_card(*, flag_id: int, dataset_id: int, references: int = PAGE_REFERENCES,
              kind: str | None = None) -> FlagCard | None:
    cards = cards_for_flags(flag_ids=[flag_id], dataset_id=dataset_id, references=references, with_decision=True,
                            kind=kind)
    return cards[0] if cards else None


def decided_card(*, flag: Flag, decision: Decision) -> FlagCard:
    """The card of a flag this request just decided, for the answer that swaps in its decided
    state only (the faces, names and evidence stay as the page shows them). The decision's
    flag is the row the service locked and saved: its new state, with no query."""
    if Decision.flag.is_cached(decision) and decision.flag_id == flag.pk:
        flag.state = decision.flag.state
    else:
        flag.state = Flag.objects.filter(pk=flag.pk).values_list("state", flat=True).first() or flag.state
    decision.undoable = True  # just committed: nothing can have changed it since
    return FlagCard(flag=flag, last_decision=decision)


def _attach_decisions(cards: list[FlagCard]) -> None:
    decided = [c.flag.pk for c in cards if not c.is_open]
    if not decided:
        return
    latest = {}
    # The fields undo_blockers reads too, so that it costs no query per card.
    for decision in Decision.objects.filter(flag_id__in=decided).only(
            "id", "flag_id", "user_id", "actor", "action", "created_at", "face_id", "identity_id", "before",
            "after").order_by("id"):
        latest[decision.flag_id] = decision
    # Undo is shown only where it would work now (and only to the decision's author: the template).
    blockers = undo_blockers(list(latest.values()))
    for card in cards:
        card.last_decision = latest.get(card.flag.pk)
        if card.last_decision is not None:
            card.last_decision.undoable = blockers.get(card.last_decision.pk) is None


def build_cards(flags: list[Flag], *, dataset_id: int, references: int = CARD_REFERENCES) -> list[FlagCard]:
    """Cards for flags loaded with _card_flags(): at most three more queries for all of them
    (nearest identities named only by the evidence, survivors of merged-away identities, and
    the reference faces with the identities' sizes)."""
    nearest = _nearest_identities(flags, dataset_id)
    cards = []
    for flag in flags:
        card = FlagCard(flag=flag, face=flag.face, other_face=flag.other_face)
        if flag.face_id is not None:
            card.current = flag.face.identity
            card.suggested = flag.suggested_identity or nearest.get(_evidence_int(flag, "nearest_identity_id"))
        else:
            card.current, card.suggested = flag.identity_a, flag.identity_b
        cards.append(card)
    _follow_merges(cards, dataset_id)
    for card in cards:
        card.evidence_lines = evidence.evidence_lines(card.flag.evidence, kind=card.flag.kind, names=_names(card))
    _attach_references(cards, references)
    return cards


def _follow_merges(cards: list[FlagCard], dataset_id: int) -> None:
    """An identity merged away since the round shows as its survivor (merged_into: merges keep
    chains one step long, and a few steps are followed all the same), remembering the name the
    flag was about; a relabel or merge from the card then targets the survivor."""
    pending = {i.merged_into_id for c in cards for i in (c.current, c.suggested)
               if i is not None and i.merged_into_id is not None}
    survivors: dict[int, Identity] = {}
    for _ in range(3):
        pending -= survivors.keys()
        if not pending:
            break
        found = Identity.objects.filter(pk__in=pending, dataset_id=dataset_id).only("id", "name", "merged_into")
        survivors.update({i.pk: i for i in found})
        pending = {i.merged_into_id for i in survivors.values() if i.merged_into_id is not None}

    def alive(identity):
        seen = 0
        while identity is not None and identity.merged_into_id is not None and seen < 4:
            identity, seen = survivors.get(identity.merged_into_id), seen + 1
        return identity

    for card in cards:
        for side in ("current", "suggested"):
            identity = getattr(card, side)
            if identity is not None and identity.merged_into_id is not None:
                survivor = alive(identity)
                if survivor is not None:
                    setattr(card, side, survivor)
                    setattr(card, f"{side}_from", identity)


def _names(card: FlagCard) -> evidence.Names:
    removal = card.removal_face if card.is_near_duplicate else None
    return evidence.Names(
        current=card.current.name if card.current is not None else "",
        nearest=card.suggested.name if card.suggested is not None and not card.is_pair else "",
        other=(card.other_face.identity.name if card.other_face is not None
               else card.suggested.name if card.is_pair and card.suggested is not None else ""),
        removal=removal.identity.name if removal is not None and card.other_face is not None else "",
    )


def _evidence_int(flag: Flag, key: str) -> int | None:
    value = (flag.evidence or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _nearest_identities(flags: list[Flag], dataset_id: int) -> dict[int, Identity]:
    """Identities named as nearest by the evidence of flags that suggest none (hard flags)."""
    wanted = {_evidence_int(f, "nearest_identity_id") for f in flags
              if f.face_id is not None and f.suggested_identity_id is None}
    wanted.discard(None)
    if not wanted:
        return {}
    return {i.pk: i for i in Identity.objects.filter(pk__in=wanted, dataset_id=dataset_id).only(
        "id", "name", "merged_into")}


def _prototype_ids(flag: Flag) -> dict[str, list[int]]:
    """Reference (prototype) face ids the mining put in the evidence, per side. They are only
    used after checking that the face is active and still in that identity."""
    evidence = flag.evidence or {}
    refs = evidence.get("reference_face_ids")
    if not isinstance(refs, dict):
        return {}
    return {side: [i for i in ids if isinstance(i, int) and not isinstance(i, bool)][:PAGE_REFERENCES]
            for side, ids in refs.items() if isinstance(ids, list)}


def _attach_references(cards: list[FlagCard], per_identity: int) -> None:
    identity_ids, prototype_ids = set(), set()
    protos = [_prototype_ids(card.flag) for card in cards]
    for card, sides in zip(cards, protos):
        for identity in (card.current, card.suggested):
            if identity is not None:
                identity_ids.add(identity.pk)
        for ids in sides.values():
            prototype_ids.update(ids)
    if not identity_ids:
        return
    # A pair card is two columns wide: it shows a few more faces of each side.
    per_pair = max(per_identity, PAIR_REFERENCES)
    most = per_pair if any(card.is_pair for card in cards) else per_identity
    # One more than shown, so that the flagged face itself can be left out.
    first, active_prototypes, sizes = _reference_faces(sorted(identity_ids), sorted(prototype_ids), most + 1)

    def pick(identity, prototypes, exclude, count=per_identity):
        if identity is None:
            return []
        chosen = [i for i in prototypes if active_prototypes.get(i) == identity.pk and i not in exclude]
        chosen += [i for i in first.get(identity.pk, []) if i not in exclude and i not in chosen]
        return chosen[:count]

    for card, sides in zip(cards, protos):
        card.sizes = {i.pk: sizes.get(i.pk, 0) for i in (card.current, card.suggested) if i is not None}
        exclude = {card.flag.face_id, card.flag.other_face_id}
        if card.is_pair:
            card.refs_current = pick(card.current, sides.get("label", []), exclude, per_pair)
            card.refs_suggested = pick(card.suggested, sides.get("other_label", []), exclude, per_pair)
        else:
            card.refs_current = pick(card.current, sides.get("own", []), exclude)
            card.refs_suggested = pick(card.suggested, sides.get("nearest", []), exclude)


def _reference_faces(identity_ids: list[int], prototype_ids: list[int], limit: int):
    """({identity: its first `limit` active face ids}, {prototype face id: its identity if active},
    {identity: active faces, at most SIZE_CAP}), in one query."""
    first: dict[int, list[int]] = {}
    prototypes: dict[int, int] = {}
    sizes: dict[int, int] = {}
    if connection.vendor == "postgresql":
        table = Face._meta.db_table
        # LATERAL: a short walk of face_identity (identity, id) per identity, however large; the
        # sizes walk the same index, stopping at SIZE_CAP.
        sql = (
            f"SELECT f.id, f.identity_id, 'p' FROM {table} f WHERE f.id = ANY(%s) AND f.status = 'active' "
            f"UNION ALL SELECT r.id, r.identity_id, 'r' FROM unnest(%s::bigint[]) AS want(identity_id) "
            f"CROSS JOIN LATERAL (SELECT g.id, g.identity_id FROM {table} g WHERE g.identity_id = want.identity_id "
            f"AND g.status = 'active' ORDER BY g.id LIMIT %s) r "
            f"UNION ALL SELECT n.count, want.identity_id, 'n' FROM unnest(%s::bigint[]) AS want(identity_id) "
            f"CROSS JOIN LATERAL (SELECT count(*) AS count FROM (SELECT 1 FROM {table} h "
            f"WHERE h.identity_id = want.identity_id AND h.status = 'active' LIMIT %s) capped) n"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [prototype_ids, identity_ids, limit, identity_ids, SIZE_CAP])
            rows = cursor.fetchall()
    else:
        ranked = (
            Face.objects.filter(identity_id__in=identity_ids, status=Face.Status.ACTIVE)
            .annotate(rank=Window(RowNumber(), partition_by=[F("identity_id")], order_by=F("id").asc()))
            .filter(rank__lte=limit).order_by("identity_id", "id").values_list("id", "identity_id")
        )
        rows = [(i, identity, "r") for i, identity in ranked]
        rows += [(i, identity, "p") for i, identity in Face.objects.filter(
            pk__in=prototype_ids, status=Face.Status.ACTIVE).values_list("id", "identity_id")]
        rows += [(min(n, SIZE_CAP), identity, "n") for identity, n in Face.objects.filter(
            identity_id__in=identity_ids, status=Face.Status.ACTIVE).order_by().values_list("identity_id")
            .annotate(n=Count("pk"))]
    for value, identity_id, tag in rows:
        if tag == "p":
            prototypes[value] = identity_id
        elif tag == "r":
            first.setdefault(identity_id, []).append(value)
        else:
            sizes[identity_id] = value
    return first, prototypes, sizes


# -- the queue ------------------------------------------------------------------------------------

@dataclass
class QueuePage:
    cards: list[FlagCard]
    next_cursor: str | None
    # The reviewer's own batch on this page (first pages only).
    own_claimed: int = 0


def _open_flags(round_id: int, kind: str):
    return _card_flags(kind).filter(round_id=round_id, kind=kind, state=Flag.State.OPEN).order_by("-score", "-id")


def _after(flags, score, flag_id):
    if score is None:
        return flags
    # score <= s bounds the index scan; the exclude drops the ties already shown.
    return flags.filter(score__lte=score).exclude(score=score, id__gte=flag_id)


def review_queue(*, round_: Round, kind: str, user, after: str | None = None,
                 size: int = PAGE_SIZE, own_held: int | None = None) -> QueuePage:
    """One page of a queue: the reviewer's unexpired batch first, then the open flags nobody
    else holds, highest score first. Raises InvalidCursor for a tampered `after`. `own_held`:
    how many flags of this queue the reviewer holds, where the caller counted them already
    (0 skips looking for them: most reviewers hold none, and that query was a fifth of the page)."""
    size = max(1, min(int(size), MAX_PAGE_SIZE))
    phase, score, flag_id = decode_cursor(after) if after else ("c", None, None)
    cutoff = claim_cutoff()
    flags: list[Flag] = []
    if phase == "c" and own_held == 0:
        phase = "q"
    if phase == "c":
        mine = _after(_open_flags(round_.pk, kind).filter(claimed_by=user, claimed_at__gte=cutoff), score, flag_id)
        flags = list(mine[: size + 1])
        if len(flags) > size:
            return QueuePage(_cards(flags[:size], round_), _cursor("c", flags[size - 1]), own_claimed=size)
        phase, score, flag_id = "q", None, None
    own = len(flags)
    room = size - own
    others = _open_flags(round_.pk, kind).filter(Q(claimed_by__isnull=True) | Q(claimed_at__lt=cutoff))
    more = list(_after(others, score, flag_id)[: room + 1])
    next_cursor = None
    if len(more) > room:
        next_cursor = _cursor("q", more[room - 1] if room else None)
    return QueuePage(_cards(flags + more[:room], round_), next_cursor, own_claimed=own)


def _cards(flags: list[Flag], round_: Round) -> list[FlagCard]:
    return build_cards(flags, dataset_id=round_.dataset_id)
