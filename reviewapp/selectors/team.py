"""Reads for the team view: who holds which flags, throughput per reviewer, double-review
agreement, and the second-look and disagreement queues. Never writes.
"""
from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Exists, Min, OuterRef, Q
from django.utils import timezone

from ..kinds import KIND_ORDER, kind_title
from ..models import Dataset, Decision, Face, Flag, Identity, SecondReview
from ..rules import claim_cutoff, claim_expires_at
from . import review as review_selectors

# Decisions that are a reviewer's review work (not imports, role or setting changes, undos).
REVIEW_ACTIONS = (Decision.Action.REMOVE, Decision.Action.LOW_QUALITY, Decision.Action.RELABEL,
                  Decision.Action.MERGE, Decision.Action.KEEP)
# Below this many answers agreement and kappa say "not enough answers".
MIN_ANSWERS = 10
SECOND_LOOK_PAGE = 6


def _minutes(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60))


# -- holds ----------------------------------------------------------------------------------------

@dataclass
class Holder:
    name: str
    count: int
    oldest_minutes: int  # how long ago the oldest of the holds was taken
    expires_minutes: int  # when the oldest runs out
    is_you: bool


@dataclass
class Holds:
    holders: list[Holder] = field(default_factory=list)
    own_count: int = 0

    @property
    def total(self) -> int:
        return sum(h.count for h in self.holders)

    @property
    def others(self) -> list[Holder]:
        return [h for h in self.holders if not h.is_you]


