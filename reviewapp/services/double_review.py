"""Double review: a share of decided flags is asked again, blind, of another reviewer.

Sampling is a pure function of the flag id (a hash below the dataset's share), so a retried
request samples the same way and a larger share samples a superset. A flag is sampled once:
again only if its sampled decision was undone before anyone answered it. Identity pairs are
not sampled: a merge moves faces, and the pair could not be shown as it was before.

Answers are verdicts, compared by what they would do to the data: confirming a "remove"
suggestion and pressing Remove are the same verdict ("remove"), confirming a relabel is
"relabel:<suggested id>", Keep and confirming a "keep" suggestion are "keep". Remove and low
quality both take the face out, but for different reasons that the audit keeps apart (wrong
identity against junk), so they count as different answers. On a near-duplicate pair a removal
names the copy it takes out ("remove:<face id>").

The second answer changes no data, so it writes no Decision row (the Decision table is the audit
of changes, and a row there would count as the reviewer's decision everywhere: the flag's "decided
by", undo, throughput): the SecondReview row records who answered what and when. Changing the
share and an admin's resolution that applies the second answer are changes, and are audited.
"""
from __future__ import annotations

import hashlib

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from ..models import Dataset, Decision, Flag, Identity, SecondReview
from ..rules import named_removal
from . import flags as flag_services
from . import undo
from .labels import LabelConflict

__all__ = ["BACKFILL_LIMIT", "MAX_SHARE", "NotYourSecondLook", "answer_verdict", "dataset_double_review_set",
           "decision_verdict", "is_sampled", "second_review_answer", "second_review_resolve",
           "second_review_sample", "verdict_action"]

MAX_SHARE = 0.5
# Setting the share samples at most this many already-decided flags (newest first).
BACKFILL_LIMIT = 2000
DECIDED = (Flag.State.CONFIRMED, Flag.State.REJECTED, Flag.State.OVERRIDDEN)
# Decision actions that answer a face flag, and so can be compared.
_VERDICT_ACTIONS = (Decision.Action.KEEP, Decision.Action.REMOVE, Decision.Action.LOW_QUALITY,
                    Decision.Action.RELABEL)

_NOTHING_TO_RESOLVE = {
    SecondReview.State.PENDING: "Nobody has given this flag its second look yet: nothing to resolve.",
    SecondReview.State.AGREED: "The second look agreed with the first decision: nothing to resolve.",
    SecondReview.State.RESOLVED: "{who} already resolved this disagreement.",
}
DATA_CHANGED = "The data changed since the first decision: the second answer was not applied."


class NotYourSecondLook(Exception):
    """The user gave the first answer: the second must come from someone else."""


# -- verdicts -------------------------------------------------------------------------------------

def _with_copy(verdict: str, flag: Flag, face_id: int | None) -> str:
    """On a near-duplicate pair, which copy a removal takes out is part of the verdict."""
    if flag.other_face_id is None:
        return verdict
    if face_id is None:
        raise ValueError("This picture is filed under two identities: choose which copy to remove")
    return f"{verdict}:{face_id}"


def _survivor(identity_id: int, dataset_id: int) -> int:
    """A relabel into a merged identity lands on its survivor (services.labels): compare that."""
    row = Identity.objects.filter(pk=identity_id, dataset_id=dataset_id).values_list("pk", "merged_into_id").first()
    if row is None:
        raise ValueError("The target identity is not in this dataset")
    return row[1] or row[0]


def answer_verdict(flag: Flag, *, action: str, dataset_id: int, before_identity: int | None = None,
                   identity_id: int | None = None, remove_face_id: int | None = None) -> str:
    """The verdict of pressing `action` on a face flag shown with the label `before_identity`."""
    if action not in flag_services.ACTIONS:
        raise ValueError(f"Unknown action {action!r}")
    if action == "reject" or (action == "confirm" and flag.suggestion == Flag.Suggestion.KEEP):
        return "keep"
    if action == "confirm" and flag.suggestion == Flag.Suggestion.RELABEL:
        if flag.suggested_identity_id is None:
            raise ValueError("This flag suggests no identity to relabel to")
        action, identity_id = "relabel", flag.suggested_identity_id
    elif action == "confirm" and flag.suggestion == Flag.Suggestion.REMOVE:
        return _with_copy("remove", flag, remove_face_id or named_removal(flag))
    elif action == "confirm":
        return "merge"
    if action == "relabel":
        if identity_id is None:
            raise ValueError("Choose the identity to relabel to")
        target = _survivor(identity_id, dataset_id)
        return "keep" if target == before_identity else f"relabel:{target}"
    removed = remove_face_id or named_removal(flag)
    if remove_face_id is not None and remove_face_id not in (flag.face_id, flag.other_face_id):
        raise ValueError("Choose one of the two copies to remove")
    return _with_copy(action, flag, removed)


