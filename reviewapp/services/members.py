"""Who may work on a dataset: memberships with the reviewer or admin role.

Each change is one transaction that first locks the dataset's memberships, so two admins
changing roles at once cannot both demote the other and leave the dataset without an admin.
Every change that changes something writes one audit row (Decision, action "role") in the same
transaction: who (`by`, or "system" for the importer and commands) gave whom which role.
"""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from ..models import Dataset, Decision, Membership


class LastAdmin(ValueError):
    """The change would leave the dataset without an admin; nothing was written."""


def _locked(dataset: Dataset) -> list[Membership]:
    return list(Membership.objects.select_for_update().filter(dataset=dataset).order_by("pk"))


def _admins(memberships: list[Membership]) -> int:
    return sum(m.role == Membership.Role.ADMIN for m in memberships)


def _audit(dataset: Dataset, by, member: str, before: str | None, after: str | None) -> None:
    user = by if by is not None and by.is_authenticated else None
    Decision.objects.create(dataset=dataset, user=user, actor=user.get_username() if user else "system",
                            action=Decision.Action.ROLE, before={"member": member, "role": before},
                            after={"member": member, "role": after})


@transaction.atomic
def membership_set(*, dataset: Dataset, username: str, role: str, by=None) -> Membership:
    """Give the user named `username` the role in the dataset (adding or changing their
    membership). ValueError for an unknown user or role; LastAdmin when it would demote the
    dataset's last admin."""
    if role not in Membership.Role.values:
        raise ValueError(f"unknown role {role!r}: use {' or '.join(Membership.Role.values)}")
    username = (username or "").strip()
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise ValueError(f"there is no active user named {username!r}")
    memberships = _locked(dataset)
    current = next((m for m in memberships if m.user_id == user.pk), None)
    if current is None:
        _audit(dataset, by, username, None, role)
        return Membership.objects.create(dataset=dataset, user=user, role=role)
    if current.role == Membership.Role.ADMIN and role != Membership.Role.ADMIN and _admins(memberships) == 1:
        raise LastAdmin(f"{username} is the last admin of {dataset.name}; make someone else admin first")
    if current.role != role:
        _audit(dataset, by, username, current.role, role)
        current.role = role
        current.save(update_fields=["role"])
    return current


@transaction.atomic
def membership_remove(*, dataset: Dataset, membership_id: int, by=None) -> None:
    """Take the membership away. Membership.DoesNotExist when it is not the dataset's;
    LastAdmin when it is the dataset's last admin."""
    memberships = _locked(dataset)
    target = next((m for m in memberships if m.pk == membership_id), None)
    if target is None:
        raise Membership.DoesNotExist(f"no membership {membership_id} in this dataset")
    if target.role == Membership.Role.ADMIN and _admins(memberships) == 1:
        raise LastAdmin(f"{target.user.get_username()} is the last admin of {dataset.name}; "
                        "make someone else admin first")
    _audit(dataset, by, target.user.get_username(), target.role, None)
    target.delete()