def queue_holds(*, round_id: int, kind: str, user, now=None) -> Holds:
    """The unexpired holds on one queue (round + kind), grouped by reviewer, largest first: one
    grouped query over the open flags that someone claimed."""
    now = now or timezone.now()
    rows = (Flag.objects.filter(round_id=round_id, kind=kind, state=Flag.State.OPEN, claimed_by__isnull=False,
                                claimed_at__gte=claim_cutoff(now))
            .values("claimed_by", "claimed_by__username").annotate(count=Count("id"), oldest=Min("claimed_at"))
            .order_by("-count", "claimed_by__username"))
    holds = Holds()
    for row in rows:
        is_you = row["claimed_by"] == getattr(user, "pk", None)
        holds.holders.append(Holder(
            name=row["claimed_by__username"], count=row["count"], is_you=is_you,
            oldest_minutes=int((now - row["oldest"]).total_seconds() // 60),
            expires_minutes=_minutes((claim_expires_at(row["oldest"]) - now).total_seconds())))
        if is_you:
            holds.own_count = row["count"]
    return holds


@dataclass
class FlagHold:
    name: str
    minutes: int
    until: object


def flag_hold(*, flag: Flag, user, now=None) -> FlagHold | None:
    """Who else holds this open flag and for how long; None when nobody else does."""
    now = now or timezone.now()
    if (flag.state != Flag.State.OPEN or flag.claimed_by_id is None or flag.claimed_at is None
            or flag.claimed_by_id == getattr(user, "pk", None)):
        return None
    expires = claim_expires_at(flag.claimed_at)
    if expires <= now:
        return None
    name = get_user_model().objects.filter(pk=flag.claimed_by_id).values_list("username", flat=True).first()
    return FlagHold(name=name or "another reviewer", minutes=_minutes((expires - now).total_seconds()), until=expires)


def dataset_holds(*, dataset_id: int, user, now=None) -> list[tuple[str, str, Holds]]:
    """(kind, title, holds) for every kind of the latest published round that someone holds."""
    round_ = review_selectors.queue_round(dataset_id=dataset_id)
    if round_ is None:
        return []
    found = (Flag.objects.filter(round_id=round_.pk, state=Flag.State.OPEN, claimed_by__isnull=False,
                                 claimed_at__gte=claim_cutoff(now)).values_list("kind", flat=True).distinct())
    kinds = set(found)
    return [(k, kind_title(k), queue_holds(round_id=round_.pk, kind=k, user=user, now=now))
            for k in KIND_ORDER if k in kinds]


# -- throughput -----------------------------------------------------------------------------------

@dataclass
class Throughput:
    name: str
    last_hour: int
    today: int
    week: int
    median_gap_s: float | None  # median seconds between consecutive decisions (last 7 days)


def _windows(now):
    local = timezone.localtime(now)
    return now - timedelta(hours=1), local.replace(hour=0, minute=0, second=0, microsecond=0), now - timedelta(days=7)


_THROUGHPUT_SQL = """
WITH d AS (
  SELECT user_id, created_at,
         EXTRACT(EPOCH FROM created_at - LAG(created_at) OVER (PARTITION BY user_id ORDER BY created_at, id)) AS gap
  FROM {table} WHERE dataset_id = %s AND user_id IS NOT NULL AND action = ANY(%s) AND created_at >= %s
    AND id NOT IN (SELECT (after->>'reversal')::bigint FROM {table}
                   WHERE dataset_id = %s AND action = 'undo' AND after->>'reversal' IS NOT NULL)
)
SELECT user_id, COUNT(*) FILTER (WHERE created_at >= %s), COUNT(*) FILTER (WHERE created_at >= %s), COUNT(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY gap)
FROM d GROUP BY user_id
"""


def _sql_grouping() -> bool:
    """Whether the database runs the grouped query above (window and ordered-set aggregates)."""
    return connection.vendor == "postgresql"


def throughput_rows_python(rows, *, hour, today) -> dict[int, tuple]:
    """The same as the Postgres query, from (user_id, created_at) rows of the last 7 days in
    time order: what other databases (SQLite) run."""
    by_user: dict[int, list] = defaultdict(list)
    for user_id, created_at in rows:
        by_user[user_id].append(created_at)
    result = {}
    for user_id, times in by_user.items():
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
        result[user_id] = (sum(t >= hour for t in times), sum(t >= today for t in times), len(times),
                           statistics.median(gaps) if gaps else None)
    return result


def throughput(*, dataset_id: int, now=None) -> list[Throughput]:
    """Per reviewer: review decisions in the last hour, since midnight, in 7 days, and the median
    gap between consecutive ones; one grouped query on Postgres. The label change an undo makes
    (its "reversal") is not review work and is left out."""
    now = now or timezone.now()
    hour, today, week = _windows(now)
    if _sql_grouping():
        sql = _THROUGHPUT_SQL.format(table=connection.ops.quote_name(Decision._meta.db_table))
        with connection.cursor() as cursor:
            cursor.execute(sql, [dataset_id, list(REVIEW_ACTIONS), week, dataset_id, hour, today])
            stats = {row[0]: tuple(row[1:]) for row in cursor.fetchall()}
    else:
        reversals = (Decision.objects.filter(dataset_id=dataset_id, action=Decision.Action.UNDO)
                     .exclude(after__reversal=None).values_list("after__reversal", flat=True))
        rows = (Decision.objects.filter(dataset_id=dataset_id, user__isnull=False, action__in=REVIEW_ACTIONS,
                                        created_at__gte=week).exclude(pk__in=[int(r) for r in reversals])
                .order_by("user_id", "created_at", "id").values_list("user_id", "created_at"))
        stats = throughput_rows_python(rows, hour=hour, today=today)
    names = dict(get_user_model().objects.filter(pk__in=stats).values_list("pk", "username"))
    table = [Throughput(names.get(u, "?"), hour_n, today_n, week_n, float(gap) if gap is not None else None)
             for u, (hour_n, today_n, week_n, gap) in stats.items()]
    return sorted(table, key=lambda t: (-t.week, t.name))


# -- agreement ------------------------------------------------------------------------------------

def cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters over categorical answers; None when chance agreement is
    total (every answer in one category) or there are no pairs."""
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[c] * second[c] for c in first) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


@dataclass
class Agreement:
    label: str
    answered: int
    agreed: int
    kappa: float | None

    @property
    def enough(self) -> bool:
        return self.answered >= MIN_ANSWERS

    @property
    def percent(self) -> float | None:
        return 100.0 * self.agreed / self.answered if self.answered else None


def _agreement(label: str, pairs: list[tuple[str, str]]) -> Agreement:
    return Agreement(label=label, answered=len(pairs), agreed=sum(a == b for a, b in pairs),
                     kappa=cohen_kappa(pairs))


ANSWERED = (SecondReview.State.AGREED, SecondReview.State.DISAGREED, SecondReview.State.RESOLVED)


def agreement(*, dataset_id: int) -> dict:
    """Agreement of second looks with first decisions: overall, per first reviewer and per
    flag kind, from one query over the answered second looks."""
    rows = (SecondReview.objects.filter(dataset_id=dataset_id, state__in=ANSWERED)
            .values_list("first_reviewer__username", "flag__kind", "first_answer", "answer"))
    by_reviewer, by_kind, every = defaultdict(list), defaultdict(list), []
    for name, kind, first, second in rows:
        by_reviewer[name or "(deleted user)"].append((first, second))
        by_kind[kind].append((first, second))
        every.append((first, second))
    return {
        "overall": _agreement("all", every),
        "reviewers": [_agreement(name, pairs) for name, pairs in sorted(by_reviewer.items())],
        "kinds": [_agreement(kind_title(k), by_kind[k]) for k in KIND_ORDER if k in by_kind],
    }


def double_review_counts(*, dataset_id: int, user) -> dict:
    """How many second looks wait for `user`, and how many disagreements wait for an admin."""
    pending = Q(state=SecondReview.State.PENDING)
    return (SecondReview.objects.filter(dataset_id=dataset_id)
            .annotate(undone=Exists(Decision.objects.filter(undoes_id=OuterRef("first_decision_id"))))
            .aggregate(for_you=Count("id", filter=pending & Q(undone=False) & ~Q(first_reviewer=user)),
                       disagreements=Count("id", filter=Q(state=SecondReview.State.DISAGREED)),
                       pending=Count("id", filter=pending & Q(undone=False))))


def team_panel(*, dataset: Dataset, user) -> dict:
    """What the dataset page's team panel shows."""
    return {"agreement": agreement(dataset_id=dataset.pk),
            "counts": double_review_counts(dataset_id=dataset.pk, user=user),
            "share_percent": round(dataset.double_review_share * 100, 1)}


# -- verdicts in words ----------------------------------------------------------------------------

@dataclass
class VerdictWords:
    text: str
    name: str = ""  # an identity's name (untrusted text: templates escape it and isolate it in <bdi>)


def verdict_words(verdict: str, names: dict[int, str], copies: dict[int, str] | None = None) -> VerdictWords:
    kind, _, value = verdict.partition(":")
    if kind == "keep":
        return VerdictWords("Keep as is")
    if kind == "merge":
        return VerdictWords("Merge the two identities")
    if kind == "relabel":
        return VerdictWords("Relabel to", names.get(int(value), f"identity {value}"))
    text = "Remove" if kind == "remove" else "Mark low quality"
    if value:
        return VerdictWords(f"{text} the copy under", (copies or {}).get(int(value), f"face {value}"))
    return VerdictWords(text)


def _verdict_ids(verdicts) -> tuple[set[int], set[int]]:
    identities, faces = set(), set()
    for v in verdicts:
        kind, _, value = v.partition(":")
        if value:
            (identities if kind == "relabel" else faces).add(int(value))
    return identities, faces


# -- the second-look queue ------------------------------------------------------------------------

def _waiting(dataset_id: int, user):
    """Pending second looks `user` may answer: not their own first decisions, not undone."""
    undone = Decision.objects.filter(undoes_id=OuterRef("first_decision_id"))
    return (SecondReview.objects.filter(dataset_id=dataset_id, state=SecondReview.State.PENDING)
            .exclude(first_reviewer=user).filter(~Exists(undone)))


@dataclass
class SecondLook:
    review: SecondReview
    card: review_selectors.FlagCard


def blind_cards(reviews: list[SecondReview], *, dataset_id: int) -> list[SecondLook]:
    """Cards of the reviews' flags as they were before the first decision: open, with the face's
    identity and status from the decision's `before`. Nothing is saved: the objects are changed
    in memory only, for the card."""
    flag_ids = [r.flag_id for r in reviews]
    flags = {f.pk: f for f in Flag.objects.select_related("face__identity", "other_face__identity",
                                                          "suggested_identity").filter(pk__in=flag_ids)}
    before = {r.flag_id: r.first_decision.before for r in reviews}
    identities = Identity.objects.in_bulk({b.get("identity") for b in before.values() if b.get("identity")})
    shown = []
    for review in reviews:
        flag = flags[review.flag_id]
        state = before[flag.pk]
        flag.state = Flag.State.OPEN
        for face in (flag.face, flag.other_face):
            if face is not None and face.pk == review.first_decision.face_id:
                face.status = state.get("status", face.status)
                if state.get("identity") in identities:
                    face.identity = identities[state["identity"]]
        shown.append(flag)
    cards = review_selectors.build_cards(shown, dataset_id=dataset_id, references=review_selectors.PAGE_REFERENCES)
    for review, card in zip(reviews, cards):
        _sizes_before(card, review.first_decision)
    return [SecondLook(review=r, card=c) for r, c in zip(reviews, cards)]


def _sizes_before(card, decision: Decision) -> None:
    """The identities' face counts as they were before the decision: a count one lower under the
    old name would give the first answer away."""
    before, after = decision.before, decision.after
    if before.get("status") != Face.Status.ACTIVE:
        return
    if before.get("identity") in card.sizes and after != before:
        card.sizes[before["identity"]] += 1
    if after.get("status") == Face.Status.ACTIVE and after.get("identity") in card.sizes \
            and after.get("identity") != before.get("identity"):
        card.sizes[after["identity"]] -= 1


def second_look_queue(*, dataset_id: int, user, limit: int = SECOND_LOOK_PAGE) -> list[SecondLook]:
    reviews = list(_waiting(dataset_id, user).select_related("first_decision").order_by("id")[:limit])
    return blind_cards(reviews, dataset_id=dataset_id)


def second_look(*, dataset_id: int, review_id: int) -> SecondReview | None:
    return SecondReview.objects.filter(dataset_id=dataset_id, pk=review_id).first()


# -- the disagreement queue -----------------------------------------------------------------------

@dataclass
class Disagreement:
    review: SecondReview
    face: Face
    now_name: str
    first: VerdictWords
    second: VerdictWords
    before_name: str


def disagreements(*, dataset_id: int, limit: int = 50) -> list[Disagreement]:
    """Open disagreements, oldest first, with both answers in words and the face."""
    reviews = list(SecondReview.objects.filter(dataset_id=dataset_id, state=SecondReview.State.DISAGREED)
                   .select_related("first_decision", "flag__face__identity", "first_reviewer", "reviewer")
                   .order_by("id")[:limit])
    identity_ids, face_ids = _verdict_ids([v for r in reviews for v in (r.first_answer, r.answer)])
    identity_ids |= {r.first_decision.before.get("identity") for r in reviews} - {None}
    names = dict(Identity.objects.filter(pk__in=identity_ids).values_list("pk", "name"))
    copies = dict(Face.objects.filter(pk__in=face_ids).values_list("pk", "identity__name"))
    return [Disagreement(review=r, face=r.flag.face, now_name=r.flag.face.identity.name,
                         before_name=names.get(r.first_decision.before.get("identity"), ""),
                         first=verdict_words(r.first_answer, names, copies),
                         second=verdict_words(r.answer, names, copies)) for r in reviews]


__all__ = ["Agreement", "FlagHold", "Holds", "REVIEW_ACTIONS", "agreement", "blind_cards", "cohen_kappa",
           "dataset_holds", "disagreements", "double_review_counts", "flag_hold", "queue_holds", "second_look",
           "second_look_queue", "team_panel", "throughput", "throughput_rows_python", "verdict_words"]
