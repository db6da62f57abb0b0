"""The claims mode of a dataset, and the check an enforced claim puts on deciding a flag.

Advisory (the default): other reviewers' queues skip a flag someone holds, but whoever opens
it may still decide it. Enforced: only the holder may decide a held flag until the claim
expires (reviewapp.rules.claim_seconds after it was taken) or is given back.
"""
import math

from django.db import transaction
from django.utils import timezone

from ..models import Dataset, Decision
from ..rules import claim_expires_at
from .labels import LabelConflict

__all__ = ["claim_check", "dataset_claims_set"]


def claim_check(*, flag, user, now=None) -> None:
    """Raise LabelConflict when the dataset enforces claims and someone other than `user`
    holds `flag` (locked by the caller, loaded with its round's dataset) with an unexpired
    claim; advisory claims pass."""
    if flag.claimed_by_id is None or flag.claimed_by_id == getattr(user, "pk", None):
        return
    now = now or timezone.now()
    expires = claim_expires_at(flag.claimed_at)
    if expires <= now:
        return
    if flag.round.dataset.claims != Dataset.Claims.ENFORCED:
        return
    holder = flag.claimed_by.get_username() if flag.claimed_by else "another reviewer"
    minutes = max(1, math.ceil((expires - now).total_seconds() / 60))
    until = timezone.localtime(expires).strftime("%H:%M")
    raise LabelConflict(
        f"{holder} holds this flag for {minutes} more minute{'s' if minutes != 1 else ''} (until {until}): "
        f"claims are enforced on this dataset, so only {holder} can decide it until then.",
        current={"flag": flag.pk, "state": flag.state, "held_by": holder, "held_until": expires.isoformat()},
    )


@transaction.atomic
def dataset_claims_set(*, dataset: Dataset, mode: str, by=None) -> Dataset:
    """Switch the dataset's claims between advisory and enforced; a change writes one audit row
    (action "setting"). ValueError for an unknown mode."""
    if mode not in Dataset.Claims.values:
        raise ValueError(f"unknown claims mode {mode!r}: use {' or '.join(Dataset.Claims.values)}")
    locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
    if locked.claims != mode:
        user = by if by is not None and by.is_authenticated else None
        Decision.objects.create(dataset=locked, user=user, actor=user.get_username() if user else "system",
                                action=Decision.Action.SETTING, before={"setting": "claims", "value": locked.claims},
                                after={"setting": "claims", "value": mode})
        locked.claims = mode
        locked.save(update_fields=["claims"])
    dataset.claims = locked.claims
    return locked
