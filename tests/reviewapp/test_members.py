"""Members of a dataset: adding by user name, changing roles, removing, and never losing
the last admin; through the services and through the members page."""
import pytest
from django.urls import reverse

from reviewapp.models import Decision, Membership
from reviewapp.services.members import LastAdmin, membership_remove, membership_set
from tests.factories import DatasetFactory, MembershipFactory


@pytest.fixture
def team(db, django_user_model):
    dataset = DatasetFactory()
    users = {name: django_user_model.objects.create_user(username=name, password=f"pw-{name}-123")
             for name in ("alice", "bob", "carol")}
    MembershipFactory(user=users["alice"], dataset=dataset, role=Membership.Role.ADMIN)
    return dataset, users


def test_add_change_and_remove(team):
    dataset, users = team
    added = membership_set(dataset=dataset, username="bob", role="reviewer")
    assert (added.user, added.role) == (users["bob"], "reviewer")
    assert membership_set(dataset=dataset, username="bob", role="admin").pk == added.pk
    assert Membership.objects.get(pk=added.pk).role == "admin"
    membership_remove(dataset=dataset, membership_id=added.pk)
    assert not Membership.objects.filter(user=users["bob"]).exists()


def test_unknown_user_role_or_foreign_membership_is_refused(team):
    dataset, users = team
    with pytest.raises(ValueError, match="no active user named 'nobody'"):
        membership_set(dataset=dataset, username="nobody", role="reviewer")
    with pytest.raises(ValueError, match="unknown role"):
        membership_set(dataset=dataset, username="bob", role="owner")
    foreign = MembershipFactory(user=users["carol"], dataset=DatasetFactory())
    with pytest.raises(Membership.DoesNotExist):
        membership_remove(dataset=dataset, membership_id=foreign.pk)
    assert Membership.objects.filter(pk=foreign.pk).exists()


def test_the_last_admin_stays(team):
    dataset, users = team
    alice = Membership.objects.get(user=users["alice"])
    with pytest.raises(LastAdmin):
        membership_set(dataset=dataset, username="alice", role="reviewer")
    with pytest.raises(LastAdmin):
        membership_remove(dataset=dataset, membership_id=alice.pk)
    membership_set(dataset=dataset, username="bob", role="admin")
    membership_set(dataset=dataset, username="alice", role="reviewer")  # another admin exists now
    assert Membership.objects.get(pk=alice.pk).role == "reviewer"


def test_members_page(client, team):
    dataset, users = team
    client.force_login(users["alice"])
    url = reverse("dataset-members", args=[dataset.pk])
    response = client.post(url, {"username": "carol", "role": "reviewer"})
    assert response.status_code == 302
    page = client.get(url).content.decode()
    assert "carol is now a reviewer." in page and "carol" in page
    carol = Membership.objects.get(user=users["carol"])
    client.post(url, {"username": "carol", "role": "admin"})
    assert Membership.objects.get(pk=carol.pk).role == "admin"
    assert "carol is now an admin." in client.get(url).content.decode()
    client.post(url, {"action": "remove", "membership": carol.pk})
    assert not Membership.objects.filter(pk=carol.pk).exists()
    alice = Membership.objects.get(user=users["alice"])
    client.post(url, {"action": "remove", "membership": alice.pk})
    assert "last admin" in client.get(url).content.decode() and Membership.objects.filter(pk=alice.pk).exists()
    client.post(url, {"username": "nobody", "role": "admin"})
    assert "no active user named" in client.get(url).content.decode()
    client.post(url, {"action": "remove", "membership": "x"})
    assert "not in this dataset" in client.get(url).content.decode()
    client.force_login(users["bob"])  # not a member
    assert client.get(url).status_code == 404


def test_every_membership_change_is_audited(team):
    dataset, users = team
    added = membership_set(dataset=dataset, username="bob", role="reviewer", by=users["alice"])
    membership_set(dataset=dataset, username="bob", role="admin", by=users["alice"])
    membership_set(dataset=dataset, username="bob", role="admin", by=users["alice"])  # no change, no row
    membership_remove(dataset=dataset, membership_id=added.pk, by=users["alice"])
    membership_set(dataset=dataset, username="carol", role="reviewer")  # no user: a command or the importer

    rows = list(Decision.objects.filter(dataset=dataset, action=Decision.Action.ROLE).order_by("id")
                .values_list("user__username", "actor", "before", "after"))
    assert rows == [
        ("alice", "alice", {"member": "bob", "role": None}, {"member": "bob", "role": "reviewer"}),
        ("alice", "alice", {"member": "bob", "role": "reviewer"}, {"member": "bob", "role": "admin"}),
        ("alice", "alice", {"member": "bob", "role": "admin"}, {"member": "bob", "role": None}),
        (None, "system", {"member": "carol", "role": None}, {"member": "carol", "role": "reviewer"}),
    ]