def decision_verdict(decision: Decision, flag: Flag) -> str | None:
    """The verdict a face-flag decision gave; None for one that cannot be compared."""
    if decision.action == Decision.Action.KEEP:
        return "keep"
    if decision.action in (Decision.Action.REMOVE, Decision.Action.LOW_QUALITY):
        return _with_copy(decision.action, flag, decision.face_id)
    if decision.action == Decision.Action.RELABEL and isinstance(decision.after.get("identity"), int):
        return f"relabel:{decision.after['identity']}"
    return None


def verdict_action(verdict: str) -> dict:
    """The flag_decide arguments that give `verdict`."""
    name, _, value = verdict.partition(":")
    if name == "keep":
        return {"action": "reject"}
    if name == "relabel":
        return {"action": "relabel", "identity_id": int(value)}
    if name in ("remove", "low_quality"):
        return {"action": name, "remove_face_id": int(value) if value else None}
    return {"action": "confirm"}


# -- sampling -------------------------------------------------------------------------------------

def is_sampled(flag_id: int, share: float) -> bool:
    digest = hashlib.sha256(f"faceclean-second-look:{flag_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _undone(decision_ref) -> Exists:
    return Exists(Decision.objects.filter(undoes_id=decision_ref))


def _sampled_already(flag_id: int) -> bool:
    """A flag keeps its one second look, unless its first decision was undone before an answer."""
    live = ~Q(state=SecondReview.State.PENDING) | Q(void=False)
    return (SecondReview.objects.filter(flag_id=flag_id).annotate(void=_undone(OuterRef("first_decision_id")))
            .filter(live).exists())


def _review_for(decision: Decision, flag: Flag) -> SecondReview | None:
    verdict = decision_verdict(decision, flag)
    if verdict is None or decision.user_id is None or flag.face_id is None:
        return None
    return SecondReview(dataset_id=decision.dataset_id, flag_id=flag.pk, first_decision=decision,
                        first_reviewer_id=decision.user_id, first_answer=verdict)


def second_review_sample(*, flag: Flag, decision: Decision) -> SecondReview | None:
    """Called by flag_decide in its transaction (the flag loaded with its round's dataset): ask
    this decision again if the flag is sampled. Costs no query where the share is 0."""
    share = flag.round.dataset.double_review_share
    if share <= 0 or not is_sampled(flag.pk, share) or _sampled_already(flag.pk):
        return None
    review = _review_for(decision, flag)
    if review is not None:
        review.save()
    return review


def _backfill(dataset: Dataset, share: float) -> int:
    """Sample `share` of the dataset's decided face flags that have no second look yet."""
    candidates = (Flag.objects.filter(round__dataset_id=dataset.pk, state__in=DECIDED, face__isnull=False)
                  .filter(~Exists(SecondReview.objects.filter(flag_id=OuterRef("pk"))))
                  .order_by("-id").values_list("pk", flat=True))
    chosen = []
    for flag_id in candidates.iterator(chunk_size=5000):
        if is_sampled(flag_id, share):
            chosen.append(flag_id)
            if len(chosen) >= BACKFILL_LIMIT:
                break
    latest: dict[int, Decision] = {}
    rows = (Decision.objects.filter(flag_id__in=chosen, action__in=_VERDICT_ACTIONS)
            .annotate(was_undone=_undone(OuterRef("pk"))).order_by("id"))
    for decision in rows:
        latest[decision.flag_id] = decision
    flags = Flag.objects.in_bulk(chosen)
    reviews = [r for r in (_review_for(d, flags[f]) for f, d in latest.items() if not d.was_undone) if r]
    SecondReview.objects.bulk_create(reviews)
    return len(reviews)


@transaction.atomic
def dataset_double_review_set(*, dataset: Dataset, share: float, by=None) -> int:
    """Set the share (0 to MAX_SHARE) of decided flags asked again; a change writes one audit row
    (action "setting"). A share above 0 also samples that share of the flags decided before, at
    most BACKFILL_LIMIT. Returns how many flags it sampled. ValueError for a share out of range."""
    if not 0 <= share <= MAX_SHARE:
        raise ValueError(f"the share must be between 0 and {MAX_SHARE:.0%}")
    locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
    if locked.double_review_share != share:
        user = by if by is not None and by.is_authenticated else None
        Decision.objects.create(
            dataset=locked, user=user, actor=user.get_username() if user else "system",
            action=Decision.Action.SETTING,
            before={"setting": "double_review_share", "value": locked.double_review_share},
            after={"setting": "double_review_share", "value": share})
        locked.double_review_share = share
        locked.save(update_fields=["double_review_share"])
    dataset.double_review_share = share
    return _backfill(locked, share) if share > 0 else 0


# -- answering ------------------------------------------------------------------------------------

def _first_undone(review: SecondReview) -> bool:
    return Decision.objects.filter(undoes_id=review.first_decision_id).exists()


@transaction.atomic
def second_review_answer(*, review_id: int, user, action: str, identity_id: int | None = None,
                         remove_face_id: int | None = None) -> SecondReview:
    """Record `user`'s blind answer and compare it with the first. Changes no label.
    NotYourSecondLook for the first reviewer; LabelConflict when someone answered first or the
    first decision was undone since; ValueError for an answer the flag does not allow."""
    review = SecondReview.objects.select_for_update(of=("self",)).select_related("flag", "first_decision").get(
        pk=review_id)
    if review.first_reviewer_id == getattr(user, "pk", None):
        raise NotYourSecondLook("You gave the first answer to this flag: the second look is for another reviewer.")
    if review.state != SecondReview.State.PENDING:
        raise LabelConflict("Another reviewer already gave this flag its second look.", current={"state": review.state})
    if _first_undone(review):
        raise LabelConflict("The first decision on this flag was undone since: there is nothing to compare.")
    verdict = answer_verdict(review.flag, action=action, dataset_id=review.dataset_id, identity_id=identity_id,
                             remove_face_id=remove_face_id,
                             before_identity=review.first_decision.before.get("identity"))
    review.reviewer, review.answer, review.answered_at = user, verdict, timezone.now()
    same = verdict == review.first_answer
    review.state = SecondReview.State.AGREED if same else SecondReview.State.DISAGREED
    review.save(update_fields=["reviewer", "answer", "answered_at", "state"])
    return review


# -- resolving disagreements ----------------------------------------------------------------------

def _apply_second(review: SecondReview, user) -> None:
    # The order services.undo locks in: the decision row (so that its author's own undo waits),
    # then the flag, then identities and faces.
    first = Decision.objects.select_for_update().get(pk=review.first_decision_id)
    flag = Flag.objects.select_for_update(of=("self",)).select_related("round").get(pk=review.flag_id)
    latest = Decision.objects.filter(flag_id=flag.pk).order_by("-id").values_list("pk", flat=True).first()
    if flag.state not in DECIDED or latest != review.first_decision_id:
        raise LabelConflict(DATA_CHANGED, current={"state": flag.state})
    try:
        # The first decision is undone as an undo would, though its author is someone else.
        undo.decision_reverse(decision=first, user=user, note={"second_look": True})
        flag_services.flag_decide(flag_id=flag.pk, user=user, **verdict_action(review.answer))
    except LabelConflict as conflict:
        raise LabelConflict(DATA_CHANGED, current=conflict.current) from conflict


@transaction.atomic
def second_review_resolve(*, review_id: int, user, keep: str) -> SecondReview:
    """An admin settles a disagreement: keep="first" keeps the first decision (no data changes),
    keep="second" undoes it and decides the flag with the second answer, as `user`. LabelConflict
    (nothing written) when it is not an open disagreement or the data changed since."""
    if keep not in ("first", "second"):
        raise ValueError("Choose the first decision or the second answer")
    review = SecondReview.objects.select_for_update(of=("self",)).select_related("first_decision").get(pk=review_id)
    if review.state != SecondReview.State.DISAGREED:
        who = review.resolved_by.get_username() if review.resolved_by else "someone"
        raise LabelConflict(_NOTHING_TO_RESOLVE[review.state].format(who=who), current={"state": review.state})
    if keep == "second":
        _apply_second(review, user)
    review.state = SecondReview.State.RESOLVED
    review.resolution = (SecondReview.Resolution.APPLIED_SECOND if keep == "second"
                         else SecondReview.Resolution.KEPT_FIRST)
    review.resolved_by, review.resolved_at = user, timezone.now()
    review.save(update_fields=["state", "resolution", "resolved_by", "resolved_at"])
    return review
